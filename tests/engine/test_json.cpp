// test_json.cpp: engine/io/json.h on nlohmann-json: what parse accepts and refuses (untrusted
// safetensors headers go through it), and what dump writes.
#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include "engine/io/json.h"
#include "kernels/common/error.h"

using namespace nimbus;

TEST_CASE("json: parse keeps members in file order, numbers as double, escapes decoded") {
  const json::Value v = json::parse(R"( {"b": [1, -2.5e3, 9007199254740993], "a": {"s": "x\"\u00e9\n", "t": true,
                                         "n": null}} )");
  REQUIRE(v.is(json::Value::Type::Object));
  REQUIRE(v.obj.size() == 2);
  CHECK(v.obj[0].first == "b");  // not sorted
  CHECK(v.get("b")->arr[1].num == -2500);
  CHECK(v.get("b")->arr[2].num == 9007199254740992.0);  // beyond 2^53: the nearest double
  CHECK(v.get("a")->get("s")->s == "x\"\xc3\xa9\n");
  CHECK(v.get("a")->get("t")->b);
  CHECK(v.get("a")->get("n")->is(json::Value::Type::Null));
  CHECK(v.get("missing") == nullptr);
}

TEST_CASE("json: malformed, too deep, duplicate keys, NUL bytes and trailing text are Errors") {
  auto refuses = [](const std::string& text, const char* why) {
    CAPTURE(text);
    CHECK_THROWS_WITH_AS(json::parse(text), doctest::Contains(why), Error);
  };
  refuses("{\"a\": 1, \"a\": 2}", "duplicate key \"a\"");
  refuses(std::string(65, '[') + std::string(65, ']'), "nesting too deep");
  refuses(std::string("{\"a\": 1}  \0\0", 12), "NUL byte at byte 10");
  refuses("{\"a\": 1} x", "JSON:");
  refuses("{\"a\": }", "JSON:");
  refuses("[1, 2", "JSON:");
  refuses("", "JSON:");
  refuses("\"\xff\"", "JSON:");  // not UTF-8
  CHECK_NOTHROW(json::parse(std::string(64, '[') + std::string(64, ']')));
}

TEST_CASE("json: dump writes integers as integers, NaN as null, and refuses strings that are not UTF-8") {
  json::Value v;
  v.type = json::Value::Type::Array;
  for (double x : {5.0, -0.5, 1.0 / 3, std::nan(""), 1e300}) {
    json::Value n;
    n.type = json::Value::Type::Number;
    n.num = x;
    v.arr.push_back(n);
  }
  const std::string text = json::dump(v, -1);
  CHECK(text.rfind("[5,-0.5,0.333333333333333", 0) == 0);
  CHECK(text.find(",null,1e+300]") != std::string::npos);
  CHECK(json::parse(text).arr[2].num == 1.0 / 3);  // round trip
  CHECK(json::quote("a\"b\n") == "\"a\\\"b\\n\"");
  CHECK_THROWS_WITH_AS(json::quote("\xff"), doctest::Contains("cannot write"), Error);
}
