// json.cpp: JSON text <-> json::Value through nlohmann-json (Debian's nlohmann-json3-dev). Parsing
// goes through its SAX interface straight into Value, so that nesting depth and duplicate object
// keys are refused while reading (a safetensors header is untrusted input); writing goes through
// its serializer (escapes, UTF-8 checks, shortest round-trip numbers).
#include "engine/io/json.h"

#include <cmath>
#include <unordered_set>
#include <nlohmann/json.hpp>

#include "engine/io/safetensors.h"  // write_file_atomic
#include "kernels/common/error.h"

namespace nimbus::json {

Value::Value() = default;
Value::Value(const Value&) = default;
Value::Value(Value&&) noexcept = default;
Value& Value::operator=(const Value&) = default;
Value& Value::operator=(Value&&) noexcept = default;
Value::~Value() = default;

const Value* Value::get(const std::string& key) const {
  for (const auto& [k, v] : obj)
    if (k == key) return &v;
  return nullptr;
}

namespace {

using Json = nlohmann::ordered_json;
constexpr size_t kMaxDepth = 64;

// Builds a Value from nlohmann's SAX events. `open` holds the arrays and objects being filled;
// `keys` the key each object member waits for.
struct Builder : nlohmann::json_sax<Json> {
  Value root;
  std::vector<Value*> open;
  std::vector<std::string> keys;                         // the key waiting for its value, per open object
  std::vector<std::unordered_set<std::string>> seen;     // the keys of each open object, to refuse repeats
  std::string error;

  bool put(Value v) {
    if (open.empty()) {
      root = std::move(v);
      return true;
    }
    Value& parent = *open.back();
    if (parent.is(Value::Type::Array)) {
      parent.arr.push_back(std::move(v));
    } else {
      parent.obj.emplace_back(std::move(keys.back()), std::move(v));
      keys.pop_back();
    }
    return true;
  }
  bool start(Value::Type t) {
    if (open.size() >= kMaxDepth) {
      error = "nesting too deep";
      return false;
    }
    Value v;
    v.type = t;
    put(std::move(v));
    Value& parent = open.empty() ? root : *open.back();
    Value* added = open.empty() ? &root : parent.is(Value::Type::Array) ? &parent.arr.back() : &parent.obj.back().second;
    open.push_back(added);
    if (t == Value::Type::Object) seen.emplace_back();
    return true;
  }
  bool scalar(Value::Type t, double num = 0, bool b = false, std::string s = {}) {
    Value v;
    v.type = t;
    v.num = num, v.b = b, v.s = std::move(s);
    return put(std::move(v));
  }
  bool null() override { return put(Value()); }
  bool boolean(bool v) override { return scalar(Value::Type::Bool, 0, v); }
  bool number_integer(number_integer_t v) override { return scalar(Value::Type::Number, double(v)); }
  bool number_unsigned(number_unsigned_t v) override { return scalar(Value::Type::Number, double(v)); }
  bool number_float(number_float_t v, const string_t&) override { return scalar(Value::Type::Number, v); }
  bool string(string_t& v) override { return scalar(Value::Type::String, 0, false, std::move(v)); }
  bool binary(binary_t&) override { return false; }  // not in JSON text
  bool start_object(std::size_t) override { return start(Value::Type::Object); }
  bool key(string_t& k) override {
    if (!seen.back().insert(k).second) {  // a hash set: a header of a million keys stays linear
      error = "duplicate key \"" + k + "\"";
      return false;
    }
    keys.push_back(std::move(k));
    return true;
  }
  bool end_object() override {
    open.pop_back();
    seen.pop_back();
    return true;
  }
  bool start_array(std::size_t) override { return start(Value::Type::Array); }
  bool end_array() override {
    open.pop_back();
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    error = e.what();
    return false;
  }
};

// A finite integral number below 2^53 is written as an integer ("5", not "5.0").
Json to_nlohmann(const Value& v) {
  switch (v.type) {
    case Value::Type::Null: return nullptr;
    case Value::Type::Bool: return v.b;
    case Value::Type::Number:
      if (!std::isfinite(v.num)) return nullptr;  // JSON has no NaN
      if (v.num == std::floor(v.num) && std::fabs(v.num) < 9007199254740992.0) return int64_t(v.num);
      return v.num;
    case Value::Type::String: return v.s;
    case Value::Type::Array: {
      Json a = Json::array();
      for (const Value& x : v.arr) a.push_back(to_nlohmann(x));
      return a;
    }
    case Value::Type::Object: {
      Json o = Json::object();
      for (const auto& [k, x] : v.obj) o[k] = to_nlohmann(x);
      return o;
    }
  }
  return nullptr;
}

std::string serialize(const Json& j, int indent) {
  try {
    return j.dump(indent);
  } catch (const Json::exception& e) {  // a string that is not UTF-8
    throw Error(str("JSON: cannot write: ", e.what()));
  }
}

}  // namespace

Value parse(const std::string& text) {
  // nlohmann's lexer ends the input at a NUL byte; JSON allows none outside strings (and inside only
  // escaped), so one anywhere is an error, not the end.
  if (const size_t nul = text.find('\0'); nul != std::string::npos)
    throw Error(str("JSON: a NUL byte at byte ", nul));
  Builder b;
  // Keys must be checked before they are lost: the builder sees every member in order.
  const bool ok = Json::sax_parse(text, &b, nlohmann::detail::input_format_t::json, /*strict=*/true);
  if (!ok) throw Error(str("JSON: ", b.error.empty() ? "malformed" : b.error));
  return std::move(b.root);
}

std::string quote(const std::string& s) { return serialize(Json(s), -1); }

std::string dump(const Value& v, int indent) { return serialize(to_nlohmann(v), indent); }

void write(const std::string& path, const Value& v) { write_file_atomic(path, dump(v) + "\n"); }

}  // namespace nimbus::json
