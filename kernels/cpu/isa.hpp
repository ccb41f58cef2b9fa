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
// y[t, r] = Σ_c x[t, c]·W[r, c] for t < m (m ≤ 16); W row-major [rows, cols] of f32 or bf16.
// Parallel over rows (OpenMP); each weight row is read once for all m tokens.
void linear_small_m_avx512(const void* w, dtype type, int64_t rows, int64_t cols, const float* x,
                           int64_t m, float* y);
// bf16 weights through vdpbf16ps with activations split into two bf16 halves (see the .cpp).
void linear_small_m_avx512bf16(const void* w, dtype type, int64_t rows, int64_t cols,
                               const float* x, int64_t m, float* y);
void linear_small_m_avx2(const void* w, dtype type, int64_t rows, int64_t cols, const float* x,
                         int64_t m, float* y);
}  // namespace cpu

}  // namespace longcat::kernels
