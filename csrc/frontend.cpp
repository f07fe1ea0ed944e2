#include "advfast/frontend.h"

#include "advfast/memory_overlap.h"

#include <ATen/OpMathType.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/rand.h>
#include <c10/core/DeviceGuard.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <utility>

namespace advfast {
namespace {

bool is_supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// Largest finite value of a floating dtype.
double largest_finite(at::ScalarType t) {
  switch (t) {
    case at::kDouble:
      return std::numeric_limits<double>::max();
    case at::kHalf:
      return static_cast<double>(std::numeric_limits<c10::Half>::max());
    case at::kBFloat16:
      return static_cast<double>(std::numeric_limits<c10::BFloat16>::max());
    default:
      return static_cast<double>(std::numeric_limits<float>::max());
  }
}

// The name users write: float32, not Float.
const char* dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kDouble:
      return "float64";
    case at::kHalf:
      return "float16";
    case at::kBFloat16:
      return "bfloat16";
    case at::kFloat:
      return "float32";
    default:
      return c10::toString(t);
  }
}

// A scalar radius or step size: finite in the dtype the op computes in (1e39 is a finite double but an
// infinite float32) and >= 0.
void check_scalar(const char* op, const char* name, double v, at::ScalarType math_dtype) {
  const double limit = largest_finite(math_dtype);
  TORCH_CHECK(
      v >= 0.0 && v <= limit, op, ": ", name, " must be finite and >= 0 in ", dtype_name(math_dtype),
      " (the dtype the op computes in), got ", v);
}

// [lo, hi] intersected with the finite range of x_adv's dtype, so that the result is finite even for infinite
// bounds (the kernels clamp to these).
std::pair<double, double> checked_bounds(const char* op, double lo, double hi, at::ScalarType dtype) {
  TORCH_CHECK(!std::isnan(lo) && !std::isnan(hi), op, ": bounds must not be NaN, got lo=", lo, ", hi=", hi);
  TORCH_CHECK(lo <= hi, op, ": bounds need lo <= hi, got lo=", lo, ", hi=", hi);
  const double limit = largest_finite(dtype);
  const double finite_lo = std::max(lo, -limit);
  const double finite_hi = std::min(hi, limit);
  TORCH_CHECK(
      finite_lo <= finite_hi, op, ": bounds [", lo, ", ", hi, "] contain no finite ", dtype, " value (x_adv's dtype)");
  return {finite_lo, finite_hi};
}

// x_adv, and each tensor that must match it in shape, dtype and device.
void check_like(const char* op, const at::Tensor& x_adv, const at::Tensor& other, const char* name) {
  TORCH_CHECK(other.defined(), op, ": ", name, " is undefined");
  TORCH_CHECK(
      other.sizes() == x_adv.sizes(), op, ": ", name, " must have the shape of x_adv ", x_adv.sizes(),
      ", got ", other.sizes());
  TORCH_CHECK(
      other.scalar_type() == x_adv.scalar_type(), op, ": ", name, " must have the dtype of x_adv (",
      x_adv.scalar_type(), "), got ", other.scalar_type());
  TORCH_CHECK(
      other.device() == x_adv.device(), op, ": ", name, " must be on the device of x_adv (", x_adv.device(),
      "), got ", other.device());
}

// A tensor the op writes (`written`) must not share memory with another argument it reads while writing.
// `allow_same`: the other may be exactly the written tensor (grad = x_adv, read before written).
void check_no_overlap(const char* op, const at::Tensor& written, const char* written_name, const at::Tensor& other,
                      const char* name, bool allow_same = false) {
  const Overlap overlap = memory_overlap(written, other);
  const bool ok = overlap == Overlap::None || (allow_same && overlap == Overlap::Same);
  TORCH_CHECK(ok, op, ": ", written_name, " and ", name, " share memory; pass ", name, " as a separate tensor");
}

// A tensor the op writes in place: floating, with a batch dimension, no two indices on the same memory.
void check_written(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is undefined");
  TORCH_CHECK(t.dim() >= 1, op, ": ", name, " must have a batch dimension, got a 0-d tensor");
  TORCH_CHECK(
      is_supported_dtype(t.scalar_type()), op, ": ", name, " must be float32, float64, float16 or bfloat16, got ",
      t.scalar_type());
  TORCH_CHECK(
      !has_internal_overlap(t), op, ": ", name, " has internal overlap (an expanded tensor?); it is written in place");
}

