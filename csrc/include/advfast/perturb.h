// Element math of every advfast perturbation op: the only place the step formulas live.
//
// CPU loops and CUDA kernels call these per element with T = the op's math type (float for float32, float16
// and bfloat16 storage; double for float64). Every function is branch-free (selects only) so that compilers
// vectorise the CPU loops, and keeps the eager reference's order of floating-point operations, so that the
// float32 L-inf step equals the eager formula bit for bit.
#pragma once

#include <c10/macros/Macros.h>

namespace advfast {

// Added to a per-sample norm before dividing by it: an all-zero gradient then gives a zero step, not 0/0.
template <typename T>
C10_HOST_DEVICE constexpr T norm_tiny() {
  return T(1e-12);
}

template <typename T>
C10_HOST_DEVICE constexpr T largest_finite();
template <>
C10_HOST_DEVICE constexpr float largest_finite<float>() {
  return 3.40282346638528859811704183484516925e+38f;
}
template <>
C10_HOST_DEVICE constexpr double largest_finite<double>() {
  return 1.79769313486231570814527423731704357e+308;
}

// |v| <= max is false for NaN and for +-inf; written without std:: calls so host and device share it.
template <typename T>
C10_HOST_DEVICE inline bool is_finite(T v) {
  const T magnitude = v < T(0) ? -v : v;
  return magnitude <= largest_finite<T>();
}

// A gradient entry that is NaN or infinite moves nothing.
template <typename T>
C10_HOST_DEVICE inline T finite_or_zero(T g) {
  return is_finite(g) ? g : T(0);
}

// sign(g) for finite g, 0 for NaN and +-inf.
template <typename T>
C10_HOST_DEVICE inline T sign_or_zero(T g) {
  const T s = g > T(0) ? T(1) : (g < T(0) ? T(-1) : T(0));
  return is_finite(g) ? s : T(0);
}

// torch.clamp(v, lo, hi) = min(max(v, lo), hi), NaN propagating, same order of comparisons.
template <typename T>
C10_HOST_DEVICE inline T clamp(T v, T lo, T hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

// Per-sample scalars arrive as tensors that the caller never validated on the device (that would need a
// host synchronisation); a negative or NaN radius is read as 0, so the result still lies in the ball.
template <typename T>
C10_HOST_DEVICE inline T nonnegative(T v) {
  return v > T(0) ? v : T(0);
}

// ---- L-inf ----------------------------------------------------------------------------------------------

// a <- clip( x + clip( a + alpha*sign(g) - x, -eps, eps ), lo, hi )
template <typename T>
C10_HOST_DEVICE inline T linf_step(T a, T g, T x, T eps, T alpha, T lo, T hi) {
  eps = nonnegative(eps);
  const T d = clamp(a + nonnegative(alpha) * sign_or_zero(g) - x, -eps, eps);
  return clamp(x + d, lo, hi);
}

// Random start: n is uniform noise in [-1, 1] (already written into the adversarial tensor).
// a <- clip( x + eps*n, lo, hi )
template <typename T>
C10_HOST_DEVICE inline T linf_start(T n, T x, T eps, T lo, T hi) {
  return clamp(x + nonnegative(eps) * n, lo, hi);
}

// ---- L2 -------------------------------------------------------------------------------------------------
// A sample's L2 step needs two norms, so it is three phases: reduce ||g||^2, reduce ||d||^2, write.
//   u = g / (||g|| + tiny);  d = a + alpha*u - x;  d <- d * min(1, eps/||d||);  a <- clip(x + d, lo, hi)

// Phase 1 term: one entry's contribution to ||g||^2.
template <typename T>
C10_HOST_DEVICE inline T l2_grad_square(T g) {
  const T f = finite_or_zero(g);
  return f * f;
}

// Denominator of u from ||g|| (the square root of the reduced phase-1 sum).
template <typename T>
C10_HOST_DEVICE inline T l2_grad_denominator(T grad_norm) {
  return grad_norm + norm_tiny<T>();
}

// Phase 2 (and 3): the unprojected displacement d = a + alpha*u - x.
template <typename T>
C10_HOST_DEVICE inline T l2_delta(T a, T g, T x, T alpha, T grad_denominator) {
  return a + nonnegative(alpha) * (finite_or_zero(g) / grad_denominator) - x;
}

// Projection factor min(1, eps/||d||) from the reduced ||d||^2 (1 when ||d|| <= eps, so 0/0 never occurs).
template <typename T>
C10_HOST_DEVICE inline T l2_projection_factor(T delta_norm, T eps) {
  eps = nonnegative(eps);
  return delta_norm > eps ? eps / delta_norm : T(1);
}

// Phase 3: write the projected, clipped point.
template <typename T>
C10_HOST_DEVICE inline T l2_apply(T x, T delta, T factor, T lo, T hi) {
  return clamp(x + delta * factor, lo, hi);
}

// Random start: z is standard normal noise (already in the adversarial tensor), r = U^(1/n) a per-sample
// radius fraction; the point is uniform in the eps-ball before clipping.
//   a <- clip( x + z * (eps * r / (||z|| + tiny)), lo, hi )
template <typename T>
C10_HOST_DEVICE inline T l2_start_scale(T noise_norm, T eps, T radius_fraction) {
  return nonnegative(eps) * radius_fraction / (noise_norm + norm_tiny<T>());
}

template <typename T>
C10_HOST_DEVICE inline T l2_start(T z, T x, T scale, T lo, T hi) {
  return clamp(x + z * scale, lo, hi);
}

}  // namespace advfast
