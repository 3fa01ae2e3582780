// plot.cpp: the four figure kinds of plot.h drawn with PLplot: the spec checks, then one PLplot
// stream per output file (cairo's pngcairo for PNG, PLplot's svg driver for SVG). Layout is worked
// out in millimetres of the page (plgspa) and of the character height (plschr), so the same code lays
// out both files alike. Without PLplot (NIMBUS_PLOTS=OFF) the checks stay and save() throws.
#include "apps/common/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <utility>

#include "engine/io/output_path.h"
#include "kernels/common/error.h"

#ifdef NIMBUS_WITH_PLPLOT
#include <plplot/plplot.h>
#endif

namespace nimbus::plot {

Rgb series_colour(int i) {
  static const Rgb palette[10] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},
                                  {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {127, 127, 127},
                                  {188, 189, 34},  {23, 190, 207}};
  return palette[((i % 10) + 10) % 10];
}

// ---- spec checks (every build) ---------------------------------------------------

namespace {

void check(const LineChart& s) {
  NIMBUS_CHECK(!s.series.empty(), "line chart '", s.title, "': no series");
  bool any = false;
  for (const Series& x : s.series) {
    NIMBUS_CHECK(x.x.size() == x.y.size(), "line chart '", s.title, "': series '", x.name, "' has ", x.x.size(),
                 " x but ", x.y.size(), " y values");
    for (size_t i = 0; i < x.x.size(); ++i) any |= std::isfinite(x.x[i]) && std::isfinite(x.y[i]);
  }
  NIMBUS_CHECK(any, "line chart '", s.title, "': no finite points");
  NIMBUS_CHECK(s.width >= 200 && s.height >= 150 && s.width <= 8000 && s.height <= 8000, "line chart '", s.title,
               "': size ", s.width, "x", s.height, " is not usable");
}

void check(const BarChart& s) {
  NIMBUS_CHECK(!s.categories.empty() && !s.groups.empty(), "bar chart '", s.title, "': no categories or no groups");
  for (const BarGroup& g : s.groups) {
    NIMBUS_CHECK(g.values.size() == s.categories.size(), "bar chart '", s.title, "': group '", g.name, "' has ",
                 g.values.size(), " values for ", s.categories.size(), " categories");
    for (double v : g.values)  // NaN: no bar (nothing to measure there)
      NIMBUS_CHECK(std::isnan(v) || (std::isfinite(v) && v >= 0), "bar chart '", s.title, "': bar value ", v,
                   " must be finite and >= 0, or NaN for none");
  }
  NIMBUS_CHECK(s.width >= 200 && s.height >= 150 && s.width <= 8000 && s.height <= 8000, "bar chart '", s.title,
               "': size ", s.width, "x", s.height, " is not usable");
}

void check(const Heatmap& s) {
  const size_t rows = s.row_labels.size(), cols = s.col_labels.size();
  NIMBUS_CHECK(rows > 0 && cols > 0, "heatmap '", s.title, "': no row or column labels");
  NIMBUS_CHECK(s.values.size() == rows * cols, "heatmap '", s.title, "': ", s.values.size(), " values for ", rows,
               "x", cols, " cells");
  NIMBUS_CHECK(s.cell_text.empty() || s.cell_text.size() == rows * cols, "heatmap '", s.title, "': ",
               s.cell_text.size(), " cell texts for ", rows, "x", cols, " cells");
  NIMBUS_CHECK(s.width >= 200 && s.height >= 150 && s.width <= 8000 && s.height <= 8000, "heatmap '", s.title,
               "': size ", s.width, "x", s.height, " is not usable");
}

void check(const PanelGrid& s) {
  NIMBUS_CHECK(!s.rows.empty(), "image panels '", s.title, "': no rows");
  for (const PanelRow& r : s.rows) {
    NIMBUS_CHECK(!r.panels.empty(), "image panels '", s.title, "': row '", r.caption, "' has no panels");
    for (const Panel& p : r.panels)
      NIMBUS_CHECK(!p.image.empty(), "image panels '", s.title, "': panel '", p.title, "' has no image");
  }
  NIMBUS_CHECK(s.panel_size >= 32 && s.panel_size <= 2048, "image panels '", s.title, "': panel size ",
               s.panel_size, " is not usable");
}

}  // namespace

