// font.h: a 5x7 bitmap font (with a descender row) for the ASCII printable characters (32..126), for
// the text in PNG figures (titles, tick labels, legends) without any font library.
//
// The glyphs were drawn for nimbus and are in the public domain. Each glyph is
// 5 pixels wide and 7 high above the baseline, plus one row for descenders
// (g j p q y ,); text advances 6 pixels per character and 10 per line.
// Characters outside 32..126 draw as '?'.
#pragma once
#include <cstdint>
#include <string>

namespace nimbus::font {

constexpr int kGlyphWidth = 5, kGlyphHeight = 8, kAdvance = 6, kLineHeight = 10;

// Row y (0 = top) of character c: bit (4 - x) is set when column x is ink.
uint8_t glyph_row(char c, int y);
inline bool ink(char c, int x, int y) { return (glyph_row(c, y) >> (4 - x)) & 1; }

// Width in pixels of s drawn at `scale` (no trailing gap).
inline int text_width(const std::string& s, int scale = 1) {
  return s.empty() ? 0 : (int(s.size()) * kAdvance - 1) * scale;
}

}  // namespace nimbus::font
