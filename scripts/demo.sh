#!/usr/bin/env bash
# demo.sh: the README's first command. On a fresh Debian 12 machine: installs
# what is missing, builds (Release), writes a small synthetic EuroSAT-like and
# SEN12MS-CR-like dataset, trains a small classifier and a small DSen2-CR, runs
# the cloud-impact experiment and prints Table 1 and where the report is.
# About 2-4 minutes on 2 idle CPU cores, build included (limit: 15; docs/experiment.md).
#
#   scripts/demo.sh                 everything, into runs/demo/
#   DEMO_DIR=/tmp/x scripts/demo.sh another run folder
#   DEMO_DEVICE=cpu scripts/demo.sh the CPU even where there is a GPU
#   NIMBUS_DEMO_BIN=DIR             programs built elsewhere (the GPU bundle's bin/): no install, no build
# With an NVIDIA GPU (nvidia-smi lists one) and nvcc (PATH or /usr/local/cuda/bin), the demo builds the
# real CUDA backend in build-cuda/ and trains and evaluates with --device cuda; it says which it uses.
# Sizes can be overridden through the environment (defaults below); the full-scale
# recipe on the real datasets is in docs/experiment.md.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
stamp() { printf '[demo %s] %s\n' "$(date -u -d @$(( $(date +%s) - start )) +%M:%S)" "$*"; }

DEMO_DIR=${DEMO_DIR:-runs/demo}
EUROSAT_PER_CLASS=${EUROSAT_PER_CLASS:-80}  # 800 EuroSAT-like 64x64 tiles (80% train, 10% val, 10% test)
CR_TRAIN=${CR_TRAIN:-300}                   # SEN12MS-CR-like 256x256 triplets to train DSen2-CR on
CR_EVAL=${CR_EVAL:-100}                     # separate triplets (another seed) for the experiment
RESNET_EPOCHS=${RESNET_EPOCHS:-3}
CR_EPOCHS=${CR_EPOCHS:-12}
THREADS=${THREADS:-$(nproc)}

prebuilt=${NIMBUS_DEMO_BIN:-}
[[ -n $prebuilt ]] || { stamp "installing missing packages (scripts/install_deps.sh)"; scripts/install_deps.sh; }

# The device: the GPU when one is there and nvcc can build for it (or the programs are prebuilt),
# unless DEMO_DEVICE says otherwise.
nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
[[ -n $prebuilt ]] && nvcc=prebuilt
gpu=$(nvidia-smi -L 2>/dev/null | head -1 || true)
DEVICE=${DEMO_DEVICE:-$([[ -n $gpu && -n $nvcc ]] && echo cuda || echo cpu)}
build=build
cuda_flags=()
if [[ $DEVICE == cuda ]]; then
  [[ -n $gpu && -n $nvcc ]] || { echo "demo: DEMO_DEVICE=cuda needs an NVIDIA GPU (nvidia-smi -L) and nvcc"; exit 1; }
  build=build-cuda  # the real CUDA backend (nvcc + cudart) beside the tests' CPU build
  cuda_flags=(-DNIMBUS_CUDA_BACKEND=ON -DCMAKE_CUDA_COMPILER="$nvcc")
  stamp "device: the GPU ($gpu), with our CUDA kernels"
else
  stamp "device: the CPU ($THREADS threads)${gpu:+; a GPU is there but no nvcc to build for it}"
fi

if [[ -n $prebuilt ]]; then
  bin=$prebuilt
  stamp "programs: $bin (prebuilt)"
else
  stamp "building (Release) in $build/"
  cmake -S . -B "$build" -G Ninja -DNIMBUS_WERROR=ON -DCMAKE_BUILD_TYPE=Release "${cuda_flags[@]}" \
    > "$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
  cmake --build "$build" -j "$THREADS" --target make_synthetic train_resnet train_dsen2cr cloud_impact
  bin=$build/bin
fi
mkdir -p "$DEMO_DIR"

stamp "synthetic data: $((EUROSAT_PER_CLASS * 10)) EuroSAT-like tiles, $CR_TRAIN + $CR_EVAL SEN12MS-CR-like triplets"
# Made again on every run, the same from the same seeds (make_synthetic writes only into empty folders).
rm -rf "$DEMO_DIR/data" "$DEMO_DIR/eval"
"$bin/make_synthetic" --out "$DEMO_DIR/data" --eurosat-per-class "$EUROSAT_PER_CLASS" --sen12mscr "$CR_TRAIN" \
  --seed 42 --threads "$THREADS"
# The experiment's scenes: another seed, so DSen2-CR never saw them (synthetic ROIs are
# too few to reach the benchmark's test ROIs, hence a separate set and --split all below).
"$bin/make_synthetic" --out "$DEMO_DIR/eval" --sen12mscr "$CR_EVAL" --seed 4242 --threads "$THREADS"

# The trainers resume an earlier demo's runs (--resume: a demo stopped part-way goes on), which they
# refuse on other data. Each run folder is stamped with the size of the data it trains on; a run of
# another size, or one without a stamp (an older demo's), is another experiment's: removed.
fresh_run() {  # fresh_run NAME SIZE
  if [ -d "$DEMO_DIR/$1" ] && [ "$(cat "$DEMO_DIR/$1.size" 2>/dev/null)" != "$2" ]; then
    echo "demo: $DEMO_DIR/$1 was trained on other data: removed, trained again"
    rm -rf "$DEMO_DIR/$1"
  fi
  echo "$2" > "$DEMO_DIR/$1.size"
}
fresh_run resnet "$EUROSAT_PER_CLASS"
fresh_run dsen2cr "$CR_TRAIN"

stamp "training the classifier: ResNet (basic blocks 1,1,1,1, width 16), $RESNET_EPOCHS epochs"
"$bin/train_resnet" --data "$DEMO_DIR/data/eurosat" --out "$DEMO_DIR/resnet" --epochs "$RESNET_EPOCHS" \
  --block basic --blocks 1,1,1,1 --width 16 --batch-size 32 --milestones "" --threads "$THREADS" --resume \
  --device "$DEVICE"

# L1 to the target (Meraner et al.'s second loss) rather than CARL: the synthetic cloudy
# acquisition differs from the target on clear pixels too (per-band gain, a cirrus veil that
# raises B10), and CARL would teach the model to keep those differences.
stamp "training DSen2-CR (B=4, F=48, with SAR, L1 loss), $CR_EPOCHS epochs on 64x64 crops"
"$bin/train_dsen2cr" --data "$DEMO_DIR/data/sen12mscr" --out "$DEMO_DIR/dsen2cr" --epochs "$CR_EPOCHS" \
  --blocks 4 --features 48 --crop 64 --batch-size 8 --loss l1 --optimizer adam --lr 1e-3 --threads "$THREADS" \
  --resume --device "$DEVICE"

stamp "running the experiment (cloud_impact)"
"$bin/cloud_impact" --classifier "$DEMO_DIR/resnet/best.safetensors" --cr "$DEMO_DIR/dsen2cr/last.safetensors" \
  --data "$DEMO_DIR/eval/sen12mscr" --split all --out "$DEMO_DIR/impact" --threads "$THREADS" --device "$DEVICE"

stamp "done"
echo "Open $DEMO_DIR/impact/report.md for the tables and figures (docs/experiment.md explains every file)."
