// json.cpp: recursive-descent JSON parser (RFC 8259 subset: no surrogate pairs
// beyond passing \u escapes through as UTF-8).
#include "engine/io/json.h"

#include <cstdio>
#include <cstdlib>

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
struct Parser {
  const std::string& t;
  size_t i = 0;
  int depth = 0;

  [[noreturn]] void fail(const std::string& what) { throw Error(str("JSON: ", what, " at byte ", i)); }
  void ws() {
    while (i < t.size() && (t[i] == ' ' || t[i] == '\n' || t[i] == '\r' || t[i] == '\t')) ++i;
  }
  char peek() {
    ws();
    if (i >= t.size()) fail("unexpected end");
    return t[i];
  }
  void expect(char c) {
    if (peek() != c) fail(str("expected '", c, "'"));
    ++i;
  }
  static void put_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) out += char(cp);
    else if (cp < 0x800) { out += char(0xC0 | (cp >> 6)); out += char(0x80 | (cp & 0x3F)); }
    else { out += char(0xE0 | (cp >> 12)); out += char(0x80 | ((cp >> 6) & 0x3F)); out += char(0x80 | (cp & 0x3F)); }
  }
  std::string string() {
    expect('"');
    std::string out;
    while (true) {
      if (i >= t.size()) fail("unterminated string");
      char c = t[i++];
      if (c == '"') return out;
      if (c != '\\') { out += c; continue; }
      if (i >= t.size()) fail("unterminated escape");
      char e = t[i++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          if (i + 4 > t.size()) fail("short \\u escape");
          unsigned cp = unsigned(std::strtoul(t.substr(i, 4).c_str(), nullptr, 16));
          i += 4;
          put_utf8(out, cp);
          break;
        }
        default: fail("bad escape");
      }
    }
  }
  Value value() {
    if (++depth > 64) fail("nesting too deep");
    Value v;
    char c = peek();
    if (c == '{') {
      v.type = Value::Type::Object;
      ++i;
      if (peek() == '}') ++i;
      else
        while (true) {
          std::string k = string();
          expect(':');
          v.obj.emplace_back(std::move(k), value());
          if (peek() == ',') { ++i; continue; }
          expect('}');
          break;
        }
    } else if (c == '[') {
      v.type = Value::Type::Array;
      ++i;
      if (peek() == ']') ++i;
      else
        while (true) {
          v.arr.push_back(value());
          if (peek() == ',') { ++i; continue; }
          expect(']');
          break;
        }
    } else if (c == '"') {
      v.type = Value::Type::String;
      v.s = string();
    } else if (t.compare(i, 4, "true") == 0) { v.type = Value::Type::Bool; v.b = true; i += 4; }
    else if (t.compare(i, 5, "false") == 0) { v.type = Value::Type::Bool; i += 5; }
    else if (t.compare(i, 4, "null") == 0) { i += 4; }
    else {
      const char* begin = t.c_str() + i;
      char* end = nullptr;
      v.num = std::strtod(begin, &end);
      if (end == begin) fail("unexpected character");
      v.type = Value::Type::Number;
      i += size_t(end - begin);
    }
    --depth;
    return v;
  }
};
}  // namespace

Value parse(const std::string& text) {
  Parser p{text};
  Value v = p.value();
  p.ws();
  if (p.i != text.size()) p.fail("trailing characters");
  return v;
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else out += char(c);
  }
  return out + "\"";
}

}  // namespace nimbus::json
