// What every op does before its device loop: argument checks (errors name the op and the argument) and
// layout normalisation, so that CPU and CUDA kernels only ever see dense tensors with identical strides and
// the batch dimension outermost, and can find a flat element's sample as index / per_sample.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>
#include <c10/util/string_view.h>
#include <torch/library.h>

namespace advfast {

// A value given once for the batch, or per sample as a [B] tensor in the op's math dtype, contiguous, on the
// op's device.
struct PerSample {
  double value = 0.0;
  c10::optional<at::Tensor> tensor;
};

// One perturbation-step call after checks: x_adv, grad and x share strides; mask is a contiguous bool [B].
struct StepCall {
  at::Tensor x_adv;
  at::Tensor grad;
  at::Tensor x;
  PerSample eps;
  PerSample alpha;
  double lo = 0.0;
  double hi = 1.0;
  c10::optional<at::Tensor> mask;

  int64_t batch() const { return x_adv.size(0); }
  int64_t per_sample() const { return batch() == 0 ? 0 : x_adv.numel() / batch(); }
};

// A random-start call after checks: the noise is already drawn into x_adv (uniform in [-1, 1] for L-inf,
// standard normal for L2) and, for L2, radius_fraction holds U^(1/n) per sample.
struct StartCall {
  at::Tensor x_adv;
  at::Tensor x;
  PerSample eps;
  double lo = 0.0;
  double hi = 1.0;
  c10::optional<at::Tensor> radius_fraction;

  int64_t batch() const { return x_adv.size(0); }
  int64_t per_sample() const { return batch() == 0 ? 0 : x_adv.numel() / batch(); }
};

// An APGD momentum step after checks: x_adv, x_prev, grad and x share strides (dense, batch outermost).
struct ApgdCall {
  at::Tensor x_adv;
  at::Tensor x_prev;
  at::Tensor grad;
  at::Tensor x;
  PerSample eps;
  PerSample eta;
  double momentum = 0.75;
  double lo = 0.0;
  double hi = 1.0;
  c10::optional<at::Tensor> mask;

  int64_t batch() const { return x_adv.size(0); }
  int64_t per_sample() const { return batch() == 0 ? 0 : x_adv.numel() / batch(); }
};

using StepKernel = void (*)(const StepCall&);
using StartKernel = void (*)(const StartCall&);
using ApgdKernel = void (*)(const ApgdCall&);

// Checks the arguments of linf_step_ / l2_step_, runs `kernel` on a normalised layout, writes back into x_adv.
void run_step(
    const char* op,
    const at::Tensor& x_adv,
    const at::Tensor& grad,
    const at::Tensor& x,
    double eps,
    double alpha,
    double lo,
    double hi,
    const c10::optional<at::Tensor>& eps_per_sample,
    const c10::optional<at::Tensor>& alpha_per_sample,
    const c10::optional<at::Tensor>& mask,
    StepKernel kernel);

enum class Norm { Linf, L2 };

// Parses the `norm` argument ("linf" or "l2"), naming the op in the error.
Norm parse_norm(const char* op, c10::string_view norm);

// Checks the arguments of random_start_, draws the noise with `generator` (torch's own RNG, so CUDA graphs
// capture it), then runs the kernel of the chosen norm.
void run_random_start(
    const char* op,
    const at::Tensor& x_adv,
    const at::Tensor& x,
    double eps,
    c10::string_view norm,
    double lo,
    double hi,
    const c10::optional<at::Tensor>& eps_per_sample,
    const c10::optional<at::Generator>& generator,
    StartKernel linf_kernel,
    StartKernel l2_kernel);

// Checks the arguments of apgd_step_, runs the kernel of the chosen norm on a normalised layout, writes back
// into x_adv and x_prev.
void run_apgd_step(
    const char* op,
    const at::Tensor& x_adv,
    const at::Tensor& x_prev,
    const at::Tensor& grad,
    const at::Tensor& x,
    double eps,
    double eta,
    double momentum,
    double lo,
    double hi,
    c10::string_view norm,
    const c10::optional<at::Tensor>& eps_per_sample,
    const c10::optional<at::Tensor>& eta_per_sample,
    const c10::optional<at::Tensor>& mask,
    ApgdKernel linf_kernel,
    ApgdKernel l2_kernel);

// One device's loops for every op.
struct Kernels {
  StepKernel linf_step;
  StepKernel l2_step;
  StartKernel linf_start;
  StartKernel l2_start;
  ApgdKernel apgd_linf;
  ApgdKernel apgd_l2;
};

// The dispatcher entry points of a device whose loops ``KernelsFor()`` returns (asked per call, so the CPU can
// switch instruction sets): every device shares the checks, layout handling and device guard of run_step.
template <Kernels (*KernelsFor)()>
struct DeviceOps {
  static void linf_step(
      const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x, double eps, double alpha, double lo,
      double hi, const c10::optional<at::Tensor>& eps_per_sample, const c10::optional<at::Tensor>& alpha_per_sample,
      const c10::optional<at::Tensor>& mask) {
    run_step("advfast::linf_step_", x_adv, grad, x, eps, alpha, lo, hi, eps_per_sample, alpha_per_sample, mask,
             KernelsFor().linf_step);
  }

  static void l2_step(
      const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x, double eps, double alpha, double lo,
      double hi, const c10::optional<at::Tensor>& eps_per_sample, const c10::optional<at::Tensor>& alpha_per_sample,
      const c10::optional<at::Tensor>& mask) {
    run_step("advfast::l2_step_", x_adv, grad, x, eps, alpha, lo, hi, eps_per_sample, alpha_per_sample, mask,
             KernelsFor().l2_step);
  }

  static void random_start(
      const at::Tensor& x_adv, const at::Tensor& x, double eps, c10::string_view norm, double lo, double hi,
      const c10::optional<at::Tensor>& eps_per_sample, const c10::optional<at::Generator>& generator) {
    const Kernels kernels = KernelsFor();
    run_random_start("advfast::random_start_", x_adv, x, eps, norm, lo, hi, eps_per_sample, generator,
                     kernels.linf_start, kernels.l2_start);
  }

  static void apgd_step(
      const at::Tensor& x_adv, const at::Tensor& x_prev, const at::Tensor& grad, const at::Tensor& x, double eps,
      double eta, double momentum, double lo, double hi, c10::string_view norm,
      const c10::optional<at::Tensor>& eps_per_sample, const c10::optional<at::Tensor>& eta_per_sample,
      const c10::optional<at::Tensor>& mask) {
    const Kernels kernels = KernelsFor();
    run_apgd_step("advfast::apgd_step_", x_adv, x_prev, grad, x, eps, eta, momentum, lo, hi, norm, eps_per_sample,
                  eta_per_sample, mask, kernels.apgd_linf, kernels.apgd_l2);
  }

  static void register_into(torch::Library& m) {
    m.impl("linf_step_", &linf_step);
    m.impl("l2_step_", &l2_step);
    m.impl("random_start_", &random_start);
    m.impl("apgd_step_", &apgd_step);
  }
};

}  // namespace advfast
