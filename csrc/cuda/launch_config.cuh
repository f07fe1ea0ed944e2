// Host-side launch decisions of the CUDA ops: device attributes, occupancy-derived grid sizes, the shared
// memory a kernel may opt in to, and the 16-byte alignment shared by a call's pointers. No kernels here.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <mutex>
#include <tuple>

namespace advfast::cuda {

// A device attribute of the current device, asked once per (attribute, device).
inline int device_attribute(cudaDeviceAttr attribute) {
  static std::map<std::pair<int, int>, int> cached;
  static std::mutex lock;
  const int device = c10::cuda::current_device();
  const std::lock_guard<std::mutex> guard(lock);
  const auto key = std::make_pair(static_cast<int>(attribute), device);
  const auto found = cached.find(key);
  if (found != cached.end()) {
    return found->second;
  }
  int value = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&value, attribute, device));
  cached.emplace(key, value);
  return value;
}

inline int multiprocessors() { return std::max(1, device_attribute(cudaDevAttrMultiProcessorCount)); }

// Blocks of `kernel` (with `threads` threads and `dynamic_shared` bytes) that the whole current device runs at
// once, from the occupancy calculator: it accounts for the kernel's registers and shared memory, which a
// fixed "8 blocks per SM" does not (an L2 kernel fits 5-6, and a grid sized for 8 then runs a second, mostly
// empty wave). Cached per (kernel, device, threads, bytes).
template <typename Kernel>
int resident_blocks(Kernel* kernel, int threads, int64_t dynamic_shared = 0) {
  static std::map<std::tuple<const void*, int, int, int64_t>, int> cached;
  static std::mutex lock;
  const int device = c10::cuda::current_device();
  const std::lock_guard<std::mutex> guard(lock);
  const auto key = std::make_tuple(reinterpret_cast<const void*>(kernel), device, threads, dynamic_shared);
  const auto found = cached.find(key);
  if (found != cached.end()) {
    return found->second;
  }
  int per_sm = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads,
                                                               static_cast<size_t>(dynamic_shared)));
  const int blocks = std::max(1, per_sm) * multiprocessors();
  cached.emplace(key, blocks);
  return blocks;
}

// Static shared memory of `kernel` (its __shared__ arrays), asked once per kernel and device.
template <typename Kernel>
int64_t static_shared_bytes(Kernel* kernel) {
  static std::map<std::pair<const void*, int>, int64_t> cached;
  static std::mutex lock;
  const int device = c10::cuda::current_device();
  const std::lock_guard<std::mutex> guard(lock);
  const auto key = std::make_pair(reinterpret_cast<const void*>(kernel), device);
  const auto found = cached.find(key);
  if (found != cached.end()) {
    return found->second;
  }
  cudaFuncAttributes attributes{};
  C10_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
  const auto bytes = static_cast<int64_t>(attributes.sharedSizeBytes);
  cached.emplace(key, bytes);
  return bytes;
}

// Dynamic shared memory `kernel` may use on the current device: everything a block may opt in to (227 KiB
// on sm_90, 163 KiB on sm_80: "the large carve-out"), less its static arrays. A sample that needs all of it
// runs one block per SM, which still keeps the whole sample's loads in flight at once.
template <typename Kernel>
int64_t dynamic_shared_budget(Kernel* kernel) {
  return device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin) - static_shared_bytes(kernel);
}

// Lets `kernel` launch with `bytes` of dynamic shared memory on the current device (a function attribute,
// set once per kernel and device; graph capture may call this, it is not a stream operation). Without it a
// launch above 48 KiB fails.
template <typename Kernel>
void allow_dynamic_shared(Kernel* kernel, int64_t bytes) {
  static std::map<std::pair<const void*, int>, int64_t> allowed;
  static std::mutex lock;
  if (bytes <= 48 * 1024) {
    return;
  }
  const int device = c10::cuda::current_device();
  const std::lock_guard<std::mutex> guard(lock);
  const auto key = std::make_pair(reinterpret_cast<const void*>(kernel), device);
  const auto found = allowed.find(key);
  if (found != allowed.end() && found->second >= bytes) {
    return;
  }
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  allowed[key] = bytes;
}

