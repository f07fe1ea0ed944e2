// CUDA implementations of the advfast ops, on the current stream. Element math comes from advfast/perturb.h;
// this file only decides who touches which element.
//
// L-inf ops: one grid-stride pass with 128-bit loads and stores.
// L2 ops (a reduction per sample before the write):
//   on chip  - a sample that fits in shared memory is loaded once by one block, reduced there and written:
//              one read and one write of memory, as for L-inf;
//   chunked  - larger samples: blocks over (sample, chunk) write per-chunk partial sums into a small buffer that
//              the next phase folds in a fixed order (deterministic, no atomics): three passes.
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
// Dynamic shared memory the on-chip L2 path may use: a block gets 48 KiB without opting in, of which the
// block reduction's static buffer takes a little (256 bytes are reserved for it).
constexpr int64_t kOnChipBytes = 48 * 1024 - 256;
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

// ---- L2 family: per-sample reductions, then a write -----------------------------------------------------
// A policy says what one L2-family op computes: term1 summed per sample gives state s1 (after1); if
// kTwoReductions, term2 (which needs s1) summed gives s2 (after2); out() is the element written.

template <typename scalar_t>
struct L2StepPolicy {
  using storage_t = scalar_t;
  using T = at::opmath_type<scalar_t>;
  static constexpr bool kUsesGrad = true;
  static constexpr bool kTwoReductions = true;
  scalar_t* a;
  const scalar_t* g;
  const scalar_t* x;
  DeviceSampleScalar<T> eps;
  DeviceSampleScalar<T> alpha;
  const bool* mask;
  T lo;
  T hi;

  __device__ bool active(int64_t b) const { return mask == nullptr || mask[b]; }
  __device__ T term1(T /*a*/, T gv, T /*x*/) const { return l2_grad_square<T>(gv); }
  __device__ T after1(int64_t /*b*/, T sum) const { return l2_grad_denominator<T>(device_sqrt(sum)); }
  __device__ T term2(int64_t b, T av, T gv, T xv, T s1) const {
    const T d = l2_delta<T>(av, gv, xv, alpha[b], s1);
    return d * d;
  }
  __device__ T after2(int64_t b, T sum) const { return l2_projection_factor<T>(device_sqrt(sum), eps[b]); }
  __device__ T out(int64_t b, T av, T gv, T xv, T s1, T s2) const {
    return l2_apply<T>(xv, l2_delta<T>(av, gv, xv, alpha[b], s1), s2, lo, hi);
  }
};

// The noise z sits in a; g is unused.
template <typename scalar_t>
struct L2StartPolicy {
  using storage_t = scalar_t;
  using T = at::opmath_type<scalar_t>;
  static constexpr bool kUsesGrad = false;
  static constexpr bool kTwoReductions = false;
  scalar_t* a;
  const scalar_t* g;
  const scalar_t* x;
  DeviceSampleScalar<T> eps;
  const T* radius_fraction;
  T lo;
  T hi;

  __device__ bool active(int64_t /*b*/) const { return true; }
  __device__ T term1(T z, T /*g*/, T /*x*/) const { return z * z; }
  __device__ T after1(int64_t b, T sum) const {
    return l2_start_scale<T>(device_sqrt(sum), eps[b], radius_fraction[b]);
  }
  __device__ T term2(int64_t, T, T, T, T) const { return T(0); }
  __device__ T after2(int64_t, T) const { return T(0); }
  __device__ T out(int64_t /*b*/, T z, T /*g*/, T xv, T s1, T /*s2*/) const { return l2_start<T>(z, xv, s1, lo, hi); }
};

