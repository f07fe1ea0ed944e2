// CUDA implementations of the advfast ops, on the current stream: which kernel runs a call, with which grid.
// Element math comes from advfast/perturb.h; the kernels are in elementwise.cuh (one pass: the L-inf ops),
// l2_family.cuh (per-sample norms: on chip in one block, or chunked for samples too large for shared memory)
// and l2_cluster.cuh (sm_90+: a sample in the shared memory of a thread-block cluster).
//
// Rounding: this file is compiled with --fmad=false (CMakeLists.txt), so no a*b+c is contracted into an FMA
// and every operation rounds as in the eager reference and the CPU build (-ffp-contract=off); divisions and
// square roots are IEEE (nvcc's defaults without --use_fast_math), denormals are kept (no flush to zero).
#include "advfast/frontend.h"
#include "advfast/perturb.h"
#include "device_math.cuh"
#include "elementwise.cuh"
#include "l2_cluster.cuh"
#include "l2_family.cuh"
#include "launch_config.cuh"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace advfast::cuda {
namespace {

constexpr int64_t kMaxGrid = std::numeric_limits<int32_t>::max();

template <typename T>
DeviceSampleScalar<T> sample_scalar(const PerSample& p) {
  return {p.tensor.has_value() ? p.tensor->data_ptr<T>() : nullptr, static_cast<T>(p.value)};
}

const bool* mask_data(const c10::optional<at::Tensor>& mask) {
  return mask.has_value() ? mask->data_ptr<bool>() : nullptr;
}

// Calls launch(std::integral_constant<int, VEC>) with VEC = 16 / sizeof(scalar_t) when the pointers share
// their offset from a 16-byte boundary (the common case, whatever the sample size), else VEC = 1 with
// offset 0: element by element, only for views cut at different odd places.
template <typename scalar_t, typename Launch>
void with_pack_width(std::initializer_list<const void*> pointers, const Launch& launch) {
  constexpr int kWide = 16 / sizeof(scalar_t);
  const Alignment alignment = common_alignment<scalar_t>(pointers);
  if (alignment.common) {
    launch(std::integral_constant<int, kWide>{}, alignment.offset);
  } else {
    launch(std::integral_constant<int, 1>{}, 0);
  }
}

// ---- one-pass ops ---------------------------------------------------------------------------------------

// Grid: enough blocks for every pack once, at most one full wave of resident blocks (from the occupancy
// calculator); each thread then strides over the rest. The first block also does the head and tail.
template <typename Op>
void elementwise_launch(const Op& op, std::initializer_list<const void*> pointers, int64_t numel, int64_t n,
                        bool per_sample) {
  using scalar_t = typename Op::storage_t;
  with_pack_width<scalar_t>(pointers, [&](auto vec, int offset) {
    constexpr int VEC = decltype(vec)::value;
    const int64_t head = head_elements(offset, VEC, numel);
    const int64_t packs = (numel - head) / VEC;
    const auto run = [&](auto per_sample_tag) {
      auto* kernel = &elementwise_kernel<Op, VEC, decltype(per_sample_tag)::value>;
      const int64_t needed = (packs + kElementwiseThreads - 1) / kElementwiseThreads;
      const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(needed, resident_blocks(kernel, kElementwiseThreads)));
      const int64_t stride = blocks * kElementwiseThreads * VEC;
      const ElementwiseRange range{numel, n, head, packs, stride / n, stride % n};
      kernel<<<static_cast<unsigned>(blocks), kElementwiseThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(op, range);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (per_sample) {
      run(std::true_type{});
    } else {
      run(std::false_type{});
    }
  });
}

void linf_step_launch(const StepCall& c) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.x_adv.scalar_type(), "linf_step_", [&] {
    using T = at::opmath_type<scalar_t>;
    const LinfStepOp<scalar_t> op{c.x_adv.data_ptr<scalar_t>(), c.grad.data_ptr<scalar_t>(), c.x.data_ptr<scalar_t>(),
                                  sample_scalar<T>(c.eps),      sample_scalar<T>(c.alpha),    mask_data(c.mask),
                                  static_cast<T>(c.lo),         static_cast<T>(c.hi)};
    const bool per_sample = c.eps.tensor.has_value() || c.alpha.tensor.has_value() || c.mask.has_value();
    elementwise_launch(op, {op.a, op.g, op.x}, c.x_adv.numel(), c.per_sample(), per_sample);
  });
}

