// The L2-family kernels (the L2 step, the L2 random start, the APGD L2 step): one to three per-sample norms,
// each depending on the one before, then the write.
//
//   on chip  - a group of threads per sample (8 to 512: a sub-warp for a 64-element token, a block for a
//              CIFAR image) reads the sample once into shared memory, reduces there, and writes it once: one
//              read and one write of memory, as for L-inf. Each thread copies its packs (cp.async, 128 bits,
//              all in flight at once) into its own shared-memory slots (pack j of a tensor at slot j;
//              consecutive threads own consecutive 16-byte slots, so every 128-bit access is free of bank
//              conflicts) and reads back only those, so the data needs no barrier; only the reductions
//              synchronise (a butterfly inside a warp, one barrier per norm for groups wider than a warp).
//   chunked  - samples too large for the block's shared memory: blocks over (sample, chunk) write one partial
//              sum per chunk into a small buffer, which the next phase's blocks fold in a fixed order (one
//              warp, deterministic, no atomics): one pass per norm, plus the write.
//
// Why the chunked path keeps one exact pass per norm rather than deriving ||d||^2 = ||a-x||^2 + 2 alpha
// <a-x,g>/D + alpha^2 ||g||^2/D^2 from one pass of three sums: that is the norm of the exact displacement, not
// of the float32 d the kernel writes. Each element of d is rounded (|error| ~ 2^-24 (|a| + |x|)), and for an
// image of n elements the two norms differ by up to ~2^-24 sqrt(n) / ||d|| relative (1e-4 for 3x224x224):
// the written point could leave the eps-ball by that much and differ from the reference by more than the
// CPU's tolerance, and where ||a-x|| and alpha u nearly cancel the cancellation is unbounded. The
// deterministic, exact passes keep the contract; the on-chip path covers every sample that fits in the
// device's full shared-memory carve-out.
//
// Edges: a sample whose start is not 16-byte aligned (sizes that are not a multiple of the pack width, or
// views with an odd storage offset) has fewer than VEC head elements before its first boundary and fewer than
// VEC tail elements after its last whole pack; threads 0..VEC-1 of its group do those one by one and keep them
// in registers, and the body still moves in 128-bit packs.
#pragma once

#include "device_math.cuh"

#include <ATen/OpMathType.h>
#include <cuda_pipeline.h>

#include <cstdint>
#include <type_traits>

namespace advfast::cuda {

// The values of one element: a (x_adv, or a random start's noise), g (grad; when kUsesGrad), x, and p (x_prev;
// when kHasPrev: the op then also writes x_prev <- a).
template <typename T>
struct Element {
  T a;
  T g;
  T x;
  T p;
};

// A policy says what one L2-family op computes. Per sample it builds a State once (the sample's eps and step
// size read from their [B] tensors a single time, then the results of the norms); reduction R = 1..kReductions
// is the norm of value<R>(state, element) over the sample, and after<R> stores what later values need;
// out() is the element written to x_adv.

template <typename scalar_t>
struct L2StepPolicy {
  using storage_t = scalar_t;
  using T = at::opmath_type<scalar_t>;
  static constexpr bool kUsesGrad = true;
  static constexpr bool kHasPrev = false;
  static constexpr int kReductions = 2;  // ||g||, ||d||
  scalar_t* a;
  const scalar_t* g;  // may be a itself
  const scalar_t* x;
  scalar_t* p;  // unused
  DeviceSampleScalar<T> eps;
  DeviceSampleScalar<T> alpha;
  const bool* mask;
  T lo;
  T hi;

