// The L2-family kernel for samples larger than one block's shared memory on sm_90 and newer: a thread-block
// cluster (2 to 16 blocks, one per SM) holds one sample in its blocks' shared memory together, so the sample
// is still read once and written once (up to 16 x 227 KiB: a 3x224x224 float32 L2 step needs 8 blocks, its
// APGD step 11), where the chunked path reads it once per norm and again to write.
//
// Block r of a cluster copies packs [r * slice, (r + 1) * slice) of the sample's body (cp.async into private
// slots, as on chip: no barrier for the data); block 0 also holds the head elements and the last block the tail.
// Each norm is a block sum (group_sum, one barrier), then every block's total in its own shared memory, one
// cluster barrier, and every thread adds the cluster's totals in block-rank order through distributed shared
// memory: the same bits in every block, deterministic. A cluster barrier ends each round, so no block
// rewrites its totals (or exits) while a peer may still read them.
#pragma once

#include "device_math.cuh"
#include "l2_family.cuh"

#include <cooperative_groups.h>

#include <cstdint>
#include <type_traits>

namespace advfast::cuda {

constexpr int kClusterThreads = 512;
constexpr int kMaxClusterBlocks = 16;  // 8 is portable; 16 where the device allows non-portable sizes (H100)

struct ClusterShape {
  int64_t batch;
  int64_t n;
  int align_offset;
  int cluster_blocks;
  int64_t slice_packs;  // body packs per block
};

template <typename Policy, int VEC>
__global__ void __launch_bounds__(kClusterThreads, 1) l2_cluster_kernel(Policy pol, ClusterShape shape) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  using scalar_t = typename Policy::storage_t;
  using T = typename Policy::T;
  using P = Pack<scalar_t, VEC>;
  using Ps = Packs<Policy, VEC>;
  constexpr int kTensors = tensors_read<Policy>();
  extern __shared__ __align__(16) unsigned char shared_raw[];
  __shared__ NormSum<T> slots[Policy::kReductions][kClusterThreads / 32];
  __shared__ NormSum<T> block_totals[Policy::kReductions];

  const cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int blocks = shape.cluster_blocks;
  const int t = static_cast<int>(threadIdx.x);
  const int width = static_cast<int>(blockDim.x);
  const int64_t cap = shape.slice_packs;
  P* const s_a = reinterpret_cast<P*>(shared_raw);
  P* const s_x = s_a + cap;
  P* const s_g = s_a + (Policy::kUsesGrad ? 2 : 1) * cap;
  P* const s_p = s_a + (kTensors - 1) * cap;
  const auto from_shared = [&](int64_t k) {
    Ps v;
    v.a = s_a[k];
    v.x = s_x[k];
    if constexpr (Policy::kUsesGrad) {
      v.g = s_g[k];
    }
    if constexpr (Policy::kHasPrev) {
      v.p = s_p[k];
    }
    return v;
  };

  const int64_t clusters = gridDim.x / blocks;
  for (int64_t b = blockIdx.x / blocks; b < shape.batch; b += clusters) {
    if (!pol.active(b)) {  // the same for every block of the cluster: none reaches a cluster barrier
      continue;
    }
    typename Policy::State s = pol.state(b);
    const SampleSplit split = split_sample<VEC>(b, shape.n, shape.align_offset);
    const int64_t start = b * shape.n;
    const int64_t body_start = start + split.head;
    const int64_t j_begin = rank * cap;
    const int64_t j_end = j_begin + cap < split.body ? j_begin + cap : split.body;
    // Slot k of this block holds pack j_begin + k.
    for (int64_t j = j_begin + t; j < j_end; j += width) {
      const int64_t e = body_start + j * VEC;
      const int64_t k = j - j_begin;
      copy_to_shared<scalar_t, VEC>(s_a + k, pol.a + e);
      copy_to_shared<scalar_t, VEC>(s_x + k, pol.x + e);
      if constexpr (Policy::kUsesGrad) {
        copy_to_shared<scalar_t, VEC>(s_g + k, pol.g + e);
      }
      if constexpr (Policy::kHasPrev) {
        copy_to_shared<scalar_t, VEC>(s_p + k, pol.p + e);
      }
    }
    const Edge<Policy> head = Edge<Policy>::load(pol, rank == 0 && t < split.head, start + t);
    const Edge<Policy> tail =
        Edge<Policy>::load(pol, rank == blocks - 1 && t < split.tail, body_start + split.body * VEC + t);
    if constexpr (sizeof(P) == 16) {
      __pipeline_commit();
      __pipeline_wait_prior(0);
    }

    const auto reduction = [&](auto tag) {
      constexpr int R = decltype(tag)::value;
      if constexpr (R <= Policy::kReductions) {
        NormSum<T> sum = NormSum<T>::zero();
        for (int64_t j = j_begin + t; j < j_end; j += width) {
          from_shared(j - j_begin).template accumulate<R>(pol, s, sum);
        }
        head.template accumulate<R>(pol, s, sum);
        tail.template accumulate<R>(pol, s, sum);
        const NormSum<T> block_total = group_sum<T>(sum, width, slots[R - 1]);
        if (t == 0) {
          block_totals[R - 1] = block_total;
        }
        cluster.sync();  // every block's total written, and visible to the cluster
        NormSum<T> total = NormSum<T>::zero();
        for (int q = 0; q < blocks; ++q) {
          total = total + *cluster.map_shared_rank(&block_totals[R - 1], q);
        }
        pol.template after<R>(s, total.norm());
      }
    };
    reduction(std::integral_constant<int, 1>{});
    reduction(std::integral_constant<int, 2>{});
    reduction(std::integral_constant<int, 3>{});

    for (int64_t j = j_begin + t; j < j_end; j += width) {
      from_shared(j - j_begin).write(pol, s, body_start + j * VEC);
    }
    head.write(pol, s);
    tail.write(pol, s);
    cluster.sync();  // peers are done reading this round's totals; this block's slots are free again
  }
#endif
}

}  // namespace advfast::cuda
