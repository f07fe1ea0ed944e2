// CPU implementations of the advfast ops. The loops (perturb_cpu_kernels.inc) are compiled twice: for the
// baseline instruction set the compiler flags allow, and, on x86-64 with GCC, for AVX2+FMA+F16C; the widest
// set this CPU supports is picked at load time (ADVFAST_CPU_ISA=baseline|avx2 overrides it). Only our own
// loops get the wider target, so no function shared with other translation units is compiled for an
// instruction set the running CPU might lack.
#include "advfast/frontend.h"
#include "advfast/perturb.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "cpu_isa.h"

namespace advfast::cpu {

namespace baseline {
#include "perturb_cpu_kernels.inc"
}  // namespace baseline

#if ADVFAST_HAVE_AVX2_CLONE
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace avx2 {
#include "perturb_cpu_kernels.inc"
}  // namespace avx2
#pragma GCC pop_options
#endif

namespace {

Kernels kernels_for(Isa isa) {
#if ADVFAST_HAVE_AVX2_CLONE
  if (isa == Isa::Avx2) {
    return {&avx2::linf_step_kernel,  &avx2::l2_step_kernel,  &avx2::linf_start_kernel,
            &avx2::l2_start_kernel,   &avx2::apgd_linf_kernel, &avx2::apgd_l2_kernel};
  }
#endif
  return {&baseline::linf_step_kernel, &baseline::l2_step_kernel,   &baseline::linf_start_kernel,
          &baseline::l2_start_kernel,  &baseline::apgd_linf_kernel, &baseline::apgd_l2_kernel};
}

Kernels active_kernels() { return kernels_for(active_isa()); }

}  // namespace

TORCH_LIBRARY_IMPL(advfast, CPU, m) { DeviceOps<&active_kernels>::register_into(m); }

}  // namespace advfast::cpu