  struct State {
    T eps;
    T alpha;
    T grad_denominator;
    T factor;
  };
  __device__ bool active(int64_t b) const { return mask == nullptr || mask[b]; }
  __device__ State state(int64_t b) const { return {eps[b], alpha[b], T(0), T(0)}; }
  __device__ T delta(const State& s, const Element<T>& e) const {
    return l2_delta<T>(e.a, e.g, e.x, s.alpha, s.grad_denominator);
  }
  template <int R>
  __device__ T value(const State& s, const Element<T>& e) const {
    if constexpr (R == 1) {
      return l2_grad_value<T>(e.g);
    } else {
      return delta(s, e);
    }
  }
  template <int R>
  __device__ void after(State& s, double norm) const {
    if constexpr (R == 1) {
      s.grad_denominator = l2_grad_denominator<T>(static_cast<T>(norm));
    } else {
      s.factor = l2_projection_factor<T>(static_cast<T>(norm), s.eps);
    }
  }
  __device__ T out(const State& s, const Element<T>& e) const {
    return l2_apply<T>(e.x, delta(s, e), s.factor, lo, hi);
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

  struct State {
    T eps;
    T radius_fraction;
    T scale;
  };
  __device__ bool active(int64_t /*b*/) const { return true; }
  __device__ State state(int64_t b) const { return {eps[b], radius_fraction[b], T(0)}; }
  template <int R>
  __device__ T value(const State& /*s*/, const Element<T>& e) const {
    return e.a;
  }
  template <int R>
  __device__ void after(State& s, double norm) const {
    s.scale = l2_start_scale<T>(static_cast<T>(norm), s.eps, s.radius_fraction);
  }
  __device__ T out(const State& s, const Element<T>& e) const { return l2_start<T>(e.a, e.x, s.scale, lo, hi); }
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

  struct State {
    T eps;
    T eta;
    T grad_denominator;
    T step_factor;
    T momentum_factor;
  };
  __device__ bool active(int64_t b) const { return mask == nullptr || mask[b]; }
  __device__ State state(int64_t b) const { return {eps[b], eta[b], T(0), T(0), T(0)}; }
  // w = a + eta*u - x;  w2 = a + (z - a)*mu + (a - p)*(1 - mu) - x with z = P(a + eta*u).
  __device__ T step_delta(const State& s, const Element<T>& e) const {
    return l2_delta<T>(e.a, e.g, e.x, s.eta, s.grad_denominator);
  }
  __device__ T momentum_delta(const State& s, const Element<T>& e) const {
    const T z = l2_apply<T>(e.x, step_delta(s, e), s.step_factor, lo, hi);
    return apgd_l2_momentum_delta<T>(e.a, e.p, z, e.x, mu, one_minus_mu);
  }
  template <int R>
  __device__ T value(const State& s, const Element<T>& e) const {
    if constexpr (R == 1) {
      return l2_grad_value<T>(e.g);
    } else if constexpr (R == 2) {
      return step_delta(s, e);
    } else {
      return momentum_delta(s, e);
    }
  }
  template <int R>
  __device__ void after(State& s, double norm) const {
    if constexpr (R == 1) {
      s.grad_denominator = l2_grad_denominator<T>(static_cast<T>(norm));
    } else if constexpr (R == 2) {
      s.step_factor = l2_projection_factor<T>(static_cast<T>(norm), s.eps);
    } else {
      s.momentum_factor = l2_projection_factor<T>(static_cast<T>(norm), s.eps);
    }
  }
  __device__ T out(const State& s, const Element<T>& e) const {
    return l2_apply<T>(e.x, momentum_delta(s, e), s.momentum_factor, lo, hi);
  }
};

template <typename Policy>
constexpr int tensors_read() {
  return 2 + (Policy::kUsesGrad ? 1 : 0) + (Policy::kHasPrev ? 1 : 0);
}

// The packs of one element range of every tensor an op reads, in registers.
template <typename Policy, int VEC>
struct Packs {
  using scalar_t = typename Policy::storage_t;
  using T = typename Policy::T;
  Pack<scalar_t, VEC> a;
  Pack<scalar_t, VEC> x;
  Pack<scalar_t, VEC> g;
  Pack<scalar_t, VEC> p;

  __device__ static Packs load(const Policy& pol, int64_t e) {
    Packs out;
    out.a = load_pack<scalar_t, VEC>(pol.a + e);
    out.x = load_pack<scalar_t, VEC>(pol.x + e);
    if constexpr (Policy::kUsesGrad) {
      out.g = load_pack<scalar_t, VEC>(pol.g + e);
    }
    if constexpr (Policy::kHasPrev) {
      out.p = load_pack<scalar_t, VEC>(pol.p + e);
    }
    return out;
  }
  __device__ Element<T> element(int k) const {
    return {static_cast<T>(a.v[k]), Policy::kUsesGrad ? static_cast<T>(g.v[k]) : T(0), static_cast<T>(x.v[k]),
            Policy::kHasPrev ? static_cast<T>(p.v[k]) : T(0)};
  }
  // x_adv <- out(...) for each element; x_prev <- the old x_adv.
  __device__ void write(const Policy& pol, const typename Policy::State& s, int64_t e) const {
    Pack<scalar_t, VEC> result;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      result.v[k] = static_cast<scalar_t>(pol.out(s, element(k)));
    }
    store_pack<scalar_t, VEC>(pol.a + e, result);
    if constexpr (Policy::kHasPrev) {
      store_pack<scalar_t, VEC>(pol.p + e, a);
    }
  }
  template <int R>
  __device__ void accumulate(const Policy& pol, const typename Policy::State& s, NormSum<T>& acc) const {
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      acc.add(pol.template value<R>(s, element(k)));
    }
  }
};

