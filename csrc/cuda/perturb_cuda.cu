// CUDA implementations of the advfast ops, on the current stream. Element math comes from advfast/perturb.h;
// this file only decides who touches which element.
//
// L-inf ops: one grid-stride pass with 128-bit loads and stores.
// L2 ops (one to three per-sample norms before the write; a policy per op says which values they are):
//   on chip  - a sample that fits in shared memory is loaded once by one block, reduced there and written:
//              one read and one write of memory, as for L-inf;
//   chunked  - larger samples: blocks over (sample, chunk) write per-chunk partial sums into a small buffer that
//              the next phase folds in a fixed order (deterministic, no atomics): one pass per norm, plus the
//              write.
// Norms accumulate in SquareSum (advfast/perturb.h), which cannot overflow for finite values.
#include "advfast/frontend.h"
#include "advfast/perturb.h"
#include "device_math.cuh"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

namespace advfast::cuda {
namespace {

constexpr int kThreads = 256;
// Dynamic shared memory the on-chip L2 path may use: up to 64 KiB a block (so that a few blocks still share an
// SM; a CIFAR sample's x_adv, x_prev, grad and x in float32 take 48 KiB), less 256 bytes for the block
// reduction's static buffer. A block gets 48 KiB without opting in.
constexpr int64_t kStaticSharedReserve = 256;
constexpr int64_t kOnChipMaxBytes = 64 * 1024 - kStaticSharedReserve;
constexpr int64_t kDefaultDynamicShared = 48 * 1024 - kStaticSharedReserve;
// Elements per block in the chunked L2 path.
constexpr int64_t kChunk = 16384;

template <typename T>
DeviceSampleScalar<T> sample_scalar(const PerSample& p) {
  return {p.tensor.has_value() ? p.tensor->data_ptr<T>() : nullptr, static_cast<T>(p.value)};
}

const bool* mask_data(const c10::optional<at::Tensor>& mask) {
  return mask.has_value() ? mask->data_ptr<bool>() : nullptr;
}

// ---- L-inf --------------------------------------------------------------------------------------------

// PER_SAMPLE: some argument varies by sample, so each pack finds its sample (packs never straddle samples).
template <typename scalar_t, int VEC, bool PER_SAMPLE>
__global__ void __launch_bounds__(kThreads) linf_step_kernel(
    scalar_t* __restrict__ a, const scalar_t* __restrict__ g, const scalar_t* __restrict__ x, int64_t packs,
    int64_t per_sample, DeviceSampleScalar<at::opmath_type<scalar_t>> eps,
    DeviceSampleScalar<at::opmath_type<scalar_t>> alpha, const bool* __restrict__ mask,
    at::opmath_type<scalar_t> lo, at::opmath_type<scalar_t> hi) {
  using T = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, VEC>;
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < packs;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = p * VEC;
    int64_t b = 0;
    if constexpr (PER_SAMPLE) {
      b = i / per_sample;
      if (mask != nullptr && !mask[b]) {
        continue;
      }
    }
    P av = load_pack<scalar_t, VEC>(a + i);
    const P gv = load_pack<scalar_t, VEC>(g + i);
    const P xv = load_pack<scalar_t, VEC>(x + i);
    const T eps_b = eps[b];
    const T alpha_b = alpha[b];
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      av.v[k] = static_cast<scalar_t>(linf_step<T>(
          static_cast<T>(av.v[k]), static_cast<T>(gv.v[k]), static_cast<T>(xv.v[k]), eps_b, alpha_b, lo, hi));
    }
    store_pack<scalar_t, VEC>(a + i, av);
  }
}

template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreads) linf_start_kernel(
    scalar_t* __restrict__ a, const scalar_t* __restrict__ x, int64_t packs, int64_t per_sample,
    DeviceSampleScalar<at::opmath_type<scalar_t>> eps, at::opmath_type<scalar_t> lo,
    at::opmath_type<scalar_t> hi) {
  using T = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, VEC>;
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < packs;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = p * VEC;
    const T eps_b = eps.values != nullptr ? eps[i / per_sample] : eps.fallback;
    P av = load_pack<scalar_t, VEC>(a + i);
    const P xv = load_pack<scalar_t, VEC>(x + i);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      av.v[k] = static_cast<scalar_t>(linf_start<T>(static_cast<T>(av.v[k]), static_cast<T>(xv.v[k]), eps_b, lo, hi));
    }
    store_pack<scalar_t, VEC>(a + i, av);
  }
}