#ifndef NIMBUS_WITH_PLPLOT

bool available() { return false; }
namespace {
[[noreturn]] void unavailable(const std::string& stem) {
  throw Error(str(stem, ": this build draws no figures (configured with NIMBUS_PLOTS=OFF, without PLplot); "
                        "plot_figures draws a run's figures.json where PLplot is installed"));
}
}  // namespace
void save(const std::string& stem, const LineChart& s) { check(s), unavailable(stem); }
void save(const std::string& stem, const BarChart& s) { check(s), unavailable(stem); }
void save(const std::string& stem, const Heatmap& s) { check(s), unavailable(stem); }
void save(const std::string& stem, const PanelGrid& s) { check(s), unavailable(stem); }

#else

bool available() { return true; }

namespace {

// ---- PLplot streams ----------------------------------------------------------------

// cmap0 entries: PLplot colours by index; 5.. are the series.
enum Colour : PLINT { kBackground = 0, kInk = 1, kGrid = 2, kCellLine = 3, kWhiteInk = 4, kFirstSeries = 5 };
constexpr int kSeriesColours = 10;
constexpr double kTextPx = 15;  // character height in pixels (PNG); the SVG scales alike

// PLplot reports a fatal error by calling exit(); plsexit lets us throw instead. The exception passes
// through PLplot's C frames, which gcc on x86-64 builds with unwind tables; they hold no cleanups.
int throw_on_plplot_exit(const char* message) { throw Error(str("PLplot: ", message ? message : "error")); }

// Ends the current stream after an error, as PLplot's own exit path would have (plexit calls plend),
// so that its memory and file are released; a second error while ending is ignored.
void end_stream_after_error() {
  try {
    plend1();
  } catch (const Error&) {
  }
}

// One output file: a fresh PLplot stream for `device` writing to a temporary name, renamed into place
// by finish(). On an exception the stream is ended and the temporary file removed.
class Page {
 public:
  Page(const std::string& path, const char* device, int width, int height)
      : path_(path), target_(atomic_output_path(path)), tmp_(target_ + ".tmp") {
    PLINT stream = 0;
    plmkstrm(&stream);
    plsexit(throw_on_plplot_exit);
    try {
      start(device, width, height);
    } catch (...) {
      end_stream_after_error();
      std::filesystem::remove(tmp_);
      throw;
    }
  }
  Page(const Page&) = delete;
  Page& operator=(const Page&) = delete;
  ~Page() {
    if (done_) return;
    end_stream_after_error();
    std::filesystem::remove(tmp_);
  }
  void finish() {
    done_ = true;  // whatever happens next, the destructor must not end the stream a second time
    try {
      plend1();
    } catch (...) {
      std::filesystem::remove(tmp_);
      throw;
    }
    std::error_code ec;
    keep_target_mode(tmp_, target_);
    std::filesystem::rename(tmp_, target_, ec);
    NIMBUS_CHECK(!ec, path_, ": cannot rename the finished figure into place: ", ec.message());
  }
  double width_mm() const { return page_w_; }
  double height_mm() const { return page_h_; }
  double char_mm() const { return char_mm_; }  // one line of text
  double px(double n) const { return n * mm_per_px_; }

 private:
  void start(const char* device, int width, int height) {
    plsdev(device);
    plsfnam(tmp_.c_str());
    plspage(90, 90, width, height, 0, 0);
    plscolbg(255, 255, 255);
    plscmap0n(kFirstSeries + kSeriesColours);
    plscol0(kInk, 0, 0, 0);
    plscol0(kGrid, 225, 225, 225);
    plscol0(kCellLine, 200, 200, 200);
    plscol0(kWhiteInk, 255, 255, 255);
    for (int i = 0; i < kSeriesColours; ++i) {
      const Rgb c = series_colour(i);
      plscol0(kFirstSeries + i, c.r, c.g, c.b);
    }
    plinit();
    pladv(0);
    PLFLT x0, x1, y0, y1;
    plgspa(&x0, &x1, &y0, &y1);
    page_w_ = x1 - x0, page_h_ = y1 - y0;
    mm_per_px_ = page_w_ / width;
    plschr(kTextPx * mm_per_px_ / 1.4, 1.0);  // PLplot's "height" is about 1/1.4 of the line height
    PLFLT def, ht;
    plgchr(&def, &ht);
    char_mm_ = ht;
    plcol0(kInk);
    plwidth(1);
  }

