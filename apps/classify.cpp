// classify: land-cover class of Sentinel-2 GeoTIFFs with a trained classifier.
//
//   classify --weights best.safetensors --out predictions.csv a.tif dir/ ...
// Folders are searched recursively for .tif/.tiff files (sorted). One CSV row
// per image: path, class_index, class_name, then one probability per class
// (columns p_<ClassName>). The checkpoint's input_norm is applied (DN ->
// clip/10000 -> standardise), as in training.
//
// An image larger than the classifier's tile (--classifier-tile, EuroSAT's 64)
// is classified as cloud_impact does (--classify, docs/experiment.md): by
// default the softmax averaged over its non-overlapping tiles. Tiles are read by
// windows, a band of tile rows at a time, and batched across images, so memory
// depends on the tile and batch sizes, not on the image (a whole granule fits);
// only --classify full holds a whole large image (and batches at most --batch-size
// tiles' worth of pixels: one granule at a time). Images with a side no longer
// than a tile are classified whole.
//
// Nodata (the file's GDAL nodata value): a tile that is nodata in every pixel and band is left out of
// the image's average; an image that is nodata everywhere gets class_index -1, class_name "nodata" and
// empty probabilities.
//
// Scored: when inputs lie in EuroSAT's layout (<Class>/<Class>_<n>.tif), their predictions are scored
// against the class their folders name: accuracy with its 95% interval, printed, and with --metrics FILE
// also the confusion matrix (JSON). --eurosat-split FILE takes the tiles a split file lists under one
// EuroSAT root (eurosat-test.txt of the standard lists, or a run's split_test.txt): a checkpoint from
// anywhere (PyTorch's too) scored on the test split train_resnet scores its own on.
//
// --map-dir DIR: for each image classified by its tiles, a land-cover map of them beside the CSV's
// average: <DIR>/<file stem>_classes.tif, uint8 class indices (255 where a tile has no data), one pixel
// per tile, georeferenced on the image's grid coarsened by the tile (data::coarsened_geo). A last tile
// flush with the far edge (the image not a multiple of the tile) overlaps its neighbour; its pixel lies
// partly past the image's edge.
//
// Band order (apps/common/band_order.h): each file is read in the order it says it holds (GDAL band
// descriptions, or its EuroSAT / SEN12MS-CR layout; --bands overrides) and moved into the order the
// classifier takes (its checkpoint's "bands" metadata; --model-bands for a file without it).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "apps/common/accuracy.h"
#include "apps/common/band_order.h"
#include "apps/common/device.h"
#include "apps/common/experiment.h"
#include "apps/common/geotiff_output.h"
#include "apps/common/progress.h"
#include "data/eurosat.h"
#include "engine/autograd.h"
#include "models/model_io.h"

using namespace nimbus;
namespace fs = std::filesystem;

