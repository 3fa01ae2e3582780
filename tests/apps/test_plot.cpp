// test_plot.cpp: the bitmap font, PNG encoding (decoded back with libpng here), and every figure kind:
// right size, and ink of the right colour where the data is.
// Set NIMBUS_KEEP_PLOTS=<dir> to keep the example figures for a look.
#include <doctest/doctest.h>
#include <png.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "apps/common/font.h"
#include "apps/common/plot.h"
#include "kernels/common/error.h"

using namespace nimbus;
using namespace nimbus::plot;

namespace {

struct Decoded {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
  Rgb at(int x, int y) const {
    const uint8_t* p = &rgb[(size_t(y) * size_t(width) + size_t(x)) * 3];
    return {p[0], p[1], p[2]};
  }
};

// Decodes a PNG file with libpng's simplified API (independent of our encoder's code path).
Decoded decode_png(const std::string& path) {
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  REQUIRE_MESSAGE(png_image_begin_read_from_file(&img, path.c_str()), "not a PNG: ", path, " ", img.message);
  img.format = PNG_FORMAT_RGB;
  Decoded d;
  d.width = int(img.width);
  d.height = int(img.height);
  d.rgb.resize(PNG_IMAGE_SIZE(img));
  REQUIRE(png_image_finish_read(&img, nullptr, d.rgb.data(), 0, nullptr));
  return d;
}

std::string out_dir() {
  static std::string dir = [] {
    const char* keep = std::getenv("NIMBUS_KEEP_PLOTS");
    std::string d = keep ? keep : "/tmp/nimbus_test_plot_" + std::to_string(getpid());
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}
void cleanup(const std::string& path) {
  if (!std::getenv("NIMBUS_KEEP_PLOTS")) std::filesystem::remove(path);
}

int count_colour(const Decoded& d, Rgb c, int x0 = 0, int x1 = -1) {
  if (x1 < 0) x1 = d.width;
  int n = 0;
  for (int y = 0; y < d.height; ++y)
    for (int x = x0; x < x1; ++x) n += d.at(x, y) == c;
  return n;
}

const std::vector<std::string> kClasses{"AnnualCrop", "Forest",      "HerbaceousVegetation", "Highway", "Industrial",
                                        "Pasture",    "PermanentCrop", "Residential",        "River",   "SeaLake"};

}  // namespace

TEST_CASE("font: glyphs are drawn and distinct") {
  // 'A': .###. / #...# / #...# / ##### / ...
  CHECK(font::glyph_row('A', 0) == 0b01110);
  CHECK(font::glyph_row('A', 3) == 0b11111);
  CHECK(font::ink('A', 0, 1));
  CHECK_FALSE(font::ink('A', 2, 1));
  for (int y = 0; y < font::kGlyphHeight; ++y) CHECK(font::glyph_row(' ', y) == 0);
  CHECK(font::glyph_row('\x01', 0) == font::glyph_row('?', 0));  // unprintable -> '?'
  std::vector<std::string> seen;
  for (char c = 33; c < 127; ++c) {
    std::string rows;
    for (int y = 0; y < font::kGlyphHeight; ++y) rows += char('0' + font::glyph_row(c, y));
    CHECK_MESSAGE(rows != std::string(7, '0'), "glyph '", c, "' is empty");
    CHECK_MESSAGE(std::find(seen.begin(), seen.end(), rows) == seen.end(), "glyph '", c, "' duplicates another");
    seen.push_back(rows);
  }
  CHECK(font::text_width("abc") == 17);
  CHECK(font::text_width("abc", 2) == 34);
}

TEST_CASE("plot: canvas primitives and text") {
  Canvas c(40, 20);
  c.fill_rect(2, 3, 4, 5, kBlack);
  CHECK(c.get(2, 3) == kBlack);
  CHECK(c.get(5, 7) == kBlack);
  CHECK(c.get(6, 7) == kWhite);
  c.set(-1, 100, kBlack);  // clipped, no crash
  c.line(0, 19, 39, 19, Rgb{1, 2, 3});
  CHECK(c.get(20, 19) == Rgb{1, 2, 3});
  Canvas t(20, 10);
  t.text(1, 1, "A", kBlack);
  CHECK(t.get(1 + 1, 1) == kBlack);  // top row of 'A' is .###.
  CHECK(t.get(1, 1) == kWhite);
  CHECK(t.get(1, 1 + 3) == kBlack);  // the bar
  Canvas u(10, 20);
  u.text_up(1, 18, "A", kBlack);  // rotated: the bar of 'A' (row 3) is the column x = 1 + 3
  int bar = 0;
  for (int y = 0; y < 20; ++y) bar += u.get(4, y) == kBlack;
  CHECK(bar == 5);
  CHECK(c.upscaled(3).width() == 120);
  CHECK(c.upscaled(3).get(8, 11) == kBlack);
  CHECK_THROWS_AS(c.get(40, 0), Error);
}

TEST_CASE("plot: PNG round trip is exact") {
  Canvas c(37, 23);
  for (int y = 0; y < 23; ++y)
    for (int x = 0; x < 37; ++x) c.set(x, y, {uint8_t(x * 7), uint8_t(y * 11), uint8_t(x * y)});
  std::string path = out_dir() + "/roundtrip.png";
  write_png(path, c);
  Decoded d = decode_png(path);
  CHECK(d.width == 37);
  CHECK(d.height == 23);
  CHECK(d.rgb == c.pixels());
  cleanup(path);
}

TEST_CASE("plot: nice ticks") {
  CHECK(nice_ticks(0, 1) == std::vector<double>{0, 0.2, 0.4, 0.6000000000000001, 0.8, 1});
  std::vector<double> t = nice_ticks(0.37, 0.93);
  REQUIRE(t.size() == 6);
  CHECK(t.front() == doctest::Approx(0.4));
  CHECK(t.back() == doctest::Approx(0.9));
  // 1..200 in ~8 steps: raw step 24.9; 2 x 10 is too small, so 5 x 10.
  CHECK(nice_ticks(1, 200, 8) == std::vector<double>{50, 100, 150, 200});
  CHECK_THROWS_AS(nice_ticks(1, 1), Error);
}

TEST_CASE("plot: line chart has both series where the data is") {
  LineChart lc;
  lc.title = "Classifier accuracy per epoch";
  lc.x_label = "epoch";
  lc.y_label = "accuracy";
  Series train{"train", {}, {}}, val{"validation", {}, {}};
  for (int e = 1; e <= 30; ++e) {
    train.x.push_back(e);
    train.y.push_back(1 - 0.6 * std::exp(-e / 6.0));
    val.x.push_back(e);
    val.y.push_back(0.9 - 0.6 * std::exp(-e / 8.0));
  }
  lc.series = {train, val};
  lc.y_min = 0;
  lc.y_max = 1;
  std::string path = out_dir() + "/line.png";
  save_line_chart(path, lc);
  Decoded d = decode_png(path);
  CHECK(d.width == 800);
  CHECK(d.height == 480);
  // Both series are drawn, and rising curves sit higher (smaller y) on the right than on the left.
  for (int s = 0; s < 2; ++s) {
    Rgb col = series_colour(s);
    double ly = 0, ry = 0;
    int ln = 0, rn = 0;
    for (int y = 0; y < d.height; ++y)
      for (int x = 90; x < 600; ++x)
        if (d.at(x, y) == col) (x < 300 ? (ly += y, ++ln) : (ry += y, ++rn));
    REQUIRE_MESSAGE(ln > 50, "series ", s, " missing on the left");
    REQUIRE_MESSAGE(rn > 50, "series ", s, " missing on the right");
    CHECK(ry / rn < ly / ln - 30);
  }
  CHECK(count_colour(d, kBlack) > 200);  // title, labels, legend text
  cleanup(path);
  LineChart bad = lc;
  bad.series[0].y.pop_back();
  CHECK_THROWS_WITH_AS(render_line_chart(bad), doctest::Contains("series 'train' has 30 x but 29 y"), Error);
}

TEST_CASE("plot: grouped bar chart heights follow the values") {
  BarChart bc;
  bc.title = "Predicted class distribution";
  bc.y_label = "images";
  bc.categories = kClasses;
  bc.groups = {{"pristine", {10, 20, 30, 40, 50, 60, 70, 80, 90, 100}},
               {"cloudy", {100, 0, 5, 5, 5, 5, 5, 5, 5, 5}},
               {"cloud-removed", {12, 18, 33, 41, 45, 66, 60, 85, 88, 97}}};
  std::string path = out_dir() + "/bars.png";
  save_bar_chart(path, bc);
  Decoded d = decode_png(path);
  CHECK(d.width == 900);
  CHECK(d.height == 520);
  // Column heights of the "pristine" colour: the tallest bar is ~10x the shortest.
  Rgb col = series_colour(0);
  std::vector<int> heights;
  int run = 0;
  for (int x = 0; x < 770; ++x) {  // the plot area, left of the legend's swatches
    int h = 0;
    for (int y = 0; y < d.height; ++y) h += d.at(x, y) == col;
    if (h > 0 && x > 100) run = std::max(run, h);
    if (h == 0 && run > 0) heights.push_back(run), run = 0;
  }
  REQUIRE(heights.size() == 10);
  CHECK(double(heights[9]) / heights[0] == doctest::Approx(10).epsilon(0.08));
  CHECK(double(heights[4]) / heights[0] == doctest::Approx(5).epsilon(0.08));
  CHECK(count_colour(d, series_colour(2)) > 1000);
  cleanup(path);
  BarChart bad = bc;
  bad.groups[1].values.pop_back();
  CHECK_THROWS_WITH_AS(render_bar_chart(bad), doctest::Contains("group 'cloudy' has 9 values for 10 categories"),
                       Error);
}

TEST_CASE("plot: confusion-matrix heatmap with numbers in the cells") {
  Heatmap hm;
  hm.title = "Cloud-removed vs pristine-derived labels";
  hm.x_label = "predicted";
  hm.y_label = "pristine label";
  hm.row_labels = kClasses;
  hm.col_labels = kClasses;
  for (int r = 0; r < 10; ++r)
    for (int k = 0; k < 10; ++k) {
      int n = r == k ? 80 + r : (r + k) % 7;
      hm.values.push_back(n / 100.0);
      hm.cell_text.push_back(std::to_string(n) + "\n" + std::to_string(n) + "%");
    }
  Canvas c = render_heatmap(hm);
  std::string path = out_dir() + "/confusion.png";
  write_png(path, c);
  Decoded d = decode_png(path);
  CHECK(d.width == c.width());
  CHECK(d.height == c.height());
  // Find the grid: the darkest cells are the diagonal; cell (r, r) holds white text on dark blue.
  const int cell = hm.cell;
  int left = -1, top = 44;
  for (int x = 0; x < d.width && left < 0; ++x)
    if (d.at(x, top + cell / 2) != kWhite && d.at(x, top + cell / 2) != kBlack && d.at(x, top + 2).b > 150) left = x;
  REQUIRE(left > 100);  // after the row labels
  for (int r = 0; r < 10; ++r) {
    Rgb diag = d.at(left + r * cell + 3, top + r * cell + 3), off = d.at(left + ((r + 1) % 10) * cell + 3, top + r * cell + 3);
    CHECK(diag.b < off.b);  // darker
    int white_text = 0;
    for (int y = 0; y < cell; ++y)
      for (int x = 0; x < cell; ++x) white_text += d.at(left + r * cell + x, top + r * cell + y) == kWhite;
    CHECK(white_text > 20);
  }
  cleanup(path);
  Heatmap bad = hm;
  bad.values.pop_back();
  CHECK_THROWS_WITH_AS(render_heatmap(bad), doctest::Contains("99 values for 10x10 cells"), Error);
}

TEST_CASE("plot: image panels from Sentinel-2 bands and a SAR plane") {
  const int c = 13, h = 16, w = 16;
  std::vector<float> s2(size_t(c * h * w), 0.f);
  for (int i = 0; i < h * w; ++i) {
    s2[size_t(3 * h * w + i)] = 2000;  // B4 saturates red
    s2[size_t(2 * h * w + i)] = 1000;  // B3 half green
    s2[size_t(1 * h * w + i)] = -50;   // B2 clipped to 0
  }
  Canvas rgb = s2_rgb(s2.data(), c, h, w);
  CHECK(rgb.get(5, 5) == Rgb{255, 128, 0});
  Canvas refl = s2_rgb(s2.data(), c, h, w, 4000.f);
  CHECK(refl.get(0, 0) == Rgb{128, 64, 0});
  std::vector<float> sar(size_t(h * w));
  for (int i = 0; i < h * w; ++i) sar[size_t(i)] = -25.f + 25.f * float(i % w) / float(w - 1);
  Canvas g = grey(sar.data(), h, w, -25, 0);
  CHECK(g.get(0, 3) == kBlack);
  CHECK(g.get(w - 1, 3) == kWhite);
  std::vector<float> mask(size_t(h * w), 0.f);
  for (int i = 0; i < h * w / 2; ++i) mask[size_t(i)] = 1.f;
  std::vector<Panel> panels{{"cloudy RGB", rgb}, {"SAR VV", g}, {"mask", grey(mask.data(), h, w, 0, 1)},
                            {"cloud-removed", rgb}, {"target", rgb}};
  std::string path = out_dir() + "/panels.png";
  save_panels(path, panels, "example 1", 64);
  Decoded d = decode_png(path);
  CHECK(d.height >= 64 + 36 + 20);
  CHECK(d.width >= 5 * 64);
  // Three RGB panels of 64x64 orange pixels each; nearest-neighbour upscaling keeps the colour.
  CHECK(count_colour(d, Rgb{255, 128, 0}) == 3 * 64 * 64);
  cleanup(path);
  CHECK_THROWS_AS(s2_rgb(s2.data(), 3, h, w), Error);
  CHECK_THROWS_AS(grey(sar.data(), h, w, 0, 0), Error);
  CHECK_THROWS_AS(render_panels({}), Error);
}
