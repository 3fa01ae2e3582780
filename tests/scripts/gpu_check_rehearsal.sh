#!/usr/bin/env bash
# gpu_check_rehearsal.sh: scripts/gpu_check.sh run through every phase on a machine without a GPU,
# with stand-ins for the GPU's programs, so that a mistake in the script itself (an unbound variable,
# which stops the whole run under `set -u`; a misspelt option; a file in the wrong place) shows here
# and does not cost the device's scarce minutes. CI otherwise only sees the script's no-GPU exit.
#
#   tests/scripts/gpu_check_rehearsal.sh REPO_ROOT        (ctest runs it; exit 77 without python3)
#
# Stand-ins, first on PATH: nvidia-smi (an "H200"), cuobjdump (a few SASS lines), compute-sanitizer,
# mpirun (one process, not two), and python3 for the two PyTorch scripts (everything else goes to the
# real python3: results.py and the comparison scripts run for real). Stand-ins for the bundle's
# programs log their command lines and print rows shaped like the real programs'. Three runs:
#   1. from a stand-in bundle (bin/, mpi/mpirun, MANIFEST, packed with xz as gpu_package.sh packs it),
#      as the GPU machine runs: everything passes (racecheck cannot start: reported as not run, not as a
#      failure): exit 0, every phase "passed", the expected commands
#      (the bundle's mpirun for the ranks), the MANIFEST's commit in the rows, a summary with every
#      section, no shell error in the log;
#   2. from NIMBUS_GPU_BIN (a workstation's build; mpirun from PATH), the wgmma validation failing:
#      exit 1, that line FAILED, and the later phases run with NIMBUS_CUDA_CONV=mma (the fallback the
#      script promises); the tests die under memcheck: a failure.
#   3. no bundle carried: nothing is built, the card's ceilings and PyTorch run, our phases say why not;
#      run without --out, as on the device: the default working folder is emptied first;
#   4. the budget, timed for real: a hanging command is stopped at its phase's cap and nothing runs past
#      --budget.
# Before them, scripts/gpu/compare_checkpoints.py (the distributed phase's verdict) on made-up
# checkpoints: equal passes, a difference over the bound, a missing tensor or a NaN fails.
set -uo pipefail
root=$(cd "${1:?usage: $0 REPO_ROOT}" && pwd)
real_py=$(command -v python3) || { echo "gpu_check_rehearsal: skipped: no python3"; exit 77; }
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_rehearsal.XXXXXX")
trap 'rm -rf "$work"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

mkdir -p "$work/path" "$work/bin"
calls=$work/calls.log

# ---- the stand-ins --------------------------------------------------------------------------------
cat > "$work/path/nvidia-smi" <<'EOF'
#!/usr/bin/env bash
case "$*" in
  -L) echo "GPU 0: NVIDIA H200 (UUID: GPU-rehearsal)" ;;
  *clocks.sm,name*) echo "1980, NVIDIA H200" ;;
  --query-gpu=*) echo "name, driver_version"; echo "NVIDIA H200, 580.00" ;;
  *) echo "Clocks"; echo "    SM : 1980 MHz" ;;
esac
EOF
cat > "$work/path/cuobjdump" <<'EOF'
#!/usr/bin/env bash
echo "cuobjdump $*" >> "$REHEARSAL_CALLS"
printf '\t\tFunction : igemm_kernel_bf16_rehearsal\n\tHMMA.16816.F32.BF16 R0, R4, R8, R0 ;\n\tLDSM.16.M88.4 R4, [R2] ;\n'
EOF
# REHEARSAL_SANITIZER="TOOL:nostart" (the tool cannot start the program) or "TOOL:crash" (the program
# dies before its first line, with no message from the tool); otherwise the tests pass under it.
cat > "$work/path/compute-sanitizer" <<'EOF'
#!/usr/bin/env bash
echo "compute-sanitizer $*" >> "$REHEARSAL_CALLS"
case "${REHEARSAL_SANITIZER:-}" in
  "$2:nostart") echo "========= Error: Target application terminated before first instrumented API call"; exit 1 ;;
  "$2:crash") exit 139 ;;