// A per-sample scalar: a float or a [B] floating tensor on the op's device, handed to kernels in math dtype.
// Tensor values are not checked (that would synchronise with the device); the kernels read a negative, NaN
// or infinite entry as 0. The tensor must not share memory with a tensor the op writes.
PerSample per_sample(
    const char* op, const char* name, double value, const c10::optional<at::Tensor>& tensor,
    const at::Tensor& x_adv, std::initializer_list<std::pair<const at::Tensor*, const char*>> written) {
  PerSample out;
  out.value = value;
  const auto math_dtype = at::toOpMathType(x_adv.scalar_type());
  if (!tensor.has_value()) {
    check_scalar(op, name, value, math_dtype);
    return out;
  }
  const at::Tensor& t = *tensor;
  TORCH_CHECK(
      t.dim() == 1 && t.size(0) == x_adv.size(0), op, ": ", name, " per sample must have shape [", x_adv.size(0),
      "], got ", t.sizes());
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": ", name, " per sample must be floating, got ",
              t.scalar_type());
  TORCH_CHECK(t.device() == x_adv.device(), op, ": ", name, " per sample must be on ", x_adv.device(), ", got ",
              t.device());
  for (const auto& [w, w_name] : written) {
    check_no_overlap(op, *w, w_name, t, name);
  }
  out.tensor = t.to(math_dtype).contiguous();
  return out;
}

c10::optional<at::Tensor> checked_mask(
    const char* op, const c10::optional<at::Tensor>& mask, const at::Tensor& x_adv,
    std::initializer_list<std::pair<const at::Tensor*, const char*>> written) {
  if (!mask.has_value()) {
    return c10::nullopt;
  }
  const at::Tensor& m = *mask;
  TORCH_CHECK(m.scalar_type() == at::kBool, op, ": mask must be bool, got ", m.scalar_type());
  TORCH_CHECK(
      m.dim() == 1 && m.size(0) == x_adv.size(0), op, ": mask must have shape [", x_adv.size(0), "], got ",
      m.sizes());
  TORCH_CHECK(m.device() == x_adv.device(), op, ": mask must be on ", x_adv.device(), ", got ", m.device());
  for (const auto& [w, w_name] : written) {
    check_no_overlap(op, *w, w_name, m, "mask");
  }
  return m.contiguous();
}

// Dense, and walking flat memory visits one sample after another (contiguous and channels_last both qualify).
bool batch_outermost_dense(const at::Tensor& t) {
  if (!t.is_non_overlapping_and_dense()) {
    return false;
  }
  if (t.size(0) <= 1) {
    return true;
  }
  return t.stride(0) == t.numel() / t.size(0);
}

// `t` in exactly the strides of `like` (a copy only when they differ).
at::Tensor in_layout_of(const at::Tensor& t, const at::Tensor& like) {
  if (t.strides() == like.strides()) {
    return t;
  }
  return at::empty_like(like).copy_(t);
}

}  // namespace

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
    StepKernel kernel) {
  check_written(op, x_adv, "x_adv");
  const c10::DeviceGuard guard(x_adv.device());  // allocations and launches on x_adv's device
  check_like(op, x_adv, grad, "grad");
  check_like(op, x_adv, x, "x");
  // The clean x could only be the same tensor as x_adv by mistake; grad may be x_adv itself (read first).
  check_no_overlap(op, x_adv, "x_adv", grad, "grad", /*allow_same=*/true);
  check_no_overlap(op, x_adv, "x_adv", x, "x");

  StepCall call;
  std::tie(call.lo, call.hi) = checked_bounds(op, lo, hi, x_adv.scalar_type());
  call.eps = per_sample(op, "eps", eps, eps_per_sample, x_adv, {{&x_adv, "x_adv"}});
  call.alpha = per_sample(op, "alpha", alpha, alpha_per_sample, x_adv, {{&x_adv, "x_adv"}});
  call.mask = checked_mask(op, mask, x_adv, {{&x_adv, "x_adv"}});
  if (x_adv.numel() == 0) {
    return;
  }
  // Other layouts are correct but slower: one copy in (and for x_adv one copy back).
  const bool x_adv_in_place = batch_outermost_dense(x_adv);
  call.x_adv = x_adv_in_place ? x_adv : x_adv.contiguous();
  call.grad = in_layout_of(grad, call.x_adv);
  call.x = in_layout_of(x, call.x_adv);
  kernel(call);
  if (!x_adv_in_place) {
    x_adv.copy_(call.x_adv);
  }
}

