#!/usr/bin/env bash
# gpu_check.sh: one command for a GPU machine: checks and times every CUDA kernel and both models,
# next to cuBLAS, cuDNN and PyTorch on the same GPU, and writes the results table.
#
#   scripts/gpu_check.sh [--only PHASE[,PHASE...]] [--budget SECONDS] [--out DIR] [--bring-back DIR]
#
# On the device tool (docs/cuda-backend.md, "The GPU check"): `scripts/gpu_check.sh --budget 540`, with
# timeout_s 590 and `.gpu/nimbus-gpu.tar.xz` carried. The tool brings back at most 8 files of $OUT (16
# MiB each), so the run works in /tmp/gpu-check and, after every phase, copies its four main files
# into $OUT and packs the rest into $OUT/gpu-check.tar.xz (a run killed at the tool's limit still
# brings back what finished).
#
# Phases, in order of what the next run must decide first (each with its own time limit, so one that
# fails or hangs never costs the rest; the open issues' measurements first, the PyTorch reruns and the
# demo last):
#   smoke        GPU, driver, clocks, nvcc/g++ versions; the carried binaries start (if they do not,
#                the run stops at once: the minutes are better spent on a fixed rerun); the two
#                ceilings (a large device-to-device copy, a large bf16 matrix product through PyTorch)
#   correctness  first the tensor-core conformance kernels against the emulator's models
#                (gpu_bench_conformance) and the wgmma convolutions' small validations (on failure the
#                later phases use mma.sync and leave the wgmma versions out); then the emulator's CUDA
#                kernel tests on the device (test_cuda_real), our kernels against cuBLAS/cuDNN
#                (test_gpu_reference), compute-sanitizer memcheck and racecheck on small cases
#   models       bench_models --device cuda; bench_loader's rates on this host (loader.jsonl), to set
#                beside the GPU step's
#   distributed  the "nccl" process group at world size 1 (cuda_status --nccl): one-rank sums and means
#                exact, the all-reduce's fixed cost per message size; then two MPI ranks (the
#                bundle's Open MPI): the all-reduce's bandwidth over host buffers (allreduce.jsonl: the
#                MPI part alone, without the device <-> host copies training adds), and a small DSen2-CR trained by 2 ranks of batch 2 against 1 rank
#                of batch 4 (sharing the GPU, buckets through host memory), their checkpoints compared
#                (scripts/gpu/compare_checkpoints.py)
#   kernels      every numbered version in bench/cuda on the fixed cases, validated then timed, with
#                cuDNN/cuBLAS in fp32, TF32, bf16 (gpu_bench_*)
#   memory       the backend's memory-bound kernels and the optimisers' step at the models' shapes, each
#                against a device-to-device copy of the same traffic (gpu_bench_memory_bound)
#   sweep        every configuration of the backend's tensor-core convolution kernels per layer of the
#                kernel cases (gpu_bench_conv2d --sweep): sweep.jsonl, and sweep_table.inc with the
#                winners in kernels/cuda/tc_dispatch_table.inc's format (commit them there)
#   sass         the hot kernels' SASS (cuobjdump): instruction counts in the log, one instantiation of
#                each tensor-core kernel in sass_hot.txt (the whole dump stays on the machine)
#   torch        PyTorch on the same kernel and model cases (bench/torch/gpu_reference.py: eager in
#                fp32/TF32/bf16, then torch.compile); the H200's of 2026-12-04 are in
#                bench/results/h200/, so on an H200 this phase only refreshes them
#   demo         scripts/demo.sh on the GPU with the bundle's programs, at reduced sizes (demo/: its
#                report and Table 1, to set beside the CPU's for the same sizes); then classify and
#                remove_clouds with the demo's models on the GPU and on the CPU in fp32, compared
#                (scripts/gpu/compare_csv.py, raster_diff); only with time left
#
# Binaries: from the bundle .gpu/nimbus-gpu.tar.xz that scripts/gpu_package.sh builds and packs on a
# machine with our Debian libraries (the GPU machine has none), unpacked into /tmp/nimbus-gpu
# (NIMBUS_GPU_BUNDLE and NIMBUS_GPU_UNPACK name others: the rehearsal's); NIMBUS_GPU_BIN=DIR uses binaries
# built in place instead (a workstation: scripts/gpu_package.sh, then NIMBUS_GPU_BIN=build-gpu/bin).
# cuBLAS/cuDNN come from the CUDA toolkit or the image's nvidia-* Python wheels.
#
# Output (in --out, else /tmp/gpu-check when $OUT is set, else gpu-check/): results.jsonl (one JSON
# object per case and implementation, written as results arrive; scripts/gpu/results.py documents the
# fields), gpu_check.log (everything), correctness.log, sass_sm90.txt, summary.md (the table, also
# printed last). With --bring-back DIR ($OUT by default when set): results.jsonl, summary.md,
# gpu_check.log and sweep_table.inc copied there, everything else but the whole SASS dump, the
# checkpoints and the packs in DIR/gpu-check.tar.xz, remade after every phase. Exit 0: every phase passed; 1: a phase failed or ran out of time; 77: no GPU (every phase
# reports itself skipped, which is what CI checks); 2: bad arguments. Every phase also runs in ctest
# on stand-ins for the GPU's programs (tests/scripts/gpu_check_rehearsal.sh): keep its expected
# command lines in step with the phases below.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# In the order the open issues need them: the sync-free step's numbers (models, #14) and the two ranks
# (distributed, #17) before the kernel tables that an earlier run measured (kernels, memory), then the
# sweep, the SASS, the PyTorch reruns and the demo.
all_phases=(smoke correctness models distributed kernels memory sweep sass torch demo)
# Seconds per phase; the whole run also stops starting work at --budget (540: the device tool's 10
# minutes a command, less the unpacking, the bring-back and a margin). In that budget the phases up to
# memory fit their limits (45 + 110 + 170 + 60 + 110 + 45 = 540); sweep, sass, torch and demo take
# what the others leave.
declare -A limit=([smoke]=45 [correctness]=110 [models]=170 [distributed]=60 [kernels]=110 [memory]=45 [sweep]=100
                  [sass]=20 [torch]=190 [demo]=120)
