// shape_ops.cpp: reshape, flatten and concat_channels as autograd ops.
//
// reshape/flatten share x's storage (every tensor is contiguous, so a new
// shape is all it takes); their gradient is dy viewed back in x's shape.
// concat_channels copies: output (N, sum C_i, ...), each input landing in a
// block of channels; backward copies each block back out.
#include "engine/ops/shape_ops.h"

#include <cstring>

#include "engine/autograd.h"
#include "engine/backend.h"

namespace nimbus {

namespace {
Tensor reshape_as(const char* op, const Tensor& x, const Shape& shape) {
  NIMBUS_CHECK(x.defined(), op, ": input is undefined");
  NIMBUS_CHECK(shape.numel() == x.numel(), op, ": cannot reshape ", x.shape().str(), " (", x.numel(),
               " elements) to ", shape.str(), " (", shape.numel(), " elements)");
  Tensor y = x.view(shape);
  const Shape xs = x.shape();
  record(op, {x}, y, [xs](const Tensor& dy, GradSink& sink) { sink.set(0, dy.view(xs)); });
  return y;
}
}  // namespace

Tensor reshape(const Tensor& x, const Shape& shape) { return reshape_as("reshape", x, shape); }

Tensor flatten(const Tensor& x, int start_dim) {
  NIMBUS_CHECK(x.defined(), "flatten: input is undefined");
  NIMBUS_CHECK(start_dim >= 0 && start_dim < x.ndim(), "flatten: start_dim ", start_dim, " out of range for input ",
               x.shape().str());
  std::vector<int64_t> dims;
  for (int i = 0; i < start_dim; ++i) dims.push_back(x.size(i));
  int64_t rest = 1;
  for (int i = start_dim; i < x.ndim(); ++i) rest *= x.size(i);
  dims.push_back(rest);
  return reshape_as("flatten", x, Shape(dims));
}

Tensor concat_channels(const std::vector<Tensor>& xs) {
  NIMBUS_CHECK(!xs.empty(), "concat_channels: no inputs");
  for (const Tensor& t : xs) NIMBUS_CHECK(t.defined(), "concat_channels: an input is undefined");
  const Tensor& x0 = xs[0];
  NIMBUS_CHECK(x0.ndim() >= 2, "concat_channels: input ", x0.shape().str(), " needs a channel dim (N,C,...)");
  int64_t channels = 0;
  for (const Tensor& t : xs) {
    bool same = t.ndim() == x0.ndim();
    for (int d = 0; same && d < t.ndim(); ++d) same = d == 1 || t.size(d) == x0.size(d);
    NIMBUS_CHECK(same, "concat_channels: input ", t.shape().str(), " does not match ", x0.shape().str(),
                 " outside dim 1");
    NIMBUS_CHECK(t.device() == x0.device(), "concat_channels: input ", describe(t), " and ", describe(x0),
                 " are on different devices");
    channels += t.size(1);
  }
  Shape ys = x0.shape();
  ys[1] = channels;
  const int64_t N = x0.size(0);
  int64_t inner = 1;  // elements per channel: H*W for images
  for (int d = 2; d < x0.ndim(); ++d) inner *= x0.size(d);
  Tensor y = Tensor::empty(ys, x0.device());
  // Input i's channels land at [offset_i, offset_i + C_i) of every image.
  std::vector<int64_t> offsets;
  std::vector<Shape> shapes;
  int64_t off = 0;
  for (const Tensor& t : xs) {
    const int64_t block = t.size(1) * inner;
    backend(t.device(), "concat_channels").copy_rows(y.data() + off * inner, channels * inner, t.data(), block, N, block);
    offsets.push_back(off);
    shapes.push_back(t.shape());
    off += t.size(1);
  }
  record("concat_channels", xs, y, [offsets, shapes, N, channels, inner](const Tensor& dy, GradSink& sink) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      if (!sink.needs(i)) continue;
      Tensor dx = Tensor::empty(shapes[i], dy.device());
      const int64_t block = shapes[i][1] * inner;
      backend(dy.device(), "concat_channels")
          .copy_rows(dx.data(), block, dy.data() + offsets[i] * inner, channels * inner, N, block);
      sink.set(i, dx);
    }
  });
  return y;
}

}  // namespace nimbus
