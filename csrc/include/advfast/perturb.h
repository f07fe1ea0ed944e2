// Element math of every advfast perturbation op: the only place the step formulas live.
//
// CPU loops and CUDA kernels call these per element with T = the op's math type (float for float32, float16
// and bfloat16 storage; double for float64). Every function is branch-free (selects only) so that compilers
// vectorise the CPU loops, and keeps the eager reference's order of floating-point operations, so that the
// float32 L-inf step equals the eager formula bit for bit.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>

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
// host synchronisation); a negative, NaN or infinite radius or step size is read as 0 (it moves nothing), so
// the result still lies in the ball and inf * sign(0) never makes a NaN. Scalars given once are checked on
// the host and pass through unchanged.
template <typename T>
C10_HOST_DEVICE inline T usable_or_zero(T v) {
  const bool usable = (v > T(0)) & (v <= largest_finite<T>());  // & not &&: no branch, so loops vectorise
  return usable ? v : T(0);
}

// v kept inside the finite range: a difference of two finite values may overflow to +-inf, and a later
// product of that with 0 (or a sum with the opposite infinity) would make a NaN.
template <typename T>
C10_HOST_DEVICE inline T saturate(T v) {
  return clamp(v, -largest_finite<T>(), largest_finite<T>());
}

// a * b rounded once, never fused into a neighbouring add (nvcc contracts a*b+c into an FMA by default; the
// CPU build has -ffp-contract=off): keeps the eager reference's rounding where a product is inexact.
template <typename T>
C10_HOST_DEVICE inline T mul_rounded(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == sizeof(float)) {
    return __fmul_rn(a, b);
  } else {
    return __dmul_rn(a, b);
  }
#else
  return a * b;
#endif
}

// ---- per-sample L2 norms, overflow-safe -------------------------------------------------------------------
// A plain sum of squares overflows once an entry exceeds sqrt(max) (1.8e19 in float32) and then makes the
// step vanish (eps / inf = 0). SquareSum keeps entries above kSplit in a second sum, scaled by kDown before
// squaring, so neither sum can overflow for any finite entries; branch-free (selects only).

template <typename T>
struct SquareSplit;
template <>
struct SquareSplit<float> {
  static constexpr float kSplit = 1099511627776.0f;  // 2^40: smaller squares (<= 2^80) sum without overflow
  static constexpr float kDown = 8.2718061255302767e-25f;  // 2^-80: scaled big squares lie in [2^-80, 2^96]
};
template <>
struct SquareSplit<double> {
  static constexpr double kSplit = 3.1217485503159922e+144;  // 2^480
  static constexpr double kDown = 2.4099198651028841e-181;  // 2^-600
};

// An aggregate (no constructors) so that CUDA can keep it in __shared__ memory; start from zero().
template <typename T>
struct SquareSum {
  T small;
  T big;

  C10_HOST_DEVICE static SquareSum zero() { return {T(0), T(0)}; }

  C10_HOST_DEVICE void add(T v) {
    const T magnitude = v < T(0) ? -v : v;
    const bool is_big = magnitude > SquareSplit<T>::kSplit;
    const T scaled = v * SquareSplit<T>::kDown;
    small += is_big ? T(0) : v * v;
    big += is_big ? scaled * scaled : T(0);
  }

  C10_HOST_DEVICE SquareSum operator+(const SquareSum& other) const {
    return {small + other.small, big + other.big};
  }

  // sqrt(small + big / kDown^2), in double (inf only where the norm itself exceeds the largest double).
  C10_HOST_DEVICE double norm() const;
};

template <typename T>
C10_HOST_DEVICE inline double SquareSum<T>::norm() const {
  const double down = static_cast<double>(SquareSplit<T>::kDown);
  if (!(big > T(0))) {
    return ::sqrt(static_cast<double>(small));
  }
  // small * down^2 in two steps: down^2 underflows in double for T = double.
  const double scaled = static_cast<double>(big) + static_cast<double>(small) * down * down;
  return ::sqrt(scaled) / down;
}

// ---- L-inf ----------------------------------------------------------------------------------------------

// a <- clip( x + clip( a + alpha*sign(g) - x, -eps, eps ), lo, hi )
template <typename T>
C10_HOST_DEVICE inline T linf_step(T a, T g, T x, T eps, T alpha, T lo, T hi) {
  eps = usable_or_zero(eps);
  const T d = clamp(a + usable_or_zero(alpha) * sign_or_zero(g) - x, -eps, eps);
  return clamp(x + d, lo, hi);
}

