// Device-side plumbing for the CUDA ops: vector packs, overflow-free norm sums and their deterministic
// reductions over a group of threads. No op formulas here (those live in advfast/perturb.h).
#pragma once

#include "advfast/perturb.h"

#include <cuda_runtime.h>

#include <cstdint>

namespace advfast::cuda {

// A per-sample scalar on the device: values[b] when given, else fallback. Read once per sample (or per pack
// of the L-inf kernels), never per element of a per-sample loop.
template <typename T>
struct DeviceSampleScalar {
  const T* values;
  T fallback;
  __device__ T operator[](int64_t b) const { return values != nullptr ? values[b] : fallback; }
};

// VEC consecutive elements moved as one load or store (128 bits when VEC * sizeof(scalar_t) == 16).
template <typename scalar_t, int VEC>
struct alignas(sizeof(scalar_t) * VEC) Pack {
  scalar_t v[VEC];
};

// No __restrict__ and no read-only (__ldg) path anywhere: grad may be x_adv itself (the PGD steps allow it),
// and every kernel reads an element before the same thread writes it, which is correct for aliasing
// pointers only without those promises.
template <typename scalar_t, int VEC>
__device__ __forceinline__ Pack<scalar_t, VEC> load_pack(const scalar_t* p) {
  return *reinterpret_cast<const Pack<scalar_t, VEC>*>(p);
}

template <typename scalar_t, int VEC>
__device__ __forceinline__ void store_pack(scalar_t* p, const Pack<scalar_t, VEC>& value) {
  *reinterpret_cast<Pack<scalar_t, VEC>*>(p) = value;
}

// ---- per-sample sums of squares ---------------------------------------------------------------------------
// NormSum<T> accumulates sum(v^2) over values v of math type T without overflow for any finite v, in double:
//   float: the square of a float is exact in double (24-bit mantissas give a 48-bit product) and at most
//          (3.4e38)^2 = 1.2e77, so a plain double sum neither overflows nor loses more than the rounding of
//          the additions; the norm then rounds like the reference's vector_norm(x.double()).to(float32).
//   double: the overflow-safe split pair SquareSum<double> of advfast/perturb.h (entries above 2^480 summed
//          scaled), as on the CPU.
// Double arithmetic costs 2 flops per element and norm, far below what the memory bandwidth leaves on the
// sm_80 / sm_90 parts this builds for (FP64 at half the FP32 rate).

template <typename T>
struct NormSum;

template <>
struct NormSum<float> {
  double sum;

  __device__ static NormSum zero() { return {0.0}; }
  __device__ void add(float v) {
    const double w = static_cast<double>(v);
    sum = __dadd_rn(sum, __dmul_rn(w, w));
  }
  __device__ NormSum operator+(const NormSum& other) const { return {__dadd_rn(sum, other.sum)}; }
  __device__ double norm() const { return ::sqrt(sum); }
  __device__ NormSum shuffle_xor(unsigned lanes, int offset, int width) const {
    return {__shfl_xor_sync(lanes, sum, offset, width)};
  }
};

template <>
struct NormSum<double> {
  SquareSum<double> pair;

  __device__ static NormSum zero() { return {SquareSum<double>::zero()}; }
  __device__ void add(double v) { pair.add(v); }
  __device__ NormSum operator+(const NormSum& other) const { return {pair + other.pair}; }
  __device__ double norm() const { return pair.norm(); }
  __device__ NormSum shuffle_xor(unsigned lanes, int offset, int width) const {
    return {{__shfl_xor_sync(lanes, pair.small, offset, width), __shfl_xor_sync(lanes, pair.big, offset, width)}};
  }
};

// Sum over the `width` consecutive lanes of a warp (width a power of two <= 32; `lanes` the bit mask of
// exactly those lanes) by a butterfly: at each stage lane i adds lane i^m's value and lane i^m adds lane i's,
// which is the same sum (IEEE addition commutes), so every lane ends with the same bits, in an order fixed
// by the lane numbers alone (deterministic).
template <typename T>
__device__ __forceinline__ NormSum<T> butterfly_sum(NormSum<T> v, unsigned lanes, int width) {
  for (int offset = width / 2; offset > 0; offset /= 2) {
    v = v + v.shuffle_xor(lanes, offset, width);
  }
  return v;
}

// The mask of the `width` lanes (a power of two <= 32) of the calling thread's lane group.
__device__ __forceinline__ unsigned group_lanes(int width) {
  if (width >= 32) {
    return 0xffffffffu;
  }
  const unsigned lane = threadIdx.x & 31u;
  return ((1u << width) - 1u) << (lane & ~static_cast<unsigned>(width - 1));
}

// Sum of v over a group of `width` threads (a power of two from 1 to blockDim.x; groups are aligned runs of
// threadIdx.x), returned to every thread of the group with the same bits.
//   width <= 32: one butterfly inside the warp, no barrier.
//   width > 32:  a butterfly per warp, the warp totals into slots[warp] (one __syncthreads), then every thread
//                adds its group's warp totals in warp order.
// Every thread of the block must call it (it may contain a barrier); `slots` (blockDim.x / 32 entries) must
// not be read by an earlier call that some thread may still be in: callers use separate slots per reduction
// and a barrier before reusing them.
template <typename T>
__device__ NormSum<T> group_sum(NormSum<T> v, int width, NormSum<T>* slots) {
  if (width <= 32) {
    return butterfly_sum(v, group_lanes(width), width);
  }
  v = butterfly_sum(v, 0xffffffffu, 32);
  const int warp = static_cast<int>(threadIdx.x >> 5);
  if ((threadIdx.x & 31u) == 0) {
    slots[warp] = v;
  }
  __syncthreads();
  const int warps_per_group = width / 32;
  const int first = warp - warp % warps_per_group;
  NormSum<T> total = slots[first];
  for (int w = 1; w < warps_per_group; ++w) {
    total = total + slots[first + w];
  }
  return total;
}

// Sum of values[0..count) by one warp (all 32 lanes call it): lane l adds entries l, l + 32, ... in order, then
// a butterfly; the order depends on count alone, so every warp that folds the same partials gets the same
// bits.
template <typename T>
__device__ NormSum<T> warp_fold(const NormSum<T>* values, int64_t count) {
  NormSum<T> v = NormSum<T>::zero();
  for (int64_t k = threadIdx.x & 31u; k < count; k += 32) {
    v = v + values[k];
  }
  return butterfly_sum(v, 0xffffffffu, 32);
}

}  // namespace advfast::cuda
