// plot.cpp: canvas drawing, PNG encoding (libpng) and the four figure kinds (see plot.h).
#include "apps/common/plot.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "apps/common/accuracy.h"
#include "apps/common/font.h"
#include "kernels/common/error.h"
#include "engine/io/safetensors.h"

namespace nimbus::plot {

Rgb series_colour(int i) {
  static const Rgb palette[10] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},
                                  {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {127, 127, 127},
                                  {188, 189, 34},  {23, 190, 207}};
  return palette[((i % 10) + 10) % 10];
}

// ---- canvas -------------------------------------------------------------------

Canvas::Canvas(int width, int height, Rgb bg) : w_(width), h_(height) {
  NIMBUS_CHECK(width > 0 && height > 0 && int64_t(width) * height <= (int64_t(1) << 28), "plot: canvas size ",
               width, "x", height, " is not usable");
  px_.resize(size_t(width) * size_t(height) * 3);
  for (size_t i = 0; i < px_.size(); i += 3) px_[i] = bg.r, px_[i + 1] = bg.g, px_[i + 2] = bg.b;
}

Rgb Canvas::get(int x, int y) const {
  NIMBUS_CHECK(x >= 0 && y >= 0 && x < w_ && y < h_, "plot: pixel (", x, ", ", y, ") outside ", w_, "x", h_);
  const uint8_t* p = &px_[(size_t(y) * size_t(w_) + size_t(x)) * 3];
  return {p[0], p[1], p[2]};
}

void Canvas::set(int x, int y, Rgb c) {
  if (x < 0 || y < 0 || x >= w_ || y >= h_) return;
  uint8_t* p = &px_[(size_t(y) * size_t(w_) + size_t(x)) * 3];
  p[0] = c.r, p[1] = c.g, p[2] = c.b;
}

void Canvas::fill_rect(int x, int y, int w, int h, Rgb c) {
  for (int yy = std::max(0, y); yy < std::min(h_, y + h); ++yy)
    for (int xx = std::max(0, x); xx < std::min(w_, x + w); ++xx) set(xx, yy, c);
}

void Canvas::rect(int x, int y, int w, int h, Rgb c) {
  fill_rect(x, y, w, 1, c);
  fill_rect(x, y + h - 1, w, 1, c);
  fill_rect(x, y, 1, h, c);
  fill_rect(x + w - 1, y, 1, h, c);
}

// Bresenham, with a square brush for thickness > 1.
void Canvas::line(int x0, int y0, int x1, int y1, Rgb c, int thickness) {
  int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
  int err = dx + dy, lo = -(thickness - 1) / 2;
  for (;;) {
    fill_rect(x0 + lo, y0 + lo, thickness, thickness, c);
    if (x0 == x1 && y0 == y1) break;
    int e2 = 2 * err;
    if (e2 >= dy) err += dy, x0 += sx;
    if (e2 <= dx) err += dx, y0 += sy;
  }
}

void Canvas::text(int x, int y, const std::string& s, Rgb c, int scale) {
  int cx = x;
  for (char ch : s) {
    if (ch == '\n') {
      cx = x;
      y += font::kLineHeight * scale;
      continue;
    }
    for (int gy = 0; gy < font::kGlyphHeight; ++gy)
      for (int gx = 0; gx < font::kGlyphWidth; ++gx)
        if (font::ink(ch, gx, gy)) fill_rect(cx + gx * scale, y + gy * scale, scale, scale, c);
    cx += font::kAdvance * scale;
  }
}

void Canvas::text_up(int x, int y, const std::string& s, Rgb c, int scale) {
  // Unrotated (u along the text, v down the glyph) maps to (x + v, y - 1 - u).
  for (size_t i = 0; i < s.size(); ++i)
    for (int gy = 0; gy < font::kGlyphHeight; ++gy)
      for (int gx = 0; gx < font::kGlyphWidth; ++gx)
        if (font::ink(s[i], gx, gy)) {
          int u = (int(i) * font::kAdvance + gx) * scale, v = gy * scale;
          fill_rect(x + v, y - u - scale, scale, scale, c);
        }
}

void Canvas::blit(const Canvas& src, int x, int y) {
  for (int yy = 0; yy < src.h_; ++yy)
    for (int xx = 0; xx < src.w_; ++xx) set(x + xx, y + yy, src.get(xx, yy));
}

