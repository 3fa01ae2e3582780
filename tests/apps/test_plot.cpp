// test_plot.cpp: the figures (plot.h, drawn by PLplot), their data file (figure_file.h) and the RGB
// images of the example panels (image.h). The PNG files are decoded back with libpng and looked at
// for ink of the right colour where the data is; the SVG files are searched for their text (titles,
// axis labels, legend entries, category names), which PLplot's svg driver keeps as text.
// Set NIMBUS_KEEP_PLOTS=<dir> to keep the figures for a look.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "apps/common/figure_file.h"
#include "apps/common/image.h"
#include "apps/common/plot.h"
#include "kernels/common/error.h"

using namespace nimbus;
using namespace nimbus::plot;
namespace fs = std::filesystem;

namespace {

std::string out_dir() {
  static std::string dir = [] {
    const char* keep = std::getenv("NIMBUS_KEEP_PLOTS");
    std::string d = keep ? keep : "/tmp/nimbus_test_plot_" + std::to_string(getpid());
    fs::create_directories(d);
    return d;
  }();
  return dir;
}
void cleanup(const std::string& stem) {
  if (std::getenv("NIMBUS_KEEP_PLOTS")) return;
  fs::remove(stem + ".png");
  fs::remove(stem + ".svg");
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "cannot open ", path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The text of every <text> element of an SVG file, one per line: inner tags dropped and character
// references decoded (PLplot's svg driver writes each character as &#xNN;).
std::string svg_text(const std::string& path) {
  const std::string svg = read_text(path);
  REQUIRE_MESSAGE(svg.find("<svg") != std::string::npos, path, " is not an SVG file");
  std::string out;
  for (size_t at = svg.find("<text"); at != std::string::npos; at = svg.find("<text", at)) {
    const size_t open = svg.find('>', at), close = svg.find("</text>", at);
    REQUIRE(open != std::string::npos);
    REQUIRE(close != std::string::npos);
    bool in_tag = false;
    for (size_t i = open + 1; i < close; ++i) {
      if (svg[i] == '<') in_tag = true;
      if (!in_tag) {
        if (svg.compare(i, 3, "&#x") == 0 && svg.find(';', i) < close) {
          const size_t semi = svg.find(';', i);
          out += char(std::stoi(svg.substr(i + 3, semi - i - 3), nullptr, 16));
          i = semi;
        } else {
          out += svg[i];
        }
      }
      if (svg[i] == '>') in_tag = false;
    }
    out += "\n";
    at = close;
  }
  return out;
}

int count_colour(const Image& im, Rgb c, int x0 = 0, int x1 = -1) {
  if (x1 < 0) x1 = im.width();
  int n = 0;
  for (int y = 0; y < im.height(); ++y)
    for (int x = x0; x < x1; ++x) n += im.get(x, y) == c;
  return n;
}

const std::vector<std::string> kClasses{"AnnualCrop", "Forest",      "HerbaceousVegetation", "Highway", "Industrial",
                                        "Pasture",    "PermanentCrop", "Residential",        "River",   "SeaLake"};

LineChart accuracy_chart() {
  LineChart lc;
  lc.title = "Classifier accuracy per epoch";
  lc.x_label = "epoch";
  lc.y_label = "accuracy";
  Series train{"train_acc", {}, {}}, val{"val_acc", {}, {}};
  for (int e = 1; e <= 30; ++e) {
    train.x.push_back(e);
    train.y.push_back(1 - 0.6 * std::exp(-e / 6.0));
    val.x.push_back(e);
    val.y.push_back(e == 12 ? std::nan("") : 0.9 - 0.6 * std::exp(-e / 8.0));  // one gap
  }
  lc.series = {train, val};
  lc.y_min = 0;
  lc.y_max = 1;
  return lc;
}

BarChart distribution_chart() {
  BarChart bc;
  bc.title = "Predicted class distribution";
  bc.y_label = "share of scenes";
  bc.categories = kClasses;
  bc.groups = {{"pristine", {10, 20, 30, 40, 50, 60, 70, 80, 90, 100}},
               {"cloudy", {100, 0, 5, 5, 5, 5, 5, 5, 5, 5}},
               {"dsen2cr_sar", {12, 18, 33, 41, 45, 66, 60, 85, 88, 97}}};
  return bc;
}

Heatmap confusion_chart() {
  Heatmap h;
  h.title = "cloudy vs pristine-derived labels";
  h.x_label = "predicted (cloudy)";
  h.y_label = "pristine-derived label";
  h.row_labels = h.col_labels = {"Forest", "River", "SeaLake"};
  h.values = {1.0, 0, 0, 0.25, 0.5, 0.25, 0, 0, 1.0};
  h.cell_text = {"40", "0", "0", "3", "6", "3", "0", "0", "17"};
  return h;
}

// Four flat quadrants of distinct colours, so a figure's pixels can be told apart exactly.
Image quadrants(int n) {
  Image im(n, n);
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x)
      im.set(x, y, x < n / 2 ? (y < n / 2 ? Rgb{200, 30, 30} : Rgb{30, 200, 30})
                             : (y < n / 2 ? Rgb{30, 30, 200} : Rgb{90, 90, 10}));
  return im;
}

}  // namespace

