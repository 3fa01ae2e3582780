#!/usr/bin/env bash
# sentinel1_to_grid.sh: a Sentinel-1 backscatter image (VV, VH; calibrated and terrain-corrected, as
# Google Earth Engine's COPERNICUS/S1_GRD or ESA SNAP give it) -> the 2-band float32 GeoTIFF that
# DSen2-CR takes beside a Sentinel-2 image: on that image's grid (its CRS, origin, pixel size and size),
# in dB, the bands named VV and VH.
#
#   scripts/sentinel1_to_grid.sh s1.tif scene.tif s1_on_scene.tif [--linear | --db] [--resampling bilinear]
#
# --linear (the default): the input holds linear power (SNAP's Sigma0_VV, GEE's S1_GRD_FLOAT) and is
# converted, 10 log10; --db: it is in dB already (GEE's S1_GRD), and only moved. Resampling is done on
# what the file holds (bilinear by default; GDAL's -r names). Pixels the input does not cover are NaN,
# which the apps fill as DSen2-CR does (docs/robustness.md, "The NaN policy"). GDAL's tools do the work
# (gdal-bin, installed when missing). The output is written next to its final name and renamed into
# place when complete; it may not be one of the inputs.
set -euo pipefail

die() { echo "sentinel1_to_grid: $*" >&2; exit 1; }
usage() {
  echo "usage: scripts/sentinel1_to_grid.sh S1.tif S2_SCENE.tif OUT.tif [--linear | --db] [--resampling bilinear]" >&2
  exit 2
}

(($# >= 3)) || usage
s1=$1 s2=$2 out=$3
shift 3
scale=linear resampling=bilinear
while (($#)); do
  case $1 in
    --linear) scale=linear; shift ;;
    --db) scale=db; shift ;;
    --resampling) (($# >= 2)) || usage; resampling=$2; shift 2 ;;
    *) usage ;;
  esac
done
case $resampling in
  near | nearest) resampling=near ;;
  bilinear | cubic | cubicspline | lanczos | average | mode) ;;
  *) die "--resampling $resampling: one of nearest, bilinear, cubic, cubicspline, lanczos, average, mode" ;;
esac
[[ -f $s1 ]] || die "$s1: no such file"
[[ -f $s2 ]] || die "$s2: no such file"
[[ $out == *.tif || $out == *.tiff ]] || die "$out: the output must end in .tif or .tiff"
for in in "$s1" "$s2"; do
  [[ "$(realpath -m "$out")" != "$(realpath "$in")" ]] || die "$out: the output may not be an input ($in)"
done

if ! command -v gdalwarp > /dev/null || ! command -v gdal_calc.py > /dev/null; then
  echo "sentinel1_to_grid: installing gdal-bin (GDAL's command-line tools)" >&2
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get install -y -qq --no-install-recommends gdal-bin > /dev/null || die "cannot install gdal-bin"
fi

bands=$(gdalinfo "$s1" | grep -c '^Band ' || true)
((bands == 2)) || die "$s1: $bands bands; Sentinel-1 for DSen2-CR is 2 (VV, VH)"
# The Sentinel-2 image's grid: size, origin and pixel size (north up, as Sentinel-2 granules are).
info=$(gdalinfo "$s2")
read -r width height < <(sed -n 's/^Size is \([0-9]*\), \([0-9]*\)$/\1 \2/p' <<< "$info")
read -r x0 y0 < <(sed -n 's/^Origin = (\([-0-9.e+]*\),\([-0-9.e+]*\))$/\1 \2/p' <<< "$info")
read -r dx dy < <(sed -n 's/^Pixel Size = (\([-0-9.e+]*\),\([-0-9.e+]*\))$/\1 \2/p' <<< "$info")
[[ -n ${width:-} && -n ${x0:-} && -n ${dx:-} ]] || die "$s2: no north-up georeferencing (gdalinfo prints no Origin and Pixel Size)"
extent=$(awk -v x0="$x0" -v y0="$y0" -v dx="$dx" -v dy="$dy" -v w="$width" -v h="$height" \
  'BEGIN { printf "%.10f %.10f %.10f %.10f", x0, y0 + dy * h, x0 + dx * w, y0 }')
res=$(awk -v dx="$dx" -v dy="$dy" 'BEGIN { printf "%.10f %.10f", dx, -dy }')

out_dir=$(dirname "$out")
mkdir -p "$out_dir"
tmp=$(mktemp -d "$out_dir/.sentinel1_to_grid.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2086  # the extent and resolution are four and two numbers
gdalsrsinfo -o wkt "$s2" > "$tmp/s2.wkt" 2> /dev/null && grep -q . "$tmp/s2.wkt" || die "$s2: no coordinate system"
gdalwarp -q -t_srs "$tmp/s2.wkt" -te $extent -tr $res -r "$resampling" -ot Float32 -dstnodata nan -of GTiff \
  "$s1" "$tmp/grid.tif" || die "gdalwarp could not put $s1 on the grid of $s2"
if [[ $scale == linear ]]; then
  # 10 log10 of the power; 0 and below (no backscatter, or a fill value) become NaN, not -inf.
  gdal_calc.py --quiet -A "$tmp/grid.tif" --allBands=A --calc="where(A > 0, 10 * log10(maximum(A, 1e-30)), nan)" \
    --type=Float32 --outfile="$tmp/db.tif" > /dev/null || die "gdal_calc.py failed on $s1"  # (its NoDataValue=nan blanks all)
else
  mv "$tmp/grid.tif" "$tmp/db.tif"
fi
# The bands' names, VV then VH (SEN12MS-CR's order), through a VRT the final copy reads.
gdal_translate -q -of VRT "$tmp/db.tif" "$tmp/db.vrt"
awk 'BEGIN { split("VV VH", name, " "); band = 0 }
  /<VRTRasterBand / { band++; print; print "    <Description>" name[band] "</Description>"; next }
  { print }' "$tmp/db.vrt" > "$tmp/named.vrt"
gdal_translate -q -of GTiff -a_nodata nan -co TILED=YES -co COMPRESS=DEFLATE -co BIGTIFF=IF_SAFER "$tmp/named.vrt" \
  "$tmp/out.tif"
mv -f "$tmp/out.tif" "$out"
echo "sentinel1_to_grid: $out: VV, VH in dB ($([[ $scale == linear ]] && echo "from linear power" || echo "as given")), ${width} x ${height} pixels on the grid of $s2"
