// accumulate.cpp: dst += src with a shape and device check.
#include "engine/ops/accumulate.h"

#include "engine/backend.h"

namespace nimbus {

void add_inplace(Tensor& dst, const Tensor& src) {
  NIMBUS_CHECK(dst.shape() == src.shape(), "add_inplace: shapes differ: ", describe(dst), " vs ", describe(src));
  NIMBUS_CHECK(dst.device() == src.device(), "add_inplace: devices differ: ", describe(dst), " vs ", describe(src));
  backend(dst.device(), "add_inplace").add_inplace(dst.data(), src.data(), dst.numel());
}

}  // namespace nimbus
