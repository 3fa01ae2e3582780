// figure_file.h: a run's figures as data. figures.json holds every figure's spec (plot.h) under the
// file stem it is drawn to; the example panels' pixels are PNG files beside it in figure_images/.
// cloud_impact writes both in every build, then draws the figures when the build has PLplot; a build
// without it (the GPU bundle) leaves them for plot_figures, run wherever PLplot is installed.
//
// figures.json: {"format": "nimbus figures 1", "figures": [{"file": stem, "kind": "line" | "bars" |
// "heatmap" | "panels", ...the spec's fields by their plot.h names...}]}; a panel's image is a path
// relative to the folder, "figure_images/<stem>_<row>_<panel>.png". NaN is written as null.
#pragma once
#include <string>
#include <variant>
#include <vector>

#include "apps/common/plot.h"

namespace nimbus::plot {

using Spec = std::variant<LineChart, BarChart, Heatmap, PanelGrid>;
struct Figure {
  std::string stem;  // a file name without extension, e.g. "fig_class_distribution"
  Spec spec;
};

inline constexpr const char* kFiguresFile = "figures.json";

// dir/figures.json and dir/figure_images/*.png (temp files + rename). figure_images/ holds only this
// set's images afterwards: PNGs of an earlier set there are removed once the new figures.json is in place.
void write_figures(const std::string& dir, const std::vector<Figure>& figures);
// Back from dir; Error naming the file and the figure on a missing or malformed field, a stem that
// is not a plain file name, or an image path outside figure_images/.
std::vector<Figure> read_figures(const std::string& dir);
// Every figure as dir/<stem>.png (+ .svg but for panels); returns the file names written.
std::vector<std::string> draw_figures(const std::string& dir, const std::vector<Figure>& figures);
// Removes the drawings in dir (fig_*.png, fig_*.svg) that are not in `kept` (what this run drew, as
// draw_figures returns it; empty when it drew none): an earlier run's figures in the same folder, one
// with other methods or drawn by a build with PLplot, would stay beside this run's report and look like
// its own. Other files are left alone. Returns the names removed.
std::vector<std::string> remove_stale_figures(const std::string& dir, const std::vector<std::string>& kept);

}  // namespace nimbus::plot
