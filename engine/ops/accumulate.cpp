// accumulate.cpp: dst += src with a shape, device and dtype check (float32 or bfloat16).
#include "engine/ops/accumulate.h"

#include "engine/backend.h"

namespace nimbus {

void add_inplace(Tensor& dst, const Tensor& src) {
  NIMBUS_CHECK(dst.shape() == src.shape(), "add_inplace: shapes differ: ", describe(dst), " vs ", describe(src));
  NIMBUS_CHECK(dst.device() == src.device(), "add_inplace: devices differ: ", describe(dst), " vs ", describe(src));
  NIMBUS_CHECK(dst.dtype() == src.dtype(), "add_inplace: dtypes differ: ", describe(dst), " vs ", describe(src));
  visit_dtype(dst.dtype(), [&](auto tag) {
    using T = decltype(tag);
    backend<T>(dst.device(), "add_inplace").add_inplace(dst.data_as<T>(), src.data_as<T>(), dst.numel());
  });
  dst.mark_written();
}

}  // namespace nimbus
