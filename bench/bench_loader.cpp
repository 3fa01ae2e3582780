// bench_loader.cpp: samples per second from disk through the streaming loader:
// SEN12MS-CR triplets (window read of the crop, NaN fill, flip/rot90, the §3
// cloud/shadow mask as train_dsen2cr computes it, §4 scaling, batching into
// Tensors) or EuroSAT tiles (--dataset eurosat: the whole 64x64 tile,
// flip/rot90, batching). Prints one JSON line per source.
//
//   bench_loader [--dataset sen12mscr|eurosat] [--root DIR] [--triplets N]
//                [--threads T] [--batch B] [--prefetch P] [--crop C]
//                [--epochs E] [--pack FILE|temp] [--augment-on host|device]
//                [--no-mask]
// Without --root it writes N real-format samples (256x256 triplets: 13-band
// uint16 S2 pair, 2-band float32 S1; or 64x64 13-band uint16 tiles, N per
// class), uncompressed, in the datasets' layouts, to a temp folder and removes
// it afterwards. Files just written sit in the page cache,
// so that figure is decode + crop + augment speed, not cold-disk speed.
// --augment-on device: the flips and turns drawn but left to the GPU (the trainers' --augment-on
// device), so the loader only reads, masks and batches. --no-mask: SEN12MS-CR without the detector.
// --pack: the same epochs again, reading the triplets from a raster pack
// (data/raster_pack.h; built first when missing or stale; "temp": in the temp
// folder), then a line with the ratio of the two rates, measured in one run.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#include "data/cloud_detector.h"
#include "data/eurosat.h"
#include "data/sen12mscr.h"
#include "kernels/common/error.h"
#include "engine/random.h"

using namespace nimbus;
using namespace nimbus::data;
namespace fs = std::filesystem;

namespace {

// Writes n triplets under root (ROI 1, patches 1..n, spring).
void make_tree(const fs::path& root, int n) {
  Rng rng(1);
  for (int p = 1; p <= n; ++p)
    for (const char* mod : {"s1", "s2", "s2_cloudy"}) {
      const bool s1 = std::strcmp(mod, "s1") == 0;
      Raster r;
      r.width = r.height = 256;
      r.bands = s1 ? 2 : 13;
      r.data.resize(size_t(r.bands) * 256 * 256);
      for (auto& v : r.data) v = s1 ? rng.uniform(-30.f, 0.f) : float(rng.below(9000));
      r.geo.pixel_scale = {10, 10, 0};
      r.geo.tiepoints = {0, 0, 0, 399960, 5800020, 0};
      WriteOptions o;
      o.type = s1 ? SampleType::Float32 : SampleType::UInt16;
      const std::string pre = str("ROIs1158_spring_", mod);
      fs::create_directories(root / pre / str(mod, "_1"));
      write_geotiff((root / pre / str(mod, "_1") / str(pre, "_1_p", p, ".tif")).string(), r, o);
    }
}

// Writes n 64x64 13-band uint16 tiles per EuroSAT class under root.
void make_eurosat(const fs::path& root, int n) {
  Rng rng(2);
  for (const std::string& c : eurosat_class_names())
    for (int i = 1; i <= n; ++i) {
      Raster r;
      r.width = r.height = 64;
      r.bands = 13;
      r.data.resize(13 * 64 * 64);
      for (auto& v : r.data) v = float(rng.below(9000));
      WriteOptions o;
      o.type = SampleType::UInt16;
      fs::create_directories(root / c);
      write_geotiff((root / c / str(c, "_", i, ".tif")).string(), r, o);
    }
}

}  // namespace