Canvas Canvas::upscaled(int f) const {
  NIMBUS_CHECK(f >= 1, "plot: upscale factor ", f, " must be >= 1");
  Canvas out(w_ * f, h_ * f);
  for (int y = 0; y < out.h_; ++y)
    for (int x = 0; x < out.w_; ++x) out.set(x, y, get(x / f, y / f));
  return out;
}

// ---- PNG ----------------------------------------------------------------------

namespace {
void png_append(png_structp png, png_bytep data, png_size_t n) {
  static_cast<std::string*>(png_get_io_ptr(png))->append(reinterpret_cast<const char*>(data), n);
}
void png_flush_noop(png_structp) {}
}  // namespace

std::string encode_png(const Canvas& c) {
  NIMBUS_CHECK(c.width() > 0 && c.height() > 0, "encode_png: empty canvas");
  std::string out;
  std::vector<png_bytep> rows(size_t(c.height()));
  for (int y = 0; y < c.height(); ++y)
    rows[size_t(y)] = const_cast<png_bytep>(c.pixels().data() + size_t(y) * size_t(c.width()) * 3);
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  NIMBUS_CHECK(png, "encode_png: libpng could not start");
  png_infop info = png_create_info_struct(png);
  // libpng reports errors by longjmp; everything with a destructor already exists above.
  if (!info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw Error("encode_png: libpng failed to encode the image");
  }
  png_set_write_fn(png, &out, png_append, png_flush_noop);
  png_set_IHDR(png, info, png_uint_32(c.width()), png_uint_32(c.height()), 8, PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  png_write_image(png, rows.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

void write_png(const std::string& path, const Canvas& c) { write_file_atomic(path, encode_png(c)); }

// ---- axes helpers -------------------------------------------------------------

std::vector<double> nice_ticks(double lo, double hi, int target) {
  NIMBUS_CHECK(std::isfinite(lo) && std::isfinite(hi) && hi > lo && target >= 2, "nice_ticks: bad range [", lo,
               ", ", hi, "]");
  double raw = (hi - lo) / target, mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step)
    t.push_back(std::fabs(v) < step * 1e-9 ? 0.0 : v);
  return t;
}

namespace {

const Rgb kGrid{225, 225, 225}, kAxis{40, 40, 40};

std::string tick_label(double v, double step) {
  int decimals = std::max(0, int(-std::floor(std::log10(step) + 1e-9)));
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", std::min(decimals, 6), v);
  return buf;
}

int max_width(const std::vector<std::string>& s) {
  int w = 0;
  for (const auto& x : s) w = std::max(w, font::text_width(x));
  return w;
}

void centred_title(Canvas& c, const std::string& title) {
  if (!title.empty()) c.text((c.width() - font::text_width(title, 2)) / 2, 10, title, kBlack, 2);
}

// A y axis with grid lines over the plot box [left, right] x [top, bottom] for values [lo, hi].
struct YAxis {
  double lo, hi;
  int top, bottom;
  int to_px(double v) const { return bottom - int(std::lround((v - lo) / (hi - lo) * (bottom - top))); }
};

void draw_y_axis(Canvas& c, const YAxis& ax, const std::vector<double>& ticks, int left, int right,
                 const std::string& label) {
  double step = ticks.size() > 1 ? ticks[1] - ticks[0] : 1;
  int label_w = 0;
  for (double t : ticks) {
    int y = ax.to_px(t);
    c.fill_rect(left + 1, y, right - left - 1, 1, kGrid);
    c.fill_rect(left - 4, y, 4, 1, kAxis);
    std::string s = tick_label(t, step);
    label_w = std::max(label_w, font::text_width(s));
    c.text(left - 7 - font::text_width(s), y - 3, s, kAxis);
  }
  c.fill_rect(left, ax.top, 1, ax.bottom - ax.top + 1, kAxis);
  if (!label.empty())
    c.text_up(left - 16 - label_w, (ax.top + ax.bottom + font::text_width(label)) / 2, label, kBlack);
}

// Legend entries stacked at (x, y): a colour swatch and the name.
void draw_legend(Canvas& c, int x, int y, const std::vector<std::string>& names) {
  for (size_t i = 0; i < names.size(); ++i) {
    int yy = y + int(i) * 16;
    c.fill_rect(x, yy, 14, 9, series_colour(int(i)));
    c.text(x + 20, yy + 1, names[i], kBlack);
  }
}

std::vector<std::string> names_of(const std::vector<Series>& s) {
  std::vector<std::string> n;
  for (const auto& x : s) n.push_back(x.name);
  return n;
}

}  // namespace

// ---- line chart ---------------------------------------------------------------

Canvas render_line_chart(const LineChart& spec) {
  NIMBUS_CHECK(!spec.series.empty(), "line_chart '", spec.title, "': no series");
  double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
  for (const Series& s : spec.series) {
    NIMBUS_CHECK(s.x.size() == s.y.size(), "line_chart '", spec.title, "': series '", s.name, "' has ",
                 s.x.size(), " x but ", s.y.size(), " y values");
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      xlo = std::min(xlo, s.x[i]), xhi = std::max(xhi, s.x[i]);
      ylo = std::min(ylo, s.y[i]), yhi = std::max(yhi, s.y[i]);
    }
  }
  NIMBUS_CHECK(std::isfinite(xlo), "line_chart '", spec.title, "': no finite points");
  if (xhi == xlo) xlo -= 0.5, xhi += 0.5;
  if (!std::isnan(spec.y_min)) ylo = spec.y_min;
  if (!std::isnan(spec.y_max)) yhi = spec.y_max;
  if (yhi <= ylo) ylo -= 0.5, yhi = ylo + 1;
  if (std::isnan(spec.y_min) || std::isnan(spec.y_max)) {  // pad data-driven ends by 5%
    double pad = 0.05 * (yhi - ylo);
    if (std::isnan(spec.y_min)) ylo -= pad;
    if (std::isnan(spec.y_max)) yhi += pad;
  }
  Canvas c(spec.width, spec.height);
  centred_title(c, spec.title);
  const auto names = names_of(spec.series);
  const int left = 80, top = 40, right = spec.width - max_width(names) - 50, bottom = spec.height - 50;
  NIMBUS_CHECK(right - left > 50 && bottom - top > 50, "line_chart '", spec.title, "': ", spec.width, "x",
               spec.height, " is too small");
  YAxis ay{ylo, yhi, top, bottom};
  draw_y_axis(c, ay, nice_ticks(ylo, yhi), left, right, spec.y_label);
  auto xpx = [&](double x) { return left + int(std::lround((x - xlo) / (xhi - xlo) * (right - left))); };
  std::vector<double> xt = nice_ticks(xlo, xhi, 8);
  double xstep = xt.size() > 1 ? xt[1] - xt[0] : 1;
  for (double t : xt) {
    int x = xpx(t);
    c.fill_rect(x, top, 1, bottom - top, kGrid);
    c.fill_rect(x, bottom, 1, 5, kAxis);
    std::string s = tick_label(t, xstep);
    c.text(x - font::text_width(s) / 2, bottom + 8, s, kAxis);
  }
  c.fill_rect(left, bottom, right - left + 1, 1, kAxis);
  c.text((left + right - font::text_width(spec.x_label)) / 2, bottom + 24, spec.x_label, kBlack);
  for (size_t k = 0; k < spec.series.size(); ++k) {
    const Series& s = spec.series[k];
    Rgb col = series_colour(int(k));
    bool markers = s.x.size() <= 60;
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      int x = xpx(s.x[i]), y = ay.to_px(std::clamp(s.y[i], ylo, yhi));
      if (i > 0 && std::isfinite(s.x[i - 1]) && std::isfinite(s.y[i - 1]))
        c.line(xpx(s.x[i - 1]), ay.to_px(std::clamp(s.y[i - 1], ylo, yhi)), x, y, col, 2);
      if (markers) c.fill_rect(x - 2, y - 2, 5, 5, col);
    }
  }
  c.rect(left, top, right - left + 1, bottom - top + 1, kAxis);
  draw_legend(c, right + 14, top + 4, names);
  return c;
}

