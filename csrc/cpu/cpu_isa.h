// Which instruction set the CPU loops run with: the widest one both compiled in and supported by this CPU,
// unless ADVFAST_CPU_ISA or set_active_isa() chooses (tests run every compiled set against the reference).
#pragma once

#include <string>
#include <vector>

// The AVX2 copy of the loops needs GCC's target pragmas; other compilers and architectures get the baseline.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ADVFAST_HAVE_AVX2_CLONE 1
#else
#define ADVFAST_HAVE_AVX2_CLONE 0
#endif

namespace advfast::cpu {

enum class Isa { Baseline, Avx2 };

Isa active_isa();
// Errors (naming the argument) for an unknown name or a set this build or CPU lacks.
void set_active_isa(const std::string& name);
const char* isa_name(Isa isa);
// Names of the sets that are compiled in and that this CPU can run, narrowest first.
std::vector<std::string> available_isas();

}  // namespace advfast::cpu