void linf_start_launch(const StartCall& c) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.x_adv.scalar_type(), "random_start_", [&] {
    using T = at::opmath_type<scalar_t>;
    const LinfStartOp<scalar_t> op{c.x_adv.data_ptr<scalar_t>(), c.x.data_ptr<scalar_t>(), sample_scalar<T>(c.eps),
                                   static_cast<T>(c.lo), static_cast<T>(c.hi)};
    elementwise_launch(op, {op.a, op.x}, c.x_adv.numel(), c.per_sample(), c.eps.tensor.has_value());
  });
}

void apgd_linf_launch(const ApgdCall& c) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.x_adv.scalar_type(), "apgd_step_", [&] {
    using T = at::opmath_type<scalar_t>;
    const ApgdLinfOp<scalar_t> op{c.x_adv.data_ptr<scalar_t>(),
                                  c.x_prev.data_ptr<scalar_t>(),
                                  c.grad.data_ptr<scalar_t>(),
                                  c.x.data_ptr<scalar_t>(),
                                  sample_scalar<T>(c.eps),
                                  sample_scalar<T>(c.eta),
                                  mask_data(c.mask),
                                  static_cast<T>(c.momentum),
                                  static_cast<T>(1.0 - c.momentum),
                                  static_cast<T>(c.lo),
                                  static_cast<T>(c.hi)};
    const bool per_sample = c.eps.tensor.has_value() || c.eta.tensor.has_value() || c.mask.has_value();
    elementwise_launch(op, {op.a, op.p, op.g, op.x}, c.x_adv.numel(), c.per_sample(), per_sample);
  });
}

// ---- L2 family: plans -----------------------------------------------------------------------------------

// Packs each thread of an on-chip group owns (about): enough independent loads per thread, few enough that a
// sample gets many threads.
constexpr int64_t kPacksPerThread = 4;
// Threads of a block whose groups are narrower than a warp (several samples per block).
constexpr int kSmallGroupBlock = 128;
constexpr int kMinGroupThreads = 8;  // >= the widest pack (8 half values): a group's first threads do the edges
constexpr int64_t kMaxChunks = 1024;
// Grids of the L2 kernels: a group (or chunk) per block up to this many waves of resident blocks, beyond that
// each block loops over more. Bounds the grid (gridDim.x < 2^31) at a balance within 1/32 of a wave's time,
// and keeps the kernels' loops reachable by a test of an ordinary size.
constexpr int64_t kMaxWaves = 32;
// The chunked path stops at 4 waves: it only gets there with one chunk per sample (a batch of thousands of
// large samples), where every block then loops over many samples with equal counts (to within one).
constexpr int64_t kChunkedWaves = 4;

// The paths of an L2-family call, cheapest first: one block (or group) per sample, one cluster per sample,
// chunks in several passes.
enum class L2Path : int64_t { Chunked = 0, OnChip = 1, Cluster = 2 };

// How one L2-family call runs on the current device (the same decision for the launch and for tests).
struct L2Plan {
  L2Path path = L2Path::Chunked;
  int group_threads = 0;  // on chip
  int block_threads = 0;
  int64_t capacity = 0;  // on chip: packs per tensor per group; cluster: per block
  int64_t shared_bytes = 0;
  int64_t chunks = 0;  // chunked
  int64_t chunk_packs = 0;
  int64_t blocks = 0;
  int cluster_blocks = 0;  // cluster
};

// The cluster path unless the environment says ADVFAST_CUDA_CLUSTERS=0 (read once): a way back to the chunked
// path for samples past one block's shared memory, for comparisons or a device where clusters misbehave.
inline bool clusters_enabled() {
  static const bool enabled = [] {
    const char* value = std::getenv("ADVFAST_CUDA_CLUSTERS");
    return value == nullptr || std::string(value) != "0";
  }();
  return enabled;
}

