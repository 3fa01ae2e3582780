#!/usr/bin/env bash
# sentinel2_safe.sh: a Sentinel-2 Level-1C product as ESA distributes it (a .SAFE folder of one JPEG 2000
# file per band, at 10, 20 and 60 m) -> one 13-band uint16 GeoTIFF on the 10 m grid, in SEN12MS-CR's
# band order (B1..B8, B8A, B9..B12) with the bands named in its GDAL band descriptions: what classify,
# cloud_mask and remove_clouds read, and what SEN12MS-CR's patches were cut from.
#
#   scripts/sentinel2_safe.sh S2A_MSIL1C_..._T32TQM_....SAFE out.tif [--resampling nearest]
#
# GDAL does the work (gdalbuildvrt, gdal_translate; Debian's gdal-bin, which this script installs when
# it is missing): the bands are stacked in a VRT, resampled to 10 m (nearest by default, as Google
# Earth Engine's export that made SEN12MS-CR does; --resampling takes GDAL's -r names), and written
# tiled and deflated, a BigTIFF if it needs one. DN 0 is nodata (ESA's), kept as the file's nodata.
#
# Processing baseline 04.00 and later (products from 25 January 2022, and older dates reprocessed)
# store DN + 1000 (RADIO_ADD_OFFSET -1000 in MTD_MSIL1C.xml): the offset is taken off, so the DN mean
# what SEN12MS-CR's and EuroSAT's (2017-2018) do, with the older products' conventions kept: 0 nodata,
# 65535 saturated (kept), and a pixel darker than the offset (a reflectance below 0) 1, as ESA clamped
# them before 04.00. Level-2A products are refused: they hold surface reflectance and no B10, and the
# models take the 13 Level-1C bands. So is a multi-granule product (before December 2016): --tile picks
# one of its granules (T32TQM).
#
# The output is written next to its final name and renamed into place when complete; it may not be a
# file of the product.
set -euo pipefail

die() { echo "sentinel2_safe: $*" >&2; exit 1; }
usage() {
  echo "usage: scripts/sentinel2_safe.sh PRODUCT.SAFE OUT.tif [--resampling nearest|bilinear|...] [--tile T32TQM]" >&2
  exit 2
}

