// Run-time choice of the CPU instruction set for the hand-written kernels.
// Detected once from cpuid; the default is the best exact level (avx512 or avx2: bf16 weights
// widened to fp32, fp32 FMA).  LONGCAT_CPU_ISA=scalar|avx2|avx512|avx512bf16 overrides it;
// avx512bf16 (vdpbf16ps on activations split into two bf16 halves, ~1e-5 relative error) is
// opt-in.  A request above what the CPU has is refused on stderr and the default kept.  Tests switch paths
// with set_cpu_isa to run every kernel on every level the machine supports.
#pragma once

#include <cstdint>
#include <string_view>

#include "kernels/api/dtype.hpp"

namespace longcat::kernels {

// Ordered: each level includes the ones before it.
enum class cpu_isa : uint8_t { scalar, avx2, avx512, avx512bf16 };

std::string_view cpu_isa_name(cpu_isa isa);
cpu_isa detected_cpu_isa();  // the best level this CPU supports
cpu_isa active_cpu_isa();    // what the kernels use now (the default unless overridden)
// Returns false (and changes nothing) when the CPU lacks `isa`.
bool set_cpu_isa(cpu_isa isa);

namespace cpu {
// The most tokens one small-M call takes (linear passes of this many over the weights).
constexpr int64_t kMaxSmallM = 16;
// One product of linear_small_m_group_avx512 / _avx2: y[t, r] = Σ_c x[t, c]·W[r, c] for t < m ≤ 16.
struct small_m_product {
    const void* w = nullptr;
    dtype type = dtype::f32;
    int64_t rows = 0;
    int64_t cols = 0;
    const float* x = nullptr;
    int64_t m = 0;
    float* y = nullptr;
};
// All `count` products in one OpenMP loop over their row blocks, each result bitwise equal to
// linear_small_m_avx512 on it alone. Outputs must not overlap; an output may alias another
// product's input (every input is packed first).
void linear_small_m_group_avx512(const small_m_product* products, int64_t count);
// y[t, r] = Σ_c x[t, c]·W[r, c] for t < m (m ≤ 16); W row-major [rows, cols] of f32 or bf16.
// Parallel over rows (OpenMP); each weight row is read once for all m tokens.
void linear_small_m_avx512(const void* w, dtype type, int64_t rows, int64_t cols, const float* x,
                           int64_t m, float* y);
// bf16 weights through vdpbf16ps with activations split into two bf16 halves (see the .cpp).
void linear_small_m_avx512bf16(const void* w, dtype type, int64_t rows, int64_t cols,
                               const float* x, int64_t m, float* y);
void linear_small_m_avx2(const void* w, dtype type, int64_t rows, int64_t cols, const float* x,
                         int64_t m, float* y);
void linear_small_m_group_avx2(const small_m_product* products, int64_t count);
}  // namespace cpu

}  // namespace longcat::kernels
