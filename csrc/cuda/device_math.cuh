// Device-side plumbing for the CUDA ops: vector packs, block reductions of SquareSum (advfast/perturb.h), grid
// sizing and shared-memory limits. No op formulas here.
#pragma once

#include "advfast/perturb.h"

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
__device__ __forceinline__ SquareSum<T> shuffle_down(const SquareSum<T>& v, int offset) {
  return {__shfl_down_sync(0xffffffffu, v.small, offset), __shfl_down_sync(0xffffffffu, v.big, offset)};
}

// Sum of v over the block (blockDim.x a multiple of 32, at most 32 warps), returned to every thread.
// warp_sums is a __shared__ array of blockDim.x / 32 entries; it may be reused as soon as this returns.
template <typename T>
__device__ SquareSum<T> block_sum(SquareSum<T> v, SquareSum<T>* warp_sums) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = v + shuffle_down(v, offset);
  }
  if (lane == 0) {
    warp_sums[warp] = v;
  }
  __syncthreads();
  if (warp == 0) {
    v = lane < warps ? warp_sums[lane] : SquareSum<T>::zero();
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
      v = v + shuffle_down(v, offset);
    }
    if (lane == 0) {
      warp_sums[0] = v;
    }
  }
  __syncthreads();
  const SquareSum<T> total = warp_sums[0];
  __syncthreads();
  return total;
}

// values[0] + values[1] + ... in that order: every block that folds the same partials gets the same bits.
template <typename T>
__device__ SquareSum<T> ordered_sum(const SquareSum<T>* values, int64_t count) {
  SquareSum<T> total = SquareSum<T>::zero();
  for (int64_t k = 0; k < count; ++k) {
    total = total + values[k];
  }
  return total;
}

constexpr int kMaxDevices = 64;

// A device attribute of the current device, queried once per device.
template <cudaDeviceAttr Attribute>
int device_attribute() {
  static std::array<int, kMaxDevices> cached{};
  static std::mutex lock;
  const int device = c10::cuda::current_device();
  std::lock_guard<std::mutex> guard(lock);
  if (device < kMaxDevices && cached[device] > 0) {
    return cached[device];
  }
  int value = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&value, Attribute, device));
  if (device < kMaxDevices) {
    cached[device] = value;
  }
  return value;
}

// Blocks that the current device runs at once with 256-thread blocks (8 per SM).
inline int max_resident_blocks() {
  return std::max(1, device_attribute<cudaDevAttrMultiProcessorCount>()) * 8;
}

// Dynamic shared memory a block may use on the current device once its kernel opted in (48 KiB without).
inline int64_t opt_in_shared_bytes() {
  return device_attribute<cudaDevAttrMaxSharedMemoryPerBlockOptin>();
}

// Lets `kernel` launch with up to `bytes` of dynamic shared memory on the current device (once per kernel and
// device; the attribute is a property of the function, not of a launch).
template <typename Kernel>
void allow_dynamic_shared(Kernel* kernel, int bytes) {
  static std::array<int, kMaxDevices> allowed{};
  static std::mutex lock;
  const int device = c10::cuda::current_device();
  std::lock_guard<std::mutex> guard(lock);
  if (device < kMaxDevices && allowed[device] >= bytes) {
    return;
  }
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  if (device < kMaxDevices) {
    allowed[device] = bytes;
  }
}

// Grid for a grid-stride loop over `items` with `threads` per block: enough blocks to cover the items, capped
// at a few waves of resident blocks (more only adds scheduling overhead).
inline int grid_size(int64_t items, int threads) {
  const int64_t needed = (items + threads - 1) / threads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(needed, 4LL * max_resident_blocks())));
}

}  // namespace advfast::cuda
