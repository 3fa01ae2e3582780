#!/usr/bin/env bash
# sentinel1_to_grid.sh: a Sentinel-1 backscatter image (VV, VH; calibrated and terrain-corrected, as
# Google Earth Engine's COPERNICUS/S1_GRD or ESA SNAP give it) -> the 2-band float32 GeoTIFF that
# DSen2-CR takes beside a Sentinel-2 image: on that image's grid (its CRS, origin, pixel size and size),
# in dB, the bands named VV and VH.
#
#   scripts/sentinel1_to_grid.sh s1.tif scene.tif s1_on_scene.tif [--linear | --db] [--resampling bilinear]
#                                [--srcnodata V | --srcnodata none]
#
# --linear (the default): the input holds linear power (SNAP's Sigma0_VV, GEE's S1_GRD_FLOAT) and is
# converted, 10 log10; --db: it is in dB already (GEE's S1_GRD), and only moved. Resampling is done on
# what the file holds (bilinear by default; GDAL's -r names). Pixels without data are NaN, which the
# apps fill as DSen2-CR does (docs/robustness.md, "The NaN policy"): those the input does not cover,
# and its own nodata pixels, the file's nodata value or, when it has none, 0 (SNAP's and most exports'
# fill; --srcnodata V another, --srcnodata none for none), kept out of the resampling's averages. GDAL's tools do the work
# (gdal-bin, installed when missing). The output is written next to its final name and renamed into
# place when complete; it may not be one of the inputs.
set -euo pipefail

die() { echo "sentinel1_to_grid: $*" >&2; exit 1; }
usage() {
  echo "usage: scripts/sentinel1_to_grid.sh S1.tif S2_SCENE.tif OUT.tif [--linear | --db] [--resampling bilinear]" \
    "[--srcnodata V|none]" >&2
  exit 2
}

(($# >= 3)) || usage
s1=$1 s2=$2 out=$3
shift 3
scale=linear resampling=bilinear srcnodata=""
while (($#)); do
  case $1 in
    --linear) scale=linear; shift ;;
    --db) scale=db; shift ;;
    --srcnodata) (($# >= 2)) || usage; srcnodata=$2; shift 2 ;;
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
  "$(dirname "${BASH_SOURCE[0]}")/install_deps.sh" --gdal >&2 || die "cannot install gdal-bin (GDAL's command-line tools)"
fi

s1_info=$(gdalinfo "$s1") || die "$s1: GDAL cannot read it"
bands=$(grep -c '^Band ' <<< "$s1_info" || true)
((bands == 2)) || die "$s1: $bands bands; Sentinel-1 for DSen2-CR is 2 (VV, VH)"
if [[ -z $srcnodata ]]; then  # the file's own nodata value, else 0
  srcnodata=$(sed -n 's/^ *NoData Value=\(.*\)$/\1/p' <<< "$s1_info" | head -1)
  srcnodata=${srcnodata:-0}
fi
nodata_args=()
[[ $srcnodata == none ]] || nodata_args=(-srcnodata "$srcnodata")
# The Sentinel-2 image's grid: size, origin and pixel size, north up (as Sentinel-2 granules are).
info=$(gdalinfo "$s2") || die "$s2: GDAL cannot read it"
grid=$(awk '/^Size is / { gsub(",", ""); w = $3; h = $4 }
  /^Origin = / { gsub(/[(),]/, " "); x0 = $3; y0 = $4 }
  /^Pixel Size = / { gsub(/[(),]/, " "); dx = $4; dy = $5 }
  END { if (w != "" && x0 != "" && dx != "") print w, h, x0, y0, dx, dy }' <<< "$info")
[[ -n $grid ]] || die "$s2: no north-up georeferencing (gdalinfo prints no Origin and Pixel Size: rotated, or none)"
read -r width height x0 y0 dx dy <<< "$grid"
awk -v dx="$dx" -v dy="$dy" 'BEGIN { exit !(dx > 0 && dy < 0) }' ||
  die "$s2: pixel size ($dx, $dy) is not north up (x growing east, y growing south)"
# The exact extent and size (%.17g: a geographic grid's pixel sizes keep every digit).
extent=$(awk -v x0="$x0" -v y0="$y0" -v dx="$dx" -v dy="$dy" -v w="$width" -v h="$height" \
  'BEGIN { printf "%.17g %.17g %.17g %.17g", x0, y0 + dy * h, x0 + dx * w, y0 }')

# GDAL's progress (0...10...100) on a terminal, for a whole granule's minutes; quiet otherwise.
quiet=(-q) calc_quiet=(--quiet)
[[ -t 1 ]] && quiet=() calc_quiet=()
out_dir=$(dirname "$out")
mkdir -p "$out_dir"
tmp=$(mktemp -d "$out_dir/.sentinel1_to_grid.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2086  # the extent is four numbers
gdalsrsinfo -o wkt "$s2" > "$tmp/s2.wkt" 2> /dev/null && grep -q . "$tmp/s2.wkt" || die "$s2: no coordinate system"
gdalwarp "${quiet[@]}" -t_srs "$tmp/s2.wkt" -te $extent -ts "$width" "$height" -r "$resampling" "${nodata_args[@]}" \
  -ot Float32 -dstnodata nan -of GTiff "$s1" "$tmp/grid.tif" || die "gdalwarp could not put $s1 on the grid of $s2"
if [[ $scale == linear ]]; then
  # 10 log10 of the power; 0 and below (no backscatter, or a fill value) become NaN, not -inf.
  gdal_calc.py "${calc_quiet[@]}" -A "$tmp/grid.tif" --allBands=A --calc="where(A > 0, 10 * log10(maximum(A, 1e-30)), nan)" \
    --type=Float32 --outfile="$tmp/db.tif" > /dev/null || die "gdal_calc.py failed on $s1"  # (its NoDataValue=nan blanks all)
else
  mv "$tmp/grid.tif" "$tmp/db.tif"
fi
# The bands' names, VV then VH (SEN12MS-CR's order), through a VRT the final copy reads.
gdal_translate -q -of VRT "$tmp/db.tif" "$tmp/db.vrt"
awk 'BEGIN { split("VV VH", name, " "); band = 0 }
  /<VRTRasterBand / { band++; print; print "    <Description>" name[band] "</Description>"; next }
  { print }' "$tmp/db.vrt" > "$tmp/named.vrt"
gdal_translate "${quiet[@]}" -of GTiff -a_nodata nan -co TILED=YES -co COMPRESS=DEFLATE -co BIGTIFF=IF_SAFER "$tmp/named.vrt" \
  "$tmp/out.tif"
mv -f "$tmp/out.tif" "$out"
echo "sentinel1_to_grid: $out: VV, VH in dB ($([[ $scale == linear ]] && echo "from linear power" || echo "as given")), ${width} x ${height} pixels on the grid of $s2"
