// accuracy.h: the experiment's accounting: accuracies with 95% confidence intervals,
// confusion matrices, class distributions, accuracy by cloud-cover bin, and the
// CSV / JSON writers the apps use for their result files.
//
// Confidence intervals are Wilson score intervals (better than the normal
// approximation at small n and near 0% / 100%):
//   p = k/n, centre = (p + z^2/2n) / (1 + z^2/n),
//   half = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2),  z = 1.959964 for 95%.
// n = 0 gives p = NaN and the interval [0, 1].
//
// Files are written atomically (write_file_atomic: temp file + rename).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/io/json.h"

namespace nimbus {

// k successes out of n trials: the rate and its confidence interval.
struct Proportion {
  int64_t k = 0, n = 0;
  double value = 0, lo = 0, hi = 1;
};
inline constexpr double kZ95 = 1.959963984540054;
Proportion wilson_interval(int64_t k, int64_t n, double z = kZ95);

// Counts of (truth, prediction) pairs; truth = rows, prediction = columns.
class ConfusionMatrix {
 public:
  explicit ConfusionMatrix(int classes = 10);
  void add(int truth, int pred);  // Error when either is outside 0..classes-1
  int classes() const { return classes_; }
  int64_t count(int truth, int pred) const { return counts_[size_t(truth * classes_ + pred)]; }
  int64_t total() const { return total_; }
  Proportion accuracy() const;               // diagonal / total, with Wilson CI
  std::vector<double> row_normalised() const;  // classes^2, row-major; each row sums to 1, empty rows are 0
  std::vector<int64_t> truth_counts() const;   // row sums
  std::vector<int64_t> pred_counts() const;    // column sums

 private:
  int classes_;
  int64_t total_ = 0;
  std::vector<int64_t> counts_;
};

// Accuracy of pred against truth (same length), with CI.
Proportion accuracy(const std::vector<int>& truth, const std::vector<int>& pred);

// How often each class occurs among `labels`.
struct ClassDistribution {
  std::vector<int64_t> counts;
  std::vector<double> fractions;  // counts / total (0 when there are no labels)
};
ClassDistribution class_distribution(const std::vector<int>& labels, int classes);

// Accuracy per cloud-cover bin. Bins are [e_i, e_{i+1}), the last one closed
// [e_{n-1}, e_n] so that fully covered images (cover 1.0) count.
class CoverBins {
 public:
  explicit CoverBins(std::vector<double> edges = {0.0, 0.1, 0.3, 0.6, 1.0});
  void add(double cover, bool correct);  // Error when cover is outside [first edge, last edge] or NaN
  int bins() const { return int(edges_.size()) - 1; }
  int bin_of(double cover) const;
  int64_t count(int bin) const { return n_[size_t(bin)]; }
  Proportion accuracy(int bin) const { return wilson_interval(correct_[size_t(bin)], n_[size_t(bin)]); }
  std::string label(int bin) const;  // "0-10%", "60-100%"
  const std::vector<double>& edges() const { return edges_; }

 private:
  std::vector<double> edges_;
  std::vector<int64_t> n_, correct_;
};

// ---- writers ----------------------------------------------------------------

// A CSV table (RFC 4180 quoting: fields with , " or newlines are quoted).
class CsvTable {
 public:
  explicit CsvTable(std::vector<std::string> header);
  void add_row(std::vector<std::string> row);  // Error when the width differs from the header
  std::string str() const;
  void write(const std::string& path) const;  // atomic
  size_t rows() const { return rows_.size(); }

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};
// The fields of one line of a CSV file without quoting (the synthetic labels file, metrics.csv):
// split at every comma, so "a,b," has three fields, the last empty.
std::vector<std::string> csv_fields(const std::string& line);
// Number formatting for CSV cells: %.{digits}g, "nan" / "inf" / "-inf" for non-finite values.
std::string fmt_num(double v, int digits = 6);

// JSON values to build result files (engine/io/json.h's Value, filled in order).
namespace json {
Value number(double v);  // NaN and infinities are written as null
Value string(const std::string& s);
Value boolean(bool b);
Value array(std::vector<Value> items);
Value object(std::vector<std::pair<std::string, Value>> members);
template <typename T>
Value numbers(const std::vector<T>& v) {
  std::vector<Value> items;
  for (const T& x : v) items.push_back(number(double(x)));
  return array(std::move(items));
}
// dump and write: engine/io/json.h.
}  // namespace json

json::Value to_json(const Proportion& p);  // {"accuracy", "ci95_low", "ci95_high", "correct", "total"}
json::Value to_json(const ConfusionMatrix& m, const std::vector<std::string>& class_names);
json::Value to_json(const CoverBins& b);
json::Value to_json(const ClassDistribution& d, const std::vector<std::string>& class_names);

}  // namespace nimbus