void save_line_chart(const std::string& path, const LineChart& spec) { write_png(path, render_line_chart(spec)); }

// ---- bar chart ----------------------------------------------------------------

Canvas render_bar_chart(const BarChart& spec) {
  const size_t k = spec.categories.size();
  NIMBUS_CHECK(k > 0 && !spec.groups.empty(), "bar_chart '", spec.title, "': no categories or no groups");
  double vmax = 0;
  std::vector<std::string> names;
  for (const BarGroup& g : spec.groups) {
    NIMBUS_CHECK(g.values.size() == k, "bar_chart '", spec.title, "': group '", g.name, "' has ", g.values.size(),
                 " values for ", k, " categories");
    for (double v : g.values) {
      NIMBUS_CHECK(std::isfinite(v) && v >= 0, "bar_chart '", spec.title, "': bar value ", v,
                   " must be finite and >= 0");
      vmax = std::max(vmax, v);
    }
    names.push_back(g.name);
  }
  if (vmax == 0) vmax = 1;
  std::vector<double> ticks = nice_ticks(0, vmax * 1.05);
  double top_v = ticks.back() >= vmax ? ticks.back() : vmax * 1.05;
  Canvas c(spec.width, spec.height);
  centred_title(c, spec.title);
  const int left = 80, top = 40, right = spec.width - max_width(names) - 50;
  const int bottom = spec.height - max_width(spec.categories) - 20;
  NIMBUS_CHECK(right - left > 50 && bottom - top > 50, "bar_chart '", spec.title, "': ", spec.width, "x",
               spec.height, " is too small for its labels");
  YAxis ay{0, top_v, top, bottom};
  draw_y_axis(c, ay, ticks, left, right, spec.y_label);
  const double slot = double(right - left) / double(k);
  const double bar = slot * 0.8 / double(spec.groups.size());
  for (size_t i = 0; i < k; ++i) {
    double x0 = left + slot * double(i) + slot * 0.1;
    for (size_t g = 0; g < spec.groups.size(); ++g) {
      int xa = int(std::lround(x0 + bar * double(g))), xb = int(std::lround(x0 + bar * double(g + 1)));
      int y = ay.to_px(spec.groups[g].values[i]);
      c.fill_rect(xa, y, std::max(1, xb - xa - 1), bottom - y, series_colour(int(g)));
    }
    int cx = left + int(std::lround(slot * (double(i) + 0.5)));
    c.fill_rect(cx, bottom, 1, 4, kAxis);
    c.text_up(cx - 3, bottom + 8 + font::text_width(spec.categories[i]), spec.categories[i], kBlack);
  }
  c.fill_rect(left, bottom, right - left + 1, 1, kAxis);
  draw_legend(c, right + 14, top + 4, names);
  return c;
}