// One block per sample; the sample's tensors are read once into shared memory, reduced, and written once.
template <typename Policy, int VEC>
__global__ void __launch_bounds__(kThreads) l2_on_chip_kernel(Policy p, int64_t batch, int64_t n) {
  using scalar_t = typename Policy::storage_t;
  using T = typename Policy::T;
  using P = Pack<scalar_t, VEC>;
  extern __shared__ __align__(16) unsigned char shared_raw[];
  __shared__ T warp_sums[kThreads / 32];
  scalar_t* sa = reinterpret_cast<scalar_t*>(shared_raw);
  scalar_t* sg = sa + n;
  scalar_t* sx = Policy::kUsesGrad ? sg + n : sa + n;
  const int64_t packs = n / VEC;
  for (int64_t b = blockIdx.x; b < batch; b += gridDim.x) {
    if (!p.active(b)) {
      continue;
    }
    const int64_t base = b * n;
    T acc = T(0);
    for (int64_t j = threadIdx.x; j < packs; j += blockDim.x) {
      const P av = load_pack<scalar_t, VEC>(p.a + base + j * VEC);
      const P xv = load_pack<scalar_t, VEC>(p.x + base + j * VEC);
      P gv = av;
      if constexpr (Policy::kUsesGrad) {
        gv = load_pack<scalar_t, VEC>(p.g + base + j * VEC);
      }
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        sa[j * VEC + k] = av.v[k];
        sx[j * VEC + k] = xv.v[k];
        if constexpr (Policy::kUsesGrad) {
          sg[j * VEC + k] = gv.v[k];
        }
        acc += p.term1(static_cast<T>(av.v[k]), static_cast<T>(gv.v[k]), static_cast<T>(xv.v[k]));
      }
    }
    const T s1 = p.after1(b, block_sum<T>(acc, warp_sums));
    T s2 = T(0);
    if constexpr (Policy::kTwoReductions) {
      acc = T(0);
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
        const T gj = Policy::kUsesGrad ? static_cast<T>(sg[j]) : T(0);
        acc += p.term2(b, static_cast<T>(sa[j]), gj, static_cast<T>(sx[j]), s1);
      }
      s2 = p.after2(b, block_sum<T>(acc, warp_sums));
    }
    for (int64_t j = threadIdx.x; j < packs; j += blockDim.x) {
      P out;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const int64_t e = j * VEC + k;
        const T gj = Policy::kUsesGrad ? static_cast<T>(sg[e]) : T(0);
        out.v[k] = static_cast<scalar_t>(p.out(b, static_cast<T>(sa[e]), gj, static_cast<T>(sx[e]), s1, s2));
      }
      store_pack<scalar_t, VEC>(p.a + base + j * VEC, out);
    }
    __syncthreads();  // the next sample reuses the shared buffers
  }
}

// Chunked path, phase PHASE of 1 (sum term1), 2 (sum term2) or 3 (write). Block k handles chunk k % chunks
// of sample k / chunks; the partial sums of phase 1 and 2 are folded by every later block in chunk order.
template <typename Policy, int VEC, int PHASE>
__global__ void __launch_bounds__(kThreads) l2_chunked_kernel(
    Policy p, int64_t batch, int64_t n, int64_t chunks, typename Policy::T* partial1,
    typename Policy::T* partial2) {
  using scalar_t = typename Policy::storage_t;
  using T = typename Policy::T;
  using P = Pack<scalar_t, VEC>;
  __shared__ T warp_sums[kThreads / 32];
  for (int64_t blk = blockIdx.x; blk < batch * chunks; blk += gridDim.x) {
    const int64_t b = blk / chunks;
    if (!p.active(b)) {
      continue;
    }
    const int64_t base = b * n;
    const int64_t begin = (blk % chunks) * kChunk;
    const int64_t end = begin + kChunk < n ? begin + kChunk : n;
    T s1 = T(0);
    T s2 = T(0);
    if constexpr (PHASE >= 2) {
      s1 = p.after1(b, ordered_sum(partial1 + b * chunks, chunks));
    }
    if constexpr (PHASE == 3 && Policy::kTwoReductions) {
      s2 = p.after2(b, ordered_sum(partial2 + b * chunks, chunks));
    }
    T acc = T(0);
    for (int64_t e = begin + threadIdx.x * VEC; e < end; e += static_cast<int64_t>(blockDim.x) * VEC) {
      P av = load_pack<scalar_t, VEC>(p.a + base + e);
      const P xv = load_pack<scalar_t, VEC>(p.x + base + e);
      P gv = av;
      if constexpr (Policy::kUsesGrad) {
        gv = load_pack<scalar_t, VEC>(p.g + base + e);
      }
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const T ak = static_cast<T>(av.v[k]);
        const T gk = static_cast<T>(gv.v[k]);
        const T xk = static_cast<T>(xv.v[k]);
        if constexpr (PHASE == 1) {
          acc += p.term1(ak, gk, xk);
        } else if constexpr (PHASE == 2) {
          acc += p.term2(b, ak, gk, xk, s1);
        } else {
          av.v[k] = static_cast<scalar_t>(p.out(b, ak, gk, xk, s1, s2));
        }
      }
      if constexpr (PHASE == 3) {
        store_pack<scalar_t, VEC>(p.a + base + e, av);
      }
    }
    if constexpr (PHASE < 3) {
      const T total = block_sum<T>(acc, warp_sums);
      if (threadIdx.x == 0) {
        (PHASE == 1 ? partial1 : partial2)[blk] = total;
      }
    }
  }
}

