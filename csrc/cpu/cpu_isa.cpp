#include "cpu_isa.h"

#include <c10/util/Exception.h>

#include <atomic>
#include <cstdlib>

namespace advfast::cpu {
namespace {

bool supported(Isa isa) {
  switch (isa) {
    case Isa::Baseline:
      return true;
    case Isa::Avx2:
#if ADVFAST_HAVE_AVX2_CLONE
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
      return false;
#endif
  }
  return false;
}

Isa parse(const std::string& name, const char* source) {
  if (name == "baseline") {
    return Isa::Baseline;
  }
  if (name == "avx2") {
    return Isa::Avx2;
  }
  TORCH_CHECK(false, "advfast: ", source, " must be \"baseline\" or \"avx2\", got \"", name, "\"");
}

Isa initial() {
  if (const char* env = std::getenv("ADVFAST_CPU_ISA")) {
    const Isa chosen = parse(env, "ADVFAST_CPU_ISA");
    TORCH_CHECK(supported(chosen), "advfast: ADVFAST_CPU_ISA=", env, " is not available on this CPU or build");
    return chosen;
  }
  return supported(Isa::Avx2) ? Isa::Avx2 : Isa::Baseline;
}

std::atomic<Isa>& active() {
  static std::atomic<Isa> isa{initial()};
  return isa;
}

}  // namespace

Isa active_isa() { return active().load(std::memory_order_relaxed); }

void set_active_isa(const std::string& name) {
  const Isa isa = parse(name, "isa");
  TORCH_CHECK(supported(isa), "advfast: isa \"", name, "\" is not available on this CPU or build");
  active().store(isa, std::memory_order_relaxed);
}

const char* isa_name(Isa isa) { return isa == Isa::Avx2 ? "avx2" : "baseline"; }

std::vector<std::string> available_isas() {
  std::vector<std::string> names;
  for (Isa isa : {Isa::Baseline, Isa::Avx2}) {
    if (supported(isa)) {
      names.emplace_back(isa_name(isa));
    }
  }
  return names;
}

}  // namespace advfast::cpu
