// plot.h: the experiment's figures, drawn by PLplot. Each is written twice: PNG through PLplot's
// cairo driver (antialiased, what report.md shows) and SVG through PLplot's own svg driver (text stays
// text, so a reader or a test can search it). Four kinds, each a spec struct:
//   LineChart  accuracy per epoch: several series, NaN leaves a gap, legend
//   BarChart   grouped bars, e.g. class shares of pristine / cloudy / cloud-removed predictions,
//              category names written vertically under the x axis
//   Heatmap    confusion matrix: colour from `values` (white -> dark blue over [0, max]), text per cell
//   PanelGrid  rows of image panels with titles (cloudy RGB, SAR, mask, cloud-removed, target). PNG
//              only: an SVG would carry every pixel as a polygon.
// save(stem, spec) writes stem.png and stem.svg, each to a temporary file renamed into place; when
// PLplot fails (it would exit() the program) the error is trapped (plsexit) and thrown as an Error
// naming the file. available() is false in a build without PLplot (NIMBUS_PLOTS=OFF: the GPU
// bundle): save() then throws, and figure_file.h keeps the specs for plot_figures to draw elsewhere.
#pragma once
#include <limits>
#include <string>
#include <vector>

#include "apps/common/image.h"

namespace nimbus::plot {

Rgb series_colour(int i);  // a fixed palette of 10 distinguishable colours (matplotlib's tab10)

struct Series {
  std::string name;
  std::vector<double> x, y;  // same length; NaN y values leave a gap
};
struct LineChart {
  std::string title, x_label, y_label;
  std::vector<Series> series;
  double y_min = std::numeric_limits<double>::quiet_NaN();  // NaN: from the data
  double y_max = std::numeric_limits<double>::quiet_NaN();
  int width = 800, height = 480;  // pixels of the PNG (the SVG's page in points)
};

struct BarGroup {
  std::string name;            // legend entry, e.g. "cloudy"
  std::vector<double> values;  // one per category, finite and >= 0; NaN: no bar (no data there)
};
struct BarChart {
  std::string title, y_label;
  std::vector<std::string> categories;  // x axis, e.g. the 10 class names
  std::vector<BarGroup> groups;
  int width = 900, height = 560;
};

struct Heatmap {
  std::string title, x_label, y_label;
  std::vector<std::string> row_labels, col_labels;  // rows top to bottom, columns left to right
  std::vector<double> values;          // rows x cols, row-major: the colour over [0, max]
  std::vector<std::string> cell_text;  // rows x cols, or empty to print the values
  int width = 760, height = 700;
};

struct Panel {
  std::string title;
  Image image;
};
struct PanelRow {
  std::string caption;  // above the row
  std::vector<Panel> panels;
};
struct PanelGrid {
  std::string title;
  std::vector<PanelRow> rows;
  int panel_size = 200;  // each panel is drawn this many pixels wide (height by its aspect ratio)
};

bool available();  // this build draws figures (PLplot was found)

// Write stem.png and stem.svg (PanelGrid: stem.png only). Error on a malformed spec or when PLplot
// fails, naming the file; nothing is left at the final names then.
void save(const std::string& stem, const LineChart& spec);
void save(const std::string& stem, const BarChart& spec);
void save(const std::string& stem, const Heatmap& spec);
void save(const std::string& stem, const PanelGrid& spec);

}  // namespace nimbus::plot