// APGD, L-inf: reads x_adv, x_prev, grad, x; writes x_adv and x_prev <- x_adv.
template <typename scalar_t, int VEC, bool PER_SAMPLE>
__global__ void __launch_bounds__(kThreads) apgd_linf_kernel(
    scalar_t* __restrict__ a, scalar_t* __restrict__ a_prev, const scalar_t* __restrict__ g,
    const scalar_t* __restrict__ x, int64_t packs, int64_t per_sample,
    DeviceSampleScalar<at::opmath_type<scalar_t>> eps, DeviceSampleScalar<at::opmath_type<scalar_t>> eta,
    const bool* __restrict__ mask, at::opmath_type<scalar_t> mu, at::opmath_type<scalar_t> one_minus_mu,
    at::opmath_type<scalar_t> lo, at::opmath_type<scalar_t> hi) {
  using T = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, VEC>;
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < packs;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = q * VEC;
    int64_t b = 0;
    if constexpr (PER_SAMPLE) {
      b = i / per_sample;
      if (mask != nullptr && !mask[b]) {
        continue;
      }
    }
    const P av = load_pack<scalar_t, VEC>(a + i);
    const P pv = load_pack<scalar_t, VEC>(a_prev + i);
    const P gv = load_pack<scalar_t, VEC>(g + i);
    const P xv = load_pack<scalar_t, VEC>(x + i);
    const T eps_b = eps[b];
    const T eta_b = eta[b];
    P out;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      out.v[k] = static_cast<scalar_t>(apgd_linf_step<T>(static_cast<T>(av.v[k]), static_cast<T>(pv.v[k]),
                                                         static_cast<T>(gv.v[k]), static_cast<T>(xv.v[k]), eps_b,
                                                         eta_b, mu, one_minus_mu, lo, hi));
    }
    store_pack<scalar_t, VEC>(a + i, out);
    store_pack<scalar_t, VEC>(a_prev + i, av);
  }
}

// 128-bit packs when every pointer is 16-byte aligned and no pack straddles a sample, else one element.
template <typename scalar_t, typename Launch>
void with_pack_width(std::initializer_list<const void*> pointers, int64_t per_sample, const Launch& launch) {
  constexpr int kWide = 16 / sizeof(scalar_t);
  bool wide = per_sample % kWide == 0;
  for (const void* ptr : pointers) {
    wide = wide && reinterpret_cast<std::uintptr_t>(ptr) % 16 == 0;
  }
  if (wide) {
    launch(std::integral_constant<int, kWide>{});
  } else {
    launch(std::integral_constant<int, 1>{});
  }
}