esac
echo "[doctest] Status: SUCCESS!"
echo "========= ERROR SUMMARY: 0 errors"
EOF
cat > "$work/path/mpirun" <<'EOF'
#!/usr/bin/env bash
echo "mpirun $*" >> "$REHEARSAL_CALLS"
while (($#)) && [[ $1 != "$REHEARSAL_BIN"/* ]]; do shift; done  # the options, up to the program
(($#)) || { echo "mpirun stand-in: no program of the bundle in the command line"; exit 1; }
exec "$@"
EOF
cat > "$work/path/python3" <<EOF
#!/usr/bin/env bash
case "\${1:-}" in
  */bench/torch/gpu_reference.py|*/scripts/gpu/ceilings.py) exec "$work/bin/.stub" "\$@" ;;
esac
exec "$real_py" "\$@"
EOF
# One stand-in for every program; it acts by its name (or, for python3, by its script's name).
cat > "$work/bin/.stub" <<'EOF'
#!/usr/bin/env bash
name=$(basename "$0")
[[ $name == .stub ]] && { name=$(basename "$1"); shift; }
echo "$name $* | NIMBUS_CUDA_CONV=${NIMBUS_CUDA_CONV:-}" >> "$REHEARSAL_CALLS"
arg() {  # the value after option $1
  local want=$1; shift
  while (($#)); do [[ $1 == "$want" ]] && { echo "${2:-}"; return; }; shift; done
}
[[ ${REHEARSAL_FAIL:-} == "$name $*" ]] && { echo "$name: failing on purpose"; exit 1; }
# REHEARSAL_SLEEP="NAME:SECONDS": that program hangs (the budget run below).
[[ -n ${REHEARSAL_SLEEP:-} && ${REHEARSAL_SLEEP%%:*} == "$name" ]] && exec sleep "${REHEARSAL_SLEEP#*:}"
row() { echo "{\"case\":\"$1\",\"impl\":\"$2\",\"precision\":\"$3\",\"ok\":true,\"median_ms\":$4,\"flops\":1e9$5}"; }
case $name in
  cuda_status)
    [[ $* == *--nccl* ]] && echo '{"case":"allreduce_4096B","impl":"nccl","precision":"fp32","bytes":4096,"ranks":1,"median_ms":0.01,"p10_ms":0.01,"p90_ms":0.02,"ok":true}'
    echo "CUDA: NVIDIA H200 (rehearsal)" ;;
  test_cuda_real|test_gpu_reference) echo "[doctest] Status: SUCCESS!" ;;
  gpu_bench_conformance)
    expect=$(arg --expect "$@")
    [[ -f $expect ]] || { echo "gpu_bench_conformance: no expected file '$expect'"; exit 1; }
    echo "conformance: all lines match" ;;
  gpu_bench_gemm|gpu_bench_conv2d)
    sweep=$(arg --sweep-table "$@")
    if [[ -n $sweep ]]; then
      echo '{"layer":"rehearsal","config":0,"median_ms":1.0}'
      echo '{ 64, 64, 3, 1, 1, 0 },' > "$sweep"
    elif [[ -n $(arg --case "$@") ]]; then
      c=$(arg --case "$@")
      if [[ $name == gpu_bench_conv2d ]]; then  # a case must be given its own deadline, 4 s inside t's limit
        dl=$(arg --deadline-s "$@")
        [[ $dl =~ ^[0-9]+$ ]] && (( dl > 0 && dl < 30 )) || { echo "gpu_bench_conv2d: --deadline-s '$dl' is not in 1..29"; exit 2; }
        # The limit it runs under: the parent is `timeout -k 5 CAP` (env execs the program in place).
        cap=$(tr '\0' ' ' < /proc/$PPID/cmdline | awk '$1 ~ /timeout$/ {print $4}')
        [[ $cap =~ ^[0-9]+$ ]] || { echo "gpu_bench_conv2d: not run under timeout (parent: $(tr '\0' ' ' < /proc/$PPID/cmdline))"; exit 2; }
        (( dl <= cap - 4 || dl == 1 )) || { echo "gpu_bench_conv2d: --deadline-s $dl leaves under 4 s of its $cap s limit"; exit 2; }
      fi
      # One case stops at its deadline: its rows say how many layers they cover.
      more=""; [[ $c == resnet50_convs_wgrad ]] && more=',"layers":12,"layers_total":53,"partial":true'
      row "$c" nimbus_v5 bf16 1.0 "$more"; row "$c" cudnn bf16 0.9 "$more"
    else
      echo "version 6: OK (rehearsal)"
    fi ;;
  gpu_bench_memory_bound)
    echo '{"case":"memory_bound","op":"relu","shape":"256x64x32x32","ms":0.05,"gbs":3000,"copy_gbs":4000,"fraction":0.75,"ok":true}'
    # A non-finite rate is written as null: the summary must print it, not stop.
    echo '{"case":"memory_bound","op":"cast","shape":"1x1","ms":0,"gbs":null,"copy_gbs":null,"fraction":null,"ok":true}'
    # A case that threw: a row saying so, and the cases after it still ran.
    echo '{"case":"memory_bound","op":"adam","ok":false,"error":"out of memory","device":"H200"}' ;;
  bench_models)
    c=$(arg --cases "$@")
    p=false; [[ $c == *_prologue ]] && p=true
    row "$c" nimbus bf16 50 ',"launches_per_step":1,"host_waits_per_step":0,"peak_mem_bytes":2e9,"conv_kernels":"wgmma","bn_fold":true,"bn_prologue":'"$p"',"ops":[{"name":"conv2d","ms":30,"calls":53}]' ;;
  bench_loader) echo '{"bench":"loader","samples_per_s":1000}' ;;
  bench_allreduce) echo '{"bench":"allreduce","kind":"mpi","ranks":2,"bytes":4096,"median_s":1e-05}' ;;
  train_dsen2cr|train_resnet)  # a checkpoint, the same for every run: the comparison sees equal weights
    out=$(arg --out "$@")
    mkdir -p "$out" && python3 "$REHEARSAL_CKPT" "$out/last.safetensors" 1 && cp "$out/last.safetensors" "$out/best.safetensors" ;;
  make_synthetic)  # the folders the demo phase looks in, with an empty cloudy scene and its S1
    out=$(arg --out "$@")/sen12mscr
    mkdir -p "$out/../eurosat/Forest" "$out/ROIs1158_spring_s2_cloudy/s2_cloudy_1" "$out/ROIs1158_spring_s1/s1_1"
    : > "$out/ROIs1158_spring_s2_cloudy/s2_cloudy_1/ROIs1158_spring_s2_cloudy_1_p1.tif"
    : > "$out/ROIs1158_spring_s1/s1_1/ROIs1158_spring_s1_1_p1.tif" ;;
  classify) printf 'path,class_index,class_name,p_Forest\nForest_1.tif,1,Forest,0.5\n' > "$(arg --out "$@")" ;;
  remove_clouds) : > "$(arg --out "$@")" ;;
  raster_diff) echo '{"case":"remove_clouds_cuda_vs_cpu","impl":"nimbus","ok":true,"max_abs_diff":0,"bound_max":1}' ;;
  ceilings.py) echo '{"case":"ceiling_copy","tb_per_s":4.0}'; echo '{"case":"ceiling_bf16_gemm","tflops":700}' ;;
  gpu_reference.py)
    if [[ ${1:-} == kernels ]]; then row gemm_4096 torch_eager bf16 0.5 ""; row resnet50_convs_wgrad torch_eager bf16 3 ""
    else row resnet50_train_b256_64 torch_eager bf16 60 ',"launches_per_step":900,"host_waits_per_step":1'; fi ;;