budget=540
only=""
out=""
bring=""

usage() {
  echo "usage: $0 [--only PHASE[,PHASE...]] [--budget SECONDS] [--out DIR] [--bring-back DIR]; phases: ${all_phases[*]}" >&2
  exit 2
}
while (($#)); do
  case $1 in
    --only) [[ $# -ge 2 ]] || usage; only=$2; shift 2 ;;
    --budget) [[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || usage; budget=$2; shift 2 ;;
    --out) [[ $# -ge 2 ]] || usage; out=$2; shift 2 ;;
    --bring-back) [[ $# -ge 2 ]] || usage; bring=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -uo/{/^#/p}' "$0"; exit 0 ;;
    *) usage ;;
  esac
done
phases=("${all_phases[@]}")
if [[ -n $only ]]; then
  IFS=, read -r -a phases <<< "$only"
  for p in "${phases[@]}"; do [[ -n ${limit[$p]:-} ]] || { echo "gpu_check: unknown phase '$p'" >&2; usage; }; done
fi

# The device tool's $OUT brings back few files: work elsewhere, bring back what matters (bring_back).
# The default working folder there: /tmp/gpu-check (NIMBUS_GPU_CHECK_WORK: the rehearsal's own).
[[ -z $bring && -n ${OUT:-} ]] && bring=$OUT
default_work=${NIMBUS_GPU_CHECK_WORK:-/tmp/gpu-check}
case $(realpath -m "$default_work") in  # it is emptied below: never a folder that holds anything else
  /|"$root"|"$HOME"|/tmp) echo "gpu_check: NIMBUS_GPU_CHECK_WORK=$default_work is not a folder of its own" >&2; exit 2 ;;
esac
if [[ -z $out ]]; then out=${bring:+$default_work}; out=${out:-$root/gpu-check}; fi
if [[ -n $bring && $(realpath -m "$out") == "$(realpath -m "$bring")" ]]; then out=$default_work; fi
# The working folder on the device is this run's alone: a second call on a still-warm machine would
# otherwise append to the first's results.jsonl and find its checkpoints.
[[ $out == "$default_work" ]] && rm -rf "$out"
mkdir -p "$out"
log=$out/gpu_check.log
results=$out/results.jsonl
exec 3>&1 4>&2 > >(tee -a "$log") 2>&1
tee_pid=$!

# What comes back from the device tool's folder is limited (8 files, 16 MiB each, 64 MiB in all, two
# folders down): the four files to read first, copied, and the rest packed into one archive (xz through
# Python's tarfile: the image may have no xz binary), without the whole SASS dump, checkpoints and
# packs; files over 4 MiB are left out when the archive would pass 15 MiB. Remade after every phase.
# copy_back FILE...: each of $out's files copied beside its target in $bring and renamed: a rename
# within the folder is atomic ($OUT and /tmp may be different file systems, where mv is a copy).
copy_back() {
  [[ -n $bring ]] || return 0
  mkdir -p "$bring"
  local f
  for f in "$@"; do
    [[ -f $out/$f ]] && cp "$out/$f" "$bring/.$f.part" && mv -f "$bring/.$f.part" "$bring/$f"
  done
  return 0
}
bring_back() {
  [[ -n $bring ]] || return 0
  copy_back results.jsonl summary.md gpu_check.log sweep_table.inc
  python3 - "$out" "$bring/gpu-check.tar.xz" <<'PY' || echo "gpu_check: packing $bring/gpu-check.tar.xz failed"
import os, sys, tarfile
src, dst = sys.argv[1], sys.argv[2]
skip_names = {"sass_sm90.txt", "results.jsonl", "summary.md", "gpu_check.log", "sweep_table.inc"}
def pack(limit):
    tmp = os.path.join(os.path.dirname(dst), ".gpu-check.tar.xz.part")  # renamed into place: atomic
    with tarfile.open(tmp, "w:xz", preset=6) as t:
        for d, _, files in os.walk(src):
            for f in sorted(files):
                p = os.path.join(d, f)
                if f in skip_names and d == src: continue
                if f.endswith((".safetensors", ".pack")) or ".tmp" in f: continue
                if os.path.getsize(p) > limit: continue
                t.add(p, arcname=os.path.relpath(p, os.path.dirname(src)))
    return tmp
tmp = pack(1 << 40)
if os.path.getsize(tmp) > 15 << 20: os.remove(tmp); tmp = pack(4 << 20)
os.replace(tmp, dst)
PY
}
# The log is complete before we return: tee ends once every writer has closed it, but a process that
# outlived its timeout (a child in its own session) may hold it open; wait 5 s at most, then bring back.
clock_pid=""
finish_log() {
  [[ -n $clock_pid ]] && kill "$clock_pid" 2>/dev/null
  exec 1>&3 2>&4
  local i
  for i in $(seq 50); do kill -0 "$tee_pid" 2>/dev/null || break; sleep 0.1; done
  bring_back
}
trap finish_log EXIT
start=$(date +%s)
echo "== gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ): phases ${phases[*]}, budget ${budget}s, output $out"

# ---- no GPU: say so per phase and stop (CI runs this path) --------------------------------------
if ! command -v nvidia-smi > /dev/null; then
  gpu_line="nvidia-smi not found"
elif ! gpu_line=$(nvidia-smi -L 2>&1) || [[ $gpu_line != GPU* ]]; then
  gpu_line="nvidia-smi -L: ${gpu_line:-no output}"
else
  gpu_line=""
fi
if [[ -n $gpu_line ]]; then
  for p in "${phases[@]}"; do echo "phase $p: skipped: no GPU ($gpu_line)"; done
  echo "gpu_check: skipped: no GPU"
  exit 77
fi

# The SM clock, memory clock, temperature and power twice a second for the whole run (clocks.csv, in
# the archive): a row's own clock is read when it arrives, after its case ran; this says what the
# clocks did while it ran.
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv -lms 500 \
  > "$out/clocks.csv" 2>/dev/null &
clock_pid=$!

# ---- binaries and libraries -----------------------------------------------------------------------
# Our programs get the bundle's libraries through NB (env LD_LIBRARY_PATH=...); the environment's own
# LD_LIBRARY_PATH stays as it is, so that python3/PyTorch never load a carried Debian library.
bin=${NIMBUS_GPU_BIN:-}
manifest=""
nimbus_ld=""
if [[ -z $bin ]]; then
  bundle=${NIMBUS_GPU_BUNDLE:-$root/.gpu/nimbus-gpu.tar.xz}
  unpack=${NIMBUS_GPU_UNPACK:-/tmp/nimbus-gpu}
  if [[ -f $bundle ]]; then
    rm -rf "$unpack" && mkdir -p "$unpack"
    if command -v xz > /dev/null; then tar -C "$unpack" -xJf "$bundle"
    else python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$bundle" "$unpack"; fi
    bin=$unpack/nimbus-gpu/bin
    manifest=$unpack/nimbus-gpu/MANIFEST
    nimbus_ld=$unpack/nimbus-gpu/lib
  else
    # No building here: the machine has no network and none of our Debian libraries, and a build would
    # outlast the call. Only what needs no binaries runs (the ceilings, PyTorch).
    echo "gpu_check: no bundle at $bundle (carry .gpu/nimbus-gpu.tar.xz, made by scripts/gpu_package.sh --check)"
  fi
fi
# cuBLAS/cuDNN: the toolkit's, else the Python wheels' (nvidia/<lib>/lib, versioned .so files only).
py=$(command -v python3 || true)
if [[ -n $py ]]; then
  wheel_libs=$("$py" - <<'EOF' 2>/dev/null
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except Exception:
    roots = []
dirs = sorted({os.path.dirname(f) for r in roots for f in glob.glob(os.path.join(r, "**", "lib*.so*"), recursive=True)})
print(":".join(dirs))
EOF
  )
  [[ -n $wheel_libs ]] && nimbus_ld=$nimbus_ld:$wheel_libs
fi
# The first python3 on PATH may not be the one with the wheels (the image keeps PyTorch in a venv under
# /opt): their library folders are looked for there too.
if [[ -z ${wheel_libs:-} ]]; then
  for d in /opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib /usr/local/lib/python3*/dist-packages/nvidia/*/lib; do
    [[ -d $d ]] && nimbus_ld=$nimbus_ld:$d
  done
fi
[[ -d /usr/local/cuda/lib64 ]] && nimbus_ld=$nimbus_ld:/usr/local/cuda/lib64
nimbus_ld=${nimbus_ld#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
NB=(env LD_LIBRARY_PATH="$nimbus_ld")
# mpirun: the bundle's Open MPI (scripts/gpu_package.sh carries it: the image has none), else one on
# PATH, with scripts/gpu/mpirun_options.sh's options.
mpirun=()
if [[ -n $manifest && -x $(dirname "$manifest")/mpi/mpirun ]]; then mpirun=("$(dirname "$manifest")/mpi/mpirun")
elif command -v mpirun > /dev/null; then mpirun=(mpirun); fi
source "$root/scripts/gpu/mpirun_options.sh"  # mpirun_options: shared with gpu_package.sh's check
(( ${#mpirun[@]} )) && mpirun+=("${mpirun_options[@]}")
# The commit the binaries were built from: the bundle's MANIFEST (the device's copy of .git, if any,
# can be stale: on 2026-12-04 it named an older commit than the one that ran), else git.
commit=""
[[ -f ${manifest:-/nonexistent} ]] && commit=$(awk '/^commit/ {print substr($2, 1, 12)}' "$manifest")
[[ -z $commit ]] && commit=$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || true)
export NIMBUS_RESULTS=$results NIMBUS_COMMIT=${commit:-unknown}
export NIMBUS_FIXTURES=$root/tests/fixtures  # the test programs' fixtures, in this copy of the tree
results_py=$root/scripts/gpu/results.py
# Runs a program whose stdout has JSON rows: rows go to results.jsonl (annotated with the phase,
# commit, GPU and current SM clock), other lines to the log.
# After each such command the rows and the log so far are copied to the bring-back folder too: a call
# the device tool stops mid-phase still brings back every row measured before it.
rows() {
  local phase=$1; shift
  "$@" | python3 "$results_py" annotate --phase "$phase"
  local rc=${PIPESTATUS[0]}
  copy_back results.jsonl gpu_check.log
  return "$rc"
}

# Time limits: every command in a phase gets at most what is left of the phase and of the budget.
phase_end=0
cap_of() {  # the limit t would give a command that wants $1 seconds
  local cap=$(( phase_end - $(date +%s) ))
  (( $1 < cap )) && cap=$1
  echo "$cap"
}
t() {
  local want=$1; shift
  local cap; cap=$(cap_of "$want")
  if (( cap < 5 )); then echo "  (out of time, not run: $*)"; return 125; fi
  timeout -k 5 "$cap" "$@"
}
# 125: t had no time left to start it (not a failure of the program: say so, so that a later reader
# does not take it for one; the phase is still marked incomplete).
note_rc() {  # what, rc
  case $2 in 0) echo "  -> $1: ok" ;; 124|137) echo "  -> $1: TIMED OUT"; phase_ok=0 ;;
    125) echo "  -> $1: NOT RUN (no time left in the phase or the budget)"; phase_ok=0 ;;
    77) echo "  -> $1: FAILED: it saw no device (exit 77) on a machine with a GPU"; phase_ok=0 ;;
    *) echo "  -> $1: FAILED (exit $2)"; phase_ok=0 ;; esac
}

# compute-sanitizer TOOL CAP TEST_CASES: test_cuda_real's cases under one tool, its output added to the
# correctness log. It exits 9 (--error-exitcode) when it found errors, else with the program's own code;
# when the tool itself cannot start the program (no injection library, a driver it does not support),
# the program printed nothing and the tool says why: that is reported as not run, not as a failure of our
# kernels (a program that dies before its first line, with no such message, is a failure).
# $cs is the tool's path (phase_correctness finds it).
run_sanitizer() {
  local tool=$1 cap=$2 cases=$3 clog=$out/correctness.log part=$out/.sanitizer.log
  t "$cap" "${NB[@]}" "$cs" --tool "$tool" --error-exitcode 9 --print-limit 20 "$bin/test_cuda_real" -tc="$cases" \
    > "$part" 2>&1
  local rc=$?
  cat "$part" >> "$clog"
  grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|Invalid|out of bounds|hazard' "$part" | tail -5
  # The tool's own start errors read "========= Error: ..."; doctest's first line is "[doctest] ...".
  if (( rc != 0 && rc != 9 && rc != 124 && rc != 125 && rc != 137 )) && ! grep -q '^\[doctest\]' "$part" &&
     grep -q '^========= Error' "$part"; then
    echo "  -> $tool: NOT RUN: compute-sanitizer did not start the tests (exit $rc): $(grep -m1 '^========= Error' "$part")"
    rm -f "$part"
    return
  fi
  rm -f "$part"
  case $rc in 9) echo "  -> $tool: FAILED: the sanitizer reported errors"; phase_ok=0 ;;
    0) echo "  -> $tool: ok (no errors; the tests passed under it)" ;;
    125) echo "  -> $tool: NOT RUN (no time left in the phase or the budget)"; phase_ok=0 ;;
    124|137) echo "  -> $tool: TIMED OUT"; phase_ok=0 ;;
    *) echo "  -> $tool: no sanitizer errors, but the tests under it failed (exit $rc): see correctness.log"; phase_ok=0 ;;
  esac
}

# ---- phases ---------------------------------------------------------------------------------------
phase_smoke() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw,power.limit \
    --format=csv
  nvidia-smi -q -d CLOCK,PERFORMANCE | sed -n '1,60p' | grep -E 'Clocks|SM|Memory|Graphics|Throttle|Active|Idle' | head -30
  (nvcc --version || /usr/local/cuda/bin/nvcc --version) 2>&1 | tail -2
  g++ --version | head -1; cmake --version | head -1; uname -r
  # For two MPI ranks sharing the GPU (#17): is there an MPI here, and which one does mpi4py use?
  echo "mpirun: ${mpirun[0]:-none} $( (( ${#mpirun[@]} )) && "${NB[@]}" "${mpirun[0]}" --version 2>/dev/null | head -1)"
  python3 -c 'import mpi4py; print("mpi4py:", mpi4py.get_config())' 2>/dev/null | head -2 || echo "mpi4py: none"
  [[ -n $manifest && -f $manifest ]] && cat "$manifest"
  echo "our programs' LD_LIBRARY_PATH=$nimbus_ld (python3: $(command -v python3 || echo none))"
  # The card's own ceilings need none of our programs: measured whatever follows, but after the quick
  # start check (they may take most of the phase, and a start check left without time would stop the run).
  local ceilings=(python3 "$root/scripts/gpu/ceilings.py")
  if [[ -z $bin || ! -x $bin/cuda_status ]]; then
    echo "  no binaries: nothing of ours can run"; phase_ok=0; stop_run=1
    rows smoke t 60 "${ceilings[@]}"; note_rc "ceilings (copy bandwidth, bf16 GEMM via PyTorch)" $?
    return
  fi
  t 20 "${NB[@]}" "$bin/cuda_status"; local crc=$?
  note_rc "carried binaries start (cuda_status)" $crc
  # Nothing later can run without it (a library missing, a driver too old for the carried runtime):
  # stop now, so that the device time left goes to a fixed rerun.
  (( crc == 0 )) || stop_run=1
  for b in "$bin"/*; do
    if "${NB[@]}" ldd "$b" | grep -q 'not found'; then
      echo "  $(basename "$b"): $("${NB[@]}" ldd "$b" | grep 'not found' | tr '\n' ' ')"; phase_ok=0
    fi
  done
  rows smoke t 60 "${ceilings[@]}"; note_rc "ceilings (copy bandwidth, bf16 GEMM via PyTorch)" $?
}

phase_correctness() {
  local clog=$out/correctness.log
  # First what never ran on hardware and what the defaults rest on: the tensor-core instructions'
  # data movement against the emulator's models, then the wgmma convolutions (the backend's default on
  # this GPU) at small sizes, bitwise equal in every order and within float64's bounds. Should those
  # fail, everything after runs on the mma.sync kernels (NIMBUS_CUDA_CONV=mma) and leaves the wgmma
  # versions out, and says so.
  echo "  gpu_bench_conformance (tensor-core instructions: the GPU's data movement vs the emulator's, bit for bit)"
  t 30 "${NB[@]}" "$bin/gpu_bench_conformance" --expect "$root/bench/cuda/conformance_expected.txt" 2>&1 | tee -a "$clog"
  note_rc "conformance vs the emulator" "${PIPESTATUS[0]}"
  echo "  the wgmma convolutions at small sizes (gpu_bench_conv2d --versions 6,7,8,9)"
  t 40 "${NB[@]}" "$bin/gpu_bench_conv2d" --versions 6,7,8,9 >> "$clog" 2>&1; local wrc=$?
  grep -cE ' OK ' "$clog" | sed 's/^/  validations OK: /'; grep -E 'WRONG|skipped' "$clog" | head -5
  if (( wrc != 0 )); then
    export NIMBUS_CUDA_CONV=mma
    conv_versions=2,3,4,5 gemm_versions=1,2,3,4,5,6,7
    echo "  wgmma convolutions failed (exit $wrc): the later phases run with NIMBUS_CUDA_CONV=mma, without the wgmma versions"
  fi
  note_rc "wgmma convolutions (small validation)" $wrc
  # The warp-specialised forward (versions 10, 11; bench only: no fallback rides on it).
  echo "  the warp-specialised wgmma forward at small sizes (gpu_bench_conv2d --versions 10,11)"
  t 20 "${NB[@]}" "$bin/gpu_bench_conv2d" --versions 10,11 >> "$clog" 2>&1; local src=$?
  grep -E '^version 1[01].*(WRONG|skipped)' "$clog" | head -3
  (( src == 0 || wrc != 0 )) || conv_versions=2,3,4,5,6,7,8,9
  note_rc "warp-specialised wgmma forward (small validation)" $src
  # The tensor-core GEMMs (bench versions, never run on hardware before): mma.sync (4-7), then TMA +
  # wgmma (8, 9), whose failure leaves them out of the kernel phase's gemm_4096 (a hung mbarrier ring
  # there would cost the case's whole limit, the cuBLAS rows included). The same small sizes the
  # emulator validates in ctest, against rounded operands: the tight check.
  echo "  the tensor-core GEMMs at small sizes (gpu_bench_gemm --versions 4,5,6,7, then 8,9)"
  # (each check greps only the lines its own command added to correctness.log: from line $at on)
  local at; at=$(( $(wc -l < "$clog") + 1 ))
  t 20 "${NB[@]}" "$bin/gpu_bench_gemm" --versions 4,5,6,7 >> "$clog" 2>&1; local grc=$?
  tail -n +"$at" "$clog" | grep -E '^version [4-7] .*(WRONG|skipped)' | head -3
  note_rc "mma.sync GEMMs (small validation)" $grc
  at=$(( $(wc -l < "$clog") + 1 ))
  t 20 "${NB[@]}" "$bin/gpu_bench_gemm" --versions 8,9 >> "$clog" 2>&1; grc=$?
  tail -n +"$at" "$clog" | grep -E '^version [89] .*(WRONG|skipped)' | head -3
  if (( grc != 0 )); then
    gemm_versions=1,2,3,4,5,6,7
    echo "  TMA/wgmma GEMMs failed (exit $grc): the kernel phase leaves versions 8 and 9 out"
  fi
  note_rc "TMA/wgmma GEMMs (small validation)" $grc
  # The first TF32 conv forward (3) and the mma.sync convolutions (4, 5; test_cuda_real checks the
  # backend's configurations too) at the small sizes.
  echo "  the mma.sync convolutions at small sizes (gpu_bench_conv2d --versions 3,4,5)"
  at=$(( $(wc -l < "$clog") + 1 ))
  t 25 "${NB[@]}" "$bin/gpu_bench_conv2d" --versions 3,4,5 >> "$clog" 2>&1; local mrc=$?
  tail -n +"$at" "$clog" | grep -E '^version [345] .*(WRONG|skipped)' | head -3
  note_rc "mma.sync convolutions (small validation)" $mrc
  # The memory-bound kernels against the CPU at small sizes (the memory phase times them unchecked).
  echo "  the memory-bound kernels at small sizes (gpu_bench_memory_bound)"
  at=$(( $(wc -l < "$clog") + 1 ))
  t 20 "${NB[@]}" "$bin/gpu_bench_memory_bound" >> "$clog" 2>&1; local brc=$?
  tail -n +"$at" "$clog" | grep -E 'WRONG' | head -3
  note_rc "memory-bound kernels (small validation)" $brc
  echo "  test_cuda_real (the emulator's kernel tests, on the device); full output in correctness.log"
  t 60 "${NB[@]}" "$bin/test_cuda_real" >> "$clog" 2>&1; local rc=$?
  tail -4 "$clog"; grep -E 'ERROR|FATAL|logged' "$clog" | head -20
  note_rc "test_cuda_real" $rc
  echo "  test_gpu_reference (our GEMM/conv vs cuBLAS/cuDNN; a ResNet step each way)"
  t 60 "${NB[@]}" "$bin/test_gpu_reference" 2>&1 | tee -a "$clog" | grep -vE '^OK ' ; note_rc "test_gpu_reference" "${PIPESTATUS[0]}"
  local cs; cs=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
  if [[ -z $cs ]]; then echo "  compute-sanitizer not found: memcheck/racecheck skipped"; return; fi
  # Small cases: every kernel of the elementwise/reduce tests, the tiled GEMMs, pooling and batch norm.
  local small='cuda kernels: fill,cuda kernels: sum and mean*,cuda kernels: sgemm*,cuda kernels: max pool*,cuda kernels: batch norm*,cuda kernels: softmax*'
  echo "  compute-sanitizer memcheck"
  run_sanitizer memcheck 45 "$small"
  echo "  compute-sanitizer racecheck (shared-memory kernels: tiled GEMMs, block reductions)"
  run_sanitizer racecheck 45 'cuda kernels: sum and mean*,cuda kernels: sgemm*,cuda kernels: batch norm*'
}

# NCCL at world size 1 (one GPU: NCCL refuses two ranks on a device). libnccl.so.2 comes from the
# nvidia-nccl wheel, on the LD_LIBRARY_PATH that NB sets (nccl_group.cu loads it with dlopen).
phase_distributed() {
  rows distributed t 20 "${NB[@]}" "$bin/cuda_status" --nccl; note_rc "cuda_status --nccl (NCCL all-reduce, one rank)" $?
  # Two MPI ranks sharing the GPU: Debian's Open MPI is not CUDA-aware, so the gradient buckets go
  # through host memory (#17). First the all-reduce itself, then a whole training run.
  if (( ${#mpirun[@]} == 0 )); then echo "  no mpirun (no mpi/ in the bundle, none on PATH): two ranks not run"; return; fi
  t 15 "${NB[@]}" "${mpirun[@]}" -np 2 "$bin/bench_allreduce" --max-floats 16777216 --reps 5 > "$out/allreduce.jsonl"
  local arc=$?
  note_rc "bench_allreduce, 2 MPI ranks (host memory)" $arc
  # Two ranks that could not start here will not train either: keep the phase's time for the others.
  if (( arc == 125 )); then echo "  no time left for two ranks: the data-parallel training is not tried"; return; fi
  (( arc == 0 )) || { echo "  two ranks failed here (exit $arc): the data-parallel training is not tried"; return; }
  # 8 generated triplets (all in the training split), 3 epochs of 2 global batches of 4, fp32 (TF32
  # would round the two runs' different sums differently); the CPU's same check measured 1.1e-5.
  local d=$out/ddp
  rm -rf "$d"  # fresh runs: the trainers refuse a folder that holds another run's checkpoints
  local a=(--data "$d/data/sen12mscr" --epochs 3 --crop 32 --blocks 1 --features 8 --threads 2 --workers 1
           --optimizer adam --lr 1e-3 --device cuda --precision fp32)
  mkdir -p "$d"
  { t 15 "${NB[@]}" "$bin/make_synthetic" --out "$d/data" --sen12mscr 8 --patches-per-roi 1 --seed 7 --threads 8 &&
    t 20 "${NB[@]}" "$bin/train_dsen2cr" "${a[@]}" --out "$d/one" --batch-size 4 &&
    t 25 "${NB[@]}" "${mpirun[@]}" -np 2 "$bin/train_dsen2cr" "${a[@]}" --out "$d/two" --batch-size 2; } > "$d.log" 2>&1
  local rc=$?
  (( rc == 0 )) || tail -12 "$d.log"
  note_rc "DSen2-CR trained by 2 ranks sharing the GPU and by 1 rank (log: ddp.log)" $rc
  if (( rc == 0 )); then
    rows distributed t 10 python3 "$root/scripts/gpu/compare_checkpoints.py" "$d/one/last.safetensors" \
      "$d/two/last.safetensors" --case ddp_mpi_2ranks_vs_1 --max 1e-3
    note_rc "2 ranks of batch 2 against 1 rank of batch 4: checkpoints within 1e-3" $?
  fi
  rm -rf "$d/data"
}

phase_kernels() {
  # Every GEMM version (no --versions: 1-9). 8 and 9 (TMA + wgmma) run on compute capability 9.0 only;
  # elsewhere gpu_bench_gemm skips them with a message on stderr and still passes.
  for c in gemm_4096; do
    rows kernels t 30 "${NB[@]}" "$bin/gpu_bench_gemm" --case "$c" --versions "$gemm_versions"; note_rc "gpu_bench_gemm $c" $?
  done
  for c in dsen2cr_conv3x3_fwd dsen2cr_conv3x3_dgrad dsen2cr_conv3x3_wgrad resnet50_convs_fwd resnet50_convs_dgrad \
           resnet50_convs_wgrad; do
    # Version 1 (direct, a teaching reference) would spend the case's time; 2 is the im2col path (fp32
    # math), 3 the first TF32 forward, 4 and 5 the backend's tensor-core kernels (the default) in TF32 and bf16,
    # 6, 7 and 8 the Hopper bf16 forward, data gradient and weight gradient, 9 all three in TF32 (wgmma;
    # the backend's default on sm_90a; a case runs the versions that have its direction; skipped with a
    # message off compute capability 9.0), 10 and 11 the warp-specialised forward in bf16 and TF32. 80 ms
    # per implementation and layer, not 150 (40 for ResNet-50, below).
    # --deadline-s: a case that would overrun stops between layers and prints its rows for the layers it
    # timed (marked partial), 4 s before the limit would kill it with none printed (under 5 s t runs nothing).
    # ResNet-50's cases take 40 ms: eleven forward implementations of 23 layers at 80 ms, with cuDNN's
    # searches, would not reach the last layers before the deadline (a partial row covers the stem and
    # the first stages only, not comparable with PyTorch's).
    local cap budget_ms=80; cap=$(cap_of 30)
    [[ $c == resnet50_* ]] && budget_ms=40
    rows kernels t 30 "${NB[@]}" "$bin/gpu_bench_conv2d" --case "$c" --versions "$conv_versions" --budget-ms $budget_ms \
      --deadline-s $(( cap > 5 ? cap - 4 : 1 ))
    note_rc "gpu_bench_conv2d $c" $?
  done
}

# The backend's memory-bound kernels (ReLU, add, batch norm, pooling, casts, the CARL loss, the
# optimisers' step) at the models' shapes, each beside a device-to-device copy of the same traffic: #15's
# target is a fraction >= 0.7 (bench/cuda/memory_bound.cu).
phase_memory() {
  rows memory t 55 "${NB[@]}" "$bin/gpu_bench_memory_bound" --case all --budget-ms 40
  note_rc "gpu_bench_memory_bound" $?
}

phase_models() {
  local c
  # _nofold: the same step with batch norm's statistics by its own kernels (#15: the fold into the conv
  # epilogue stays the default only if it measures faster). _prologue: each bottleneck's batch norm +
  # ReLU applied by the next convolution as it gathers its input (off by default until this row is
  # faster than the first).
  for c in resnet50_train_b256_64:40 resnet50_train_b256_64_graph:40 resnet50_train_b256_64_nofold:30 \
           resnet50_train_b256_64_prologue:25 \
           resnet50_infer_b256_64:25 dsen2cr_train_B16F256_b16_128:75 dsen2cr_infer_B16F256_b1_256:25; do
    rows models t "${c#*:}" "${NB[@]}" "$bin/bench_models" --device cuda --cases "${c%:*}"
    note_rc "bench_models --device cuda ${c%:*}" $?
  done
  # The loader on this host's 16 cores, to set beside the GPU step's images/s (loader.jsonl): EuroSAT
  # tiles from a raster pack with the flips left to the GPU, and SEN12MS-CR triplets from a pack with
  # the cloud mask and the flips left to the GPU (train_dsen2cr's loader on cuda).
  t 25 "${NB[@]}" "$bin/bench_loader" --dataset eurosat --triplets 100 --threads 16 --batch 256 --pack temp \
    --augment-on device > "$out/loader.jsonl"; note_rc "bench_loader eurosat (pack, flips on the GPU)" $?
  t 25 "${NB[@]}" "$bin/bench_loader" --triplets 64 --threads 16 --batch 16 --pack temp --augment-on device \
    >> "$out/loader.jsonl"; note_rc "bench_loader sen12mscr (pack, mask, flips on the GPU)" $?
}

# PyTorch on the kernel and model cases. Each script gets the time its command is given (left), so that
# it ends its own work, torch.compile's child included, before the limit does.
phase_torch() {
  local left
  # PyTorch needed ~60 s for the seven kernel cases on 2026-12-04 (cudnn.benchmark tries algorithms).
  left=$(( phase_end - $(date +%s) - 10 ))
  (( left > 20 )) && { rows kernels t 90 python3 "$root/bench/torch/gpu_reference.py" kernels --budget $(( left < 85 ? left : 85 ));
                       note_rc "PyTorch kernels" $?; }
  left=$(( phase_end - $(date +%s) - 10 ))
  (( left > 20 )) && { rows models t 80 python3 "$root/bench/torch/gpu_reference.py" models --configs fp32,tf32,bf16 \
                         --budget $(( left < 70 ? left : 70 )); note_rc "PyTorch models (eager)" $?; }
  # torch.compile last: it may take its 90 s to compile and is the first thing to go when time is short.
  left=$(( phase_end - $(date +%s) - 10 ))
  if (( left > 40 )); then
    rows models t 100 python3 "$root/bench/torch/gpu_reference.py" models --configs compile \
      --cases resnet50_train_b256_64 --compile-limit $(( left - 5 < 90 ? left - 5 : 90 )) --budget $(( left < 95 ? left : 95 ))
    note_rc "PyTorch models (torch.compile)" $?
  else
    echo "  torch.compile not run: ${left}s left in the phase"
  fi
}

phase_sweep() {
  t 115 "${NB[@]}" "$bin/gpu_bench_conv2d" --sweep all --sweep-table "$out/sweep_table.inc" --budget-ms 10 \
    > "$out/sweep.jsonl" 2>> "$out/gpu_check.log"
  local rc=$?
  note_rc "gpu_bench_conv2d --sweep" $rc
  # A sweep stopped part-way leaves a table that looks whole: it says so in its last line.
  (( rc == 0 )) || echo "// INCOMPLETE: the sweep stopped (exit $rc); the layers after the last row were not swept" \
    >> "$out/sweep_table.inc"
  echo "  $(wc -l < "$out/sweep.jsonl") layer rows; table lines in sweep_table.inc: $(grep -c '^{' "$out/sweep_table.inc" 2>/dev/null || echo 0)"
}

phase_demo() {
  # Reduced sizes (the full demo's DSen2-CR takes minutes): 400 tiles, 100 + 50 triplets, 2 + 4 epochs.
  t 85 env LD_LIBRARY_PATH="$nimbus_ld" NIMBUS_DEMO_BIN="$bin" DEMO_DEVICE=cuda DEMO_DIR="$out/demo" \
    EUROSAT_PER_CLASS=40 CR_TRAIN=100 CR_EVAL=50 RESNET_EPOCHS=2 CR_EPOCHS=4 THREADS=16 "$root/scripts/demo.sh" \
    > "$out/demo.log" 2>&1
  note_rc "scripts/demo.sh --device cuda (reduced sizes)" $?
  grep -E '^\[demo|^\|' "$out/demo.log" | head -20
  # The two apps the demo does not run (#15: every app with --device cuda), with the demo's models, on
  # the GPU and on the CPU in fp32: the same probabilities within 1e-4, the same image within 1 DN.
  local e=$out/demo dev s2 s1
  s2=$(find "$e/eval/sen12mscr" -path '*_s2_cloudy/*' -name '*.tif' 2> /dev/null | sort | head -1)
  s1=${s2//s2_cloudy/s1}
  if [[ ! -f $s2 || ! -f $s1 ]]; then
    echo "  the demo left no cloudy scene with its S1 under $e/eval: classify and remove_clouds not run"; phase_ok=0
  elif [[ -f $e/resnet/best.safetensors && -f $e/dsen2cr/last.safetensors ]]; then
    for dev in cuda cpu; do
      t 20 "${NB[@]}" "$bin/classify" --weights "$e/resnet/best.safetensors" --out "$e/classify_$dev.csv" --device "$dev" \
        --precision fp32 --threads 16 "$e/data/eurosat" >> "$out/demo.log" 2>&1
      note_rc "classify --device $dev" $?
      t 20 "${NB[@]}" "$bin/remove_clouds" --weights "$e/dsen2cr/last.safetensors" --s2 "$s2" --s1 "$s1" \
        --out "$e/clear_$dev.tif" --device "$dev" --precision fp32 --threads 16 >> "$out/demo.log" 2>&1
      note_rc "remove_clouds --device $dev" $?
    done
    rows demo t 10 python3 "$root/scripts/gpu/compare_csv.py" "$e/classify_cpu.csv" "$e/classify_cuda.csv" \
      --case classify_cuda_vs_cpu --max 1e-4
    note_rc "classify: GPU against CPU" $?
    rows demo t 10 "${NB[@]}" "$bin/raster_diff" "$e/clear_cpu.tif" "$e/clear_cuda.tif" --case remove_clouds_cuda_vs_cpu --max 1
    note_rc "remove_clouds: GPU against CPU" $?
  else
    echo "  the demo left no trained models: classify and remove_clouds not run"; phase_ok=0
  fi
  rm -rf "$out/demo/data" "$out/demo/eval"  # the generated GeoTIFFs: regenerated from the seeds, not brought back
}

phase_sass() {
  local dump; dump=$(command -v cuobjdump || ls /usr/local/cuda/bin/cuobjdump 2>/dev/null || true)
  [[ -n $dump ]] || { echo "  cuobjdump not found"; phase_ok=0; return; }
  # Every kernel of the backend (bench_models links all of them) and the numbered versions, for sm_90a
  # (the bundle builds 90 as 90a: kernels/cuda/real/CMakeLists.txt; the backend's wgmma convolutions
  # and gemm versions 8 and 9 exist only there; should this cuobjdump not take the name sm_90a, every
  # architecture of each).
  { for b in bench_models gpu_bench_conv2d gpu_bench_gemm; do
      t 10 "$dump" --gpu-architecture sm_90a --dump-sass "$bin/$b" || t 10 "$dump" --dump-sass "$bin/$b"
    done; } > "$out/sass_sm90.txt" 2>&1
  note_rc "cuobjdump" $?
  echo "  $(grep -c 'Function :' "$out/sass_sm90.txt") functions, $(wc -c < "$out/sass_sm90.txt") bytes"
  # The tensor-core kernels (the numbered versions and the backend's igemm_kernel instantiations) must
  # show the instructions they were written for (HMMA/LDSM/LDGSTS; HGMMA/UTMALDG for the wgmma
  # versions), and no local memory.
  # sass_hot.txt: the first instantiation of each of them (by the start of the mangled name), to read
  # elsewhere; the whole dump is too large to bring back.
  python3 - "$out/sass_sm90.txt" "$out/sass_hot.txt" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
seen, kept, hot = set(), set(), open(sys.argv[2], "w")
for part in re.split(r"\n\s*Function : ", text)[1:]:
    name = part.split("\n", 1)[0].strip()
    if not re.search(r"tf32|bf16|implicit|igemm|wgmma", name) or name in seen:
        continue
    seen.add(name)
    if name[:48] not in kept:
        kept.add(name[:48])
        hot.write("Function : " + part + "\n")
    count = lambda op: len(re.findall(r"\b" + op + r"\b", part))
    print(f"  {name[:70]}: HMMA {count('HMMA')}, LDSM {count('LDSM')}, LDGSTS {count('LDGSTS')}, "
          f"HGMMA {count('HGMMA')}, UTMALDG {count('UTMALDG')}, LDL/STL {count('LDL') + count('STL')}")
PY
}

failed=0 stop_run=0
conv_versions=2,3,4,5,6,7,8,9,10,11 gemm_versions=1,2,3,4,5,6,7,8,9  # without the wgmma ones after a failed validation
for p in "${phases[@]}"; do
  # PyTorch's phase needs none of our programs: it still runs when they cannot.
  if (( stop_run )) && [[ $p != torch ]]; then
    echo "phase $p: not run: the carried programs do not start here (smoke)"; failed=1; continue
  fi
  now=$(date +%s)
  left=$(( budget - (now - start) ))
  if (( left < 10 )); then echo "phase $p: not run: the ${budget}s budget is spent"; failed=1; continue; fi
  cap=${limit[$p]}; (( left < cap )) && cap=$left
  phase_end=$(( now + cap ))
  echo "== phase $p (at most ${cap}s; $(( now - start ))s elapsed)"
  phase_ok=1
  "phase_$p"
  echo "phase $p: $([[ $phase_ok == 1 ]] && echo passed || echo FAILED) in $(( $(date +%s) - now ))s"
  (( phase_ok )) || failed=1
  # The table so far, so that a run stopped in a later phase still brings back a summary.
  python3 "$results_py" summary "$results" > "$out/summary.md" 2>&1 || echo "summary failed after phase $p"
  bring_back
done

python3 "$results_py" summary "$results" > "$out/summary.md" 2>&1 || echo "summary failed: see $out/summary.md"
echo "== gpu_check finished in $(( $(date +%s) - start ))s"
cat "$out/summary.md"
exit $failed
