// Whether two tensors (or one tensor with itself) share memory, answered exactly: ATen's checks give up
// ("TooHard") as soon as a tensor is not dense, and the ops write in place, so a wrong "no" is a silent race.
#pragma once

#include <ATen/core/Tensor.h>

namespace advfast {

enum class Overlap {
  None,     // no byte in common
  Same,     // the same elements in the same order (the same view of the same memory)
  Partial,  // anything else that shares a byte
};

// Exact answer; cheap checks first (different storage, disjoint address ranges, dense layouts), and an
// element-by-element check only when the storages are the same and the address ranges intersect.
Overlap memory_overlap(const at::Tensor& a, const at::Tensor& b);

// True when two different indices of t address a common byte (an expanded or otherwise self-overlapping view).
bool has_internal_overlap(const at::Tensor& t);

}  // namespace advfast
