// json.h: the JSON tree nimbus reads safetensors headers, checkpoint metadata, model configs and
// results files into, and writes them from. Parsing and writing are nlohmann-json's (json.cpp);
// this small Value is what the callers walk, in file order. Strict: malformed input throws Error
// with nlohmann's description and byte position. Numbers are kept as double (exact for ints < 2^53).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace nimbus::json {

struct Value {
  enum class Type { Null, Bool, Number, String, Array, Object } type = Type::Null;
  bool b = false;
  double num = 0;
  std::string s;
  std::vector<Value> arr;
  std::vector<std::pair<std::string, Value>> obj;  // keeps file order

  const Value* get(const std::string& key) const;
  bool is(Type t) const { return type == t; }

  // Out of line (json.cpp): `obj` holds Values, an incomplete type here, which clang's libstdc++
  // vector refuses to destroy inline (the fuzz build, scripts/fuzz.sh).
  Value();
  Value(const Value&);
  Value(Value&&) noexcept;
  Value& operator=(const Value&);
  Value& operator=(Value&&) noexcept;
  ~Value();
};

// Text -> Value. Error on malformed JSON, nesting deeper than 64, or a key repeated in an object.
Value parse(const std::string& text);
std::string quote(const std::string& s);  // a JSON string literal with escapes; Error if not UTF-8
// Value -> text: indent < 0 on one line, else pretty-printed; NaN and infinities become null,
// integral numbers below 2^53 are written as integers, others in the shortest form that round-trips.
std::string dump(const Value& v, int indent = 2);
void write(const std::string& path, const Value& v);  // dump(v) and a newline, written atomically

}  // namespace nimbus::json
