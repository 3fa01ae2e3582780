// plot.h: the experiment's PNG figures, drawn on an RGB canvas and written with libpng.
//
// Four kinds, each a spec struct and a render_*() that returns the canvas (the
// tests look at pixels) plus a save_*() that writes the PNG atomically:
//   line chart  accuracy per epoch; several series, ticks, axis labels, legend
//   bar chart   grouped bars, e.g. class distributions of pristine / cloudy /
//               cloud-removed predictions, category names (vertical) on the x axis
//   heatmap     confusion matrix: colour from `values`, text in every cell
//   panels      a row of images with titles: cloudy RGB, SAR, mask, cloud-removed, target
// Text uses the 5x7 bitmap font (font.h); '\n' starts a new line.
#pragma once
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace nimbus::plot {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Rgb&) const = default;
};
inline constexpr Rgb kWhite{255, 255, 255}, kBlack{0, 0, 0};
Rgb series_colour(int i);  // a fixed palette of 10 distinguishable colours (tab10-like)

// An 8-bit RGB image, row-major, (height, width, 3).
class Canvas {
 public:
  Canvas() = default;
  Canvas(int width, int height, Rgb background = kWhite);
  int width() const { return w_; }
  int height() const { return h_; }
  Rgb get(int x, int y) const;
  void set(int x, int y, Rgb c);  // silently clipped to the canvas
  void fill_rect(int x, int y, int w, int h, Rgb c);
  void rect(int x, int y, int w, int h, Rgb c);  // 1-pixel outline
  void line(int x0, int y0, int x1, int y1, Rgb c, int thickness = 1);
  // Text with its top-left corner at (x, y); scale 2 doubles every pixel.
  void text(int x, int y, const std::string& s, Rgb c, int scale = 1);
  // Text rotated 90 degrees anticlockwise (reads bottom to top), its start at the bottom-left (x, y).
  void text_up(int x, int y, const std::string& s, Rgb c, int scale = 1);
  void blit(const Canvas& src, int x, int y);
  Canvas upscaled(int factor) const;  // nearest neighbour
  const std::vector<uint8_t>& pixels() const { return px_; }

 private:
  int w_ = 0, h_ = 0;
  std::vector<uint8_t> px_;
};

std::string encode_png(const Canvas& c);                 // 8-bit RGB PNG bytes
void write_png(const std::string& path, const Canvas& c);  // atomic (temp file + rename)

// "Nice" tick positions (steps of 1, 2 or 5 x 10^k) covering [lo, hi], about `target` of them.
std::vector<double> nice_ticks(double lo, double hi, int target = 6);

struct Series {
  std::string name;
  std::vector<double> x, y;  // same length; NaN y values leave a gap
};
struct LineChart {
  std::string title, x_label, y_label;
  std::vector<Series> series;
  double y_min = std::numeric_limits<double>::quiet_NaN();  // NaN: from the data
  double y_max = std::numeric_limits<double>::quiet_NaN();
  int width = 800, height = 480;
};
Canvas render_line_chart(const LineChart& spec);
void save_line_chart(const std::string& path, const LineChart& spec);

struct BarGroup {
  std::string name;            // legend entry, e.g. "cloudy"
  std::vector<double> values;  // one per category
};
struct BarChart {
  std::string title, y_label;
  std::vector<std::string> categories;  // x axis, e.g. the 10 class names
  std::vector<BarGroup> groups;
  int width = 900, height = 520;
};
Canvas render_bar_chart(const BarChart& spec);
void save_bar_chart(const std::string& path, const BarChart& spec);

struct Heatmap {
  std::string title, x_label, y_label;
  std::vector<std::string> row_labels, col_labels;
  std::vector<double> values;          // rows x cols, row-major: the colour (white -> dark blue over [0, max])
  std::vector<std::string> cell_text;  // rows x cols, or empty to print the values
  int cell = 48;                       // cell size in pixels
};
Canvas render_heatmap(const Heatmap& spec);
void save_heatmap(const std::string& path, const Heatmap& spec);

struct Panel {
  std::string title;
  Canvas image;
};
// A row of panels, each upscaled (nearest) to at least `min_size` pixels high, titles above.
Canvas render_panels(const std::vector<Panel>& panels, const std::string& title = "", int min_size = 160);
void save_panels(const std::string& path, const std::vector<Panel>& panels, const std::string& title = "",
                 int min_size = 160);

// Images for panels from (C, H, W) float arrays:
// RGB from Sentinel-2 bands 4, 3, 2 (1-based; B4 red, B3 green, B2 blue), each value / `white` clipped to
// [0, 1]: white = 2000 for DN (the DSen2-CR figures' stretch), 0.2 for reflectance.
Canvas s2_rgb(const float* chw, int channels, int height, int width, float white = 2000.f);
// One plane in grey: lo -> black, hi -> white (SAR VV in dB: lo -25, hi 0).
Canvas grey(const float* hw, int height, int width, float lo, float hi);

}  // namespace nimbus::plot
