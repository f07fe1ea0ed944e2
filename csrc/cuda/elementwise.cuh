// The one-pass kernels (the L-inf step, the L-inf random start, the APGD L-inf step): every element is read
// and written by one thread, so each is a grid-stride loop over 128-bit packs with a scalar head (elements
// before the first 16-byte boundary) and a scalar tail. An element finds its sample from a (sample, offset)
// pair that each thread advances by its fixed grid stride (no 64-bit division per pack); a pack that
// straddles two samples (sample sizes that are not a multiple of the pack width) is done element by element.
#pragma once

#include "device_math.cuh"

#include <ATen/OpMathType.h>

#include <cstdint>

namespace advfast::cuda {

constexpr int kElementwiseThreads = 256;

// What one L-inf op does. Each Op has:
//   using storage_t, T;  struct Params (the per-sample values: active flag, eps, alpha/eta);
//   Params params(b);  void pack<VEC>(i, params)  (elements i..i+VEC-1, i a multiple of VEC in memory);
//   void element(i, params).

template <typename scalar_t>
struct LinfStepOp {
  using storage_t = scalar_t;
  using T = at::opmath_type<scalar_t>;
  scalar_t* a;
  const scalar_t* g;  // may be a itself
  const scalar_t* x;
  DeviceSampleScalar<T> eps;
  DeviceSampleScalar<T> alpha;
  const bool* mask;
  T lo;
  T hi;

  struct Params {
    bool active;
    T eps;
    T alpha;
  };
  __device__ Params params(int64_t b) const { return {mask == nullptr || mask[b], eps[b], alpha[b]}; }
  __device__ T apply(T av, T gv, T xv, const Params& s) const { return linf_step<T>(av, gv, xv, s.eps, s.alpha, lo, hi); }
  template <int VEC>
  __device__ void pack(int64_t i, const Params& s) const {
    Pack<scalar_t, VEC> av = load_pack<scalar_t, VEC>(a + i);
    const Pack<scalar_t, VEC> gv = load_pack<scalar_t, VEC>(g + i);
    const Pack<scalar_t, VEC> xv = load_pack<scalar_t, VEC>(x + i);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      av.v[k] = static_cast<scalar_t>(apply(static_cast<T>(av.v[k]), static_cast<T>(gv.v[k]), static_cast<T>(xv.v[k]), s));
    }
    store_pack<scalar_t, VEC>(a + i, av);
  }
  __device__ void element(int64_t i, const Params& s) const {
    a[i] = static_cast<scalar_t>(apply(static_cast<T>(a[i]), static_cast<T>(g[i]), static_cast<T>(x[i]), s));
  }
};

// The noise n (uniform in [-1, 1]) is already in a.
template <typename scalar_t>
struct LinfStartOp {
  using storage_t = scalar_t;
  using T = at::opmath_type<scalar_t>;
  scalar_t* a;
  const scalar_t* x;
  DeviceSampleScalar<T> eps;
  T lo;
  T hi;

  struct Params {
    bool active;
    T eps;
  };
  __device__ Params params(int64_t b) const { return {true, eps[b]}; }
  template <int VEC>
  __device__ void pack(int64_t i, const Params& s) const {
    Pack<scalar_t, VEC> av = load_pack<scalar_t, VEC>(a + i);
    const Pack<scalar_t, VEC> xv = load_pack<scalar_t, VEC>(x + i);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      av.v[k] = static_cast<scalar_t>(linf_start<T>(static_cast<T>(av.v[k]), static_cast<T>(xv.v[k]), s.eps, lo, hi));
    }
    store_pack<scalar_t, VEC>(a + i, av);
  }
  __device__ void element(int64_t i, const Params& s) const {
    a[i] = static_cast<scalar_t>(linf_start<T>(static_cast<T>(a[i]), static_cast<T>(x[i]), s.eps, lo, hi));
  }
};

// APGD, L-inf: reads x_adv, x_prev, grad, x; writes x_adv and x_prev <- the old x_adv.
template <typename scalar_t>
struct ApgdLinfOp {
  using storage_t = scalar_t;
  using T = at::opmath_type<scalar_t>;
  scalar_t* a;
  scalar_t* p;
  const scalar_t* g;
  const scalar_t* x;
  DeviceSampleScalar<T> eps;
  DeviceSampleScalar<T> eta;
  const bool* mask;
  T mu;
  T one_minus_mu;
  T lo;
  T hi;

