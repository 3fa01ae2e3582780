// accuracy.cpp: confidence intervals, confusion matrices, cover bins, CSV and JSON writers (see accuracy.h).
#include "apps/common/accuracy.h"

#include <cmath>
#include <cstdio>
#include <limits>

#include "kernels/common/error.h"
#include "engine/io/safetensors.h"

namespace nimbus {

Proportion wilson_interval(int64_t k, int64_t n, double z) {
  NIMBUS_CHECK(n >= 0 && k >= 0 && k <= n, "wilson_interval: need 0 <= k <= n, got k=", k, " n=", n);
  Proportion p;
  p.k = k;
  p.n = n;
  if (n == 0) {
    p.value = std::numeric_limits<double>::quiet_NaN();
    return p;  // [0, 1]: nothing is known
  }
  double nn = double(n), ph = double(k) / nn, z2 = z * z;
  double denom = 1 + z2 / nn;
  double centre = (ph + z2 / (2 * nn)) / denom;
  double half = z / denom * std::sqrt(ph * (1 - ph) / nn + z2 / (4 * nn * nn));
  p.value = ph;
  p.lo = std::max(0.0, centre - half);
  p.hi = std::min(1.0, centre + half);
  return p;
}

ConfusionMatrix::ConfusionMatrix(int classes) : classes_(classes) {
  NIMBUS_CHECK(classes > 0, "ConfusionMatrix: need at least one class, got ", classes);
  counts_.assign(size_t(classes) * size_t(classes), 0);
}

void ConfusionMatrix::add(int truth, int pred) {
  NIMBUS_CHECK(truth >= 0 && truth < classes_ && pred >= 0 && pred < classes_, "ConfusionMatrix: label pair (",
               truth, ", ", pred, ") outside 0..", classes_ - 1);
  ++counts_[size_t(truth * classes_ + pred)];
  ++total_;
}

Proportion ConfusionMatrix::accuracy() const {
  int64_t diag = 0;
  for (int c = 0; c < classes_; ++c) diag += count(c, c);
  return wilson_interval(diag, total_);
}

std::vector<double> ConfusionMatrix::row_normalised() const {
  std::vector<double> out(counts_.size(), 0.0);
  std::vector<int64_t> rows = truth_counts();
  for (int t = 0; t < classes_; ++t)
    for (int p = 0; p < classes_ && rows[size_t(t)] > 0; ++p)
      out[size_t(t * classes_ + p)] = double(count(t, p)) / double(rows[size_t(t)]);
  return out;
}

std::vector<int64_t> ConfusionMatrix::truth_counts() const {
  std::vector<int64_t> out(size_t(classes_), 0);
  for (int t = 0; t < classes_; ++t)
    for (int p = 0; p < classes_; ++p) out[size_t(t)] += count(t, p);
  return out;
}

std::vector<int64_t> ConfusionMatrix::pred_counts() const {
  std::vector<int64_t> out(size_t(classes_), 0);
  for (int t = 0; t < classes_; ++t)
    for (int p = 0; p < classes_; ++p) out[size_t(p)] += count(t, p);
  return out;
}

Proportion accuracy(const std::vector<int>& truth, const std::vector<int>& pred) {
  NIMBUS_CHECK(truth.size() == pred.size(), "accuracy: ", truth.size(), " labels but ", pred.size(),
               " predictions");
  int64_t k = 0;
  for (size_t i = 0; i < truth.size(); ++i) k += truth[i] == pred[i];
  return wilson_interval(k, int64_t(truth.size()));
}

ClassDistribution class_distribution(const std::vector<int>& labels, int classes) {
  NIMBUS_CHECK(classes > 0, "class_distribution: need at least one class");
  ClassDistribution d;
  d.counts.assign(size_t(classes), 0);
  for (int l : labels) {
    NIMBUS_CHECK(l >= 0 && l < classes, "class_distribution: label ", l, " outside 0..", classes - 1);
    ++d.counts[size_t(l)];
  }
  d.fractions.assign(size_t(classes), 0.0);
  for (size_t c = 0; c < d.counts.size() && !labels.empty(); ++c)
    d.fractions[c] = double(d.counts[c]) / double(labels.size());
  return d;
}

CoverBins::CoverBins(std::vector<double> edges) : edges_(std::move(edges)) {
  NIMBUS_CHECK(edges_.size() >= 2, "CoverBins: need at least two edges, got ", edges_.size());
  for (size_t i = 1; i < edges_.size(); ++i)
    NIMBUS_CHECK(edges_[i] > edges_[i - 1], "CoverBins: edges must increase, got ", edges_[i - 1], " then ",
                 edges_[i]);
  n_.assign(edges_.size() - 1, 0);
  correct_.assign(edges_.size() - 1, 0);
}

int CoverBins::bin_of(double cover) const {
  NIMBUS_CHECK(cover >= edges_.front() && cover <= edges_.back(), "CoverBins: cloud cover ", cover,
               " outside [", edges_.front(), ", ", edges_.back(), "]");
  for (int b = 0; b + 1 < bins(); ++b)
    if (cover < edges_[size_t(b) + 1]) return b;
  return bins() - 1;
}

void CoverBins::add(double cover, bool correct) {
  int b = bin_of(cover);
  ++n_[size_t(b)];
  correct_[size_t(b)] += correct;
}

std::string CoverBins::label(int bin) const {
  auto pct = [](double e) { return fmt_num(e * 100, 4); };
  return pct(edges_[size_t(bin)]) + "-" + pct(edges_[size_t(bin) + 1]) + "%";
}

// ---- CSV ----------------------------------------------------------------------

std::string fmt_num(double v, int digits) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

CsvTable::CsvTable(std::vector<std::string> header) : header_(std::move(header)) {
  NIMBUS_CHECK(!header_.empty(), "CsvTable: empty header");
}

void CsvTable::add_row(std::vector<std::string> row) {
  NIMBUS_CHECK(row.size() == header_.size(), "CsvTable: row has ", row.size(), " fields but the header has ",
               header_.size());
  rows_.push_back(std::move(row));
}

namespace {
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}
void csv_line(std::string& out, const std::vector<std::string>& fields) {
  for (size_t i = 0; i < fields.size(); ++i) out += (i ? "," : "") + csv_field(fields[i]);
  out += "\n";
}
}  // namespace

