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
# Processing baseline 04.00 (products from 25 January 2022) stores DN + 1000 (RADIO_ADD_OFFSET -1000 in
# MTD_MSIL1C.xml): the offset is applied, so the DN mean what SEN12MS-CR's and EuroSAT's (2017-2018)
# do. A pixel darker than the offset (a reflectance below 0, over dark water) then becomes 0, and is
# nodata only where every band is 0. Level-2A products are refused: they hold surface reflectance and no
# B10, and the models take the 13 Level-1C bands.
#
# The output is written next to its final name and renamed into place when complete; it may not be a
# file of the product.
set -euo pipefail

die() { echo "sentinel2_safe: $*" >&2; exit 1; }
usage() { echo "usage: scripts/sentinel2_safe.sh PRODUCT.SAFE OUT.tif [--resampling nearest|bilinear|cubic|average|...]" >&2; exit 2; }

(($# >= 2)) || usage
safe=$1 out=$2
shift 2
resampling=nearest
while (($#)); do
  case $1 in
    --resampling) (($# >= 2)) || usage; resampling=$2; shift 2 ;;
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
  echo "sentinel2_safe: installing gdal-bin (GDAL's command-line tools)" >&2
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get install -y -qq --no-install-recommends gdal-bin > /dev/null || die "cannot install gdal-bin"
fi

# The bands, one file each (GRANULE/<id>/IMG_DATA/<tile>_<time>_B01.jp2), in SEN12MS order.
bands=(B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B10 B11 B12)
names=(B1 B2 B3 B4 B5 B6 B7 B8 B8A B9 B10 B11 B12)
if find "$safe" -path '*IMG_DATA*' -name '*_B??_[126]0m.jp2' | grep -q .; then
  die "$safe is a Level-2A product (surface reflectance, no B10): the models take the 13 Level-1C bands"
fi
files=()
for b in "${bands[@]}"; do
  mapfile -t found < <(find "$safe" -path '*IMG_DATA*' -name "*_${b}.jp2" | sort)
  ((${#found[@]} == 1)) || die "$safe: ${#found[@]} files *_${b}.jp2 under GRANULE/*/IMG_DATA (one expected)${found:+: ${found[*]}}"
  files+=("${found[0]}")
done

# RADIO_ADD_OFFSET per band (band_id 0..12 in the order above), from the product's metadata.
mtd=$(find "$safe" -maxdepth 1 -name 'MTD_MSIL1C.xml' | head -1)
offsets=(0 0 0 0 0 0 0 0 0 0 0 0 0)
if [[ -n $mtd ]]; then
  while read -r id value; do
    [[ $id =~ ^[0-9]+$ && $id -lt 13 ]] && offsets[id]=$value
  done < <(sed -n 's/.*<RADIO_ADD_OFFSET band_id="\([0-9]*\)">\(-\{0,1\}[0-9.]*\)<\/RADIO_ADD_OFFSET>.*/\1 \2/p' "$mtd")
else
  echo "sentinel2_safe: no MTD_MSIL1C.xml in $safe: no radiometric offset applied (right for products before baseline 04.00)" >&2
fi

out_dir=$(dirname "$out")
mkdir -p "$out_dir"
tmp=$(mktemp -d "$out_dir/.sentinel2_safe.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
gdalbuildvrt -q -separate -resolution highest -r "$resampling" -srcnodata 0 -vrtnodata 0 "$tmp/stack.vrt" "${files[@]}"

# Each band's name, and its offset as its ComplexSource's (gdalbuildvrt writes one per band with
# -srcnodata; computed in float, clamped to uint16 on the way out; the source's 0, nodata, is skipped).
awk -v names="${names[*]}" -v offsets="${offsets[*]}" '
  BEGIN { split(names, name, " "); split(offsets, off, " "); band = 0 }
  /<VRTRasterBand / { band++; print; print "    <Description>" name[band] "</Description>"; next }
  off[band] != 0 && /<\/ComplexSource>/ {
    print "      <ScaleOffset>" off[band] "</ScaleOffset>"
    print "      <ScaleRatio>1</ScaleRatio>"
    offset++
  }
  { print }
  END { print offset + 0 > "/dev/stderr" }' "$tmp/stack.vrt" > "$tmp/named.vrt" 2> "$tmp/offsets"
(($(grep -c '<Description>' "$tmp/named.vrt") == 13)) || die "internal: the VRT of $safe does not have 13 bands"
want=0
for o in "${offsets[@]}"; do [[ $o == 0 ]] || want=$((want + 1)); done
(($(cat "$tmp/offsets") == want)) || die "internal: $want bands have an offset but the VRT took $(cat "$tmp/offsets")"

gdal_translate -q -of GTiff -ot UInt16 -a_nodata 0 -co TILED=YES -co COMPRESS=DEFLATE -co BIGTIFF=IF_SAFER \
  "$tmp/named.vrt" "$tmp/out.tif"
mv -f "$tmp/out.tif" "$out"
size=$(gdalinfo "$out" | sed -n 's/^Size is \(.*\), \(.*\)/\1 x \2/p')
echo "sentinel2_safe: $out: 13 bands (B1..B8, B8A, B9..B12), $size pixels of 10 m, offsets ${offsets[*]}"
