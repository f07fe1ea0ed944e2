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

struct KernelTable {
  StepKernel linf_step;
  StepKernel l2_step;
  StartKernel linf_start;
  StartKernel l2_start;
};

KernelTable table_for(Isa isa) {
#if ADVFAST_HAVE_AVX2_CLONE
  if (isa == Isa::Avx2) {
    return {&avx2::linf_step_kernel, &avx2::l2_step_kernel, &avx2::linf_start_kernel, &avx2::l2_start_kernel};
  }
#endif
  return {&baseline::linf_step_kernel, &baseline::l2_step_kernel, &baseline::linf_start_kernel,
          &baseline::l2_start_kernel};
}

KernelTable kernels() { return table_for(active_isa()); }

void linf_step_cpu(
    const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x, double eps, double alpha, double lo,
    double hi, const c10::optional<at::Tensor>& eps_per_sample, const c10::optional<at::Tensor>& alpha_per_sample,
    const c10::optional<at::Tensor>& mask) {
  run_step("advfast::linf_step_", x_adv, grad, x, eps, alpha, lo, hi, eps_per_sample, alpha_per_sample, mask,
           kernels().linf_step);
}

void l2_step_cpu(
    const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x, double eps, double alpha, double lo,
    double hi, const c10::optional<at::Tensor>& eps_per_sample, const c10::optional<at::Tensor>& alpha_per_sample,
    const c10::optional<at::Tensor>& mask) {
  run_step("advfast::l2_step_", x_adv, grad, x, eps, alpha, lo, hi, eps_per_sample, alpha_per_sample, mask,
           kernels().l2_step);
}

void random_start_cpu(
    const at::Tensor& x_adv, const at::Tensor& x, double eps, c10::string_view norm, double lo, double hi,
    const c10::optional<at::Tensor>& eps_per_sample, const c10::optional<at::Generator>& generator) {
  run_random_start("advfast::random_start_", x_adv, x, eps, norm, lo, hi, eps_per_sample, generator,
                   kernels().linf_start, kernels().l2_start);
}

}  // namespace

TORCH_LIBRARY_IMPL(advfast, CPU, m) {
  m.impl("linf_step_", &linf_step_cpu);
  m.impl("l2_step_", &l2_step_cpu);
  m.impl("random_start_", &random_start_cpu);
}

}  // namespace advfast::cpu
