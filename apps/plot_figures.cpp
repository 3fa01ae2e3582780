// plot_figures: draw a cloud_impact run's figures from its figures.json, as PNG and SVG.
//
//   plot_figures RUN_DIR
//
// cloud_impact draws them itself when it was built with PLplot; a build without it (the GPU bundle,
// NIMBUS_PLOTS=OFF) keeps them as data, and this program, run where PLplot is, makes the files.
#include <cstdio>

#include "apps/common/cli.h"
#include "apps/common/figure_file.h"

using namespace nimbus;

namespace {

int run(int argc, char** argv) {
  cli::Parser p("plot_figures", "Draw a cloud_impact run's figures (fig_*.png, fig_*.svg) from its figures.json.");
  p.add_positional("RUN_DIR", "the cloud_impact output folder (holds figures.json)");
  cli::add_common_options(p, /*with_device=*/false);
  p.parse_or_exit(argc, argv);
  cli::apply_common_options(p);
  if (p.positionals().size() != 1) throw cli::UsageError("give exactly one RUN_DIR");
  NIMBUS_CHECK(plot::available(), "this build has no PLplot (NIMBUS_PLOTS=OFF); run plot_figures where "
                                  "libplplot-dev and plplot-driver-cairo are installed");
  const std::string& dir = p.positionals()[0];
  const std::vector<std::string> drawn = plot::draw_figures(dir, plot::read_figures(dir));
  for (const std::string& f : drawn) std::printf("wrote %s/%s\n", dir.c_str(), f.c_str());
  for (const std::string& f : plot::remove_stale_figures(dir, drawn))  // not in figures.json: another run's
    std::printf("removed %s/%s (not in figures.json)\n", dir.c_str(), f.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return cli::guarded_main("plot_figures", run, argc, argv); }