void save_bar_chart(const std::string& path, const BarChart& spec) { write_png(path, render_bar_chart(spec)); }

// ---- heatmap ------------------------------------------------------------------

Canvas render_heatmap(const Heatmap& spec) {
  const size_t rows = spec.row_labels.size(), cols = spec.col_labels.size();
  NIMBUS_CHECK(rows > 0 && cols > 0, "heatmap '", spec.title, "': no row or column labels");
  NIMBUS_CHECK(spec.values.size() == rows * cols, "heatmap '", spec.title, "': ", spec.values.size(),
               " values for ", rows, "x", cols, " cells");
  NIMBUS_CHECK(spec.cell_text.empty() || spec.cell_text.size() == rows * cols, "heatmap '", spec.title, "': ",
               spec.cell_text.size(), " cell texts for ", rows, "x", cols, " cells");
  NIMBUS_CHECK(spec.cell >= 8, "heatmap '", spec.title, "': cell size ", spec.cell, " is too small");
  double vmax = 0;
  for (double v : spec.values) vmax = std::isfinite(v) ? std::max(vmax, v) : vmax;
  if (vmax <= 0) vmax = 1;
  const int cell = spec.cell, rw = max_width(spec.row_labels), cw = max_width(spec.col_labels);
  const int left = rw + 34, top = 44, grid_w = cell * int(cols), grid_h = cell * int(rows);
  const int width = std::max(left + grid_w + 20, font::text_width(spec.title, 2) + 20);
  const int height = top + grid_h + cw + 36;
  Canvas c(width, height);
  centred_title(c, spec.title);
  const Rgb dark{8, 48, 107};
  for (size_t r = 0; r < rows; ++r)
    for (size_t k = 0; k < cols; ++k) {
      double v = spec.values[r * cols + k];
      double t = std::isfinite(v) ? std::clamp(v / vmax, 0.0, 1.0) : 0.0;
      auto mix = [&](uint8_t a, uint8_t b) { return uint8_t(std::lround(a + (b - a) * t)); };
      Rgb fill{mix(247, dark.r), mix(251, dark.g), mix(255, dark.b)};
      int x = left + int(k) * cell, y = top + int(r) * cell;
      c.fill_rect(x, y, cell, cell, fill);
      std::string s = spec.cell_text.empty() ? fmt_num(v, 3) : spec.cell_text[r * cols + k];
      std::vector<std::string> lines;
      std::stringstream ss(s);
      for (std::string l; std::getline(ss, l);) lines.push_back(l);
      int th = int(lines.size()) * font::kLineHeight - 2;
      for (size_t i = 0; i < lines.size(); ++i)
        c.text(x + (cell - font::text_width(lines[i])) / 2, y + (cell - th) / 2 + int(i) * font::kLineHeight,
               lines[i], t > 0.5 ? kWhite : kBlack);
    }
  for (int i = 0; i <= int(rows); ++i) c.fill_rect(left, top + i * cell, grid_w + 1, 1, Rgb{200, 200, 200});
  for (int i = 0; i <= int(cols); ++i) c.fill_rect(left + i * cell, top, 1, grid_h + 1, Rgb{200, 200, 200});
  for (size_t r = 0; r < rows; ++r)
    c.text(left - 6 - font::text_width(spec.row_labels[r]), top + int(r) * cell + cell / 2 - 3, spec.row_labels[r],
           kBlack);
  for (size_t k = 0; k < cols; ++k)
    c.text_up(left + int(k) * cell + cell / 2 - 3, top + grid_h + 6 + font::text_width(spec.col_labels[k]),
              spec.col_labels[k], kBlack);
  c.text_up(6, top + (grid_h + font::text_width(spec.y_label)) / 2, spec.y_label, kBlack);
  c.text(left + (grid_w - font::text_width(spec.x_label)) / 2, height - 14, spec.x_label, kBlack);
  return c;
}