template <typename Policy, int VEC>
L2Plan l2_plan(int64_t batch, int64_t n) {
  using scalar_t = typename Policy::storage_t;
  L2Plan plan;
  const int64_t packs = n / VEC;
  // On chip: group width from the sample's packs, one group per block from 64 threads up.
  int width = kMinGroupThreads;
  while (width < kMaxGroupThreads && width * kPacksPerThread < packs) {
    width *= 2;
  }
  const int block = std::max(width, kSmallGroupBlock);
  const int64_t groups = block / width;
  const int64_t bytes = groups * tensors_read<Policy>() * packs * static_cast<int64_t>(sizeof(Pack<scalar_t, VEC>));
  auto* on_chip = &l2_on_chip_kernel<Policy, VEC>;
  if (bytes <= dynamic_shared_budget(on_chip)) {
    plan.path = L2Path::OnChip;
    plan.group_threads = width;
    plan.block_threads = block;
    plan.capacity = packs;
    plan.shared_bytes = bytes;
    allow_dynamic_shared(on_chip, bytes);  // before the occupancy query, which may assume the 48 KiB default
    const int64_t waves = kMaxWaves * resident_blocks(on_chip, block, bytes);
    plan.blocks = std::min<int64_t>({(batch + groups - 1) / groups, waves, kMaxGrid});
    return plan;
  }
  // A cluster: the fewest blocks (one per SM, 512 threads) whose shared memory holds the sample, if the device
  // can run such a cluster at all (and ADVFAST_CUDA_CLUSTERS=0 does not turn the path off).
  const int64_t pack_bytes = tensors_read<Policy>() * static_cast<int64_t>(sizeof(Pack<scalar_t, VEC>));
  if (clusters_enabled() && device_attribute(cudaDevAttrClusterLaunch) != 0) {
    auto* cluster_kernel = &l2_cluster_kernel<Policy, VEC>;
    const int64_t budget = dynamic_shared_budget(cluster_kernel);
    int64_t blocks = std::max<int64_t>(2, (packs * pack_bytes + budget - 1) / budget);
    while (blocks <= kMaxClusterBlocks && (packs + blocks - 1) / blocks * pack_bytes > budget) {
      ++blocks;
    }
    if (blocks <= kMaxClusterBlocks) {
      const int64_t slice = (packs + blocks - 1) / blocks;
      const int64_t cluster_bytes = slice * pack_bytes;
      const int active = active_clusters(cluster_kernel, static_cast<int>(blocks), kClusterThreads, cluster_bytes);
      if (active > 0) {
        plan.path = L2Path::Cluster;
        plan.cluster_blocks = static_cast<int>(blocks);
        plan.block_threads = kClusterThreads;
        plan.capacity = slice;
        plan.shared_bytes = cluster_bytes;
        plan.blocks = std::min<int64_t>({batch, kMaxWaves * active, kMaxGrid / blocks}) * blocks;
        return plan;
      }
    }
  }
  // Chunked: enough chunks per sample that the batch fills two waves of resident blocks (a batch of 3
  // ImageNet images still spreads over every SM: 147 chunks each), down to one pack per thread per chunk
  // (then 256 blocks in flight already keep megabytes of loads outstanding).
  auto* first_phase = &l2_chunked_kernel<Policy, VEC, 1>;
  const int64_t resident = resident_blocks(first_phase, kChunkThreads);
  const int64_t by_size = std::max<int64_t>(1, packs / kChunkThreads);
  plan.chunks = std::clamp<int64_t>(std::min((2 * resident + batch - 1) / batch, by_size), 1, kMaxChunks);
  plan.chunk_packs = std::max<int64_t>(1, (packs + plan.chunks - 1) / plan.chunks);
  plan.block_threads = kChunkThreads;
  plan.blocks = std::min<int64_t>({batch * plan.chunks, kChunkedWaves * resident, kMaxGrid});
  return plan;
}

template <typename Policy>
void l2_family_launch(const Policy& pol, const at::Tensor& x_adv, int64_t batch, int64_t n) {
  using T = typename Policy::T;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  with_pack_width<typename Policy::storage_t>({pol.a, pol.g, pol.x, pol.p}, [&](auto vec, int offset) {
    constexpr int VEC = decltype(vec)::value;
    const L2Plan plan = l2_plan<Policy, VEC>(batch, n);
    if (plan.path == L2Path::Cluster) {
      auto* kernel = &l2_cluster_kernel<Policy, VEC>;
      const ClusterShape shape{batch, n, offset, plan.cluster_blocks, plan.capacity};
      // active_clusters (in the plan) opted the kernel in to this shared memory and cluster size.
      const ClusterLaunch launch(plan.blocks, plan.block_threads, plan.cluster_blocks, plan.shared_bytes, stream);
      C10_CUDA_CHECK(cudaLaunchKernelEx(&launch.config, kernel, pol, shape));
      return;
    }
    if (plan.path == L2Path::OnChip) {
      auto* kernel = &l2_on_chip_kernel<Policy, VEC>;
      allow_dynamic_shared(kernel, plan.shared_bytes);
      const OnChipShape shape{batch, n, offset, plan.group_threads, plan.capacity};
      kernel<<<static_cast<unsigned>(plan.blocks), plan.block_threads, static_cast<size_t>(plan.shared_bytes),
               stream>>>(pol, shape);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    const ChunkedShape shape{batch, n, offset, plan.chunks, plan.chunk_packs};
    // kReductions arrays of batch * chunks partial sums.
    const int64_t bytes = Policy::kReductions * batch * plan.chunks * static_cast<int64_t>(sizeof(NormSum<T>));
    const at::Tensor partials = at::empty({bytes}, x_adv.options().dtype(at::kByte));
    auto* sums = reinterpret_cast<NormSum<T>*>(partials.data_ptr<uint8_t>());
    const auto phase = [&](auto tag) {
      constexpr int PHASE = decltype(tag)::value;
      l2_chunked_kernel<Policy, VEC, PHASE>
          <<<static_cast<unsigned>(plan.blocks), kChunkThreads, 0, stream>>>(pol, shape, sums);
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
    const L2StepPolicy<scalar_t> pol{c.x_adv.data_ptr<scalar_t>(),
                                     c.grad.data_ptr<scalar_t>(),
                                     c.x.data_ptr<scalar_t>(),
                                     nullptr,
                                     sample_scalar<T>(c.eps),
                                     sample_scalar<T>(c.alpha),
                                     mask_data(c.mask),
                                     static_cast<T>(c.lo),
                                     static_cast<T>(c.hi)};
    l2_family_launch(pol, c.x_adv, c.batch(), c.per_sample());
  });
}

void l2_start_launch(const StartCall& c) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.x_adv.scalar_type(), "random_start_", [&] {
    using T = at::opmath_type<scalar_t>;
    const L2StartPolicy<scalar_t> pol{c.x_adv.data_ptr<scalar_t>(),
                                      nullptr,
                                      c.x.data_ptr<scalar_t>(),
                                      nullptr,
                                      sample_scalar<T>(c.eps),
                                      c.radius_fraction->data_ptr<T>(),
                                      static_cast<T>(c.lo),
                                      static_cast<T>(c.hi)};
    l2_family_launch(pol, c.x_adv, c.batch(), c.per_sample());
  });
}