TEST_CASE("image: Sentinel-2 RGB and grey planes, PNG round trip") {
  // 5 bands x 1 x 2: B4 (index 3) red, B3 green, B2 blue; white = 2000 DN.
  std::vector<float> chw = {0, 0, 500, 1000, 1000, 4000, 2000, NAN, 0, 0};
  const Image rgb = s2_rgb(chw.data(), 5, 1, 2);
  CHECK(rgb.get(0, 0) == Rgb{255, 128, 64});  // B4 2000/2000, B3 1000/2000, B2 500/2000
  CHECK(rgb.get(1, 0) == Rgb{0, 255, 128});   // NaN -> 0; 4000 clips to 255
  std::vector<float> sar = {-25, -12.5, 0, 5};
  const Image g = grey(sar.data(), 2, 2, -25, 0);
  CHECK(g.get(0, 0) == Rgb{0, 0, 0});
  CHECK(g.get(1, 0) == Rgb{128, 128, 128});
  CHECK(g.get(1, 1) == Rgb{255, 255, 255});
  CHECK_THROWS_AS(g.get(2, 0), Error);

  Image im(37, 23);
  for (int y = 0; y < 23; ++y)
    for (int x = 0; x < 37; ++x) im.set(x, y, {uint8_t(x * 7), uint8_t(y * 11), uint8_t(x * y)});
  const std::string path = out_dir() + "/roundtrip.png";
  write_png(path, im);
  CHECK(read_png(path) == im);
  fs::remove(path);
  { std::ofstream(out_dir() + "/not.png") << "not a png"; }
  CHECK_THROWS_WITH_AS(read_png(out_dir() + "/not.png"), doctest::Contains("not.png: not a readable PNG"), Error);
  fs::remove(out_dir() + "/not.png");
  // A header claiming 16384 x 16384 (valid CRC) over a 37 x 23 image's few bytes: refused before the
  // pixels are allocated (1.5 GB before libpng found the data short).
  write_png(path, im);
  std::string bytes = read_text(path);
  REQUIRE(bytes.substr(12, 4) == "IHDR");
  for (int k : {16, 20}) bytes.replace(size_t(k), 4, std::string("\x00\x00\x40\x00", 4));  // 16384, big-endian
  uint32_t crc = 0xFFFFFFFFu;  // CRC-32 (PNG's) over the chunk type and data
  for (size_t i = 12; i < 29; ++i) {
    crc ^= uint8_t(bytes[i]);
    for (int b = 0; b < 8; ++b) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  crc ^= 0xFFFFFFFFu;
  for (int b = 0; b < 4; ++b) bytes[size_t(29 + b)] = char(crc >> (24 - 8 * b));
  { std::ofstream(path, std::ios::binary) << bytes; }
  CHECK_THROWS_WITH_AS(read_png(path), doctest::Contains("roundtrip.png: PNG header claims 16384x16384 pixels, more than its"),
                       Error);
  fs::remove(path);
}

TEST_CASE("plot: the specs are checked before anything is drawn") {
  LineChart lc = accuracy_chart();
  lc.series[0].y.pop_back();
  CHECK_THROWS_WITH_AS(save(out_dir() + "/bad", lc), doctest::Contains("series 'train_acc' has 30 x but 29 y"), Error);
  BarChart bc = distribution_chart();
  bc.groups[1].values[3] = -1;
  CHECK_THROWS_WITH_AS(save(out_dir() + "/bad", bc), doctest::Contains("bar value -1 must be finite and >= 0"), Error);
  bc.groups[1].values[3] = INFINITY;
  CHECK_THROWS_WITH_AS(save(out_dir() + "/bad", bc), doctest::Contains("bar value inf must be finite"), Error);
  if (available()) {  // NaN: a category with nothing to show, drawn without a bar
    bc.groups[1].values[3] = NAN;
    save(out_dir() + "/nan_bar", bc);
    CHECK(fs::exists(out_dir() + "/nan_bar.png"));
    cleanup(out_dir() + "/nan_bar");
  }
  Heatmap h = confusion_chart();
  h.values.pop_back();
  CHECK_THROWS_WITH_AS(save(out_dir() + "/bad", h), doctest::Contains("8 values for 3x3 cells"), Error);
  PanelGrid g;
  g.rows.push_back({"row", {{"empty", Image()}}});
  CHECK_THROWS_WITH_AS(save(out_dir() + "/bad", g), doctest::Contains("panel 'empty' has no image"), Error);
  CHECK_FALSE(fs::exists(out_dir() + "/bad.png"));
}

TEST_CASE("plot: line chart: both series, rising to the right, its text in the SVG") {
  if (!available()) return;  // NIMBUS_PLOTS=OFF: the spec checks above still run
  const LineChart lc = accuracy_chart();
  const std::string stem = out_dir() + "/line";
  save(stem, lc);
  const Image d = read_png(stem + ".png");
  CHECK(d.width() == 800);
  CHECK(d.height() == 480);
  // Both series are drawn in their colours, and the rising curves sit higher (smaller y) on the right
  // than on the left of the plot area (x 100..560 holds the plot, the legend is to its right).
  for (int s = 0; s < 2; ++s) {
    const Rgb col = series_colour(s);
    double ly = 0, ry = 0;
    int ln = 0, rn = 0;
    for (int y = 0; y < d.height(); ++y)
      for (int x = 100; x < 560; ++x)
        if (d.get(x, y) == col) (x < 300 ? (ly += y, ++ln) : (ry += y, ++rn));
    REQUIRE_MESSAGE(ln > 30, "series ", s, " missing on the left");
    REQUIRE_MESSAGE(rn > 30, "series ", s, " missing on the right");
    CHECK(ry / rn < ly / ln - 30);
  }
  const std::string text = svg_text(stem + ".svg");
  INFO(text);
  for (const char* s : {"Classifier accuracy per epoch", "epoch", "accuracy", "train_acc", "val_acc", "0.8"})
    CHECK_MESSAGE(text.find(s) != std::string::npos, s);
  cleanup(stem);
}

TEST_CASE("plot: grouped bar chart: heights follow the values, names in the SVG") {
  if (!available()) return;
  const BarChart bc = distribution_chart();
  const std::string stem = out_dir() + "/bars";
  save(stem, bc);
  const Image d = read_png(stem + ".png");
  CHECK(d.width() == 900);
  CHECK(d.height() == 560);
  // Columns of the "pristine" colour: ten bars whose heights rise 10x (the legend's swatch, a few
  // pixels high, is left out).
  const Rgb col = series_colour(0);
  std::vector<int> heights;
  int h_run = 0;
  for (int x = 0; x < d.width(); ++x) {
    const int h = count_colour(d, col, x, x + 1);
    if (h > 0) h_run = std::max(h_run, h);
    if (h == 0 && h_run > 0) {
      if (h_run > 20) heights.push_back(h_run);
      h_run = 0;
    }
  }
  REQUIRE(heights.size() == 10);
  for (size_t i = 1; i < heights.size(); ++i) CHECK(heights[i] > heights[i - 1]);
  CHECK(double(heights[9]) / heights[0] == doctest::Approx(10).epsilon(0.1));
  const std::string text = svg_text(stem + ".svg");
  INFO(text);
  for (const std::string& s : kClasses) CHECK_MESSAGE(text.find(s) != std::string::npos, s);
  for (const char* s : {"Predicted class distribution", "share of scenes", "pristine", "cloudy", "dsen2cr_sar"})
    CHECK_MESSAGE(text.find(s) != std::string::npos, s);
  cleanup(stem);
}

TEST_CASE("plot: confusion heatmap: cell colours from the values, counts in the cells") {
  if (!available()) return;
  const Heatmap h = confusion_chart();
  const std::string stem = out_dir() + "/confusion";
  save(stem, h);
  const Image d = read_png(stem + ".png");
  // Three cells at the maximum (dark blue), four at 0 (near white), two at 0.25, one at 0.5.
  const int dark = count_colour(d, {8, 48, 107}), white = count_colour(d, {247, 251, 255});
  CHECK(dark > 1000);
  CHECK(white > dark);
  const std::string text = svg_text(stem + ".svg");
  INFO(text);
  for (const char* s : {"cloudy vs pristine-derived labels", "predicted (cloudy)", "pristine-derived label", "Forest",
                        "SeaLake", "40", "17"})
    CHECK_MESSAGE(text.find(s) != std::string::npos, s);
  cleanup(stem);
}

TEST_CASE("plot: image panels keep every pixel colour exactly, PNG only") {
  if (!available()) return;
  PanelGrid g;
  g.title = "examples";
  g.rows.push_back({"cover 10%", {{"cloudy RGB", quadrants(64)}, {"target RGB", quadrants(64)}}});
  g.rows.push_back({"cover 90%", {{"cloudy RGB", quadrants(32)}}});
  const std::string stem = out_dir() + "/panels";
  save(stem, g);
  CHECK_FALSE(fs::exists(stem + ".svg"));
  const Image d = read_png(stem + ".png");
  CHECK(d.width() == 12 + 2 * (200 + 12));
  // Each panel is drawn 200 px wide: three panels of four 100x100 quadrants each, every one in its
  // exact colour (cairo's edges between neighbouring image pixels move a seam by a pixel or two).
  for (Rgb c : {Rgb{200, 30, 30}, Rgb{30, 200, 30}, Rgb{30, 30, 200}, Rgb{90, 90, 10}}) {
    const int n = count_colour(d, c);
    CHECK_MESSAGE(n > 3 * 95 * 95, int(c.r), ",", int(c.g), ",", int(c.b), ": ", n);
    CHECK_MESSAGE(n < 3 * 105 * 105, int(c.r), ",", int(c.g), ",", int(c.b), ": ", n);
  }
  cleanup(stem);
}

TEST_CASE("plot: a PLplot failure is an error naming the file, and the next figure still draws") {
  if (!available()) return;
  const std::string stem = out_dir() + "/no/such/folder/line";
  CHECK_THROWS_WITH_AS(save(stem, accuracy_chart()), doctest::Contains("no/such/folder/line.png"), Error);
  CHECK_FALSE(fs::exists(stem + ".png"));
  const std::string ok = out_dir() + "/after_error";
  save(ok, accuracy_chart());
  CHECK(read_png(ok + ".png").width() == 800);
  cleanup(ok);
}

TEST_CASE("figures: an earlier run's drawings and images in the folder are removed, nothing else") {
  const std::string dir = out_dir() + "/stale";
  fs::remove_all(dir);
  fs::create_directories(dir + "/figure_images");
  for (const char* f : {"fig_a.png", "fig_a.svg", "fig_old.png", "fig_old.svg", "notes.png", "fig_keep.txt",
                        "figure_images/fig_examples_9_0.png"})
    std::ofstream(dir + "/" + f) << "x";
  fs::create_directories(dir + "/fig_dir.png");  // a folder is not a drawing
  CHECK(remove_stale_figures(dir, {"fig_a.png", "fig_a.svg"}) ==
        std::vector<std::string>{"fig_old.png", "fig_old.svg"});
  for (const char* f : {"fig_a.png", "fig_a.svg", "notes.png", "fig_keep.txt", "fig_dir.png"})
    CHECK_MESSAGE(fs::exists(dir + "/" + f), f);
  CHECK_FALSE(fs::exists(dir + "/fig_old.png"));
  CHECK_FALSE(fs::exists(dir + "/fig_old.svg"));
  // Drew nothing (no PLplot): every drawing goes.
  CHECK(remove_stale_figures(dir, {}) == std::vector<std::string>{"fig_a.png", "fig_a.svg"});
  // A new set of figures replaces the images of the old one.
  PanelGrid g;
  g.rows.push_back({"row", {{"panel", quadrants(8)}}});
  write_figures(dir, {{"fig_examples", g}});
  CHECK_FALSE(fs::exists(dir + "/figure_images/fig_examples_9_0.png"));
  CHECK(fs::exists(dir + "/figure_images/fig_examples_0_0.png"));
  fs::remove_all(dir);
}

TEST_CASE("figures.json: every kind round-trips, and a malformed file is refused with its name") {
  const std::string dir = out_dir() + "/run";
  fs::create_directories(dir);
  PanelGrid g;
  g.title = "examples";
  g.rows.push_back({"cover 10%", {{"cloudy RGB", quadrants(16)}, {"SAR VV (dB)", quadrants(8)}}});
  const std::vector<Figure> figs = {{"fig_training_curve", accuracy_chart()},
                                    {"fig_class_distribution", distribution_chart()},
                                    {"fig_confusion_cloudy", confusion_chart()},
                                    {"fig_examples", g}};
  write_figures(dir, figs);
  const std::vector<Figure> back = read_figures(dir);
  REQUIRE(back.size() == 4);
  CHECK(back[0].stem == "fig_training_curve");
  const LineChart& lc = std::get<LineChart>(back[0].spec);
  CHECK(lc.title == "Classifier accuracy per epoch");
  CHECK(lc.series[0].y == accuracy_chart().series[0].y);  // shortest round-trip form: exact
  CHECK(std::isnan(lc.series[1].y[11]));                  // the gap survives as null
  CHECK(lc.y_max == 1.0);
  const BarChart& bc = std::get<BarChart>(back[1].spec);
  CHECK(bc.categories == kClasses);
  CHECK(bc.groups[2].values == distribution_chart().groups[2].values);
  const Heatmap& h = std::get<Heatmap>(back[2].spec);
  CHECK(h.cell_text == confusion_chart().cell_text);
  CHECK(h.values == confusion_chart().values);
  const PanelGrid& pg = std::get<PanelGrid>(back[3].spec);
  REQUIRE(pg.rows.size() == 1);
  CHECK(pg.rows[0].caption == "cover 10%");
  CHECK(pg.rows[0].panels[1].title == "SAR VV (dB)");
  CHECK(pg.rows[0].panels[1].image == quadrants(8));

  if (available()) {
    const std::vector<std::string> written = draw_figures(dir, back);
    CHECK(written.size() == 7);  // 3 charts x (png, svg) + the panels' png
    for (const std::string& f : written) CHECK_MESSAGE(fs::is_regular_file(dir + "/" + f), f);
  }

  auto refused = [&](const std::string& json, const std::string& expected) {
    { std::ofstream(dir + "/figures.json") << json; }
    CHECK_THROWS_WITH_AS(read_figures(dir), doctest::Contains(expected.c_str()), Error);
    CHECK_THROWS_WITH_AS(read_figures(dir), doctest::Contains("figures.json"), Error);
  };
  refused("{", "figures.json: ");
  refused(R"({"format": "other", "figures": []})", "is not \"nimbus figures 1\"");
  refused(R"({"format": "nimbus figures 1", "figures": [{"file": "../evil", "kind": "line"}]})",
          "'../evil' is not a plain file name");
  refused(R"({"format": "nimbus figures 1", "figures": [{"file": "f", "kind": "pie"}]})", "unknown kind \"pie\"");
  refused(R"({"format": "nimbus figures 1", "figures": [{"file": "f", "kind": "line", "title": "t"}]})",
          "figure 'f': no \"x_label\"");
  refused(R"({"format": "nimbus figures 1", "figures": [{"file": "f", "kind": "panels", "title": "", "panel_size": 200,
             "rows": [{"caption": "", "panels": [{"title": "x", "image": "figure_images/../../etc/passwd"}]}]}]})",
          "is not a file in figure_images/");
  fs::remove(dir + "/figures.json");  // none: the path is named once
  try {
    (void)read_figures(dir);
    FAIL("no error without figures.json");
  } catch (const Error& e) {
    const std::string m = e.what(), f = dir + "/figures.json";
    CHECK_MESSAGE(m.find(f) != std::string::npos, m);
    CHECK_MESSAGE(m.find(f, m.find(f) + 1) == std::string::npos, m);
  }
  if (!std::getenv("NIMBUS_KEEP_PLOTS")) fs::remove_all(dir);
}
