// test_accuracy.cpp: Wilson intervals vs hand-computed values, confusion matrix, class distribution
// and cover bins on a tiny hand-made set, and the CSV / JSON writers.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "tests/common/check.h"
#include "apps/common/accuracy.h"
#include "kernels/common/error.h"

using namespace nimbus;

namespace {
}  // namespace

TEST_CASE("accuracy: Wilson interval against hand-computed values") {
  // 8/10, z = 1.96: centre (0.8 + 0.19208)/1.38416 = 0.716738, half 1.41602*sqrt(0.016+0.009604) = 0.226580.
  Proportion p = wilson_interval(8, 10, 1.96);
  CHECK(p.value == doctest::Approx(0.8));
  CHECK(p.lo == doctest::Approx(0.490158).epsilon(1e-5));
  CHECK(p.hi == doctest::Approx(0.943318).epsilon(1e-5));
  // 0/10 and 10/10: [0, z^2/(n+z^2)] = [0, 0.277533] and its mirror.
  Proportion zero = wilson_interval(0, 10, 1.96), all = wilson_interval(10, 10, 1.96);
  CHECK(zero.lo == 0);
  CHECK(zero.hi == doctest::Approx(3.8416 / 13.8416).epsilon(1e-6));
  CHECK(all.lo == doctest::Approx(10.0 / 13.8416).epsilon(1e-6));
  CHECK(all.hi == doctest::Approx(1.0));
  // The default z is the exact 97.5% normal quantile; large n narrows to ~ +-1.96 sqrt(pq/n).
  Proportion big = wilson_interval(7565, 10000);
  CHECK(big.hi - big.lo == doctest::Approx(2 * kZ95 * std::sqrt(0.7565 * 0.2435 / 10000)).epsilon(1e-3).scale(0));
  Proportion none = wilson_interval(0, 0);
  CHECK(std::isnan(none.value));
  CHECK(none.lo == 0);
  CHECK(none.hi == 1);
  CHECK_THROWS_AS(wilson_interval(3, 2), Error);
}

TEST_CASE("accuracy: confusion matrix and distributions on a hand-made set") {
  std::vector<int> truth{0, 0, 1, 1, 2, 2, 2}, pred{0, 1, 1, 1, 2, 0, 2};
  ConfusionMatrix m(3);
  for (size_t i = 0; i < truth.size(); ++i) m.add(truth[i], pred[i]);
  CHECK(m.total() == 7);
  CHECK(m.count(0, 0) == 1);
  CHECK(m.count(0, 1) == 1);
  CHECK(m.count(1, 1) == 2);
  CHECK(m.count(2, 0) == 1);
  CHECK(m.count(2, 2) == 2);
  CHECK(m.count(1, 0) == 0);
  CHECK(m.accuracy().k == 5);
  CHECK(m.accuracy().value == doctest::Approx(5.0 / 7));
  CHECK(accuracy(truth, pred).value == doctest::Approx(5.0 / 7));
  std::vector<double> rn = m.row_normalised(), want{0.5, 0.5, 0, 0, 1, 0, 1.0 / 3, 0, 2.0 / 3};
  for (size_t i = 0; i < want.size(); ++i) CHECK(rn[i] == doctest::Approx(want[i]));
  CHECK(m.truth_counts() == std::vector<int64_t>{2, 2, 3});
  CHECK(m.pred_counts() == std::vector<int64_t>{2, 3, 2});
  ClassDistribution d = class_distribution(pred, 4);
  CHECK(d.counts == std::vector<int64_t>{2, 3, 2, 0});
  CHECK(d.fractions[1] == doctest::Approx(3.0 / 7));
  CHECK(d.fractions[3] == 0);
  CHECK_THROWS_WITH_AS(m.add(3, 0), doctest::Contains("(3, 0) outside 0..2"), Error);
  CHECK_THROWS_AS(class_distribution({5}, 3), Error);
  CHECK_THROWS_AS(accuracy({1, 2}, {1}), Error);
  ConfusionMatrix empty(2);
  CHECK(empty.row_normalised() == std::vector<double>{0, 0, 0, 0});
}