void linf_step_launch(const StepCall& c) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.x_adv.scalar_type(), "linf_step_", [&] {
    using T = at::opmath_type<scalar_t>;
    scalar_t* a = c.x_adv.data_ptr<scalar_t>();
    const scalar_t* g = c.grad.data_ptr<scalar_t>();
    const scalar_t* x = c.x.data_ptr<scalar_t>();
    const int64_t n = c.per_sample();
    const bool per_sample = c.eps.tensor.has_value() || c.alpha.tensor.has_value() || c.mask.has_value();
    with_pack_width<scalar_t>({a, g, x}, n, [&](auto vec) {
      constexpr int VEC = decltype(vec)::value;
      const int64_t packs = c.x_adv.numel() / VEC;
      const auto stream = c10::cuda::getCurrentCUDAStream();
      const int blocks = grid_size(packs, kThreads);
      const auto launch = [&](auto per_sample_tag) {
        linf_step_kernel<scalar_t, VEC, decltype(per_sample_tag)::value><<<blocks, kThreads, 0, stream>>>(
            a, g, x, packs, n, sample_scalar<T>(c.eps), sample_scalar<T>(c.alpha), mask_data(c.mask),
            static_cast<T>(c.lo), static_cast<T>(c.hi));
      };
      if (per_sample) {
        launch(std::true_type{});
      } else {
        launch(std::false_type{});
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void apgd_linf_launch(const ApgdCall& c) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.x_adv.scalar_type(), "apgd_step_", [&] {
    using T = at::opmath_type<scalar_t>;
    scalar_t* a = c.x_adv.data_ptr<scalar_t>();
    scalar_t* a_prev = c.x_prev.data_ptr<scalar_t>();
    const scalar_t* g = c.grad.data_ptr<scalar_t>();
    const scalar_t* x = c.x.data_ptr<scalar_t>();
    const int64_t n = c.per_sample();
    const bool per_sample = c.eps.tensor.has_value() || c.eta.tensor.has_value() || c.mask.has_value();
    with_pack_width<scalar_t>({a, a_prev, g, x}, n, [&](auto vec) {
      constexpr int VEC = decltype(vec)::value;
      const int64_t packs = c.x_adv.numel() / VEC;
      const auto stream = c10::cuda::getCurrentCUDAStream();
      const int blocks = grid_size(packs, kThreads);
      const auto launch = [&](auto per_sample_tag) {
        apgd_linf_kernel<scalar_t, VEC, decltype(per_sample_tag)::value><<<blocks, kThreads, 0, stream>>>(
            a, a_prev, g, x, packs, n, sample_scalar<T>(c.eps), sample_scalar<T>(c.eta), mask_data(c.mask),
            static_cast<T>(c.momentum), static_cast<T>(1.0 - c.momentum), static_cast<T>(c.lo),
            static_cast<T>(c.hi));
      };
      if (per_sample) {
        launch(std::true_type{});
      } else {
        launch(std::false_type{});
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void linf_start_launch(const StartCall& c) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.x_adv.scalar_type(), "random_start_", [&] {
    using T = at::opmath_type<scalar_t>;
    scalar_t* a = c.x_adv.data_ptr<scalar_t>();
    const scalar_t* x = c.x.data_ptr<scalar_t>();
    const int64_t n = c.per_sample();
    with_pack_width<scalar_t>({a, x}, n, [&](auto vec) {
      constexpr int VEC = decltype(vec)::value;
      const int64_t packs = c.x_adv.numel() / VEC;
      linf_start_kernel<scalar_t, VEC><<<grid_size(packs, kThreads), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          a, x, packs, n, sample_scalar<T>(c.eps), static_cast<T>(c.lo), static_cast<T>(c.hi));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

// ---- L2 family: per-sample norms, then a write -----------------------------------------------------------
// A policy says what one L2-family op computes. Every element has the values a (x_adv, or a random start's
// noise), g (grad; when kUsesGrad) and x, and p (x_prev; when kHasPrev: the op then also writes x_prev <- a).
// Reduction r = 1..kReductions is the norm of value<r>(b, e, s) over the sample; after<r> turns that norm into
// the per-sample state s.s[r - 1] that later values and out() use; out() is the element written to x_adv.

template <typename T>
struct Element {
  T a;
  T g;
  T x;
  T p;
};

template <typename T>
struct SampleState {
  T s[3];
};

template <typename scalar_t>
struct L2StepPolicy {
  using storage_t = scalar_t;
  using T = at::opmath_type<scalar_t>;
  static constexpr bool kUsesGrad = true;
  static constexpr bool kHasPrev = false;
  static constexpr int kReductions = 2;  // ||g||, ||d||
  scalar_t* a;
  const scalar_t* g;
  const scalar_t* x;
  scalar_t* p;  // unused
  DeviceSampleScalar<T> eps;
  DeviceSampleScalar<T> alpha;
  const bool* mask;
  T lo;
  T hi;

  __device__ bool active(int64_t b) const { return mask == nullptr || mask[b]; }
  __device__ T delta(int64_t b, const Element<T>& e, const SampleState<T>& s) const {
    return l2_delta<T>(e.a, e.g, e.x, alpha[b], s.s[0]);
  }
  template <int R>
  __device__ T value(int64_t b, const Element<T>& e, const SampleState<T>& s) const {
    if constexpr (R == 1) {
      return l2_grad_value<T>(e.g);
    } else {
      return delta(b, e, s);
    }
  }
  template <int R>
  __device__ T after(int64_t b, T norm) const {
    if constexpr (R == 1) {
      return l2_grad_denominator<T>(norm);
    } else {
      return l2_projection_factor<T>(norm, eps[b]);
    }
  }
  __device__ T out(int64_t b, const Element<T>& e, const SampleState<T>& s) const {
    return l2_apply<T>(e.x, delta(b, e, s), s.s[1], lo, hi);
  }
};

// The noise z sits in a; g and p are unused.
template <typename scalar_t>
struct L2StartPolicy {
  using storage_t = scalar_t;
  using T = at::opmath_type<scalar_t>;
  static constexpr bool kUsesGrad = false;
  static constexpr bool kHasPrev = false;
  static constexpr int kReductions = 1;  // ||z||
  scalar_t* a;
  const scalar_t* g;
  const scalar_t* x;
  scalar_t* p;
  DeviceSampleScalar<T> eps;
  const T* radius_fraction;
  T lo;
  T hi;

  __device__ bool active(int64_t /*b*/) const { return true; }
  template <int R>
  __device__ T value(int64_t /*b*/, const Element<T>& e, const SampleState<T>& /*s*/) const {
    return e.a;
  }
  template <int R>
  __device__ T after(int64_t b, T norm) const {
    return l2_start_scale<T>(norm, eps[b], radius_fraction[b]);
  }
  __device__ T out(int64_t /*b*/, const Element<T>& e, const SampleState<T>& s) const {
    return l2_start<T>(e.a, e.x, s.s[0], lo, hi);
  }
};

// APGD, L2 (the four phases in advfast/perturb.h).
template <typename scalar_t>
struct ApgdL2Policy {
  using storage_t = scalar_t;
  using T = at::opmath_type<scalar_t>;
  static constexpr bool kUsesGrad = true;
  static constexpr bool kHasPrev = true;
  static constexpr int kReductions = 3;  // ||g||, ||w||, ||w2||
  scalar_t* a;
  const scalar_t* g;
  const scalar_t* x;
  scalar_t* p;
  DeviceSampleScalar<T> eps;
  DeviceSampleScalar<T> eta;
  const bool* mask;
  T mu;
  T one_minus_mu;
  T lo;
  T hi;

  __device__ bool active(int64_t b) const { return mask == nullptr || mask[b]; }
  // w = a + eta*u - x (needs s.s[0]); w2 = a + (z - a)*mu + (a - p)*(1 - mu) - x (needs s.s[0], s.s[1]).
  __device__ T step_delta(int64_t b, const Element<T>& e, const SampleState<T>& s) const {
    return l2_delta<T>(e.a, e.g, e.x, eta[b], s.s[0]);
  }
  __device__ T momentum_delta(int64_t b, const Element<T>& e, const SampleState<T>& s) const {
    const T z = l2_apply<T>(e.x, step_delta(b, e, s), s.s[1], lo, hi);
    return apgd_l2_momentum_delta<T>(e.a, e.p, z, e.x, mu, one_minus_mu);
  }
  template <int R>
  __device__ T value(int64_t b, const Element<T>& e, const SampleState<T>& s) const {
    if constexpr (R == 1) {
      return l2_grad_value<T>(e.g);
    } else if constexpr (R == 2) {
      return step_delta(b, e, s);
    } else {
      return momentum_delta(b, e, s);
    }
  }
  template <int R>
  __device__ T after(int64_t b, T norm) const {
    if constexpr (R == 1) {
      return l2_grad_denominator<T>(norm);
    } else {
      return l2_projection_factor<T>(norm, eps[b]);
    }
  }
  __device__ T out(int64_t b, const Element<T>& e, const SampleState<T>& s) const {
    return l2_apply<T>(e.x, momentum_delta(b, e, s), s.s[2], lo, hi);
  }
};

template <typename Policy>
constexpr int64_t tensors_read() {
  return 2 + (Policy::kUsesGrad ? 1 : 0) + (Policy::kHasPrev ? 1 : 0);
}

// The on-chip copy of one sample: a, x, then g and p where the policy reads them, n elements each.
template <typename Policy>
struct SharedSample {
  using scalar_t = typename Policy::storage_t;
  using T = typename Policy::T;
  scalar_t* a;
  scalar_t* x;
  scalar_t* g;
  scalar_t* p;

  __device__ SharedSample(unsigned char* raw, int64_t n) {
    a = reinterpret_cast<scalar_t*>(raw);
    x = a + n;
    g = x + (Policy::kUsesGrad ? n : 0);
    p = g + (Policy::kHasPrev ? n : 0);
  }
  __device__ Element<T> element(int64_t i) const {
    return {static_cast<T>(a[i]), Policy::kUsesGrad ? static_cast<T>(g[i]) : T(0), static_cast<T>(x[i]),
            Policy::kHasPrev ? static_cast<T>(p[i]) : T(0)};
  }
};

// Reduction R (>= 2) of a sample already in shared memory: the block's norm of value<R>, as state s.s[R - 1].
template <typename Policy, int R>
__device__ void on_chip_reduction(const Policy& p, int64_t b, int64_t n, const SharedSample<Policy>& shared,
                                  SampleState<typename Policy::T>& s,
                                  SquareSum<typename Policy::T>* warp_sums) {
  using T = typename Policy::T;
  if constexpr (R <= Policy::kReductions) {
    SquareSum<T> acc = SquareSum<T>::zero();
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      acc.add(p.template value<R>(b, shared.element(j), s));
    }
    s.s[R - 1] = p.template after<R>(b, static_cast<T>(block_sum<T>(acc, warp_sums).norm()));
  }
}

// One block per sample; the sample's tensors are read once into shared memory, reduced, and written once.
template <typename Policy, int VEC>
__global__ void __launch_bounds__(kThreads) l2_on_chip_kernel(Policy p, int64_t batch, int64_t n) {
  using scalar_t = typename Policy::storage_t;
  using T = typename Policy::T;
  using P = Pack<scalar_t, VEC>;
  extern __shared__ __align__(16) unsigned char shared_raw[];
  __shared__ SquareSum<T> warp_sums[kThreads / 32];
  const SharedSample<Policy> shared(shared_raw, n);
  const int64_t packs = n / VEC;
  for (int64_t b = blockIdx.x; b < batch; b += gridDim.x) {
    if (!p.active(b)) {  // the same for every thread of the block
      continue;
    }
    const int64_t base = b * n;
    SampleState<T> s{};
    // Load, and reduction 1 on the way.
    SquareSum<T> acc = SquareSum<T>::zero();
    for (int64_t j = threadIdx.x; j < packs; j += blockDim.x) {
      const int64_t e0 = j * VEC;
      const P av = load_pack<scalar_t, VEC>(p.a + base + e0);
      const P xv = load_pack<scalar_t, VEC>(p.x + base + e0);
      P gv = av;
      P pv = av;
      if constexpr (Policy::kUsesGrad) {
        gv = load_pack<scalar_t, VEC>(p.g + base + e0);
      }
      if constexpr (Policy::kHasPrev) {
        pv = load_pack<scalar_t, VEC>(p.p + base + e0);
      }
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        shared.a[e0 + k] = av.v[k];
        shared.x[e0 + k] = xv.v[k];
        if constexpr (Policy::kUsesGrad) {
          shared.g[e0 + k] = gv.v[k];
        }
        if constexpr (Policy::kHasPrev) {
          shared.p[e0 + k] = pv.v[k];
        }
        const Element<T> e{static_cast<T>(av.v[k]), Policy::kUsesGrad ? static_cast<T>(gv.v[k]) : T(0),
                           static_cast<T>(xv.v[k]), Policy::kHasPrev ? static_cast<T>(pv.v[k]) : T(0)};
        acc.add(p.template value<1>(b, e, s));
      }
    }
    // block_sum's barriers also make every thread's shared stores visible to the whole block.
    s.s[0] = p.template after<1>(b, static_cast<T>(block_sum<T>(acc, warp_sums).norm()));
    on_chip_reduction<Policy, 2>(p, b, n, shared, s, warp_sums);
    on_chip_reduction<Policy, 3>(p, b, n, shared, s, warp_sums);
    for (int64_t j = threadIdx.x; j < packs; j += blockDim.x) {
      const int64_t e0 = j * VEC;
      P out;
      P old;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        out.v[k] = static_cast<scalar_t>(p.out(b, shared.element(e0 + k), s));
        old.v[k] = shared.a[e0 + k];
      }
      store_pack<scalar_t, VEC>(p.a + base + e0, out);
      if constexpr (Policy::kHasPrev) {
        store_pack<scalar_t, VEC>(p.p + base + e0, old);
      }
    }
    __syncthreads();  // the next sample reuses the shared buffers
  }
}

// Chunked path, phase PHASE: 1..kReductions sum value<PHASE> per chunk, kReductions + 1 writes. Block k
// handles chunk k % chunks of sample k / chunks; the partial sums of earlier phases (partials[r - 1] holds
// reduction r's, batch * chunks entries each) are folded by every later block in chunk order.
template <typename Policy, int VEC, int PHASE>
__global__ void __launch_bounds__(kThreads) l2_chunked_kernel(
    Policy p, int64_t batch, int64_t n, int64_t chunks, SquareSum<typename Policy::T>* partials) {
  using scalar_t = typename Policy::storage_t;
  using T = typename Policy::T;
  using P = Pack<scalar_t, VEC>;
  constexpr bool kWrite = PHASE > Policy::kReductions;
  __shared__ SquareSum<T> warp_sums[kThreads / 32];
  const int64_t blocks_per_phase = batch * chunks;
  for (int64_t blk = blockIdx.x; blk < blocks_per_phase; blk += gridDim.x) {
    const int64_t b = blk / chunks;
    if (!p.active(b)) {
      continue;
    }
    const int64_t base = b * n;
    const int64_t begin = (blk % chunks) * kChunk;
    const int64_t end = begin + kChunk < n ? begin + kChunk : n;
    SampleState<T> s{};
    const auto fold = [&](auto reduction) {
      constexpr int R = decltype(reduction)::value;
      if constexpr (R < PHASE && R <= Policy::kReductions) {
        const SquareSum<T> total = ordered_sum(partials + (R - 1) * blocks_per_phase + b * chunks, chunks);
        s.s[R - 1] = p.template after<R>(b, static_cast<T>(total.norm()));
      }
    };
    fold(std::integral_constant<int, 1>{});
    fold(std::integral_constant<int, 2>{});
    fold(std::integral_constant<int, 3>{});
    SquareSum<T> acc = SquareSum<T>::zero();
    for (int64_t e = begin + threadIdx.x * VEC; e < end; e += static_cast<int64_t>(blockDim.x) * VEC) {
      const P av = load_pack<scalar_t, VEC>(p.a + base + e);
      const P xv = load_pack<scalar_t, VEC>(p.x + base + e);
      P gv = av;
      P pv = av;
      if constexpr (Policy::kUsesGrad) {
        gv = load_pack<scalar_t, VEC>(p.g + base + e);
      }
      if constexpr (Policy::kHasPrev) {
        pv = load_pack<scalar_t, VEC>(p.p + base + e);
      }
      P out;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const Element<T> el{static_cast<T>(av.v[k]), Policy::kUsesGrad ? static_cast<T>(gv.v[k]) : T(0),
                            static_cast<T>(xv.v[k]), Policy::kHasPrev ? static_cast<T>(pv.v[k]) : T(0)};
        if constexpr (kWrite) {
          out.v[k] = static_cast<scalar_t>(p.out(b, el, s));
        } else {
          acc.add(p.template value<PHASE>(b, el, s));
        }
      }
      if constexpr (kWrite) {
        store_pack<scalar_t, VEC>(p.a + base + e, out);
        if constexpr (Policy::kHasPrev) {
          store_pack<scalar_t, VEC>(p.p + base + e, av);
        }
      }
    }
    if constexpr (!kWrite) {
      const SquareSum<T> total = block_sum<T>(acc, warp_sums);
      if (threadIdx.x == 0) {
        partials[(PHASE - 1) * blocks_per_phase + blk] = total;
      }
    }
  }
}

// Dynamic shared memory the on-chip path may use on the current device.
inline int64_t on_chip_budget() {
  return std::min<int64_t>(kOnChipMaxBytes, opt_in_shared_bytes() - kStaticSharedReserve);
}

template <typename Policy>
void l2_family_launch(const Policy& p, const at::Tensor& x_adv, int64_t batch, int64_t n) {
  using scalar_t = typename Policy::storage_t;
  using T = typename Policy::T;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t shared_bytes = tensors_read<Policy>() * n * static_cast<int64_t>(sizeof(scalar_t));
  with_pack_width<scalar_t>({p.a, p.g, p.x, p.p}, n, [&](auto vec) {
    constexpr int VEC = decltype(vec)::value;
    if (shared_bytes <= on_chip_budget()) {
      auto* kernel = &l2_on_chip_kernel<Policy, VEC>;
      if (shared_bytes > kDefaultDynamicShared) {
        allow_dynamic_shared(kernel, static_cast<int>(kOnChipMaxBytes));
      }
      const int blocks = static_cast<int>(std::min<int64_t>(batch, max_resident_blocks()));
      kernel<<<blocks, kThreads, shared_bytes, stream>>>(p, batch, n);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    // kReductions arrays of batch * chunks SquareSums (two T each).
    const at::Tensor partials = at::empty({Policy::kReductions * batch * chunks * 2},
                                          x_adv.options().dtype(c10::CppTypeToScalarType<T>::value));
    auto* sums = reinterpret_cast<SquareSum<T>*>(partials.data_ptr<T>());
    const int blocks = static_cast<int>(std::min<int64_t>(batch * chunks, max_resident_blocks()));
    const auto phase = [&](auto tag) {
      constexpr int PHASE = decltype(tag)::value;
      l2_chunked_kernel<Policy, VEC, PHASE><<<blocks, kThreads, 0, stream>>>(p, batch, n, chunks, sums);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    phase(std::integral_constant<int, 1>{});
    if constexpr (Policy::kReductions >= 2) {
      phase(std::integral_constant<int, 2>{});
    }
    if constexpr (Policy::kReductions >= 3) {
      phase(std::integral_constant<int, 3>{});
    }
    phase(std::integral_constant<int, Policy::kReductions + 1>{});
  });
}

void l2_step_launch(const StepCall& c) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.x_adv.scalar_type(), "l2_step_", [&] {
    using T = at::opmath_type<scalar_t>;
    const L2StepPolicy<scalar_t> p{c.x_adv.data_ptr<scalar_t>(),
                                   c.grad.data_ptr<scalar_t>(),
                                   c.x.data_ptr<scalar_t>(),
                                   nullptr,
                                   sample_scalar<T>(c.eps),
                                   sample_scalar<T>(c.alpha),
                                   mask_data(c.mask),
                                   static_cast<T>(c.lo),
                                   static_cast<T>(c.hi)};
    l2_family_launch(p, c.x_adv, c.batch(), c.per_sample());
  });
}

void l2_start_launch(const StartCall& c) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.x_adv.scalar_type(), "random_start_", [&] {
    using T = at::opmath_type<scalar_t>;
    const L2StartPolicy<scalar_t> p{c.x_adv.data_ptr<scalar_t>(),
                                    nullptr,
                                    c.x.data_ptr<scalar_t>(),
                                    nullptr,
                                    sample_scalar<T>(c.eps),
                                    c.radius_fraction->data_ptr<T>(),
                                    static_cast<T>(c.lo),
                                    static_cast<T>(c.hi)};
    l2_family_launch(p, c.x_adv, c.batch(), c.per_sample());
  });
}

void apgd_l2_launch(const ApgdCall& c) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.x_adv.scalar_type(), "apgd_step_", [&] {
    using T = at::opmath_type<scalar_t>;
    const ApgdL2Policy<scalar_t> p{c.x_adv.data_ptr<scalar_t>(),
                                   c.grad.data_ptr<scalar_t>(),
                                   c.x.data_ptr<scalar_t>(),
                                   c.x_prev.data_ptr<scalar_t>(),
                                   sample_scalar<T>(c.eps),
                                   sample_scalar<T>(c.eta),
                                   mask_data(c.mask),
                                   static_cast<T>(c.momentum),
                                   static_cast<T>(1.0 - c.momentum),
                                   static_cast<T>(c.lo),
                                   static_cast<T>(c.hi)};
    l2_family_launch(p, c.x_adv, c.batch(), c.per_sample());
  });
}

Kernels cuda_kernels() {
  return {&linf_step_launch, &l2_step_launch, &linf_start_launch, &l2_start_launch, &apgd_linf_launch,
          &apgd_l2_launch};
}

}  // namespace

TORCH_LIBRARY_IMPL(advfast, CUDA, m) { DeviceOps<&cuda_kernels>::register_into(m); }

}  // namespace advfast::cuda
