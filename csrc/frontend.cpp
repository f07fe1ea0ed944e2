#include "advfast/frontend.h"

#include <ATen/MemoryOverlap.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/rand.h>
#include <c10/core/DeviceGuard.h>
#include <c10/util/Exception.h>

#include <cmath>

namespace advfast {
namespace {

bool is_supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

void check_scalar(const char* op, const char* name, double v, bool allow_zero) {
  TORCH_CHECK(
      std::isfinite(v) && (allow_zero ? v >= 0.0 : v > 0.0),
      op, ": ", name, " must be finite and ", allow_zero ? ">= 0" : "> 0", ", got ", v);
}

void check_bounds(const char* op, double lo, double hi) {
  TORCH_CHECK(!std::isnan(lo) && !std::isnan(hi), op, ": bounds must not be NaN, got lo=", lo, ", hi=", hi);
  TORCH_CHECK(lo <= hi, op, ": bounds need lo <= hi, got lo=", lo, ", hi=", hi);
}

// x_adv, and each tensor that must match it in shape, dtype and device.
void check_like(const char* op, const at::Tensor& x_adv, const at::Tensor& other, const char* name) {
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

// x_adv is written while the op still reads the other tensors, so they must not share memory with it. (The
// clean x could only be the same tensor as x_adv by mistake; grad may be x_adv itself, read before written.)
void check_no_overlap(const char* op, const at::Tensor& x_adv, const at::Tensor& other, const char* name,
                      bool allow_same) {
  const auto overlap = at::get_overlap_status(x_adv, other);
  const bool ok = overlap == at::MemOverlapStatus::No || overlap == at::MemOverlapStatus::TooHard ||
                  (allow_same && overlap == at::MemOverlapStatus::Full);
  TORCH_CHECK(ok, op, ": x_adv and ", name, " share memory; pass ", name, " as a separate tensor");
}

void check_x_adv(const char* op, const at::Tensor& x_adv) {
  TORCH_CHECK(x_adv.defined(), op, ": x_adv is undefined");
  TORCH_CHECK(x_adv.dim() >= 1, op, ": x_adv must have a batch dimension, got a 0-d tensor");
  TORCH_CHECK(
      is_supported_dtype(x_adv.scalar_type()), op, ": x_adv must be float32, float64, float16 or bfloat16, got ",
      x_adv.scalar_type());
  TORCH_CHECK(
      at::has_internal_overlap(x_adv) != at::MemOverlap::Yes, op,
      ": x_adv has internal overlap (an expanded tensor?); it is written in place");
}

// A per-sample scalar: a float or a [B] floating tensor on the op's device, handed to kernels in math dtype.
PerSample per_sample(
    const char* op, const char* name, double value, const c10::optional<at::Tensor>& tensor,
    const at::Tensor& x_adv, bool allow_zero) {
  PerSample out;
  out.value = value;
  if (!tensor.has_value()) {
    check_scalar(op, name, value, allow_zero);
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
  out.tensor = t.to(at::toOpMathType(x_adv.scalar_type())).contiguous();
  return out;
}

c10::optional<at::Tensor> checked_mask(const char* op, const c10::optional<at::Tensor>& mask, const at::Tensor& x_adv) {
  if (!mask.has_value()) {
    return c10::nullopt;
  }
  const at::Tensor& m = *mask;
  TORCH_CHECK(m.scalar_type() == at::kBool, op, ": mask must be bool, got ", m.scalar_type());
  TORCH_CHECK(
      m.dim() == 1 && m.size(0) == x_adv.size(0), op, ": mask must have shape [", x_adv.size(0), "], got ",
      m.sizes());
  TORCH_CHECK(m.device() == x_adv.device(), op, ": mask must be on ", x_adv.device(), ", got ", m.device());
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
  check_x_adv(op, x_adv);
  const c10::DeviceGuard guard(x_adv.device());  // allocations and launches on x_adv's device
  check_like(op, x_adv, grad, "grad");
  check_like(op, x_adv, x, "x");
  check_no_overlap(op, x_adv, grad, "grad", /*allow_same=*/true);
  check_no_overlap(op, x_adv, x, "x", /*allow_same=*/false);
  check_bounds(op, lo, hi);

  StepCall call;
  call.eps = per_sample(op, "eps", eps, eps_per_sample, x_adv, /*allow_zero=*/true);
  call.alpha = per_sample(op, "alpha", alpha, alpha_per_sample, x_adv, /*allow_zero=*/true);
  call.mask = checked_mask(op, mask, x_adv);
  call.lo = lo;
  call.hi = hi;
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
  check_x_adv(op, x_adv);
  const c10::DeviceGuard guard(x_adv.device());
  check_like(op, x_adv, x, "x");
  check_no_overlap(op, x_adv, x, "x", /*allow_same=*/false);
  check_bounds(op, lo, hi);

  StartCall call;
  call.eps = per_sample(op, "eps", eps, eps_per_sample, x_adv, /*allow_zero=*/true);
  call.lo = lo;
  call.hi = hi;
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

}  // namespace advfast
