#include "advfast/memory_overlap.h"

#include <ATen/MemoryOverlap.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

namespace advfast {
namespace {

struct ByteRange {
  std::uintptr_t begin;
  std::uintptr_t end;  // one past the last byte
};

// The bytes between t's first and last element (strides are never negative in torch).
ByteRange byte_range(const at::Tensor& t) {
  int64_t last = 0;
  for (int64_t d = 0; d < t.dim(); ++d) {
    last += (t.size(d) - 1) * t.stride(d);
  }
  const auto begin = reinterpret_cast<std::uintptr_t>(t.data_ptr());
  const auto itemsize = static_cast<std::uintptr_t>(t.element_size());
  return {begin, begin + (static_cast<std::uintptr_t>(last) + 1) * itemsize};
}

// Calls visit(address) for the first byte of every element of t (numel > 0), in index order.
template <typename Visit>
void for_each_element(const at::Tensor& t, const Visit& visit) {
  const auto base = reinterpret_cast<std::uintptr_t>(t.data_ptr());
  const auto itemsize = static_cast<int64_t>(t.element_size());
  const int64_t dims = t.dim();
  if (dims == 0) {
    visit(base);
    return;
  }
  std::vector<int64_t> index(dims, 0);
  const int64_t inner_size = t.size(dims - 1);
  const int64_t inner_stride = t.stride(dims - 1) * itemsize;
  for (int64_t offset = 0;;) {  // offset: byte offset of index[0..dims-2] with the innermost index at 0
    for (int64_t i = 0; i < inner_size; ++i) {
      visit(base + static_cast<std::uintptr_t>(offset + i * inner_stride));
    }
    int64_t d = dims - 2;
    for (; d >= 0; --d) {
      offset += t.stride(d) * itemsize;
      if (++index[d] < t.size(d)) {
        break;
      }
      offset -= t.stride(d) * itemsize * index[d];
      index[d] = 0;
    }
    if (d < 0) {
      return;
    }
  }
}

// One bit per `cell` bytes of [range.begin, range.end): every element boundary of the tensors marked or
// tested lies on a cell boundary, so a byte is covered exactly when its cell is.
class CellMap {
 public:
  CellMap(ByteRange range, std::uintptr_t cell)
      : range_(range), cell_(cell), bits_(((range.end - range.begin) / cell + 63) / 64, 0) {}

  // Marks the cells of the element at [address, address + size) inside the range; true if one was marked
  // before.
  bool mark(std::uintptr_t address, std::uintptr_t size) {
    bool seen = false;
    for_cells(address, size, [&](std::uintptr_t c) {
      seen = seen || test(c);
      bits_[c / 64] |= uint64_t{1} << (c % 64);
    });
    return seen;
  }

  bool any_marked(std::uintptr_t address, std::uintptr_t size) const {
    bool seen = false;
    for_cells(address, size, [&](std::uintptr_t c) { seen = seen || test(c); });
    return seen;
  }

 private:
  template <typename Visit>
  void for_cells(std::uintptr_t address, std::uintptr_t size, const Visit& visit) const {
    const std::uintptr_t begin = std::max(address, range_.begin);
    const std::uintptr_t end = std::min(address + size, range_.end);
    for (std::uintptr_t b = begin; b < end; b += cell_) {
      visit((b - range_.begin) / cell_);
    }
  }
  bool test(std::uintptr_t c) const { return (bits_[c / 64] >> (c % 64)) & 1u; }

  ByteRange range_;
  std::uintptr_t cell_;
  std::vector<uint64_t> bits_;
};

bool same_view(const at::Tensor& a, const at::Tensor& b) {
  return a.data_ptr() == b.data_ptr() && a.sizes() == b.sizes() && a.strides() == b.strides() &&
         a.element_size() == b.element_size();
}

// Sufficient for no internal overlap: with the dimensions sorted by stride, each stride steps past every
// offset the smaller dimensions reach (a mixed-radix layout, gaps allowed).
bool provably_no_internal_overlap(const at::Tensor& t) {
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size) of dimensions with more than one index
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.size(d) > 1) {
      dims.emplace_back(t.stride(d), t.size(d));
    }
  }
  std::sort(dims.begin(), dims.end());
  int64_t reach = 0;  // largest offset reachable by the dimensions so far
  for (const auto& [stride, size] : dims) {
    if (stride <= reach) {
      return false;
    }
    reach += stride * (size - 1);
  }
  return true;
}

}  // namespace

Overlap memory_overlap(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0 || !a.has_storage() || !b.has_storage()) {
    return Overlap::None;
  }
  if (!a.storage().is_alias_of(b.storage())) {
    return Overlap::None;
  }
  if (same_view(a, b)) {
    return Overlap::Same;
  }
  const ByteRange ra = byte_range(a);
  const ByteRange rb = byte_range(b);
  const ByteRange common{std::max(ra.begin, rb.begin), std::min(ra.end, rb.end)};
  if (common.begin >= common.end) {
    return Overlap::None;
  }
  if (a.is_non_overlapping_and_dense() && b.is_non_overlapping_and_dense()) {
    return Overlap::Partial;  // dense views of intersecting ranges share every byte of the intersection
  }
  // Element boundaries of a lie on ra.begin + k * itemsize(a), those of b on rb.begin + k * itemsize(b).
  const auto distance = ra.begin > rb.begin ? ra.begin - rb.begin : rb.begin - ra.begin;
  const std::uintptr_t cell = std::gcd(
      std::gcd(static_cast<std::uintptr_t>(a.element_size()), static_cast<std::uintptr_t>(b.element_size())),
      distance);
  CellMap cells(common, cell);
  const auto size_a = static_cast<std::uintptr_t>(a.element_size());
  const auto size_b = static_cast<std::uintptr_t>(b.element_size());
  for_each_element(a, [&](std::uintptr_t address) { cells.mark(address, size_a); });
  bool shared = false;
  for_each_element(b, [&](std::uintptr_t address) { shared = shared || cells.any_marked(address, size_b); });
  return shared ? Overlap::Partial : Overlap::None;
}

bool has_internal_overlap(const at::Tensor& t) {
  const at::MemOverlap quick = at::has_internal_overlap(t);
  if (quick != at::MemOverlap::TooHard) {
    return quick == at::MemOverlap::Yes;
  }
  if (t.numel() <= 1 || provably_no_internal_overlap(t)) {
    return false;
  }
  const ByteRange range = byte_range(t);
  const auto itemsize = static_cast<std::uintptr_t>(t.element_size());
  CellMap cells(range, itemsize);
  bool shared = false;
  for_each_element(t, [&](std::uintptr_t address) { shared = cells.mark(address, itemsize) || shared; });
  return shared;
}

}  // namespace advfast