void save_heatmap(const std::string& path, const Heatmap& spec) { write_png(path, render_heatmap(spec)); }

// ---- image panels -------------------------------------------------------------

Canvas render_panels(const std::vector<Panel>& panels, const std::string& title, int min_size) {
  NIMBUS_CHECK(!panels.empty(), "image panels: nothing to draw");
  const int gap = 12, title_h = 20, top = title.empty() ? 8 : 36;
  std::vector<Canvas> big;
  int width = gap, height = 0;
  for (const Panel& p : panels) {
    NIMBUS_CHECK(p.image.width() > 0, "image panels: panel '", p.title, "' has no image");
    int f = std::max(1, (min_size + p.image.height() - 1) / p.image.height());
    big.push_back(p.image.upscaled(f));
    width += std::max(big.back().width(), font::text_width(p.title)) + gap;
    height = std::max(height, big.back().height());
  }
  Canvas c(std::max(width, font::text_width(title, 2) + 20), top + title_h + height + gap);
  centred_title(c, title);
  int x = gap;
  for (size_t i = 0; i < big.size(); ++i) {
    int w = std::max(big[i].width(), font::text_width(panels[i].title));
    c.text(x + (w - font::text_width(panels[i].title)) / 2, top + 4, panels[i].title, kBlack);
    c.blit(big[i], x + (w - big[i].width()) / 2, top + title_h);
    x += w + gap;
  }
  return c;
}

void save_panels(const std::string& path, const std::vector<Panel>& panels, const std::string& title,
                 int min_size) {
  write_png(path, render_panels(panels, title, min_size));
}

namespace {
uint8_t to_byte(double v) { return std::isfinite(v) ? uint8_t(std::lround(std::clamp(v, 0.0, 1.0) * 255)) : 0; }
}  // namespace

Canvas s2_rgb(const float* chw, int channels, int height, int width, float white) {
  NIMBUS_CHECK(chw && channels >= 4 && height > 0 && width > 0, "s2_rgb: need a (C>=4, H, W) Sentinel-2 image, got (",
               channels, ",", height, ",", width, ")");
  NIMBUS_CHECK(white > 0, "s2_rgb: white point ", white, " must be positive");
  const size_t hw = size_t(height) * size_t(width);
  const float *r = chw + 3 * hw, *g = chw + 2 * hw, *b = chw + 1 * hw;  // B4, B3, B2 (1-based)
  Canvas c(width, height);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      size_t i = size_t(y) * size_t(width) + size_t(x);
      c.set(x, y, {to_byte(r[i] / white), to_byte(g[i] / white), to_byte(b[i] / white)});
    }
  return c;
}

Canvas grey(const float* hw, int height, int width, float lo, float hi) {
  NIMBUS_CHECK(hw && height > 0 && width > 0 && hi > lo, "grey: need an (H, W) plane and lo < hi, got ", height,
               "x", width, " [", lo, ", ", hi, "]");
  Canvas c(width, height);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      uint8_t v = to_byte((double(hw[size_t(y) * size_t(width) + size_t(x)]) - lo) / (double(hi) - lo));
      c.set(x, y, {v, v, v});
    }
  return c;
}

}  // namespace nimbus::plot
