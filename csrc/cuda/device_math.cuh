// Device-side plumbing for the CUDA ops: vector packs, block reductions, grid sizing. No op formulas here.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <mutex>

namespace advfast::cuda {

// A per-sample scalar on the device: values[b] when given, else fallback.
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

template <typename scalar_t, int VEC>
__device__ __forceinline__ Pack<scalar_t, VEC> load_pack(const scalar_t* p) {
  return *reinterpret_cast<const Pack<scalar_t, VEC>*>(p);
}

template <typename scalar_t, int VEC>
__device__ __forceinline__ void store_pack(scalar_t* p, const Pack<scalar_t, VEC>& value) {
  *reinterpret_cast<Pack<scalar_t, VEC>*>(p) = value;
}

template <typename T>
__device__ __forceinline__ T device_sqrt(T v) {
  if constexpr (sizeof(T) == sizeof(float)) {
    return sqrtf(v);
  } else {
    return sqrt(v);
  }
}

// Sum of v over the block (blockDim.x a multiple of 32, at most 32 warps), returned to every thread.
// warp_sums is a __shared__ array of blockDim.x / 32 entries; it may be reused as soon as this returns.
template <typename T>
__device__ T block_sum(T v, T* warp_sums) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  if (lane == 0) {
    warp_sums[warp] = v;
  }
  __syncthreads();
  if (warp == 0) {
    v = lane < warps ? warp_sums[lane] : T(0);
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
      v += __shfl_down_sync(0xffffffffu, v, offset);
    }
    if (lane == 0) {
      warp_sums[0] = v;
    }
  }
  __syncthreads();
  const T total = warp_sums[0];
  __syncthreads();
  return total;
}

// values[0] + values[1] + ... in that order: every block that folds the same partials gets the same bits.
template <typename T>
__device__ T ordered_sum(const T* values, int64_t count) {
  T total = T(0);
  for (int64_t k = 0; k < count; ++k) {
    total += values[k];
  }
  return total;
}

// Blocks that the current device runs at once with 256-thread blocks (8 per SM); queried once per device.
inline int max_resident_blocks() {
  constexpr int kMaxDevices = 64;
  static std::array<int, kMaxDevices> cached{};
  static std::mutex lock;
  const int device = c10::cuda::current_device();
  std::lock_guard<std::mutex> guard(lock);
  if (device < kMaxDevices && cached[device] > 0) {
    return cached[device];
  }
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int blocks = std::max(1, sms) * 8;
  if (device < kMaxDevices) {
    cached[device] = blocks;
  }
  return blocks;
}

// Grid for a grid-stride loop over `items` with `threads` per block: enough blocks to cover the items, capped
// at a few waves of resident blocks (more only adds scheduling overhead).
inline int grid_size(int64_t items, int threads) {
  const int64_t needed = (items + threads - 1) / threads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(needed, 4LL * max_resident_blocks())));
}

}  // namespace advfast::cuda
