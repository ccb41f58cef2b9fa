// Run-time choice of the CPU instruction set for the hand-written kernels.
// Detected once from cpuid; LONGCAT_CPU_ISA=scalar|avx2|avx512 overrides it (a request above
// what the CPU has is refused on stderr and the detected level is kept).  Tests switch paths
// with set_cpu_isa to run every kernel on every level the machine supports.
#pragma once

#include <cstdint>
#include <string_view>

#include "kernels/api/dtype.hpp"

namespace longcat::kernels {

enum class cpu_isa : uint8_t { scalar, avx2, avx512 };

std::string_view cpu_isa_name(cpu_isa isa);
cpu_isa detected_cpu_isa();  // the best level this CPU supports
cpu_isa active_cpu_isa();    // what the kernels use now
// Returns false (and changes nothing) when the CPU lacks `isa`.
bool set_cpu_isa(cpu_isa isa);

namespace cpu {
// y[t, r] = Σ_c x[t, c]·W[r, c] for t < m (m ≤ 16); W row-major [rows, cols] of f32 or bf16.
// Parallel over rows (OpenMP); each weight row is read once for all m tokens.
void linear_small_m_avx512(const void* w, dtype type, int64_t rows, int64_t cols, const float* x,
                           int64_t m, float* y);
void linear_small_m_avx2(const void* w, dtype type, int64_t rows, int64_t cols, const float* x,
                         int64_t m, float* y);
}  // namespace cpu

}  // namespace longcat::kernels