std::string CsvTable::str() const {
  std::string out;
  csv_line(out, header_);
  for (const auto& r : rows_) csv_line(out, r);
  return out;
}

void CsvTable::write(const std::string& path) const { write_file_atomic(path, str()); }

std::vector<std::string> csv_fields(const std::string& line) {
  std::vector<std::string> out(1);
  for (char c : line) {
    if (c == ',')
      out.emplace_back();
    else
      out.back() += c;
  }
  return out;
}

// ---- JSON ---------------------------------------------------------------------

namespace json {

Value number(double v) {
  Value out;
  if (std::isfinite(v)) {
    out.type = Value::Type::Number;
    out.num = v;
  }  // else null: JSON has no NaN
  return out;
}
Value string(const std::string& s) {
  Value out;
  out.type = Value::Type::String;
  out.s = s;
  return out;
}
Value boolean(bool b) {
  Value out;
  out.type = Value::Type::Bool;
  out.b = b;
  return out;
}
Value array(std::vector<Value> items) {
  Value out;
  out.type = Value::Type::Array;
  out.arr = std::move(items);
  return out;
}
Value object(std::vector<std::pair<std::string, Value>> members) {
  Value out;
  out.type = Value::Type::Object;
  out.obj = std::move(members);
  return out;
}

}  // namespace json

json::Value to_json(const Proportion& p) {
  return json::object({{"accuracy", json::number(p.value)},
                       {"ci95_low", json::number(p.lo)},
                       {"ci95_high", json::number(p.hi)},
                       {"correct", json::number(double(p.k))},
                       {"total", json::number(double(p.n))}});
}

namespace {
json::Value names_json(const std::vector<std::string>& names, int classes, const char* what) {
  NIMBUS_CHECK(int(names.size()) == classes, what, ": ", names.size(), " class names for ", classes, " classes");
  std::vector<json::Value> v;
  for (const auto& n : names) v.push_back(json::string(n));
  return json::array(std::move(v));
}
}  // namespace

json::Value to_json(const ConfusionMatrix& m, const std::vector<std::string>& class_names) {
  const int k = m.classes();
  std::vector<json::Value> counts, norm;
  std::vector<double> rn = m.row_normalised();
  for (int t = 0; t < k; ++t) {
    std::vector<double> row, nrow;
    for (int p = 0; p < k; ++p) {
      row.push_back(double(m.count(t, p)));
      nrow.push_back(rn[size_t(t * k + p)]);
    }
    counts.push_back(json::numbers(row));
    norm.push_back(json::numbers(nrow));
  }
  return json::object({{"classes", names_json(class_names, k, "confusion matrix")},
                       {"rows", json::string("truth")},
                       {"columns", json::string("prediction")},
                       {"counts", json::array(std::move(counts))},
                       {"row_normalised", json::array(std::move(norm))},
                       {"accuracy", to_json(m.accuracy())}});
}

json::Value to_json(const CoverBins& b) {
  std::vector<json::Value> bins;
  for (int i = 0; i < b.bins(); ++i) {
    json::Value acc = to_json(b.accuracy(i));
    acc.obj.insert(acc.obj.begin(), {{"bin", json::string(b.label(i))},
                                     {"cover_low", json::number(b.edges()[size_t(i)])},
                                     {"cover_high", json::number(b.edges()[size_t(i) + 1])}});
    bins.push_back(std::move(acc));
  }
  return json::array(std::move(bins));
}

json::Value to_json(const ClassDistribution& d, const std::vector<std::string>& class_names) {
  return json::object({{"classes", names_json(class_names, int(d.counts.size()), "class distribution")},
                       {"counts", json::numbers(d.counts)},
                       {"fractions", json::numbers(d.fractions)}});
}

}  // namespace nimbus
