// Schemas of the advfast ops (implementations register per device in cpu/ and cuda/) and the pybind11
// module advfast._C, which reports how this build was made.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/grad_mode.h>
#include <torch/library.h>

#include <vector>

#include "cpu/cpu_isa.h"

#ifndef ADVFAST_TORCH_VERSION
#error "ADVFAST_TORCH_VERSION must be defined by the build"
#endif
#ifndef ADVFAST_CUDA_ARCHS
#define ADVFAST_CUDA_ARCHS ""
#endif
#ifndef ADVFAST_CUDA_VERSION
#define ADVFAST_CUDA_VERSION ""
#endif

TORCH_LIBRARY(advfast, m) {
  // In place on x_adv; eps/alpha per sample override the floats when given; mask False leaves a sample as is.
  m.def(
      "linf_step_(Tensor(a!) x_adv, Tensor grad, Tensor x, float eps, float alpha, float lo, float hi, "
      "Tensor? eps_per_sample=None, Tensor? alpha_per_sample=None, Tensor? mask=None) -> ()");
  m.def(
      "l2_step_(Tensor(a!) x_adv, Tensor grad, Tensor x, float eps, float alpha, float lo, float hi, "
      "Tensor? eps_per_sample=None, Tensor? alpha_per_sample=None, Tensor? mask=None) -> ()");
  m.def(
      "random_start_(Tensor(a!) x_adv, Tensor x, float eps, str norm, float lo, float hi, "
      "Tensor? eps_per_sample=None, Generator? generator=None) -> ()");
  // In place on x_adv (the momentum step) and x_prev (<- the old x_adv); eta is the step size.
  m.def(
      "apgd_step_(Tensor(a!) x_adv, Tensor(b!) x_prev, Tensor grad, Tensor x, float eps, float eta, "
      "float momentum, float lo, float hi, str norm, Tensor? eps_per_sample=None, Tensor? eta_per_sample=None, "
      "Tensor? mask=None) -> ()");
}

namespace {

// The ops are the attack's update, applied outside any graph: with grad mode on, a tensor argument that
// requires grad is an error that names the op (instead of a graph that silently ignores the update).
void reject_differentiation(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  if (at::GradMode::is_enabled()) {
    const auto& arguments = op.schema().arguments();
    const auto start = stack->size() - arguments.size();
    for (size_t i = 0; i < arguments.size(); ++i) {
      const c10::IValue& value = (*stack)[start + i];
      TORCH_CHECK(
          !(value.isTensor() && value.toTensor().requires_grad()), op.schema().name(), ": ", arguments[i].name(),
          " requires grad, but the op is not differentiable; pass a detached tensor");
    }
  }
  at::AutoDispatchBelowAutograd guard;
  op.redispatchBoxed(keys & c10::after_autograd_keyset, stack);
}

// Every op writes the arguments its schema marks (a!), (b!), ... and returns nothing, so this kernel bumps
// their version counters after the device kernel ran: autograd then rejects a stale saved tensor, as after any
// in-place op.
void bump_written_versions(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  const auto& arguments = op.schema().arguments();
  const auto start = stack->size() - arguments.size();
  std::vector<at::Tensor> written;
  for (size_t i = 0; i < arguments.size(); ++i) {
    const auto* alias = arguments[i].alias_info();
    if (alias != nullptr && alias->isWrite() && (*stack)[start + i].isTensor()) {
      written.push_back((*stack)[start + i].toTensor());
    }
  }
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.redispatchBoxed(keys & c10::after_ADInplaceOrView_keyset, stack);
  }
  for (const at::Tensor& t : written) {
    t.unsafeGetTensorImpl()->bump_version();
  }
}

constexpr const char* kOps[] = {"linf_step_", "l2_step_", "random_start_", "apgd_step_"};

}  // namespace

TORCH_LIBRARY_IMPL(advfast, Autograd, m) {
  for (const char* op : kOps) {
    m.impl(op, torch::CppFunction::makeFromBoxedFunction<&reject_differentiation>());
  }
}

TORCH_LIBRARY_IMPL(advfast, ADInplaceOrView, m) {
  for (const char* op : kOps) {
    m.impl(op, torch::CppFunction::makeFromBoxedFunction<&bump_written_versions>());
  }
}

namespace py = pybind11;

PYBIND11_MODULE(_C, module) {
  module.doc() = "advfast's compiled kernels; the ops live in torch.ops.advfast";
  module.def("build_info", [] {
    py::dict info;
#ifdef ADVFAST_WITH_CUDA
    info["cuda"] = true;
#else
    info["cuda"] = false;
#endif
    info["cuda_version"] = ADVFAST_CUDA_VERSION;
    info["cuda_archs"] = ADVFAST_CUDA_ARCHS;
    info["torch_version"] = ADVFAST_TORCH_VERSION;
    info["compiler"] = __VERSION__;
    info["cpu_isas"] = advfast::cpu::available_isas();
    return info;
  });
  module.def("cpu_isa", [] { return std::string(advfast::cpu::isa_name(advfast::cpu::active_isa())); },
             "The instruction set the CPU loops run with now.");
  module.def("set_cpu_isa", &advfast::cpu::set_active_isa, py::arg("isa"),
             "Run the CPU loops with another compiled-in instruction set (\"baseline\" or \"avx2\").");
}