template <typename Policy>
void l2_family_launch(const Policy& p, const at::Tensor& x_adv, int64_t batch, int64_t n) {
  using scalar_t = typename Policy::storage_t;
  using T = typename Policy::T;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t tensors = Policy::kUsesGrad ? 3 : 2;
  const int64_t shared_bytes = tensors * n * static_cast<int64_t>(sizeof(scalar_t));
  with_pack_width<scalar_t>({p.a, p.g, p.x}, n, [&](auto vec) {
    constexpr int VEC = decltype(vec)::value;
    if (shared_bytes <= kOnChipBytes) {
      const int blocks = static_cast<int>(std::min<int64_t>(batch, max_resident_blocks()));
      l2_on_chip_kernel<Policy, VEC><<<blocks, kThreads, shared_bytes, stream>>>(p, batch, n);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    const at::Tensor partials = at::empty({2, batch * chunks}, x_adv.options().dtype(c10::CppTypeToScalarType<T>::value));
    T* partial1 = partials.data_ptr<T>();
    T* partial2 = partial1 + batch * chunks;
    const int blocks = static_cast<int>(std::min<int64_t>(batch * chunks, max_resident_blocks()));
    l2_chunked_kernel<Policy, VEC, 1><<<blocks, kThreads, 0, stream>>>(p, batch, n, chunks, partial1, partial2);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if constexpr (Policy::kTwoReductions) {
      l2_chunked_kernel<Policy, VEC, 2><<<blocks, kThreads, 0, stream>>>(p, batch, n, chunks, partial1, partial2);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    l2_chunked_kernel<Policy, VEC, 3><<<blocks, kThreads, 0, stream>>>(p, batch, n, chunks, partial1, partial2);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void l2_step_launch(const StepCall& c) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.x_adv.scalar_type(), "l2_step_", [&] {
    using T = at::opmath_type<scalar_t>;
    const L2StepPolicy<scalar_t> p{c.x_adv.data_ptr<scalar_t>(), c.grad.data_ptr<scalar_t>(),
                                   c.x.data_ptr<scalar_t>(), sample_scalar<T>(c.eps), sample_scalar<T>(c.alpha),
                                   mask_data(c.mask), static_cast<T>(c.lo), static_cast<T>(c.hi)};
    l2_family_launch(p, c.x_adv, c.batch(), c.per_sample());
  });
}

void l2_start_launch(const StartCall& c) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.x_adv.scalar_type(), "random_start_", [&] {
    using T = at::opmath_type<scalar_t>;
    scalar_t* a = c.x_adv.data_ptr<scalar_t>();
    const L2StartPolicy<scalar_t> p{a, a, c.x.data_ptr<scalar_t>(), sample_scalar<T>(c.eps),
                                    c.radius_fraction->data_ptr<T>(), static_cast<T>(c.lo), static_cast<T>(c.hi)};
    l2_family_launch(p, c.x_adv, c.batch(), c.per_sample());
  });
}

Kernels cuda_kernels() { return {&linf_step_launch, &l2_step_launch, &linf_start_launch, &l2_start_launch}; }

}  // namespace

TORCH_LIBRARY_IMPL(advfast, CUDA, m) { DeviceOps<&cuda_kernels>::register_into(m); }

}  // namespace advfast::cuda