(($# >= 2)) || usage
safe=$1 out=$2
shift 2
resampling=nearest tile=""
while (($#)); do
  case $1 in
    --resampling) (($# >= 2)) || usage; resampling=$2; shift 2 ;;
    --tile) (($# >= 2)) || usage; tile=${2#T}; shift 2 ;;
    *) usage ;;
  esac
done
case $resampling in
  nearest | bilinear | cubic | cubicspline | lanczos | average | mode) ;;
  *) die "--resampling $resampling: one of nearest, bilinear, cubic, cubicspline, lanczos, average, mode" ;;
esac
[[ -d $safe ]] || die "$safe: not a folder (give the product's .SAFE folder, unzipped)"
[[ $out == *.tif || $out == *.tiff ]] || die "$out: the output must end in .tif or .tiff"
case "$(realpath -m "$out")/" in "$(realpath "$safe")"/*) die "$out: the output may not be inside the product $safe" ;; esac

if ! command -v gdalbuildvrt > /dev/null || ! command -v gdal_translate > /dev/null; then
  "$(dirname "${BASH_SOURCE[0]}")/install_deps.sh" --gdal >&2 || die "cannot install gdal-bin (GDAL's command-line tools)"
fi

# The bands, one file each (GRANULE/<id>/IMG_DATA/<tile>_<time>_B01.jp2), in SEN12MS order.
bands=(B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B10 B11 B12)
names=(B1 B2 B3 B4 B5 B6 B7 B8 B8A B9 B10 B11 B12)
# find -L: a .SAFE given as a symbolic link is followed.
if find -L "$safe" -path '*IMG_DATA*' -name '*_B??_[126]0m.jp2' | grep -q .; then
  die "$safe is a Level-2A product (surface reflectance, no B10): the models take the 13 Level-1C bands"
fi
granules=$(find -L "$safe" -path '*/GRANULE/*' -maxdepth 2 -mindepth 2 -type d | wc -l)
files=()
for b in "${bands[@]}"; do
  mapfile -t found < <(find -L "$safe" -path '*IMG_DATA*' -name "*${tile:+T$tile*}_${b}.jp2" | sort)
  if ((${#found[@]} > 1 && granules > 1)); then
    die "$safe holds $granules granules (a product from before December 2016): give --tile with one of their tiles (e.g. --tile $(basename "${found[0]}" | grep -o 'T[0-9]\{2\}[A-Z]\{3\}' | head -1))"
  fi
  ((${#found[@]} == 1)) || die "$safe: ${#found[@]} files *_${b}.jp2 under GRANULE/*/IMG_DATA${tile:+ of tile T$tile} (one expected)${found:+: ${found[*]}}"
  files+=("${found[0]}")
done

# RADIO_ADD_OFFSET per band (band_id 0..12 in the order above), from the product's metadata.
mtd=$(find -L "$safe" -maxdepth 1 -name 'MTD_MSIL1C.xml' | head -1)
offsets=(0 0 0 0 0 0 0 0 0 0 0 0 0)
if [[ -n $mtd ]]; then
  found=0
  # Each element wherever it lies (one a line as ESA writes them, or several on one), any attribute order.
  while read -r element; do
    id=$(sed -n 's/.*band_id="\([0-9]*\)".*/\1/p' <<< "$element")
    value=$(sed -n 's/.*>[[:space:]]*\(-\{0,1\}[0-9]*\)[[:space:]]*<.*/\1/p' <<< "$element")
    [[ $id =~ ^[0-9]+$ && $id -lt 13 && $value =~ ^(-[0-9]+|0)$ ]] || die "$mtd: cannot read '$element' (a band_id 0-12 and an offset <= 0)"
    offsets[id]=$value
    found=$((found + 1))
  done < <(tr '\n' ' ' < "$mtd" | grep -o '<[A-Za-z0-9_]*:\{0,1\}RADIO_ADD_OFFSET[^>]*>[^<]*</' || true)
  ((found == 0 || found == 13)) || die "$mtd: $found RADIO_ADD_OFFSET values, not one for each of the 13 bands"
  if ((found == 0)) && [[ $(basename "$(realpath "$safe")") =~ _N0[4-9][0-9]{2}_ ]]; then
    die "$mtd: a product of baseline 04.00 or later (its name says so) without RADIO_ADD_OFFSET values"
  fi
else
  echo "sentinel2_safe: no MTD_MSIL1C.xml in $safe: no radiometric offset applied (right for products before baseline 04.00)" >&2
fi

# GDAL's progress (0...10...100) on a terminal, for a whole granule's minutes; quiet otherwise.
quiet=(-q)
[[ -t 1 ]] && quiet=()
out_dir=$(dirname "$out")
mkdir -p "$out_dir"
tmp=$(mktemp -d "$out_dir/.sentinel2_safe.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
gdalbuildvrt -q -separate -resolution highest -r "$resampling" -srcnodata 0 -vrtnodata 0 "$tmp/stack.vrt" "${files[@]}"

# Each band's name, and its offset as a lookup table on its ComplexSource (gdalbuildvrt writes one per
# band with -srcnodata; the source's 0, nodata, is skipped): DN 1 - offset and below -> 1, DN -> DN +
# offset up to 65534, 65535 (saturated) kept.
awk -v names="${names[*]}" -v offsets="${offsets[*]}" '
  BEGIN { split(names, name, " "); split(offsets, off, " "); band = 0 }
  /<VRTRasterBand / { band++; print; print "    <Description>" name[band] "</Description>"; next }
  off[band] != 0 && /<\/ComplexSource>/ {
    o = off[band]
    print "      <LUT>1:1," (1 - o) ":1,65534:" (65534 + o) ",65535:65535</LUT>"
    offset++
  }
  { print }
  END { print offset + 0 > "/dev/stderr" }' "$tmp/stack.vrt" > "$tmp/named.vrt" 2> "$tmp/offsets"
(($(grep -c '<Description>' "$tmp/named.vrt") == 13)) || die "internal: the VRT of $safe does not have 13 bands"
want=0
for o in "${offsets[@]}"; do [[ $o == 0 ]] || want=$((want + 1)); done
(($(cat "$tmp/offsets") == want)) || die "internal: $want bands have an offset but the VRT took $(cat "$tmp/offsets")"

gdal_translate "${quiet[@]}" -of GTiff -ot UInt16 -a_nodata 0 -co TILED=YES -co COMPRESS=DEFLATE -co BIGTIFF=IF_SAFER \
  "$tmp/named.vrt" "$tmp/out.tif"
mv -f "$tmp/out.tif" "$out"
size=$(gdalinfo "$out" | sed -n 's/^Size is \(.*\), \(.*\)/\1 x \2/p')
echo "sentinel2_safe: $out: 13 bands (B1..B8, B8A, B9..B12), $size pixels of 10 m, offsets ${offsets[*]}"