// A launch configuration of `grid` blocks in clusters of `cluster_blocks` (1-D).
struct ClusterLaunch {
  cudaLaunchConfig_t config{};
  cudaLaunchAttribute attribute{};

  ClusterLaunch(int64_t grid, int threads, int cluster_blocks, int64_t dynamic_shared, cudaStream_t stream) {
    config.gridDim = dim3(static_cast<unsigned>(grid));
    config.blockDim = dim3(static_cast<unsigned>(threads));
    config.dynamicSmemBytes = static_cast<size_t>(dynamic_shared);
    config.stream = stream;
    attribute.id = cudaLaunchAttributeClusterDimension;
    attribute.val.clusterDim.x = static_cast<unsigned>(cluster_blocks);
    attribute.val.clusterDim.y = 1;
    attribute.val.clusterDim.z = 1;
    config.attrs = &attribute;
    config.numAttrs = 1;
  }
  ClusterLaunch(const ClusterLaunch&) = delete;  // config.attrs points into this object
  ClusterLaunch& operator=(const ClusterLaunch&) = delete;
};

// Clusters of `cluster_blocks` blocks of `kernel` (with `threads` threads and `dynamic_shared` bytes each)
// that the current device runs at once; 0 when it cannot launch such a cluster at all (no cluster support,
// a size above 8 where non-portable sizes are not allowed, or not enough SMs with that much shared memory
// in one GPC). Opts the kernel in to the shared memory and, above 8 blocks, to non-portable sizes. A refused
// query is an answer here, not an error: its error state is cleared. Cached per (kernel, device, size, bytes).
template <typename Kernel>
int active_clusters(Kernel* kernel, int cluster_blocks, int threads, int64_t dynamic_shared) {
  static std::map<std::tuple<const void*, int, int, int64_t>, int> cached;
  static std::mutex lock;
  const int device = c10::cuda::current_device();
  {
    const std::lock_guard<std::mutex> guard(lock);
    const auto found = cached.find(std::make_tuple(reinterpret_cast<const void*>(kernel), device, cluster_blocks,
                                                   dynamic_shared));
    if (found != cached.end()) {
      return found->second;
    }
  }
  int count = 0;
  if (device_attribute(cudaDevAttrClusterLaunch) != 0) {
    allow_dynamic_shared(kernel, dynamic_shared);
    cudaError_t status = cudaSuccess;
    if (cluster_blocks > 8) {
      status = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    }
    const ClusterLaunch launch(cluster_blocks, threads, cluster_blocks, dynamic_shared, nullptr);
    if (status == cudaSuccess) {
      status = cudaOccupancyMaxActiveClusters(&count, kernel, &launch.config);
    }
    if (status != cudaSuccess) {
      count = 0;
      (void)cudaGetLastError();  // the refusal is the answer; clear its (non-sticky) error
    }
  }
  const std::lock_guard<std::mutex> guard(lock);
  cached.emplace(std::make_tuple(reinterpret_cast<const void*>(kernel), device, cluster_blocks, dynamic_shared), count);
  return count;
}

// How the pointers of one call sit against 16-byte boundaries. Packs of VEC = 16 / sizeof(scalar_t) elements
// need every pointer at the same element offset from a boundary (then the same flat index starts a pack in
// each); `offset` is that common offset in elements. Pointers whose offsets differ (views cut at different
// odd places) can only be read element by element.
struct Alignment {
  bool common;
  int offset;
};

template <typename scalar_t>
Alignment common_alignment(std::initializer_list<const void*> pointers) {
  constexpr int kVec = 16 / sizeof(scalar_t);
  int offset = -1;
  for (const void* ptr : pointers) {
    if (ptr == nullptr) {
      continue;
    }
    const auto address = reinterpret_cast<std::uintptr_t>(ptr);
    if (address % sizeof(scalar_t) != 0) {
      return {false, 0};
    }
    const int here = static_cast<int>((address / sizeof(scalar_t)) % kVec);
    if (offset >= 0 && here != offset) {
      return {false, 0};
    }
    offset = here;
  }
  return {true, offset < 0 ? 0 : offset};
}

// Elements before the first 16-byte boundary, from a start `offset` elements past one (0 when aligned).
inline int64_t head_elements(int offset, int vec, int64_t available) {
  return std::min<int64_t>((vec - offset) % vec, available);
}

}  // namespace advfast::cuda