// One edge element (head or tail) in registers.
template <typename Policy>
struct Edge {
  using T = typename Policy::T;
  bool present;
  int64_t index;
  Element<T> e;

  __device__ static Edge load(const Policy& pol, bool present, int64_t i) {
    Edge out{present, i, {T(0), T(0), T(0), T(0)}};
    if (present) {
      out.e = {static_cast<T>(pol.a[i]), Policy::kUsesGrad ? static_cast<T>(pol.g[i]) : T(0), static_cast<T>(pol.x[i]),
               Policy::kHasPrev ? static_cast<T>(pol.p[i]) : T(0)};
    }
    return out;
  }
  template <int R>
  __device__ void accumulate(const Policy& pol, const typename Policy::State& s, NormSum<T>& acc) const {
    if (present) {
      acc.add(pol.template value<R>(s, e));
    }
  }
  __device__ void write(const Policy& pol, const typename Policy::State& s) const {
    using scalar_t = typename Policy::storage_t;
    if (present) {
      pol.a[index] = static_cast<scalar_t>(pol.out(s, e));
      if constexpr (Policy::kHasPrev) {
        pol.p[index] = static_cast<scalar_t>(e.a);  // exact: e.a is a storage value widened
      }
    }
  }
};

// Where sample b's elements lie against 16-byte boundaries: [0, head) and [head + body * VEC, n) one by one,
// body packs between. `align_offset` is the common element offset of the tensors' starts (launch_config.cuh).
struct SampleSplit {
  int64_t head;
  int64_t body;
  int64_t tail;
};

template <int VEC>
__device__ __forceinline__ SampleSplit split_sample(int64_t b, int64_t n, int align_offset) {
  const int64_t offset = (align_offset + (b % VEC) * (n % VEC)) % VEC;  // (align_offset + b * n) % VEC, no overflow
  const int64_t head = (VEC - offset) % VEC < n ? (VEC - offset) % VEC : n;
  const int64_t body = (n - head) / VEC;
  return {head, body, n - head - body * VEC};
}

// ---- on chip ------------------------------------------------------------------------------------------

// Widest group: 512 threads, so that __launch_bounds__(512, 1) leaves up to 128 registers a thread (ptxas -v:
// no spills, where 1024 threads' 64 registers spilled in the float64 and APGD kernels, and a plain (512)
// let ptxas spill to reach 64); about kPacksPerThread packs each still covers every sample that the largest
// shared memory holds.
constexpr int kMaxGroupThreads = 512;

// dst (shared) <- src (global), one pack. 16-byte packs go by cp.async (sm_80+; <cuda_pipeline.h> falls back
// to a plain copy on older parts): global to shared without registers, so every thread has all of its packs
// of every tensor in flight at once, whatever the sample size. Element-wise packs (VEC = 1, 2 to 8 bytes;
// cp.async needs 4, 8 or 16) copy through a register.
template <typename scalar_t, int VEC>
__device__ __forceinline__ void copy_to_shared(Pack<scalar_t, VEC>* dst, const scalar_t* src) {
  if constexpr (sizeof(Pack<scalar_t, VEC>) == 16) {
    __pipeline_memcpy_async(dst, src, 16);
  } else {
    *dst = load_pack<scalar_t, VEC>(src);
  }
}

struct OnChipShape {
  int64_t batch;
  int64_t n;
  int align_offset;
  int group_threads;  // a power of two, 8..kMaxGroupThreads; blockDim.x is a multiple of it
  int64_t capacity;   // packs per tensor of one group's shared region (n / VEC: no sample has more)
};