Norm parse_norm(const char* op, c10::string_view norm) {
  if (norm == "linf") {
    return Norm::Linf;
  }
  if (norm == "l2") {
    return Norm::L2;
  }
  TORCH_CHECK(false, op, ": norm must be \"linf\" or \"l2\", got \"", std::string(norm), "\"");
}

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
    StartKernel l2_kernel) {
  const Norm which = parse_norm(op, norm);
  check_written(op, x_adv, "x_adv");
  const c10::DeviceGuard guard(x_adv.device());
  check_like(op, x_adv, x, "x");
  check_no_overlap(op, x_adv, "x_adv", x, "x");

  StartCall call;
  std::tie(call.lo, call.hi) = checked_bounds(op, lo, hi, x_adv.scalar_type());
  call.eps = per_sample(op, "eps", eps, eps_per_sample, x_adv, {{&x_adv, "x_adv"}});
  if (x_adv.numel() == 0) {
    return;
  }
  const bool x_adv_in_place = batch_outermost_dense(x_adv);
  call.x_adv = x_adv_in_place ? x_adv : at::empty_like(x_adv, at::MemoryFormat::Contiguous);
  call.x = in_layout_of(x, call.x_adv);
  if (which == Norm::Linf) {
    call.x_adv.uniform_(-1.0, 1.0, generator);
    linf_kernel(call);
  } else {
    call.x_adv.normal_(0.0, 1.0, generator);
    // r = U^(1/n): the radius of a uniform point in an n-dimensional ball, as a fraction of eps.
    const auto math_dtype = at::toOpMathType(x_adv.scalar_type());
    at::Tensor u = at::rand({call.batch()}, generator, x_adv.options().dtype(math_dtype));
    call.radius_fraction = u.pow_(1.0 / static_cast<double>(call.per_sample()));
    l2_kernel(call);
  }
  if (!x_adv_in_place) {
    x_adv.copy_(call.x_adv);
  }
}

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
    ApgdKernel l2_kernel) {
  const Norm which = parse_norm(op, norm);
  check_written(op, x_adv, "x_adv");
  const c10::DeviceGuard guard(x_adv.device());
  check_like(op, x_adv, x_prev, "x_prev");
  check_written(op, x_prev, "x_prev");
  check_like(op, x_adv, grad, "grad");
  check_like(op, x_adv, x, "x");
  // Both written tensors are read at every element and written at the end: nothing may share their memory.
  check_no_overlap(op, x_adv, "x_adv", x_prev, "x_prev");
  for (const auto& [w, w_name] : {std::pair{&x_adv, "x_adv"}, std::pair{&x_prev, "x_prev"}}) {
    check_no_overlap(op, *w, w_name, grad, "grad");
    check_no_overlap(op, *w, w_name, x, "x");
  }
  TORCH_CHECK(momentum >= 0.0 && momentum <= 1.0, op, ": momentum must be in [0, 1], got ", momentum);

  ApgdCall call;
  std::tie(call.lo, call.hi) = checked_bounds(op, lo, hi, x_adv.scalar_type());
  call.momentum = momentum;
  call.eps = per_sample(op, "eps", eps, eps_per_sample, x_adv, {{&x_adv, "x_adv"}, {&x_prev, "x_prev"}});
  call.eta = per_sample(op, "eta", eta, eta_per_sample, x_adv, {{&x_adv, "x_adv"}, {&x_prev, "x_prev"}});
  call.mask = checked_mask(op, mask, x_adv, {{&x_adv, "x_adv"}, {&x_prev, "x_prev"}});
  if (x_adv.numel() == 0) {
    return;
  }
  const bool x_adv_in_place = batch_outermost_dense(x_adv);
  call.x_adv = x_adv_in_place ? x_adv : x_adv.contiguous();
  call.x_prev = in_layout_of(x_prev, call.x_adv);
  call.grad = in_layout_of(grad, call.x_adv);
  call.x = in_layout_of(x, call.x_adv);
  (which == Norm::Linf ? linf_kernel : l2_kernel)(call);
  if (!x_adv_in_place) {
    x_adv.copy_(call.x_adv);
  }
  if (!call.x_prev.is_same(x_prev)) {
    x_prev.copy_(call.x_prev);
  }
}

}  // namespace advfast