// Random start: n is uniform noise in [-1, 1] (already written into the adversarial tensor).
// a <- clip( x + eps*n, lo, hi )
template <typename T>
C10_HOST_DEVICE inline T linf_start(T n, T x, T eps, T lo, T hi) {
  return clamp(x + usable_or_zero(eps) * n, lo, hi);
}

// ---- L2 -------------------------------------------------------------------------------------------------
// A sample's L2 step needs two norms, so it is three phases: reduce ||g||, reduce ||d||, write.
//   u = g / (||g|| + tiny);  d = a + alpha*u - x;  d <- d * min(1, eps/||d||);  a <- clip(x + d, lo, hi)
// Each reduction is the norm of a per-element value (SquareSum above); d is saturated to the finite range,
// so its norm is finite and d * factor never makes a NaN.

// Phase 1 value: the gradient entry whose norm is ||g|| (non-finite entries count 0).
template <typename T>
C10_HOST_DEVICE inline T l2_grad_value(T g) {
  return finite_or_zero(g);
}

// Denominator of u from ||g||.
template <typename T>
C10_HOST_DEVICE inline T l2_grad_denominator(T grad_norm) {
  return grad_norm + norm_tiny<T>();
}

// Phase 2 (and 3): the unprojected displacement d = a + alpha*u - x.
template <typename T>
C10_HOST_DEVICE inline T l2_delta(T a, T g, T x, T alpha, T grad_denominator) {
  return saturate(a + usable_or_zero(alpha) * (finite_or_zero(g) / grad_denominator) - x);
}

// Projection factor min(1, eps/||d||) from ||d|| (1 when ||d|| <= eps, so 0/0 never occurs).
template <typename T>
C10_HOST_DEVICE inline T l2_projection_factor(T delta_norm, T eps) {
  eps = usable_or_zero(eps);
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
  return usable_or_zero(eps) * radius_fraction / (noise_norm + norm_tiny<T>());
}

template <typename T>
C10_HOST_DEVICE inline T l2_start(T z, T x, T scale, T lo, T hi) {
  return clamp(x + z * scale, lo, hi);
}

// ---- APGD momentum step (Croce & Hein, 2020) --------------------------------------------------------------
// With mu the momentum (1 at APGD's first iteration, 0.75 after) and P the projection onto the eps-ball and
// [lo, hi], per element, in the order of the APGD reference code:
//   z      = P(a + eta * step(g))
//   a_next = P(a + (z - a) * mu + (a - a_prev) * (1 - mu));   a_prev <- a
// The two differences are saturated (a sum of opposite infinities would be a NaN); for finite values that
// never overflow this is the reference formula exactly. one_minus_mu is 1 - mu rounded once on the host.

template <typename T>
C10_HOST_DEVICE inline T apgd_momentum(T a, T a_prev, T z, T mu, T one_minus_mu) {
  return a + mul_rounded(saturate(z - a), mu) + mul_rounded(saturate(a - a_prev), one_minus_mu);
}

// L-inf projection written as the reference code does: clip(min(max(v, x - eps), x + eps), lo, hi).
template <typename T>
C10_HOST_DEVICE inline T apgd_linf_project(T v, T x, T eps, T lo, T hi) {
  const T lower = x - eps;
  const T upper = x + eps;
  v = v < lower ? lower : v;
  v = v > upper ? upper : v;
  return clamp(v, lo, hi);
}

// L-inf: step(g) = sign(g).
template <typename T>
C10_HOST_DEVICE inline T apgd_linf_step(T a, T a_prev, T g, T x, T eps, T eta, T mu, T one_minus_mu, T lo, T hi) {
  eps = usable_or_zero(eps);
  const T z = apgd_linf_project(a + usable_or_zero(eta) * sign_or_zero(g), x, eps, lo, hi);
  return apgd_linf_project(apgd_momentum(a, a_prev, z, mu, one_minus_mu), x, eps, lo, hi);
}

// L2: step(g) = g / (||g|| + tiny) and P(v) = clip(x + (v - x) * min(1, eps / ||v - x||), lo, hi), four phases:
//   1. ||g||                        (l2_grad_value, l2_grad_denominator)
//   2. w = z0 - x = a + eta*u - x   (l2_delta with eta for alpha), ||w||  -> f1 = l2_projection_factor
//   3. z = l2_apply(x, w, f1); w2 = (a + (z - a)*mu + (a - a_prev)*(1 - mu)) - x, ||w2|| -> f2
//   4. a_next = l2_apply(x, w2, f2)
template <typename T>
C10_HOST_DEVICE inline T apgd_l2_momentum_delta(T a, T a_prev, T z, T x, T mu, T one_minus_mu) {
  return saturate(apgd_momentum(a, a_prev, z, mu, one_minus_mu) - x);
}

}  // namespace advfast
