#include "kernels/cpu/isa.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace longcat::kernels {
namespace {

cpu_isa detect() {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
        return __builtin_cpu_supports("avx512bf16") ? cpu_isa::avx512bf16 : cpu_isa::avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return cpu_isa::avx2;
    return cpu_isa::scalar;
}

cpu_isa initial() {
    const cpu_isa best = detect();
    // avx512bf16 trades exactness (activations split into two bf16 halves, ~1e-5 relative per
    // product) for speed, so it is used only when asked for.
    const cpu_isa by_default = best == cpu_isa::avx512bf16 ? cpu_isa::avx512 : best;
    const char* env = std::getenv("LONGCAT_CPU_ISA");
    if (env == nullptr || *env == '\0') return by_default;
    const std::string v = env;
    cpu_isa want;
    if (v == "scalar") {
        want = cpu_isa::scalar;
    } else if (v == "avx2") {
        want = cpu_isa::avx2;
    } else if (v == "avx512") {
        want = cpu_isa::avx512;
    } else if (v == "avx512bf16") {
        want = cpu_isa::avx512bf16;
    } else {
        std::fprintf(stderr, "longcat: LONGCAT_CPU_ISA=%s is not one of scalar, avx2, avx512, avx512bf16; using %s\n",
                     env, std::string(cpu_isa_name(by_default)).c_str());
        return by_default;
    }
    if (static_cast<int>(want) > static_cast<int>(best)) {
        std::fprintf(stderr, "longcat: LONGCAT_CPU_ISA=%s is not supported by this CPU; using %s\n",
                     env, std::string(cpu_isa_name(by_default)).c_str());
        return by_default;
    }
    return want;
}

std::atomic<cpu_isa>& active() {
    static std::atomic<cpu_isa> isa{initial()};
    return isa;
}

}  // namespace

std::string_view cpu_isa_name(cpu_isa isa) {
    switch (isa) {
        case cpu_isa::scalar: return "scalar";
        case cpu_isa::avx2: return "avx2";
        case cpu_isa::avx512: return "avx512";
        case cpu_isa::avx512bf16: return "avx512bf16";
    }
    return "?";
}

cpu_isa detected_cpu_isa() {
    static const cpu_isa best = detect();
    return best;
}

cpu_isa active_cpu_isa() { return active().load(std::memory_order_relaxed); }

bool set_cpu_isa(cpu_isa isa) {
    if (static_cast<int>(isa) > static_cast<int>(detected_cpu_isa())) return false;
    active().store(isa, std::memory_order_relaxed);
    return true;
}

}  // namespace longcat::kernels
