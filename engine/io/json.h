// json.h: a minimal JSON value and parser, enough for safetensors headers and
// nimbus' own config/metadata strings. Strict: malformed input throws Error
// with the byte offset. Numbers are kept as double (exact for ints < 2^53).
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

Value parse(const std::string& text);
std::string quote(const std::string& s);  // a JSON string literal with escapes

}  // namespace nimbus::json
