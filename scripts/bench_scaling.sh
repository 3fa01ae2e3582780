#!/usr/bin/env bash
# bench_scaling.sh [DATA]: data-parallel scaling of train_dsen2cr on the CPU, one epoch each, in one run:
#   1 rank x 1 thread, 1 rank x 2 threads, 2 ranks (mpirun) x 1 thread each,
# the same global batch (8) and model (B=4, F=32, 64x64 crops, L1, Adam) every time; then the
# all-reduce bandwidth (bench_allreduce). DATA: a SEN12MS-CR folder (default: 160 generated triplets
# in a temp folder). Prints one JSON line per configuration with the epoch's images/s.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/build/bin
cmake --build "$root/build" --target train_dsen2cr make_synthetic bench_allreduce > /dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
data=${1:-}
if [[ -z $data ]]; then
  "$bin/make_synthetic" --out "$tmp/data" --sen12mscr 160 --seed 7 > /dev/null 2>&1
  data=$tmp/data/sen12mscr
fi
mpirun=(mpirun --allow-run-as-root --oversubscribe --bind-to none --mca btl_vader_single_copy_mechanism none)
args=(--data "$data" --epochs 1 --blocks 4 --features 32 --crop 64 --loss l1 --optimizer adam --lr 1e-3 --workers 1)
run() {  # name, ranks, then the command; the epoch's rate from rank 0's progress summary, which counts
          # every rank's images (the global batch; until 2026-12-06 it counted rank 0's share only)
  local name=$1 ranks=$2 out rate
  shift 2
  out=$("$@" 2>&1 | grep -o 'train epoch 1: [0-9/]* in [0-9:]* ([0-9.]* img/s)' | head -1)
  local count=${out#train epoch 1: }
  count=${count%% *}
  [[ -n $out && ${count%/*} == "${count#*/}" ]] || { echo "bench_scaling: $name: no summary of the whole epoch: '$out'" >&2; exit 1; }
  rate=${out##*(}
  rate=${rate% img/s)}
  echo "{\"bench\":\"dp_scaling\",\"config\":\"$name\",\"ranks\":$ranks,\"img_per_s\":$rate}"
}
run "1 rank x 1 thread" 1 "$bin/train_dsen2cr" "${args[@]}" --out "$tmp/a" --batch-size 8 --threads 1
run "1 rank x 2 threads" 1 "$bin/train_dsen2cr" "${args[@]}" --out "$tmp/b" --batch-size 8 --threads 2
run "2 ranks x 1 thread" 2 "${mpirun[@]}" -np 2 "$bin/train_dsen2cr" "${args[@]}" --out "$tmp/c" --batch-size 4 --threads 1
"${mpirun[@]}" -np 2 "$root/build/bench/bench_allreduce" --max-floats 4194304