  struct Params {
    bool active;
    T eps;
    T eta;
  };
  __device__ Params params(int64_t b) const { return {mask == nullptr || mask[b], eps[b], eta[b]}; }
  __device__ T apply(T av, T pv, T gv, T xv, const Params& s) const {
    return apgd_linf_step<T>(av, pv, gv, xv, s.eps, s.eta, mu, one_minus_mu, lo, hi);
  }
  template <int VEC>
  __device__ void pack(int64_t i, const Params& s) const {
    const Pack<scalar_t, VEC> av = load_pack<scalar_t, VEC>(a + i);
    const Pack<scalar_t, VEC> pv = load_pack<scalar_t, VEC>(p + i);
    const Pack<scalar_t, VEC> gv = load_pack<scalar_t, VEC>(g + i);
    const Pack<scalar_t, VEC> xv = load_pack<scalar_t, VEC>(x + i);
    Pack<scalar_t, VEC> out;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      out.v[k] = static_cast<scalar_t>(apply(static_cast<T>(av.v[k]), static_cast<T>(pv.v[k]), static_cast<T>(gv.v[k]),
                                             static_cast<T>(xv.v[k]), s));
    }
    store_pack<scalar_t, VEC>(a + i, out);
    store_pack<scalar_t, VEC>(p + i, av);
  }
  __device__ void element(int64_t i, const Params& s) const {
    const scalar_t old = a[i];
    a[i] = static_cast<scalar_t>(apply(static_cast<T>(old), static_cast<T>(p[i]), static_cast<T>(g[i]),
                                       static_cast<T>(x[i]), s));
    p[i] = old;
  }
};

// Where the elements of one call lie: [0, head) and [body_end, numel) element by element, [head, body_end)
// in packs of VEC (head + k * VEC is 16-byte aligned in every tensor). `n` is the sample size;
// `stride_samples` and `stride_rest` are (grid stride in elements) / n and % n, computed on the host.
struct ElementwiseRange {
  int64_t numel;
  int64_t n;
  int64_t head;
  int64_t packs;
  int64_t stride_samples;
  int64_t stride_rest;
};

// PER_SAMPLE: some value differs between samples (a [B] eps/alpha/eta or a mask), so each pack looks up its
// sample; otherwise sample 0's values serve every element (they are the scalar fallbacks).
template <typename Op, int VEC, bool PER_SAMPLE>
__global__ void __launch_bounds__(kElementwiseThreads) elementwise_kernel(Op op, ElementwiseRange r) {
  const int64_t thread = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t threads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const auto params_of = [&](int64_t b) { return op.params(PER_SAMPLE ? b : 0); };
  const auto one = [&](int64_t i) {
    const auto s = params_of(PER_SAMPLE ? i / r.n : 0);
    if (s.active) {
      op.element(i, s);
    }
  };
  // Head and tail: fewer than VEC elements each, one per thread of the first block.
  const int64_t body_end = r.head + r.packs * VEC;
  if (thread < r.head) {
    one(thread);
  }
  if (thread < r.numel - body_end) {
    one(body_end + thread);
  }
  if (thread >= r.packs) {
    return;
  }
  // This thread's first pack starts at element i = head + thread * VEC = b * n + offset (0 <= offset < n);
  // each step adds threads * VEC = stride_samples * n + stride_rest elements.
  int64_t i = r.head + thread * VEC;
  int64_t b = 0;
  int64_t offset = 0;
  if constexpr (PER_SAMPLE) {
    b = i / r.n;
    offset = i - b * r.n;
  }
  for (int64_t q = thread; q < r.packs; q += threads) {
    if constexpr (PER_SAMPLE) {
      if (offset + VEC <= r.n) {
        const auto s = params_of(b);
        if (s.active) {
          op.template pack<VEC>(i, s);
        }
      } else {
        // The pack straddles samples: element k belongs to sample b + (offset + k) / n.
        int64_t bk = b;
        int64_t ok = offset;
        for (int k = 0; k < VEC; ++k) {
          while (ok >= r.n) {
            ok -= r.n;
            ++bk;
          }
          const auto s = params_of(bk);
          if (s.active) {
            op.element(i + k, s);
          }
          ++ok;
        }
      }
      offset += r.stride_rest;
      b += r.stride_samples;
      if (offset >= r.n) {
        offset -= r.n;
        ++b;
      }
    } else {
      op.template pack<VEC>(i, params_of(0));  // no per-sample tensor: no memory read
    }
    i += threads * VEC;
  }
}

}  // namespace advfast::cuda
