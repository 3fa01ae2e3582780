// autocast.cpp: the per-thread compute dtype and the policy's casts (autocast.h).
#include "engine/autocast.h"

#include "engine/ops/cast.h"

namespace nimbus {

namespace {
thread_local DType g_compute = DType::F32;
}  // namespace

AutocastScope::AutocastScope(DType compute) : saved_(g_compute) { g_compute = compute; }
AutocastScope::~AutocastScope() { g_compute = saved_; }

DType autocast_dtype() { return g_compute; }
void set_autocast_dtype(DType compute) { g_compute = compute; }

Tensor autocast_matmul(const Tensor& t) {
  return g_compute == DType::BF16 && t.defined() && t.dtype() == DType::F32 ? cast(t, DType::BF16) : t;
}

Tensor autocast_float(const Tensor& t) {
  return g_compute == DType::BF16 && t.defined() && t.dtype() == DType::BF16 ? cast(t, DType::F32) : t;
}

std::pair<Tensor, Tensor> autocast_pair(const char* op, const Tensor& a, const Tensor& b) {
  if (a.dtype() == b.dtype()) return {a, b};
  NIMBUS_CHECK(g_compute == DType::BF16, op, ": dtypes differ: a ", describe(a), " vs b ", describe(b),
               " (cast one, or run the op inside an AutocastScope(DType::BF16))");
  return {cast(a, DType::F32), cast(b, DType::F32)};
}

}  // namespace nimbus