template <typename Policy, int VEC>
__global__ void __launch_bounds__(kMaxGroupThreads, 1) l2_on_chip_kernel(Policy pol, OnChipShape shape) {
  using scalar_t = typename Policy::storage_t;
  using T = typename Policy::T;
  using P = Pack<scalar_t, VEC>;
  using Ps = Packs<Policy, VEC>;
  constexpr int kTensors = tensors_read<Policy>();
  extern __shared__ __align__(16) unsigned char shared_raw[];
  __shared__ NormSum<T> slots[Policy::kReductions][kMaxGroupThreads / 32];

  const int width = shape.group_threads;
  const int lane = static_cast<int>(threadIdx.x) & (width - 1);
  const int group = static_cast<int>(threadIdx.x) / width;
  const int groups = static_cast<int>(blockDim.x) / width;
  const int64_t cap = shape.capacity;
  // This group's region: tensor t's slots at t * cap (a, x, then g and p where read).
  P* const region = reinterpret_cast<P*>(shared_raw) + static_cast<int64_t>(group) * kTensors * cap;
  P* const s_a = region;
  P* const s_x = region + cap;
  P* const s_g = region + (Policy::kUsesGrad ? 2 : 1) * cap;
  P* const s_p = region + (kTensors - 1) * cap;
  const auto from_shared = [&](int64_t j) {
    Ps v;
    v.a = s_a[j];
    v.x = s_x[j];
    if constexpr (Policy::kUsesGrad) {
      v.g = s_g[j];
    }
    if constexpr (Policy::kHasPrev) {
      v.p = s_p[j];
    }
    return v;
  };

  // Every thread of a block runs the same rounds (groups past the batch or masked out take part with no
  // elements), so the barriers inside the group reductions are reached by all.
  for (int64_t first = static_cast<int64_t>(blockIdx.x) * groups; first < shape.batch;
       first += static_cast<int64_t>(gridDim.x) * groups) {
    const int64_t b = first + group;
    const bool active = b < shape.batch && pol.active(b);
    SampleSplit split{0, 0, 0};
    typename Policy::State s{};
    if (active) {
      split = split_sample<VEC>(b, shape.n, shape.align_offset);
      s = pol.state(b);
    }
    const int64_t start = b * shape.n;
    const int64_t body_start = start + split.head;

    // The one read of the sample: thread `lane` copies packs lane, lane + width, ... of each tensor into its
    // own slots, then waits for its own copies. It reads back only those slots, so the data needs no barrier.
    for (int64_t j = lane; j < split.body; j += width) {
      const int64_t e = body_start + j * VEC;
      copy_to_shared<scalar_t, VEC>(s_a + j, pol.a + e);
      copy_to_shared<scalar_t, VEC>(s_x + j, pol.x + e);
      if constexpr (Policy::kUsesGrad) {
        copy_to_shared<scalar_t, VEC>(s_g + j, pol.g + e);
      }
      if constexpr (Policy::kHasPrev) {
        copy_to_shared<scalar_t, VEC>(s_p + j, pol.p + e);
      }
    }
    const Edge<Policy> head = Edge<Policy>::load(pol, lane < split.head, start + lane);
    const Edge<Policy> tail = Edge<Policy>::load(pol, lane < split.tail, body_start + split.body * VEC + lane);
    if constexpr (sizeof(P) == 16) {
      __pipeline_commit();
      __pipeline_wait_prior(0);
    }

    // The norms, one after the other, each from the slots and the edges in registers.
    const auto reduction = [&](auto tag) {
      constexpr int R = decltype(tag)::value;
      if constexpr (R <= Policy::kReductions) {
        NormSum<T> sum = NormSum<T>::zero();
        for (int64_t j = lane; j < split.body; j += width) {
          from_shared(j).template accumulate<R>(pol, s, sum);
        }
        head.template accumulate<R>(pol, s, sum);
        tail.template accumulate<R>(pol, s, sum);
        pol.template after<R>(s, group_sum<T>(sum, width, slots[R - 1]).norm());
      }
    };
    reduction(std::integral_constant<int, 1>{});
    reduction(std::integral_constant<int, 2>{});
    reduction(std::integral_constant<int, 3>{});

    // The one write.
    for (int64_t j = lane; j < split.body; j += width) {
      from_shared(j).write(pol, s, body_start + j * VEC);
    }
    head.write(pol, s);
    tail.write(pol, s);
    // Before a next round: every read of this round's reduction slots and of this thread's data slots is
    // complete before they are written again (by other threads, and by this thread's cp.async, which program
    // order alone does not order after its earlier shared loads).
    __syncthreads();
  }
}

// ---- chunked --------------------------------------------------------------------------------------------

constexpr int kChunkThreads = 256;
// Packs of each tensor a thread of a chunk loads before using any (independent loads in flight).
constexpr int kLoadBatch = 4;