  std::string path_, target_, tmp_;  // target_: atomic_output_path(path_)
  bool done_ = false;
  double page_w_ = 0, page_h_ = 0, mm_per_px_ = 0, char_mm_ = 0;
};

// Width of a text line: PLplot keeps its string-length function private and the fonts are cairo's,
// so this is an upper estimate from the character height (sans-serif averages about 0.6 of it).
double text_mm(const std::string& s) {
  PLFLT def, ht;
  plgchr(&def, &ht);
  return 0.8 * ht * double(s.size());
}
double widest_mm(const std::vector<std::string>& v) {
  double w = 0;
  for (const std::string& s : v) w = std::max(w, text_mm(s));
  return w;
}

// A legend outside the plot's right edge, top aligned: coloured lines or boxes and the names.
enum class Key { Line, Box };
void legend(const std::vector<std::string>& names, Key key) {
  const PLINT n = PLINT(names.size());
  std::vector<PLINT> opt(n, key == Key::Line ? PL_LEGEND_LINE : PL_LEGEND_COLOR_BOX), colours(n), zero(n, 0),
      text_colours(n, kInk), styles(n, 1), patterns(n, 0), symbol_numbers(n, 0);
  std::vector<PLFLT> ones(n, 1.0), widths(n, 2.0), box_scales(n, 0.8);
  std::vector<const char*> text(n), symbols(n, "");
  for (PLINT i = 0; i < n; ++i) colours[i] = kFirstSeries + i % kSeriesColours, text[i] = names[i].c_str();
  PLFLT w, h;
  pllegend(&w, &h, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX, PL_POSITION_RIGHT | PL_POSITION_OUTSIDE, 0.02, 0.0, 0.06, kBackground, kInk, 1, 0, 0, n, opt.data(), 1.0, 1.0, 1.6, 0.0,
           text_colours.data(), text.data(), colours.data(), patterns.data(), box_scales.data(), ones.data(),
           colours.data(), styles.data(), widths.data(), colours.data(), ones.data(), symbol_numbers.data(),
           symbols.data());
}
double legend_mm(const Page& p, const std::vector<std::string>& names) {
  return widest_mm(names) + p.char_mm() * 7;  // the names, the key samples, gaps and box
}

// ---- the four kinds ----------------------------------------------------------------

void draw(const Page& p, const LineChart& s) {
  double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
  std::vector<std::string> names;
  for (const Series& x : s.series) {
    names.push_back(x.name);
    for (size_t i = 0; i < x.x.size(); ++i)
      if (std::isfinite(x.x[i]) && std::isfinite(x.y[i]))
        xlo = std::min(xlo, x.x[i]), xhi = std::max(xhi, x.x[i]), ylo = std::min(ylo, x.y[i]),
        yhi = std::max(yhi, x.y[i]);
  }
  if (xhi == xlo) xlo -= 0.5, xhi += 0.5;
  if (!std::isnan(s.y_min)) ylo = s.y_min;
  if (!std::isnan(s.y_max)) yhi = s.y_max;
  if (yhi <= ylo) ylo -= 0.5, yhi = ylo + 1;
  const double pad = 0.05 * (yhi - ylo);  // data-driven ends get 5% room
  if (std::isnan(s.y_min)) ylo -= pad;
  if (std::isnan(s.y_max)) yhi += pad;

  const double c = p.char_mm();
  const double right = p.width_mm() - legend_mm(p, names) - c;
  NIMBUS_CHECK(right - 8 * c > 20 * c, "line chart '", s.title, "': ", s.width, "x", s.height,
               " is too narrow for its legend");
  plsvpa(7 * c, right, 4 * c, p.height_mm() - 3 * c);
  plwind(xlo, xhi, ylo, yhi);
  plcol0(kGrid);
  plbox("g", 0, 0, "g", 0, 0);
  plcol0(kInk);
  plbox("bcnst", 0, 0, "bcnstv", 0, 0);
  pllab(s.x_label.c_str(), s.y_label.c_str(), s.title.c_str());
  plwidth(2);
  for (size_t k = 0; k < s.series.size(); ++k) {
    const Series& x = s.series[k];
    plcol0(kFirstSeries + PLINT(k) % kSeriesColours);
    std::vector<PLFLT> px, py;
    auto flush = [&] {
      if (px.size() > 1) plline(PLINT(px.size()), px.data(), py.data());
      if (!px.empty() && x.x.size() <= 60) plpoin(PLINT(px.size()), px.data(), py.data(), 17);
      px.clear(), py.clear();
    };
    for (size_t i = 0; i < x.x.size(); ++i) {
      if (!std::isfinite(x.x[i]) || !std::isfinite(x.y[i])) {
        flush();
        continue;
      }
      px.push_back(x.x[i]);
      py.push_back(std::clamp(x.y[i], ylo, yhi));
    }
    flush();
  }
  plwidth(1);
  plcol0(kInk);
  legend(names, Key::Line);
}

void draw(const Page& p, const BarChart& s) {
  double vmax = 0;
  std::vector<std::string> names;
  for (const BarGroup& g : s.groups) {
    names.push_back(g.name);
    for (double v : g.values)
      if (!std::isnan(v)) vmax = std::max(vmax, v);
  }
  if (vmax == 0) vmax = 1;
  const double c = p.char_mm();
  const double bottom = widest_mm(s.categories) + 3 * c, right = p.width_mm() - legend_mm(p, names) - c;
  NIMBUS_CHECK(right - 8 * c > 20 * c && p.height_mm() - 3 * c - bottom > 10 * c, "bar chart '", s.title, "': ",
               s.width, "x", s.height, " is too small for its labels");
  const double k = double(s.categories.size()), groups = double(s.groups.size());
  plsvpa(7 * c, right, bottom, p.height_mm() - 3 * c);
  plwind(0, k, 0, vmax * 1.08);
  plcol0(kGrid);
  plbox("", 0, 0, "g", 0, 0);
  for (size_t g = 0; g < s.groups.size(); ++g) {
    plcol0(kFirstSeries + PLINT(g) % kSeriesColours);
    for (size_t i = 0; i < s.categories.size(); ++i) {
      const double x0 = double(i) + 0.1 + 0.8 * double(g) / groups, x1 = x0 + 0.8 / groups * 0.92;
      PLFLT xs[4] = {x0, x1, x1, x0}, ys[4] = {0, 0, s.groups[g].values[i], s.groups[g].values[i]};
      if (s.groups[g].values[i] > 0) plfill(4, xs, ys);  // not NaN (no bar) nor 0
    }
  }
  plcol0(kInk);
  plbox("bc", 0, 0, "bcnstv", 0, 0);
  for (size_t i = 0; i < s.categories.size(); ++i)
    plmtex("bv", 0.6, (double(i) + 0.5) / k, 1.0, s.categories[i].c_str());
  pllab("", s.y_label.c_str(), s.title.c_str());
  legend(names, Key::Box);
}

void draw(const Page& p, const Heatmap& s) {
  const size_t rows = s.row_labels.size(), cols = s.col_labels.size();
  double vmax = 0;
  for (double v : s.values) vmax = std::isfinite(v) ? std::max(vmax, v) : vmax;
  if (vmax <= 0) vmax = 1;
  const double c = p.char_mm();
  const double left = widest_mm(s.row_labels) + 3.5 * c, bottom = widest_mm(s.col_labels) + 3.5 * c;
  const double avail_w = p.width_mm() - left - c, avail_h = p.height_mm() - bottom - 3 * c;
  const double cell = std::min(avail_w / double(cols), avail_h / double(rows));
  NIMBUS_CHECK(cell > 2 * c, "heatmap '", s.title, "': ", s.width, "x", s.height, " is too small for ", rows, "x",
               cols, " cells and their labels");
  const double x0 = left + (avail_w - cell * double(cols)) / 2, y1 = p.height_mm() - 3 * c;
  plsvpa(x0, x0 + cell * double(cols), y1 - cell * double(rows), y1);
  plwind(0, double(cols), 0, double(rows));
  PLFLT pos[2] = {0, 1}, r[2] = {247 / 255.0, 8 / 255.0}, g[2] = {251 / 255.0, 48 / 255.0},
        b[2] = {1.0, 107 / 255.0};
  plscmap1l(1, 2, pos, r, g, b, nullptr);
  for (size_t i = 0; i < rows; ++i)
    for (size_t k = 0; k < cols; ++k) {
      const double v = s.values[i * cols + k], t = std::isfinite(v) ? std::clamp(v / vmax, 0.0, 1.0) : 0.0;
      const double y = double(rows - 1 - i), x = double(k);
      PLFLT xs[4] = {x, x + 1, x + 1, x}, ys[4] = {y, y, y + 1, y + 1};
      plcol1(t);
      plfill(4, xs, ys);
      std::ostringstream fallback;
      fallback << v;
      const std::string text = s.cell_text.empty() ? fallback.str() : s.cell_text[i * cols + k];
      std::vector<std::string> lines;
      std::stringstream ss(text);
      for (std::string l; std::getline(ss, l);) lines.push_back(l);
      plcol0(t > 0.5 ? kWhiteInk : kInk);
      const double line = c / cell;  // one text line in cell units
      for (size_t j = 0; j < lines.size(); ++j)
        plptex(x + 0.5, y + 0.5 + (double(lines.size()) / 2 - double(j) - 0.5) * line - 0.3 * line, 1, 0, 0.5,
               lines[j].c_str());
    }
  plcol0(kCellLine);
  for (size_t i = 0; i <= rows; ++i) pljoin(0, double(i), double(cols), double(i));
  for (size_t k = 0; k <= cols; ++k) pljoin(double(k), 0, double(k), double(rows));
  plcol0(kInk);
  for (size_t i = 0; i < rows; ++i)
    plmtex("lv", 0.6, 1.0 - (double(i) + 0.5) / double(rows), 1.0, s.row_labels[i].c_str());
  for (size_t k = 0; k < cols; ++k) plmtex("bv", 0.6, (double(k) + 0.5) / double(cols), 1.0, s.col_labels[k].c_str());
  plmtex("l", widest_mm(s.row_labels) / c + 1.6, 0.5, 0.5, s.y_label.c_str());
  plmtex("b", widest_mm(s.col_labels) / c + 1.8, 0.5, 0.5, s.x_label.c_str());
  plmtex("t", 1.2, 0.5, 0.5, s.title.c_str());
}

// Pixels of the panel grid page: each row a caption line, a title line and its tallest panel.
struct GridLayout {
  int width = 0, height = 0, top = 0;
  std::vector<int> row_top, row_height;  // of the images, pixels from the top
};
constexpr int kGap = 12, kLine = int(kTextPx * 1.6);
GridLayout layout(const PanelGrid& s) {
  GridLayout l;
  size_t cols = 0;
  for (const PanelRow& r : s.rows) cols = std::max(cols, r.panels.size());
  l.width = kGap + int(cols) * (s.panel_size + kGap);
  int y = s.title.empty() ? kGap : kGap + 2 * kLine;
  for (const PanelRow& r : s.rows) {
    int h = 0;
    for (const Panel& p : r.panels)
      h = std::max(h, int(std::lround(double(s.panel_size) * p.image.height() / p.image.width())));
    y += (r.caption.empty() ? 0 : kLine) + kLine;
    l.row_top.push_back(y);
    l.row_height.push_back(h);
    y += h + kGap;
  }
  l.height = y;
  return l;
}

// One RGB image through plimage: cmap1 becomes the image's own palette (at most one entry per
// pixel) and each pixel's value the centre of its palette entry, so every colour is exact.
void draw_image(const Image& im) {
  std::vector<uint32_t> keys(size_t(im.width()) * size_t(im.height()));
  for (int y = 0; y < im.height(); ++y)
    for (int x = 0; x < im.width(); ++x) {
      const Rgb c = im.get(x, y);
      keys[size_t(y) * size_t(im.width()) + size_t(x)] = uint32_t(c.r) << 16 | uint32_t(c.g) << 8 | c.b;
    }
  std::vector<uint32_t> palette = keys;
  std::sort(palette.begin(), palette.end());
  palette.erase(std::unique(palette.begin(), palette.end()), palette.end());
  if (palette.size() == 1) palette.push_back(palette[0]);
  const PLINT n = PLINT(palette.size());
  std::vector<PLINT> r(n), g(n), b(n);
  for (PLINT i = 0; i < n; ++i) r[i] = PLINT(palette[i] >> 16), g[i] = PLINT(palette[i] >> 8 & 255), b[i] = PLINT(palette[i] & 255);
  plscmap1n(n);
  plscmap1(r.data(), g.data(), b.data(), n);
  PLFLT** z = nullptr;
  plAlloc2dGrid(&z, im.width(), im.height());
  for (int y = 0; y < im.height(); ++y)
    for (int x = 0; x < im.width(); ++x) {
      const uint32_t key = keys[size_t(y) * size_t(im.width()) + size_t(x)];
      const auto idx = std::lower_bound(palette.begin(), palette.end(), key) - palette.begin();
      z[x][im.height() - 1 - y] = double(idx) + 0.5;  // plimage: z[x][y], y upwards
    }
  const double w = im.width(), h = im.height();
  plimage(z, im.width(), im.height(), 0, w, 0, h, 0, double(n), 0, w, 0, h);
  plFree2dGrid(z, im.width(), im.height());
}

void draw(const Page& p, const PanelGrid& s, const GridLayout& l) {
  const double W = l.width;
  auto viewport = [&](double x, double y, double w, double h) {  // pixels from the top-left
    plsvpa(p.px(x), p.px(x + w), p.height_mm() - p.px(y + h), p.height_mm() - p.px(y));
  };
  if (!s.title.empty()) {
    viewport(0, kGap, W, 2 * kLine);
    plwind(0, 1, 0, 1);
    plptex(0.5, 0.5, 1, 0, 0.5, s.title.c_str());
  }
  for (size_t r = 0; r < s.rows.size(); ++r) {
    const PanelRow& row = s.rows[r];
    if (!row.caption.empty()) {
      viewport(0, l.row_top[r] - 2 * kLine, W, kLine);
      plwind(0, 1, 0, 1);
      plptex(0.5, 0.3, 1, 0, 0.5, row.caption.c_str());
    }
    for (size_t k = 0; k < row.panels.size(); ++k) {
      const Panel& panel = row.panels[k];
      const double h = std::round(double(s.panel_size) * panel.image.height() / panel.image.width());
      const double x = kGap + double(k) * (s.panel_size + kGap);
      viewport(x, l.row_top[r], s.panel_size, h);
      plwind(0, panel.image.width(), 0, panel.image.height());
      draw_image(panel.image);
      plcol0(kInk);
      plmtex("t", 0.7, 0.5, 0.5, panel.title.c_str());
    }
  }
}

// One file: a page of width x height for `device`, drawn by draw(page), errors naming the file.
template <class Draw>
void save_as(const std::string& path, const char* device, int width, int height, const Draw& draw) {
  try {
    Page page(path, device, width, height);
    draw(page);
    page.finish();
  } catch (const Error& e) {
    throw Error(str(path, ": ", e.what()));
  }
}

template <class Spec>
void save_both(const std::string& stem, const Spec& s) {
  check(s);
  for (const auto& [ext, device] : {std::pair{".png", "pngcairo"}, std::pair{".svg", "svg"}})
    save_as(stem + ext, device, s.width, s.height, [&](const Page& p) { draw(p, s); });
}

}  // namespace

void save(const std::string& stem, const LineChart& s) { save_both(stem, s); }
void save(const std::string& stem, const BarChart& s) { save_both(stem, s); }
void save(const std::string& stem, const Heatmap& s) { save_both(stem, s); }

void save(const std::string& stem, const PanelGrid& s) {
  check(s);
  const GridLayout l = layout(s);
  save_as(stem + ".png", "pngcairo", l.width, l.height, [&](const Page& p) { draw(p, s, l); });
}

#endif  // NIMBUS_WITH_PLPLOT

}  // namespace nimbus::plot