esac
exit 0
EOF
# A safetensors file of float32 tensors: ckpt.py PATH VALUE [--without b] (VALUE may be nan).
cat > "$work/ckpt.py" <<'EOF'
import json, struct, sys
path, value = sys.argv[1], float(sys.argv[2])
names = [n for n in ("a", "b") if not ("--without" in sys.argv and n == sys.argv[-1])]
header = {n: {"dtype": "F32", "shape": [2], "data_offsets": [8 * i, 8 * i + 8]} for i, n in enumerate(names)}
header["__metadata__"] = {"epoch": "3"}
blob = json.dumps(header).encode()
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(blob)) + blob + struct.pack("<" + "f" * 2 * len(names), *([1.0, value] * len(names))))
EOF
chmod +x "$work/path"/* "$work/bin/.stub"
for p in cuda_status test_cuda_real test_gpu_reference gpu_bench_conformance gpu_bench_gemm gpu_bench_conv2d \
         gpu_bench_memory_bound bench_models bench_loader bench_allreduce make_synthetic train_resnet train_dsen2cr \
         cloud_impact classify remove_clouds raster_diff; do
  ln -s .stub "$work/bin/$p"
done

# ---- compare_checkpoints.py on its own ------------------------------------------------------------
compare() { "$real_py" "$root/scripts/gpu/compare_checkpoints.py" "$work/$1" "$work/$2" --case t --max 1e-3 "${@:3}" \
              > "$work/compare.out" 2>&1; }
"$real_py" "$work/ckpt.py" "$work/c1" 1 && "$real_py" "$work/ckpt.py" "$work/c1b" 1.0005 &&
  "$real_py" "$work/ckpt.py" "$work/c2" 2 && "$real_py" "$work/ckpt.py" "$work/cnan" nan &&
  "$real_py" "$work/ckpt.py" "$work/cmiss" 1 --without b || fail "could not write the made-up checkpoints"
compare c1 c1b || fail "compare_checkpoints: 5e-4 apart should pass --max 1e-3: $(cat "$work/compare.out")"
grep -q '"ok": true' "$work/compare.out" || fail "compare_checkpoints: no ok row for a pass"
compare c1 c2 && fail "compare_checkpoints: 1 against 2 passed --max 1e-3"
grep -q '"ok": false' "$work/compare.out" || fail "compare_checkpoints: no failing row for a difference"
compare c1 c1 --min 1e-2 && fail "compare_checkpoints: equal checkpoints passed --min 1e-2"
compare c1 cnan && fail "compare_checkpoints: a NaN passed"
compare c1 cmiss && fail "compare_checkpoints: a missing tensor passed"
grep -q "b missing in the second" "$work/compare.out" || fail "compare_checkpoints: the missing tensor is not named"
compare cmiss c1 && fail "compare_checkpoints: a tensor only in the second file passed"
grep -q "b missing in the first" "$work/compare.out" || fail "compare_checkpoints: the extra tensor is not named"
compare c1 nonexistent && fail "compare_checkpoints: a missing file passed"
# compare_csv.py (classify on two devices): probabilities within --max, every text cell equal, same rows.
printf 'path,class_index,class_name,p_a,p_b\nx.tif,0,a,0.6,0.4\ny.tif,1,b,0.3,0.7\n' > "$work/p1.csv"
printf 'path,class_index,class_name,p_a,p_b\ny.tif,1,b,0.30005,0.69995\nx.tif,0,a,0.6,0.4\n' > "$work/p2.csv"
sed 's/,0.4$/,0.41/' "$work/p1.csv" > "$work/p3.csv"
sed 's/x.tif,0,a/x.tif,0,b/' "$work/p1.csv" > "$work/p4.csv"
head -2 "$work/p1.csv" > "$work/p5.csv"
compare_csv() { "$real_py" "$root/scripts/gpu/compare_csv.py" "$work/$1" "$work/$2" --case t --max 1e-4 > "$work/compare.out" 2>&1; }
compare_csv p1.csv p2.csv || fail "compare_csv: 5e-5 apart, rows in another order, should pass: $(cat "$work/compare.out")"
compare_csv p1.csv p3.csv && fail "compare_csv: 0.01 apart passed --max 1e-4"
grep -q '"at": "x.tif p_b"' "$work/compare.out" || fail "compare_csv: the largest difference is not located"
compare_csv p1.csv p4.csv && fail "compare_csv: another class name passed"
compare_csv p1.csv p5.csv && fail "compare_csv: a missing row passed"
sed 's/,0.4$//' "$work/p1.csv" > "$work/p6.csv"
compare_csv p1.csv p6.csv && fail "compare_csv: a row with a cell missing passed"

# ---- the runs -------------------------------------------------------------------------------------
# The stand-in bundle: the same stand-ins, an mpirun of its own that says so, and a MANIFEST.
pack=$work/pack/nimbus-gpu
mkdir -p "$pack/bin" "$pack/lib" "$pack/mpi"
cp -P "$work/bin/.stub" "$work/bin"/* "$pack/bin/"
sed 's/^echo "mpirun /echo "bundle-mpirun /' "$work/path/mpirun" > "$pack/mpi/mpirun"
chmod +x "$pack/mpi/mpirun"
printf 'nimbus GPU bundle\ncommit 0123456789abcdef0123456789abcdef01234567\n' > "$pack/MANIFEST"
tar -C "$work/pack" -cf - nimbus-gpu | xz -1 > "$work/bundle.tar.xz"
unpacked=$work/unpack/nimbus-gpu/bin

rehearse() {  # out_dir bundle|bin [REHEARSAL_FAIL value] [bring-back dir, as the device tool's $OUT] [REHEARSAL_SANITIZER] [--only phases]
             # prints the exit code
  : > "$calls"
  local from=(NIMBUS_GPU_BUNDLE="$work/bundle.tar.xz" NIMBUS_GPU_UNPACK="$work/unpack" REHEARSAL_BIN="$unpacked")
  [[ $2 == bin ]] && from=(NIMBUS_GPU_BIN="$work/bin" REHEARSAL_BIN="$work/bin")
  [[ $2 == none ]] && from=(NIMBUS_GPU_BUNDLE="$work/no-such-bundle.tar.xz" NIMBUS_GPU_UNPACK="$work/unpack-none"
                            REHEARSAL_BIN="$work/none")
  # out_dir "default": no --out, as on the device (the default working folder, NIMBUS_GPU_CHECK_WORK here)
  local where=(--out "$1")
  [[ $1 == default ]] && where=()
  env -u NIMBUS_GPU_BIN PATH="$work/path:$PATH" "${from[@]}" REHEARSAL_CALLS="$calls" REHEARSAL_FAIL="${3:-}" \
    NIMBUS_GPU_CHECK_WORK="$work/default" REHEARSAL_CKPT="$work/ckpt.py" OUT="${4:-}" \
    REHEARSAL_SANITIZER="${5:-}" "$root/scripts/gpu_check.sh" "${where[@]}" ${6:+--only "$6"} \
    > "$work/$(basename "$1").stdout" 2>&1
  echo $?
}
phases=(smoke correctness models distributed kernels memory sweep sass torch demo)

rc=$(rehearse "$work/pass" bundle "" "$work/bring" racecheck:nostart)
log=$work/pass/gpu_check.log
[[ $rc == 0 ]] || fail "the passing rehearsal exited $rc (see below)"
for p in "${phases[@]}"; do grep -q "^phase $p: passed" "$log" || fail "phase $p did not pass"; done
if grep -nE 'unbound variable|command not found|syntax error|No such file|Traceback|bad substitution' \
     "$log" "$work/pass.stdout"; then
  fail "the script's log shows a shell or Python error (above)"
fi
# The phases ran in the script's order: the open issues' measurements (models, distributed) first.
order=$(grep -o '^== phase [a-z]*' "$log" | awk '{print $3}' | tr '\n' ' ')
[[ $order == "${phases[*]} " ]] || fail "the phases ran as '$order', not '${phases[*]}'"
expect_call() {  # a fixed string that some logged command line must contain
  grep -qF -- "$1" "$calls" || fail "no command line with: $1"
}
expect_call "test_cuda_real "
expect_call "test_gpu_reference "
expect_call "gpu_bench_conformance --expect $root/bench/cuda/conformance_expected.txt"
expect_call "gpu_bench_conv2d --versions 6,7,8,9"
expect_call "gpu_bench_gemm --versions 4,5,6,7"
expect_call "gpu_bench_gemm --versions 8,9"
expect_call "gpu_bench_conv2d --versions 3,4,5"
expect_call "gpu_bench_memory_bound  | "
expect_call "gpu_bench_gemm --case gemm_4096 --versions 1,2,3,4,5,6,7,8,9"
for c in dsen2cr_conv3x3_fwd dsen2cr_conv3x3_dgrad dsen2cr_conv3x3_wgrad; do
  expect_call "gpu_bench_conv2d --case $c --versions 2,3,4,5,6,7,8,9,10,11 --budget-ms 80 "
done
for c in resnet50_convs_fwd resnet50_convs_dgrad resnet50_convs_wgrad; do
  expect_call "gpu_bench_conv2d --case $c --versions 2,3,4,5,6,7,8,9,10,11 --budget-ms 40 "
done
for c in resnet50_train_b256_64 resnet50_train_b256_64_graph resnet50_train_b256_64_nofold \
         resnet50_train_b256_64_prologue resnet50_infer_b256_64 \
         dsen2cr_train_B16F256_b16_128 dsen2cr_infer_B16F256_b1_256; do
  expect_call "bench_models --device cuda --cases $c |"
done
expect_call "bench_loader --dataset eurosat"
expect_call "bench_loader --triplets 64 --threads 16 --batch 16 --pack temp --augment-on device"
expect_call "gpu_bench_memory_bound --case all"
expect_call "gpu_bench_conv2d --sweep all --sweep-table $work/pass/sweep_table.inc"
expect_call "cuda_status --nccl"
expect_call "mpirun --allow-run-as-root --oversubscribe --bind-to none"
expect_call "-np 2 $unpacked/bench_allreduce --max-floats"
expect_call "train_dsen2cr --data $work/pass/ddp/data/sen12mscr --epochs 3"
expect_call "--device cuda --precision fp32 --out $work/pass/ddp/one --batch-size 4"
expect_call "-np 2 $unpacked/train_dsen2cr --data $work/pass/ddp/data/sen12mscr"
grep -q -- "-> 2 ranks of batch 2 against 1 rank of batch 4: checkpoints within 1e-3: ok" "$log" ||
  fail "the data-parallel comparison did not pass"
expect_call "compute-sanitizer --tool memcheck"
expect_call "compute-sanitizer --tool racecheck"
# A sanitizer that cannot start is reported as not run, and the phase still passes (checked above).
grep -q -- "-> memcheck: ok (no errors; the tests passed under it)" "$log" || fail "memcheck's pass is not reported"
grep -qF -- "-> racecheck: NOT RUN: compute-sanitizer did not start the tests (exit 1): ========= Error: Target" "$log" ||
  fail "racecheck's failure to start is not reported as such"
expect_call "cuobjdump --gpu-architecture sm_90a --dump-sass $unpacked/bench_models"
grep -q "^bundle-mpirun .* -np 2 $unpacked/train_dsen2cr " "$calls" || fail "the ranks did not start from the bundle's mpi/mpirun"
grep -q '^mpirun ' "$calls" && fail "an mpirun from PATH ran although the bundle has one"
grep -q '"commit": "0123456789ab"' "$work/pass/results.jsonl" || fail "the rows do not carry the MANIFEST's commit"
grep -q "^mpirun: $work/unpack/nimbus-gpu/mpi/mpirun" "$log" || fail "the smoke phase did not name the bundle's mpirun"
expect_call "train_dsen2cr "
expect_call "cloud_impact "
e=$work/pass/demo
for dev in cuda cpu; do
  expect_call "classify --weights $e/resnet/best.safetensors --out $e/classify_$dev.csv --device $dev --precision fp32"
  expect_call "remove_clouds --weights $e/dsen2cr/last.safetensors --s2 $e/eval/sen12mscr/ROIs1158_spring_s2_cloudy/s2_cloudy_1/ROIs1158_spring_s2_cloudy_1_p1.tif --s1 $e/eval/sen12mscr/ROIs1158_spring_s1/s1_1/ROIs1158_spring_s1_1_p1.tif --out $e/clear_$dev.tif --device $dev"
done
expect_call "raster_diff $e/clear_cpu.tif $e/clear_cuda.tif --case remove_clouds_cuda_vs_cpu --max 1"
grep -q -- "--device cuda" <(grep "^train_dsen2cr " "$calls") || fail "the demo did not train DSen2-CR on cuda"
grep -q "NIMBUS_CUDA_CONV=mma" "$calls" && fail "a passing run switched to NIMBUS_CUDA_CONV=mma"
summary=$work/pass/summary.md
for s in "| case | precision |" "Memory-bound kernels" "| cast | 1x1 | 0.000 | - | - | - |" "| adam | FAILED: out of memory | - | - | - | - |" "Distributed: NCCL" "Models (ms per step" "Ceilings measured" \
         "- ddp_mpi_2ranks_vs_1: largest relative difference 0 (bound 0.001): ok" \
         "- classify_cuda_vs_cpu: largest absolute difference 0 (bound 0.0001): ok" \
         "- remove_clouds_cuda_vs_cpu: largest absolute difference 0 (bound 1): ok" \
         "| resnet50_train_b256_64_prologue | 50.0 (bf16, wgmma, BN stats in the conv epilogue, BN + ReLU in the next conv's prologue) |" \
         "| resnet50_train_b256_64 | 50.0 (bf16, wgmma, BN stats in the conv epilogue) |" \
         "| resnet50_convs_wgrad (partial: 12 of 53 layers) | bf16 | 1.000 (nimbus_v5) [1.0] | 0.900 | n/c | 0.900 | 0.900 |" \
         "| resnet50_convs_fwd | bf16 | 1.000 (nimbus_v5) [1.0] | 0.900 | - | 0.900 | 0.900 |" \
         "| gemm_4096 | bf16 | 1.000 (nimbus_v5) [1.0] | 0.900 | 0.500 | 0.900 | 0.500 |"; do
  grep -qF -- "$s" "$summary" || fail "summary.md has no '$s' section"
done
[[ -s $work/pass/loader.jsonl && -s $work/pass/sweep_table.inc && -s $work/pass/sass_sm90.txt &&
   -s $work/pass/allreduce.jsonl ]] || fail "loader.jsonl, sweep_table.inc, sass_sm90.txt or allreduce.jsonl is missing or empty"
grep -q "igemm_kernel_bf16_rehearsal: HMMA 1, LDSM 1" "$log" || fail "the SASS counts were not printed"
# What the device tool brings back: at most 8 files in $OUT, the main four and one archive of the rest
# (without the whole SASS dump).
n_back=$(find "$work/bring" -type f | wc -l)
(( n_back <= 8 )) || fail "$n_back files in the bring-back folder: the device tool returns 8"
for f in results.jsonl summary.md gpu_check.log sweep_table.inc gpu-check.tar.xz; do
  [[ -s $work/bring/$f ]] || fail "the bring-back folder has no $f"
done
listing=$("$real_py" -c 'import sys, tarfile; print("\n".join(tarfile.open(sys.argv[1]).getnames()))' "$work/bring/gpu-check.tar.xz")
for f in pass/correctness.log pass/loader.jsonl pass/allreduce.jsonl pass/sass_hot.txt pass/sweep.jsonl pass/clocks.csv; do
  grep -qx "$f" <<< "$listing" || fail "gpu-check.tar.xz does not hold $f"
done
grep -q "sass_sm90.txt" <<< "$listing" && fail "gpu-check.tar.xz holds the whole SASS dump"
cmp -s "$work/bring/results.jsonl" "$work/pass/results.jsonl" || fail "the results.jsonl brought back is not the run's"

# The wgmma validation fails: the run says so, exits 1, and the later phases fall back to mma.sync.
rc=$(rehearse "$work/fallback" bin "gpu_bench_conv2d --versions 6,7,8,9" "" memcheck:crash)
log=$work/fallback/gpu_check.log
[[ $rc == 1 ]] || fail "a failed wgmma validation exited $rc, not 1"
grep -q -- "-> wgmma convolutions (small validation): FAILED (exit 1)" "$log" || fail "the wgmma failure is not reported"
grep -q "^phase correctness: FAILED" "$log" || fail "the correctness phase did not fail"
# A program that dies under the sanitizer without a word from the tool is a failure, not "not run".
grep -qF -- "-> memcheck: no sanitizer errors, but the tests under it failed (exit 139)" "$log" ||
  fail "a test program dying under memcheck is not reported as a failure"
grep -q "^bench_models --device cuda --cases resnet50_train_b256_64 | NIMBUS_CUDA_CONV=mma$" "$calls" ||
  fail "the models phase did not run with NIMBUS_CUDA_CONV=mma after the failure"
for p in kernels models sweep memory sass distributed torch demo; do
  grep -q "^phase $p: passed" "$log" || fail "phase $p did not run on after the correctness failure"
done
grep -q "gpu_bench_conv2d --case dsen2cr_conv3x3_fwd --versions 2,3,4,5 " "$calls" ||
  fail "the kernels phase did not leave the wgmma versions out after the failure"
grep -q "^test_cuda_real .*NIMBUS_CUDA_CONV=mma" "$calls" || fail "test_cuda_real did not run with NIMBUS_CUDA_CONV=mma after the failure"

# The TMA/wgmma GEMMs' small validation fails: the kernel phase's GEMM case leaves versions 8 and 9 out,
# the convolutions keep theirs (only the correctness and kernel phases run).
rc=$(rehearse "$work/gemmfail" bin "gpu_bench_gemm --versions 8,9" "" "" correctness,kernels)
log=$work/gemmfail/gpu_check.log
[[ $rc == 1 ]] || fail "a failed TMA/wgmma GEMM validation exited $rc, not 1"
grep -q -- "-> TMA/wgmma GEMMs (small validation): FAILED (exit 1)" "$log" || fail "the GEMM failure is not reported"
grep -q "gpu_bench_gemm --case gemm_4096 --versions 1,2,3,4,5,6,7 " "$calls" ||
  fail "the kernel phase did not leave GEMM versions 8 and 9 out after their failure"
grep -q "gpu_bench_conv2d --case dsen2cr_conv3x3_fwd --versions 2,3,4,5,6,7,8,9,10,11 " "$calls" ||
  fail "a failed GEMM validation changed the convolutions' versions"
grep -q "^phase kernels: passed" "$log" || fail "the kernel phase did not run on after the GEMM failure"

# No bundle carried: nothing is built on the device (no network, no time); the card's ceilings and
# PyTorch still run, every phase of ours says why it did not, and the run fails.
# It runs, as on the device, without --out: in the default working folder, emptied first (a warm
# machine's earlier run left a results.jsonl there), its files brought back to $OUT.
mkdir -p "$work/default" "$work/bring3"
echo '{"stale": true}' > "$work/default/results.jsonl"
rc=$(rehearse default none "" "$work/bring3")
log=$work/default/gpu_check.log
grep -q stale "$work/default/results.jsonl" && fail "the default working folder kept an earlier run's results"
[[ -f $work/bring3/gpu_check.log ]] || fail "the run without --out brought nothing back to \$OUT"
[[ $rc == 1 ]] || fail "a run without a bundle exited $rc, not 1"
grep -q "gpu_check: no bundle at $work/no-such-bundle.tar.xz" "$log" || fail "the missing bundle is not named"
grep -q "building here\|gpu_package.sh --check builds\|install_deps" "$log" && fail "a run without a bundle tried to build"
grep -q -- "-> ceilings (copy bandwidth, bf16 GEMM via PyTorch): ok" "$log" || fail "the ceilings did not run without a bundle"
grep -q "^phase models: not run: the carried programs do not start here" "$log" || fail "models did not say why it did not run"
grep -q "^== phase torch" "$log" || fail "the PyTorch phase did not run without a bundle"

# The budget holds, timed for real: with --budget 14 and the card's ceilings (the first command run)
# hanging, the run stops them at the phase's cap, says TIMED OUT, starts nothing else, and ends within
# the budget plus the kill's grace (5 s) and the summary.
start4=$(date +%s)
env -u NIMBUS_GPU_BIN PATH="$work/path:$PATH" NIMBUS_GPU_BUNDLE="$work/no-such-bundle.tar.xz" NIMBUS_GPU_UNPACK="$work/unpack-budget" \
  REHEARSAL_BIN="$work/none" REHEARSAL_CALLS="$calls" REHEARSAL_SLEEP="ceilings.py:120" OUT="" \
  "$root/scripts/gpu_check.sh" --out "$work/budget" --budget 14 > "$work/budget.stdout" 2>&1
rc=$?
took=$(( $(date +%s) - start4 ))
echo "the run with a 14 s budget and a hanging command took $took s"
log=$work/budget/gpu_check.log
[[ $rc == 1 ]] || fail "the run over its budget exited $rc, not 1"
(( took <= 24 )) || fail "the run with a 14 s budget took $took s"
grep -q -- "-> ceilings (copy bandwidth, bf16 GEMM via PyTorch): TIMED OUT" "$log" ||
  fail "the hanging ceilings were not reported TIMED OUT"
grep -q "^phase torch: not run: the 14s budget is spent" "$log" || fail "the torch phase ran past the budget"

if ((fails)); then
  echo "--- the passing rehearsal's log:"; cat "$work/pass/gpu_check.log"
  echo "--- its command lines:"; cat "$calls"
  echo "gpu_check_rehearsal: $fails check(s) failed"
  exit 1
fi
echo "gpu_check_rehearsal: the four runs as expected"
