#!/usr/bin/env bash
# measure_granule.sh: peak memory (max RSS, /usr/bin/time) and time of remove_clouds on synthetic
# scenes of growing size, to show that memory depends on the tile and stripe, not on the scene
# (docs/experiment.md, "Whole granules"). The model has the demo's size (B=4, F=48, with SAR),
# trained for one short epoch: its weights do not change the memory or the time.
#
#   scripts/measure_granule.sh               256, 2048 and 10980 (a Sentinel-2 granule: ~5 min on
#                                            2 cores, 4.1 GB of input written under the work folder)
#   SIZES="256 2048" WORK=/tmp/g scripts/measure_granule.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-256 2048 10980}
WORK=${WORK:-runs/granule}
mkdir -p "$WORK"
cmake --build build --target make_synthetic train_dsen2cr remove_clouds > /dev/null
bin=build/bin
if [[ ! -f $WORK/cr/last.safetensors ]]; then
  "$bin/make_synthetic" --out "$WORK/train" --sen12mscr 16 > /dev/null 2>&1
  "$bin/train_dsen2cr" --data "$WORK/train/sen12mscr" --out "$WORK/cr" --epochs 1 --blocks 4 --features 48 \
    --crop 32 --batch-size 8 --loss l1 > /dev/null 2>&1
fi
for n in $SIZES; do
  "$bin/make_synthetic" --out "$WORK/g$n" --granule "$n" > /dev/null 2>&1
  /usr/bin/time -f "remove_clouds ${n}x${n}: %e s, peak memory %M KiB" \
    "$bin/remove_clouds" --weights "$WORK/cr/last.safetensors" --s2 "$WORK/g$n/granule/s2_cloudy.tif" \
    --s1 "$WORK/g$n/granule/s1.tif" --out "$WORK/g$n/clear.tif" "$@" 2>&1 | grep 'peak memory'
  rm -rf "$WORK/g$n"
done
