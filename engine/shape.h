// shape.h: a small fixed-capacity tensor shape (up to 6 dims, NCHW order for images).
//
// Shapes are values: cheap to copy, compared with ==, printed as "(2,3,8,8)".
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <string>
#include <vector>

#include "kernels/common/error.h"

namespace nimbus {

class Shape {
 public:
  static constexpr int kMaxDims = 6;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) {
    NIMBUS_CHECK(dims.size() <= kMaxDims, "Shape: at most ", kMaxDims, " dims, got ", dims.size());
    for (int64_t d : dims) push(d);
  }
  explicit Shape(const std::vector<int64_t>& dims) {
    NIMBUS_CHECK(dims.size() <= kMaxDims, "Shape: at most ", kMaxDims, " dims, got ", dims.size());
    for (int64_t d : dims) push(d);
  }

  int ndim() const { return nd_; }
  int64_t operator[](int i) const { return d_[index(i)]; }
  int64_t& operator[](int i) { return d_[index(i)]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < nd_; ++i) n *= d_[i];
    return n;
  }
  std::vector<int64_t> vec() const { return std::vector<int64_t>(d_.begin(), d_.begin() + nd_); }

  bool operator==(const Shape& o) const {
    if (nd_ != o.nd_) return false;
    for (int i = 0; i < nd_; ++i)
      if (d_[i] != o.d_[i]) return false;
    return true;
  }
  bool operator!=(const Shape& o) const { return !(*this == o); }

  std::string str() const {
    std::string s = "(";
    for (int i = 0; i < nd_; ++i) s += (i ? "," : "") + std::to_string(d_[i]);
    return s + ")";
  }

 private:
  void push(int64_t d) {
    NIMBUS_CHECK(d >= 0, "Shape: negative dimension ", d);
    int64_t n = d;  // numel() must not overflow: refuse a shape whose element count does not fit
    for (int i = 0; i < nd_; ++i)
      NIMBUS_CHECK(!__builtin_mul_overflow(n, d_[i], &n), "Shape: ", d, " more elements along a dimension overflow ",
                   "the element count (over 2^63)");
    d_[nd_++] = d;
  }
  // Negative indices count from the end, as in Python.
  int index(int i) const {
    int j = i < 0 ? i + nd_ : i;
    NIMBUS_CHECK(j >= 0 && j < nd_, "Shape: dim ", i, " out of range for ", nd_, "-d shape");
    return j;
  }
  std::array<int64_t, kMaxDims> d_{};
  int nd_ = 0;
};

inline std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << s.str(); }

}  // namespace nimbus
