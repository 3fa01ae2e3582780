#!/usr/bin/env bash
# install_deps.sh: install the Debian packages nimbus needs, only those missing.
#   scripts/install_deps.sh          build dependencies (what scripts/demo.sh needs)
#   scripts/install_deps.sh --tests  also GDAL's command-line tools, which the tests of
#                                    scripts/sentinel2_safe.sh and sentinel1_to_grid.sh run
#                                    (scripts/test.sh; the scripts install it themselves when used),
#                                    and python3-h5py + numpy, which the test of
#                                    scripts/import_keras_dsen2cr.py runs
#   scripts/install_deps.sh --gdal   GDAL's command-line tools alone (what those two scripts call)
#   scripts/install_deps.sh --keras  python3-h5py and python3-numpy alone (what
#                                    scripts/import_keras_dsen2cr.py needs)
#   scripts/install_deps.sh --dev    also the Python tools that regenerate test
#                                    fixtures (python3-torch, rasterio, tifffile, scipy, skimage, h5py)
#   scripts/install_deps.sh --fuzz   also clang 14 with libFuzzer and its OpenMP (scripts/fuzz.sh)
# Safe to run again: it does nothing when everything is present.
set -euo pipefail

pkgs=(cmake ninja-build g++ pkg-config libopenblas-dev libopenblas0-openmp doctest-dev libtiff-dev libgeotiff-dev zlib1g-dev libpng-dev libcli11-dev nlohmann-json3-dev libplplot-dev plplot-driver-cairo libopenmpi-dev openmpi-bin python3 xz-utils)
if [[ "${1:-}" == "--tests" ]]; then
  pkgs+=(gdal-bin python3-h5py python3-numpy)
fi
if [[ "${1:-}" == "--gdal" ]]; then
  pkgs=(gdal-bin)
fi
if [[ "${1:-}" == "--keras" ]]; then
  pkgs=(python3-h5py python3-numpy)
fi
if [[ "${1:-}" == "--dev" ]]; then
  pkgs+=(python3-torch python3-torchvision python3-numpy python3-scipy python3-rasterio python3-tifffile python3-skimage python3-h5py)
fi
if [[ "${1:-}" == "--fuzz" ]]; then
  pkgs+=(clang-14 libclang-rt-14-dev libomp-14-dev)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install_deps: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "install_deps: installing ${missing[*]}"
SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