int main(int argc, char** argv) {
  std::string root, pack_path, dataset = "sen12mscr", augment_on = "host";
  int triplets = 32, threads = 2, batch = 8, prefetch = 4, crop = 128, epochs = 2;
  bool mask = true;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_loader: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--root") root = val();
    else if (a == "--dataset") dataset = val();
    else if (a == "--triplets") triplets = std::stoi(val());
    else if (a == "--threads") threads = std::stoi(val());
    else if (a == "--batch") batch = std::stoi(val());
    else if (a == "--prefetch") prefetch = std::stoi(val());
    else if (a == "--crop") crop = std::stoi(val());
    else if (a == "--epochs") epochs = std::stoi(val());
    else if (a == "--pack") pack_path = val();
    else if (a == "--augment-on") augment_on = val();
    else if (a == "--no-mask") mask = false;
    else {
      std::fprintf(stderr, "usage: bench_loader [--dataset sen12mscr|eurosat] [--root DIR] [--triplets N] [--threads T] [--batch B] "
                           "[--prefetch P] [--crop C] [--epochs E] [--pack FILE|temp] [--augment-on host|device] "
                           "[--no-mask]\n");
      return 2;
    }
  }
  if (augment_on != "host" && augment_on != "device") {
    std::fprintf(stderr, "bench_loader: --augment-on is host or device, not %s\n", augment_on.c_str());
    return 2;
  }
  if (dataset != "sen12mscr" && dataset != "eurosat") {
    std::fprintf(stderr, "bench_loader: --dataset is sen12mscr or eurosat, not %s\n", dataset.c_str());
    return 2;
  }
  const bool eurosat = dataset == "eurosat";
  fs::path tmp;  // the generated tree, removed on every exit path
  try {
    if (root.empty()) {
      std::string tmpl = (fs::temp_directory_path() / "bench_loader_XXXXXX").string();
      if (!::mkdtemp(tmpl.data())) throw Error("bench_loader: cannot make a temp folder");
      tmp = tmpl;
      if (eurosat)
        make_eurosat(tmp, triplets);
      else
        make_tree(tmp, triplets);
      root = tmp.string();
    }
    // The dataset: its sample count, its files, and its sample function reading through `pack`.
    std::vector<Sen12mscrTriplet> triplet_list;
    std::unique_ptr<EuroSat> tiles;
    std::vector<std::string> sources;
    if (eurosat) {
      tiles = std::make_unique<EuroSat>(root);
      for (const EuroSatItem& it : tiles->items()) sources.push_back(it.path);
    } else {
      triplet_list = scan_sen12mscr(root).triplets;
      for (const Sen12mscrTriplet& t : triplet_list) sources.insert(sources.end(), {t.s1, t.s2, t.s2_cloudy});
    }
    const size_t count = eurosat ? tiles->size() : triplet_list.size();
    auto sample_fn = [&](const std::shared_ptr<const RasterPack>& pack) {
      if (eurosat) {
        EuroSatSampleOptions eo;
        eo.augment = AugmentConfig{0, true, true};
        eo.pack = pack;
        eo.flip_rotate_on_device = augment_on == "device";  // drawn here, applied by the GPU
        std::vector<size_t> all(count);
        for (size_t i = 0; i < count; ++i) all[i] = i;
        return eurosat_sample_fn(*tiles, all, eo);
      }
      TripletSampleOptions so;
      so.augment.crop = crop;
      so.pack = pack;
      so.flip_rotate_on_device = augment_on == "device";
      if (mask)  // train_dsen2cr's mask function
        so.mask_fn = [](const Raster& raw, int code) {
          CloudDetectorOptions d;
          d.dihedral_code = code;
          return cloud_shadow_mask(raw.data.data(), raw.bands, raw.height, raw.width, d);
        };
      return sen12mscr_sample_fn(triplet_list, so);
    };
    LoaderOptions lo;
    lo.batch_size = size_t(batch);
    lo.threads = threads;
    lo.prefetch = prefetch;
    // The loader's rate over `epochs` epochs, printed as one JSON line; `pack` null: from the files.
    auto measure = [&](const std::shared_ptr<const RasterPack>& pack) {
      const auto t0 = std::chrono::steady_clock::now();
      size_t samples = 0;
      {
        Loader loader(count, sample_fn(pack), lo);
        const size_t n = loader.batches_per_epoch() * size_t(epochs);
        for (size_t b = 0; b < n; ++b) samples += loader.next().indices.size();
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf(
          "{\"bench\":\"loader\",\"dataset\":\"%s\",\"source\":\"%s\",\"root\":\"%s\",\"samples_in_dataset\":%zu,"
          "\"threads\":%d,\"batch\":%d,\"prefetch\":%d,\"crop\":%d,\"augment_on\":\"%s\",\"mask\":%s,"
          "\"samples\":%zu,\"seconds\":%.4f,\"samples_per_s\":%.2f}\n",
          dataset.c_str(), pack ? "pack" : "files", tmp.empty() ? root.c_str() : "(temp, page-cached)", count, threads,
          batch, prefetch, eurosat ? 64 : crop, augment_on.c_str(), !eurosat && mask ? "true" : "false", samples, s,
          double(samples) / s);
      return double(samples) / s;
    };
    const double files_rate = measure(nullptr);
    if (!pack_path.empty()) {
      if (pack_path == "temp") {
        if (tmp.empty()) throw Error("bench_loader: --pack temp needs the generated tree (no --root); name a FILE");
        pack_path = (tmp / "samples.pack").string();
      }
      const auto pack = ensure_raster_pack(pack_path, sources);
      const double pack_rate = measure(pack);
      std::printf("{\"bench\":\"loader\",\"pack_over_files\":%.2f}\n", pack_rate / files_rate);
    }
    if (!tmp.empty()) fs::remove_all(tmp);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_loader: %s\n", e.what());
    std::error_code ec;
    if (!tmp.empty()) fs::remove_all(tmp, ec);
    return 1;
  }
  return 0;
}
