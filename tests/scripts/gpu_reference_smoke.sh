#!/usr/bin/env bash
# gpu_reference_smoke.sh: the PyTorch side of the device run (bench/torch/gpu_reference.py), run here
# on the CPU at its --smoke sizes, its rows annotated and summarised by scripts/gpu/results.py as
# scripts/gpu_check.sh does on the GPU machine. A mistake in either script then shows in ctest, not in
# the rare device session (the rehearsal, gpu_check_rehearsal.sh, runs stand-ins for both).
#
#   tests/scripts/gpu_reference_smoke.sh SOURCE_DIR
# Exit 77 (skipped) when /usr/bin/python3 has no torch or torchvision (scripts/install_deps.sh --dev
# installs them); 0 when every case of both subcommands gave its rows, each ok or unsupported (torch
# 1.13 has no torch.compile), and the summary shows them; 1 otherwise, saying what was wrong.
set -euo pipefail
root=${1:?usage: gpu_reference_smoke.sh SOURCE_DIR}
py=/usr/bin/python3
if ! "$py" -c 'import torch, torchvision' 2>/dev/null; then
  echo "skipped: $py has no torch/torchvision (scripts/install_deps.sh --dev)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

export NIMBUS_RESULTS=$work/results.jsonl NIMBUS_COMMIT=smoke
for what in kernels models; do
  set +e
  "$py" "$root/bench/torch/gpu_reference.py" "$what" --smoke 2> "$work/$what.err" |
    python3 "$root/scripts/gpu/results.py" annotate --phase "$what" > "$work/$what.out"
  rcs=("${PIPESTATUS[@]}")
  set -e
  [[ ${rcs[0]} -eq 0 && ${rcs[1]} -eq 0 ]] || { cat "$work/$what.err"; fail "$what: exit ${rcs[*]}"; }
  # One eager row per case and precision at least; the time-guard self-test row once per run.
  cases=$("$py" "$root/bench/torch/gpu_reference.py" "$what" --list) || fail "$what --list: exit $?"
  [[ -n $cases ]] || fail "$what --list named no case"
  for case in $cases; do
    for p in fp32 tf32 bf16; do
      grep -q "\"case\": \"$case\", \"impl\": \"torch_eager\", \"precision\": \"$p\", \"ok\": true" "$work/$what.out" ||
        fail "$what: no ok torch_eager $p row for $case"
    done
  done
  grep -q '"case": "smoke_time_guard", "impl": "selftest", "precision": null, "ok": true' "$work/$what.out" ||
    fail "$what: the time guards' self-test row is missing or not ok"
done

"$py" - "$NIMBUS_RESULTS" <<'EOF' || fail "results.jsonl: rows not as gpu_check.sh writes them"
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert rows, "no rows"
for r in rows:
    assert r.get("phase") in ("kernels", "models") and r.get("commit") == "smoke", r
    if r["case"] == "smoke_time_guard":
        continue
    if r.get("unsupported"):
        assert r["ok"] is False and r["impl"] == "torch_compile", r
        continue
    assert r["ok"] is True and r["median_ms"] > 0 and math.isfinite(r["median_ms"]), r
    if r["phase"] == "kernels":
        assert 0 <= r["rel_err"] < 0.05, r  # bf16's bound; fp32 and tf32 rows are far below it
print(f"{len(rows)} rows checked")
EOF
python3 "$root/scripts/gpu/results.py" summary "$NIMBUS_RESULTS" > "$work/summary.md"
grep -q '^| gemm_4096 | bf16 | - | - | ' "$work/summary.md" || { cat "$work/summary.md"; fail "summary: no gemm_4096 bf16 line"; }
grep -q '^| resnet50_train_b256_64 | - | [0-9]' "$work/summary.md" || { cat "$work/summary.md"; fail "summary: no ResNet-50 training line"; }
grep -q 'smoke_time_guard' "$work/summary.md" && { cat "$work/summary.md"; fail "summary: the self-test row shown as a case"; }
grep -q 'FAILED' "$work/summary.md" && { cat "$work/summary.md"; fail "summary reports a failure"; }
echo "gpu_reference.py --smoke: kernels and models ok; results.py summary ok"