void apgd_l2_launch(const ApgdCall& c) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.x_adv.scalar_type(), "apgd_step_", [&] {
    using T = at::opmath_type<scalar_t>;
    const ApgdL2Policy<scalar_t> pol{c.x_adv.data_ptr<scalar_t>(),
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
    l2_family_launch(pol, c.x_adv, c.batch(), c.per_sample());
  });
}

Kernels cuda_kernels() {
  return {&linf_step_launch, &l2_step_launch, &linf_start_launch, &l2_start_launch, &apgd_linf_launch,
          &apgd_l2_launch};
}

// ---- the plan, for tests and benchmarks -------------------------------------------------------------------

// [path (0 chunked, 1 on chip, 2 cluster), group_threads, block_threads, shared_bytes, chunks, chunk_packs,
// blocks, cluster_blocks] of the L2-family op
// `op` ("l2_step", "random_start_l2" or "apgd_l2") for a [batch, per_sample] call of `dtype` on the current
// device, with 16-byte aligned tensors. Lets the tests put shapes on both sides of the on-chip limit of the
// device they run on, and the benchmarks record which path they timed.
std::vector<int64_t> l2_plan_of(c10::string_view op, at::ScalarType dtype, int64_t batch, int64_t per_sample) {
  TORCH_CHECK(batch >= 1 && per_sample >= 1, "advfast::_cuda_l2_plan: batch and per_sample must be >= 1");
  std::vector<int64_t> out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "_cuda_l2_plan", [&] {
    constexpr int VEC = 16 / sizeof(scalar_t);
    const auto describe = [&](const L2Plan& p) {
      out = {static_cast<int64_t>(p.path), p.group_threads, p.block_threads, p.shared_bytes, p.chunks,
             p.chunk_packs,  p.blocks,      p.cluster_blocks};
    };
    if (op == "l2_step") {
      describe(l2_plan<L2StepPolicy<scalar_t>, VEC>(batch, per_sample));
    } else if (op == "random_start_l2") {
      describe(l2_plan<L2StartPolicy<scalar_t>, VEC>(batch, per_sample));
    } else if (op == "apgd_l2") {
      describe(l2_plan<ApgdL2Policy<scalar_t>, VEC>(batch, per_sample));
    } else {
      TORCH_CHECK(false, "advfast::_cuda_l2_plan: op must be \"l2_step\", \"random_start_l2\" or \"apgd_l2\", got \"",
                  std::string(op), "\"");
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(advfast, CUDA, m) { DeviceOps<&cuda_kernels>::register_into(m); }

// Private: what the L2-family ops would do for a shape on the current CUDA device (no tensor arguments, so one
// catch-all kernel). Only CUDA builds define it.
TORCH_LIBRARY_FRAGMENT(advfast, m) {
  m.def("_cuda_l2_plan(str op, ScalarType dtype, int batch, int per_sample) -> int[]", &l2_plan_of);
}

}  // namespace advfast::cuda