namespace {

bool is_tif(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return e == ".tif" || e == ".tiff";
}

std::vector<std::string> collect_inputs(const std::vector<std::string>& args) {
  std::vector<std::string> files;
  for (const std::string& a : args) {
    std::error_code ec;
    if (fs::is_directory(a, ec)) {
      std::vector<std::string> found;
      // Linked folders are followed (a dataset assembled from links), each real folder once: a link
      // back to an ancestor would otherwise loop.
      std::set<fs::path> seen_dirs = {fs::canonical(a)};
      for (auto it = fs::recursive_directory_iterator(a, fs::directory_options::follow_directory_symlink);
           it != fs::recursive_directory_iterator(); ++it) {
        if (it->is_directory() && !seen_dirs.insert(fs::canonical(it->path())).second) {
          it.disable_recursion_pending();
          continue;
        }
        if (it->is_regular_file() && is_tif(it->path())) found.push_back(it->path().string());
      }
      std::sort(found.begin(), found.end());
      NIMBUS_CHECK(!found.empty(), a, ": folder has no .tif files");
      files.insert(files.end(), found.begin(), found.end());
    } else {
      NIMBUS_CHECK(fs::is_regular_file(a, ec), a, ": no such file or folder");
      files.push_back(a);
    }
  }
  // Each file once, whatever names it (a folder and a folder inside it, a file given twice): it would
  // be classified, written and scored twice.
  std::set<fs::path> seen;
  std::vector<std::string> once;
  for (std::string& f : files)
    if (seen.insert(fs::weakly_canonical(f)).second) once.push_back(std::move(f));
  if (once.size() < files.size())
    std::fprintf(stderr, "classify: %zu inputs named more than once are classified once\n", files.size() - once.size());
  return once;
}

std::string class_name(int k, int classes) {
  if (classes == data::kEuroSatClasses) return data::eurosat_class_names()[size_t(k)];
  return "class" + std::to_string(k);
}

int run(int argc, char** argv) {
  cli::Parser p("classify",
                "Classify Sentinel-2 GeoTIFFs (13 bands, DN) with a trained land-cover classifier; one CSV row per "
                "image with the predicted class and every class probability.");
  p.add_string("weights", "", "classifier checkpoint (train_resnet's, or a torchvision-named safetensors)", "FILE");
  p.add_string("out", "", "output CSV (written atomically)", "FILE");
  apps::add_bands_option(p);
  apps::add_model_bands_option(p);
  p.add_int("batch-size", 32, "tiles (or whole small images) per forward pass, across images of the same size; "
            "with --classify full, as many large images as hold that many tiles' pixels (one at least)")
      .range(1, 65536);
  p.add_choice("classify", "tiles", {"tiles", "center", "full"},
               "an image larger than the classifier's tile: tiles = softmax averaged over its non-overlapping tiles "
               "(read by windows), center = the centre tile only, full = the whole image at once (holds it all)");
  p.add_int("classifier-tile", 64, "the classifier's training tile size (EuroSAT: 64)").range(8, 4096);
  p.add_string("map-dir", "",
               "also write each image classified by its tiles (--classify tiles, larger than a tile) as a map of "
               "their classes: DIR/<file stem>_classes.tif, uint8 (255: no data), one pixel per tile, on the "
               "image's grid",
               "DIR");
  p.add_string("eurosat-split", "",
               "classify the tiles this split file lists (eurosat-test.txt, a run's split_test.txt) under the one "
               "input, a EuroSAT MS root, and score them against their class folders",
               "FILE");
  p.add_string("metrics", "",
               "with inputs in EuroSAT's class folders: also write their accuracy (95% interval) and confusion "
               "matrix as JSON (written atomically)",
               "FILE");
  apps::add_compress_option(p);
  p.add_positional("inputs", "GeoTIFF files, or folders searched recursively for .tif files");
  cli::add_common_options(p);
  apps::add_precision_option(p);
  p.parse_or_exit(argc, argv);
  const std::string weights = p.get_string("weights"), out = p.get_string("out");
  const int64_t batch = p.get_int("batch-size");
  if (weights.empty() || out.empty()) throw cli::UsageError("--weights FILE and --out FILE are required");
  if (p.positionals().empty()) throw cli::UsageError("give at least one GeoTIFF or folder");
  if (batch < 1) throw cli::UsageError("--batch-size must be >= 1");
  const std::string map_dir = p.get_string("map-dir");
  if (map_dir.empty() && apps::compress_deflate(p))
    throw cli::UsageError("--compress applies to --map-dir's maps, the only GeoTIFFs classify writes; give --map-dir");
  if (!map_dir.empty()) {
    if (p.get_string("classify") != "tiles")
      throw cli::UsageError("--map-dir maps the tiles of --classify tiles, not --classify " + p.get_string("classify"));
    std::error_code ec;
    if (fs::exists(map_dir, ec) && !fs::is_directory(map_dir, ec))
      throw cli::UsageError("--map-dir " + map_dir + " is a file, not a folder");
    // Inside an input folder, the maps would be taken for images by the next run over that folder.
    const fs::path maps = fs::weakly_canonical(map_dir);
    for (const std::string& in : p.positionals())
      if (fs::is_directory(in, ec)) {
        const fs::path folder = fs::canonical(in);
        const auto [end, _] = std::mismatch(folder.begin(), folder.end(), maps.begin(), maps.end());
        if (end == folder.end())
          throw cli::UsageError(str("--map-dir ", map_dir, " lies in the input folder ", in,
                                    ": its maps would be read as images by the next run; put them elsewhere"));
      }
  }
  const std::string split_file = p.get_string("eurosat-split"), metrics = p.get_string("metrics");
  if (!split_file.empty() && (p.positionals().size() != 1 || !fs::is_directory(p.positionals()[0])))
    throw cli::UsageError("--eurosat-split takes the tiles under one input, a EuroSAT MS root folder");
  const cli::CommonOptions common = apps::setup_device(p);
  // The inputs and the class each one's EuroSAT layout names (-1: none): a split's tiles by their class
  // folders, as train_resnet labels them; other inputs when they are in the layout (eurosat_label_of).
  std::vector<std::string> files;
  std::vector<int> truth;
  if (split_file.empty()) {
    files = collect_inputs(p.positionals());
    for (const std::string& f : files) truth.push_back(data::eurosat_label_of(f));
  } else {
    const data::EuroSat ds(p.positionals()[0], /*check_files=*/false);
    for (size_t i : ds.read_split_file(split_file)) {
      files.push_back(ds.items()[i].path);
      truth.push_back(ds.items()[i].label);
    }
    NIMBUS_CHECK(!files.empty(), split_file, ": lists no tile");
  }
  std::vector<std::pair<std::string, std::string>> inputs = {{"--weights", weights}};
  for (const std::string& f : files) inputs.emplace_back("an input image", f);
  if (!split_file.empty()) inputs.emplace_back("--eurosat-split", split_file);
  cli::refuse_output_over_input("--out", p.get_string("out"), inputs);
  cli::prepare_output_file("--out", out, /*stream_ok=*/true);
  if (!metrics.empty()) {
    cli::refuse_output_over_input("--metrics", metrics, inputs);
    cli::refuse_one_file_for_two_outputs("--metrics", metrics, "--out", out);
    cli::prepare_output_file("--metrics", metrics, /*stream_ok=*/true);
  }

  models::LoadedModel lm = models::load_model(weights);
  NIMBUS_CHECK(lm.model.classifier, weights, ": holds ", lm.model.config.str(), ", not a land-cover classifier");
  models::Classifier& clf = *lm.model.classifier;
  if (!lm.has_input_norm)
    std::fprintf(stderr, "classify: %s has no input_norm.mean/std: using plain reflectance (mean 0, std 1)\n",
                 weights.c_str());
  clf.to(common.device);
  clf.eval();
  const int C = clf.config().in_channels, K = clf.config().classes;
  NIMBUS_CHECK(map_dir.empty() || K < 255, weights, ": ", K, " classes do not fit --map-dir's uint8 maps (255 is "
               "their nodata)");
  if (!metrics.empty()) {  // something to score, before the work
    if (std::none_of(truth.begin(), truth.end(), [](int t) { return t >= 0; }))
      throw cli::UsageError("--metrics " + metrics + ": no input lies in EuroSAT's class folders "
                            "(<Class>/<Class>_<n>.tif): nothing to score");
    NIMBUS_CHECK(K == data::kEuroSatClasses, weights, ": ", K, " classes, not EuroSAT's ", data::kEuroSatClasses,
                 ": --metrics cannot score it against EuroSAT's class folders");
  }
  const data::BandList model_bands = apps::classifier_bands(lm, weights, p.get_string("model-bands"), "classify");
  apps::FileBands file_bands(p.get_string("bands"), "classify");

  std::vector<std::string> header = {"path", "class_index", "class_name"};
  for (int k = 0; k < K; ++k) header.push_back("p_" + class_name(k, K));
  CsvTable csv(header);  // RFC 4180: a path with a comma is quoted
  NoGradGuard ng;
  const apps::ClassifyMode mode = apps::parse_classify_mode(p.get_string("classify"));
  const int tile = int(p.get_int("classifier-tile"));

  // Every image as crops (windows) of one size; crops of consecutive images of the same crop size
  // share forward passes. The reader keeps one band of tile rows of the current image.
  struct Crop {
    size_t image;
    int x0, y0, w, h;
    int64_t index;  // in its image's crops: row-major, as classify_crops gives them
  };
  struct Image {
    std::string path;
    data::BandList bands;
    std::optional<double> nodata;  // the file's GDAL nodata value
    int height = 0, width = 0;
    int64_t crops = 0, done = 0;  // 64 bits: a huge image at a small --classifier-tile
    int64_t counted = 0;      // crops with data: a crop that is nodata in every pixel and band is left out
    std::vector<double> sum;  // of the counted crops' probabilities
    data::GeoInfo geo;        // with --map-dir
    std::string map;          // --map-dir: its map's path ("" when it gets none)
    int map_rows = 0, map_cols = 0;
    std::vector<float> classes;  // the map: each crop's class, row-major, kMapNoData without data
    int predicted = -1;          // its class (-1: nodata everywhere)
  };
  constexpr float kMapNoData = 255.f;
  std::vector<Image> images(files.size());
  std::vector<Crop> crops;  // every image's crops, in order (headers only are read here)
  // EuroSAT's 27,000 tiles take a while even by their headers: a bar when there are many.
  std::unique_ptr<Progress> header_bar;
  if (files.size() >= 1000)
    header_bar = std::make_unique<Progress>("classify headers", int64_t(files.size()), stderr, Progress::Mode::Auto,
                                            "file");
  for (size_t i = 0; i < files.size(); ++i) {
    Image& im = images[i];
    im.path = files[i];
    const data::TiffInfo info = data::read_tiff_info(files[i]);
    im.bands = file_bands.of(files[i], info.band_names, info.bands);
    data::check_bands_cover(im.bands, model_bands, files[i]);  // before any image is classified
    im.height = info.height, im.width = info.width;
    im.nodata = info.nodata;
    im.sum.assign(size_t(K), 0.0);
    // Whole: --classify full, or an image with a side no longer than a tile (no tile fits it).
    const bool whole = mode == apps::ClassifyMode::Full || im.height <= tile || im.width <= tile;
    const std::vector<std::pair<int, int>> corners =
        whole ? std::vector<std::pair<int, int>>{{0, 0}} : apps::classify_crops(im.height, im.width, mode, tile);
    im.crops = int64_t(corners.size());
    for (size_t k = 0; k < corners.size(); ++k)
      crops.push_back({i, corners[k].second, corners[k].first, whole ? im.width : tile, whole ? im.height : tile,
                       int64_t(k)});
    if (!map_dir.empty() && !whole) {
      im.map_cols = int(std::count_if(corners.begin(), corners.end(), [&](const auto& c) { return c.first == 0; }));
      im.map_rows = int(im.crops / im.map_cols);
      im.map = (fs::path(map_dir) / (fs::path(im.path).stem().string() + "_classes.tif")).string();
      im.geo = info.geo;
    }
    if (header_bar) header_bar->update(int64_t(i + 1));
  }
  header_bar.reset();
  if (!map_dir.empty()) {  // every map's name before any work: one per image, none over an input
    std::map<std::string, std::string> by_map;
    for (const Image& im : images) {
      if (im.map.empty()) continue;
      const auto [it, fresh] = by_map.emplace(im.map, im.path);
      if (!fresh)
        throw cli::UsageError(str("--map-dir: ", it->second, " and ", im.path, " would both be mapped to ", im.map,
                                  " (the same file stem): classify them into separate folders"));
      cli::refuse_output_over_input("--map-dir", im.map, inputs);
      cli::refuse_one_file_for_two_outputs("--map-dir", im.map, "--out", out);
      cli::refuse_one_file_for_two_outputs("--map-dir", im.map, "--metrics", metrics);
    }
    size_t whole = 0;  // larger than a tile one way only: classified whole, so no map
    for (const Image& im : images) whole += im.map.empty() && (im.height > tile || im.width > tile);
    if (whole > 0)
      std::fprintf(stderr, "classify: --map-dir: %zu images have a side no longer than the %d-pixel tile: classified "
                   "whole, no map\n", whole, tile);
    if (by_map.empty())
      std::fprintf(stderr, "classify: --map-dir: no image is larger than the %d-pixel tile, so none has a map\n", tile);
    else
      fs::create_directories(map_dir);
  }
  Progress bar("classify", int64_t(crops.size()), stderr, Progress::Mode::Auto,
               crops.size() == files.size() ? "img" : "tile");
  size_t emitted = 0, crops_done = 0, nodata_images = 0, maps_written = 0;
  auto emit_finished = [&] {
    for (; emitted < images.size() && images[emitted].crops > 0 && images[emitted].done == images[emitted].crops;
         ++emitted) {
      Image& im = images[emitted];
      if (!im.map.empty()) {  // written atomically, as soon as the image is done
        data::Raster m;
        m.width = im.map_cols, m.height = im.map_rows, m.bands = 1;
        m.type = data::SampleType::UInt8;
        m.data = std::move(im.classes);
        m.geo = data::coarsened_geo(im.geo, tile);
        m.band_names = {"class"};
        m.nodata = kMapNoData;
        data::WriteOptions wo;
        wo.type = data::SampleType::UInt8;
        wo.deflate = apps::compress_deflate(p);
        data::write_geotiff(im.map, m, wo);
        ++maps_written;
      }
      if (im.counted == 0) {  // nodata everywhere: no class, and no probabilities to give
        std::vector<std::string> cells = {im.path, "-1", "nodata"};
        cells.resize(size_t(3 + K));
        csv.add_row(std::move(cells));
        ++nodata_images;
        im.sum = {};
        continue;
      }
      std::vector<double> mean(im.sum.size());
      for (size_t k = 0; k < mean.size(); ++k) mean[k] = im.sum[k] / im.counted;
      const int best = int(std::max_element(mean.begin(), mean.end()) - mean.begin());
      im.predicted = best;
      std::vector<std::string> cells = {im.path, std::to_string(best), class_name(best, K)};
      for (int k = 0; k < K; ++k) cells.push_back(fmt_num(mean[size_t(k)], 9));
      csv.add_row(std::move(cells));
      im.sum = {};
    }
  };
  data::Raster band;  // rows [band_y0, band_y0 + band.height) of image band_image, all columns
  std::vector<uint8_t> band_nodata;  // with a NaN or infinite nodata value: 1 where a pixel of `band` is it in every band
  size_t band_image = SIZE_MAX;
  // The open image's reader (a file in one compressed strip is decoded by rows as its tile rows move down).
  std::optional<data::TiffReader> reader;
  size_t reader_image = SIZE_MAX;
  int band_y0 = -1;
  std::vector<Crop> pending;
  std::vector<char> has_data;  // per pending crop: not nodata in every pixel and band
  std::vector<float> dn;
  auto run_batch = [&] {
    if (pending.empty()) return;
    const int h = pending[0].h, w = pending[0].w;
    dn.clear();
    for (const Crop& c : pending) {
      Image& im = images[c.image];
      if (c.image != band_image || c.y0 < band_y0 || c.y0 + c.h > band_y0 + band.height) {
        // One read for the whole row of crops: the band of rows [y0, y0 + h), every column.
        if (c.image != reader_image) reader.emplace(im.path), reader_image = c.image;
        band = reader->read(data::Window{0, c.y0, im.width, c.h});
        // A NaN nodata value, or one that is infinite as float32 (a float64 file's -1.797e308): a pixel
        // that is it in every band has no data; it is zeroed (a tile with any data is classified as a
        // whole) and its tile's has_data comes from the mask. Any other NaN or infinity is an error.
        band_nodata.clear();
        if (im.nodata && !std::isfinite(float(*im.nodata))) {
          const size_t hw = size_t(band.height) * size_t(band.width);
          band_nodata.assign(hw, 1);
          for (int b = 0; b < band.bands; ++b)
            for (size_t q = 0; q < hw; ++q)
              band_nodata[q] &= data::is_nodata(band.data[size_t(b) * hw + q], im.nodata) ? 1 : 0;
          for (int b = 0; b < band.bands; ++b)
            for (size_t q = 0; q < hw; ++q)
              if (band_nodata[q]) band.data[size_t(b) * hw + q] = 0.f;
        }
        data::check_finite(band, im.path);  // a NaN pixel would make this image's probabilities NaN
        band_image = c.image, band_y0 = c.y0;
      }
      const size_t plane = size_t(band.height) * size_t(band.width), whw = size_t(w) * size_t(h);
      std::vector<float> crop(size_t(band.bands) * whw);
      for (int b = 0; b < band.bands; ++b)
        for (int y = 0; y < h; ++y)
          std::copy_n(band.data.data() + size_t(b) * plane + size_t(c.y0 - band_y0 + y) * size_t(band.width) +
                          size_t(c.x0),
                      size_t(w), crop.data() + size_t(b) * whw + size_t(y) * size_t(w));
      if (!band_nodata.empty()) {  // NaN or infinite nodata: the mask of the zeroed pixels
        bool any = false;
        for (int y = 0; y < h && !any; ++y)
          for (int x = 0; x < w && !any; ++x)
            any = !band_nodata[size_t(c.y0 - band_y0 + y) * size_t(band.width) + size_t(c.x0 + x)];
        has_data.push_back(any);
      } else {
        has_data.push_back(!im.nodata || !std::all_of(crop.begin(), crop.end(), [&](float v) {
          return data::is_nodata(v, im.nodata);
        }));
      }
      crop = data::reorder_bands(std::move(crop), whw, im.bands, model_bands, im.path);
      dn.insert(dn.end(), crop.begin(), crop.end());
    }
    const int64_t n = int64_t(pending.size());
    const std::vector<float> prob =
        clf.probabilities(Tensor::from_vector({n, C, h, w}, dn).to(common.device)).to_vector();
    for (int64_t b = 0; b < n; ++b) {
      Image& im = images[pending[size_t(b)].image];
      if (has_data[size_t(b)]) {
        for (int k = 0; k < K; ++k) im.sum[size_t(k)] += double(prob[size_t(b * K + k)]);
        ++im.counted;
      }
      if (!im.map.empty()) {
        if (im.classes.empty()) im.classes.assign(size_t(im.crops), kMapNoData);
        const float* row = prob.data() + b * K;
        if (has_data[size_t(b)]) im.classes[size_t(pending[size_t(b)].index)] = float(std::max_element(row, row + K) - row);
      }
      ++im.done;
    }
    crops_done += pending.size();
    pending.clear();
    has_data.clear();
    emit_finished();
    bar.update(int64_t(crops_done));
  };
  for (const Crop& c : crops) {
    if (!pending.empty() && (pending[0].h != c.h || pending[0].w != c.w)) run_batch();  // another size
    pending.push_back(c);
    // At most --batch-size tiles' worth of pixels a pass (whole large images: fewer, one at least).
    if (int64_t(pending.size()) >= apps::crops_per_pass(int64_t(c.h) * c.w, batch, tile)) run_batch();
  }
  run_batch();
  NIMBUS_CHECK(emitted == images.size(), "classify: internal: ", images.size() - emitted, " images unfinished");
  bar.finish();
  csv.write(out);
  std::printf("classify: %zu images, bands read as %s; the classifier takes %s -> %s\n", files.size(),
              file_bands.summary().c_str(), data::bands_name(model_bands).c_str(), out.c_str());
  if (nodata_images > 0)
    std::printf("classify: %zu images are nodata everywhere: class_index -1 (\"nodata\"), no probabilities\n",
                nodata_images);
  if (maps_written > 0)
    std::printf("classify: %zu maps of tile classes (%dx%d pixels a tile) in %s\n", maps_written, tile, tile,
                map_dir.c_str());
  // Scored against the classes EuroSAT's folders name, where the inputs lie in them.
  ConfusionMatrix confusion(K);
  size_t labelled = 0, without_data = 0;
  for (size_t i = 0; i < images.size(); ++i) {
    if (truth[i] < 0) continue;
    ++labelled;
    if (images[i].predicted < 0) ++without_data;
    else if (K == data::kEuroSatClasses) confusion.add(truth[i], images[i].predicted);
  }
  if (labelled > 0 && K != data::kEuroSatClasses) {
    std::printf("classify: %zu images lie in EuroSAT's class folders, but the classifier has %d classes, not EuroSAT's "
                "%d: not scored\n", labelled, K, data::kEuroSatClasses);
  } else if (labelled > 0) {
    const Proportion acc = confusion.accuracy();
    std::printf("classify: accuracy %.4f (95%% interval %.4f-%.4f): %lld scored of the %zu images in EuroSAT's class "
                "folders (%zu without data), of %zu inputs\n", acc.value, acc.lo, acc.hi, (long long)acc.n, labelled,
                without_data, files.size());
  }
  if (!metrics.empty()) {  // written whatever the count (no image with data: an accuracy of null)
    std::vector<std::string> names(data::eurosat_class_names().begin(), data::eurosat_class_names().end());
    json::write(metrics, json::object({{"weights", json::string(weights)},
                                       {"split_file", json::string(split_file)},
                                       {"inputs", json::number(double(files.size()))},
                                       {"in_class_folders", json::number(double(labelled))},
                                       {"without_data", json::number(double(without_data))},
                                       {"accuracy", to_json(confusion.accuracy())},
                                       {"confusion", to_json(confusion, names)}}));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return nimbus::cli::guarded_main("classify", run, argc, argv); }