struct ChunkedShape {
  int64_t batch;
  int64_t n;
  int align_offset;
  int64_t chunks;       // per sample
  int64_t chunk_packs;  // body packs per chunk (the last chunk of a sample may have fewer)
};

// Phase PHASE of the chunked path: 1..kReductions write chunk partials of value<PHASE>, kReductions + 1
// writes the result. Block blk handles chunk blk % chunks of sample blk / chunks; partials[(R - 1) * batch *
// chunks + b * chunks + c] is reduction R's sum over chunk c of sample b. Chunk 0 also does the sample's head
// elements, the last chunk its tail.
template <typename Policy, int VEC, int PHASE>
__global__ void __launch_bounds__(kChunkThreads) l2_chunked_kernel(Policy pol, ChunkedShape shape,
                                                                  NormSum<typename Policy::T>* partials) {
  using T = typename Policy::T;
  using Ps = Packs<Policy, VEC>;
  constexpr bool kWrite = PHASE > Policy::kReductions;
  __shared__ NormSum<T> slots[kChunkThreads / 32];
  __shared__ double folded[3];
  const int64_t per_phase = shape.batch * shape.chunks;
  for (int64_t blk = blockIdx.x; blk < per_phase; blk += gridDim.x) {
    const int64_t b = blk / shape.chunks;
    const int64_t c = blk - b * shape.chunks;
    if (!pol.active(b)) {  // the same for every thread of the block
      continue;
    }
    typename Policy::State s = pol.state(b);
    // The norms of earlier phases: one warp folds each from its chunk partials, in chunk order.
    if (threadIdx.x < 32) {
#pragma unroll
      for (int r = 1; r < PHASE && r <= Policy::kReductions; ++r) {
        const NormSum<T> total = warp_fold(partials + (r - 1) * per_phase + b * shape.chunks, shape.chunks);
        if (threadIdx.x == 0) {
          folded[r - 1] = total.norm();
        }
      }
    }
    __syncthreads();
    if constexpr (PHASE > 1) {
      pol.template after<1>(s, folded[0]);
    }
    if constexpr (PHASE > 2 && Policy::kReductions >= 2) {
      pol.template after<2>(s, folded[1]);
    }
    if constexpr (PHASE > 3 && Policy::kReductions >= 3) {
      pol.template after<3>(s, folded[2]);
    }

    const SampleSplit split = split_sample<VEC>(b, shape.n, shape.align_offset);
    const int64_t start = b * shape.n;
    const int64_t body_start = start + split.head;
    const int64_t j_begin = c * shape.chunk_packs;
    const int64_t j_end = j_begin + shape.chunk_packs < split.body ? j_begin + shape.chunk_packs : split.body;
    NormSum<T> acc = NormSum<T>::zero();
    for (int64_t j0 = j_begin + threadIdx.x; j0 < j_end; j0 += static_cast<int64_t>(blockDim.x) * kLoadBatch) {
      Ps v[kLoadBatch];
#pragma unroll
      for (int k = 0; k < kLoadBatch; ++k) {
        const int64_t j = j0 + static_cast<int64_t>(k) * blockDim.x;
        if (j < j_end) {
          v[k] = Ps::load(pol, body_start + j * VEC);
        }
      }
#pragma unroll
      for (int k = 0; k < kLoadBatch; ++k) {
        const int64_t j = j0 + static_cast<int64_t>(k) * blockDim.x;
        if (j < j_end) {
          if constexpr (kWrite) {
            v[k].write(pol, s, body_start + j * VEC);
          } else {
            v[k].template accumulate<PHASE>(pol, s, acc);
          }
        }
      }
    }
    const int t = static_cast<int>(threadIdx.x);
    const Edge<Policy> head = Edge<Policy>::load(pol, c == 0 && t < split.head, start + t);
    const Edge<Policy> tail =
        Edge<Policy>::load(pol, c == shape.chunks - 1 && t < split.tail, body_start + split.body * VEC + t);
    if constexpr (kWrite) {
      head.write(pol, s);
      tail.write(pol, s);
    } else {
      head.template accumulate<PHASE>(pol, s, acc);
      tail.template accumulate<PHASE>(pol, s, acc);
      const NormSum<T> total = group_sum<T>(acc, static_cast<int>(blockDim.x), slots);
      if (threadIdx.x == 0) {
        partials[(PHASE - 1) * per_phase + blk] = total;
      }
    }
    __syncthreads();  // folded and slots are rewritten by the block's next chunk
  }
}

}  // namespace advfast::cuda