TEST_CASE("accuracy: cloud-cover bins with edges and counts") {
  CoverBins b;  // 0, 0.1, 0.3, 0.6, 1.0
  REQUIRE(b.bins() == 4);
  std::vector<double> cover{0, 0.05, 0.1, 0.29, 0.3, 0.6, 0.99, 1.0};
  std::vector<bool> ok{true, true, false, true, false, true, false, false};
  for (size_t i = 0; i < cover.size(); ++i) b.add(cover[i], ok[i]);
  CHECK(b.count(0) == 2);
  CHECK(b.count(1) == 2);
  CHECK(b.count(2) == 1);
  CHECK(b.count(3) == 3);  // 1.0 falls in the closed last bin
  CHECK(b.accuracy(0).value == 1.0);
  CHECK(b.accuracy(1).value == 0.5);
  CHECK(b.accuracy(2).value == 0.0);
  CHECK(b.accuracy(3).value == doctest::Approx(1.0 / 3));
  CHECK(b.label(0) == "0-10%");
  CHECK(b.label(3) == "60-100%");
  CHECK_THROWS_WITH_AS(b.add(1.2, true), doctest::Contains("cloud cover 1.2 outside [0, 1]"), Error);
  CHECK_THROWS_AS(b.add(NAN, true), Error);
  CHECK_THROWS_AS(CoverBins({0.5, 0.2}), Error);
  CoverBins two({0, 0.5, 1});
  two.add(0.5, true);
  CHECK(two.count(1) == 1);
}

TEST_CASE("accuracy: CSV quoting and atomic write") {
  CsvTable t({"name", "value"});
  t.add_row({"plain", fmt_num(0.25)});
  t.add_row({"a,b \"q\"", fmt_num(NAN)});
  t.add_row({"inf", fmt_num(-INFINITY)});
  CHECK(t.str() == "name,value\nplain,0.25\n\"a,b \"\"q\"\"\",nan\ninf,-inf\n");
  CHECK_THROWS_AS(t.add_row({"one"}), Error);
  std::string path = "/tmp/nimbus_test_accuracy_" + std::to_string(getpid()) + ".csv";
  t.write(path);
  CHECK(test::read_file(path) == t.str());
  std::remove(path.c_str());
  CHECK(fmt_num(1.0 / 3, 3) == "0.333");
}

TEST_CASE("accuracy: JSON results round-trip through the parser") {
  ConfusionMatrix m(2);
  m.add(0, 0);
  m.add(1, 0);
  m.add(1, 1);
  CoverBins bins;
  bins.add(0.2, true);
  json::Value v = json::object({{"name", json::string("tab \"1\"\n")},
                                {"ok", json::boolean(true)},
                                {"nan", json::number(NAN)},
                                {"third", json::number(1.0 / 3)},
                                {"accuracy", to_json(m.accuracy())},
                                {"confusion", to_json(m, {"A", "B"})},
                                {"bins", to_json(bins)},
                                {"dist", to_json(class_distribution({0, 1, 1}, 2), {"A", "B"})}});
  std::string text = json::dump(v);
  json::Value back = json::parse(text);
  CHECK(back.get("name")->s == "tab \"1\"\n");
  CHECK(back.get("ok")->b);
  CHECK(back.get("nan")->is(json::Value::Type::Null));
  CHECK(back.get("third")->num == 1.0 / 3);  // exact round trip
  CHECK(back.get("accuracy")->get("correct")->num == 2);
  CHECK(back.get("accuracy")->get("ci95_low")->num == doctest::Approx(wilson_interval(2, 3).lo));
  const json::Value* counts = back.get("confusion")->get("counts");
  REQUIRE(counts->arr.size() == 2);
  CHECK(counts->arr[1].arr[0].num == 1);
  CHECK(back.get("confusion")->get("row_normalised")->arr[1].arr[1].num == 0.5);
  CHECK(back.get("bins")->arr[1].get("bin")->s == "10-30%");
  CHECK(back.get("bins")->arr[1].get("total")->num == 1);
  CHECK(back.get("dist")->get("counts")->arr[1].num == 2);
  CHECK(text.rfind("{\n  \"name\": ", 0) == 0);  // pretty-printed, two spaces
  CHECK(text.find("\"correct\": 2,") != std::string::npos);  // integral numbers as integers
  CHECK_THROWS_AS(to_json(m, {"A"}), Error);
  std::string path = "/tmp/nimbus_test_accuracy_" + std::to_string(getpid()) + ".json";
  json::write(path, v);
  CHECK(test::read_file(path) == text + "\n");
  std::remove(path.c_str());
}
