#!/usr/bin/env bash
# The GPU path on one CUDA machine, in about 10 minutes; writes a markdown table.
#
#   PYTHONPATH=. scripts/gpu_bench.sh [REPORT.md]      (default: $OUT/gpu_bench.md, else
#                                                       runs/gpu_bench/<time>/gpu_bench.md)
#
# Steps (each under its own time limit; one that fails or runs out is marked in the table and
# the rest still run): the compiled-path and sync tests on the GPU; host syncs of one forward
# pass (torch.cuda.set_sync_debug_mode); batch-1 latency at N = 2000 (float32 and bfloat16,
# eager and compiled); throughput at N = 2000, B = 64 and 256 (bfloat16, eager and compiled);
# the feature-layout and eigensolver micro-benchmarks; eval.py --device cuda on 200 synthetic
# pairs (batch 1 and 32); training throughput of configs/gpu.yaml (steps/s from two runs of 30
# and 130 steps, GPU utilisation sampled by nvidia-smi every 0.5 s during the longer one).
# Raw outputs (JSON, logs) go beside the report.  PYTHON overrides the interpreter;
# DRY_RUN=1 runs the steps on the CPU at toy sizes, without compiling and without the GPU-only
# steps (a check of the script itself; its timings mean nothing).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH=${PYTHONPATH:-.}
export PYTHONUNBUFFERED=1
report=${1:-${OUT:+$OUT/gpu_bench.md}}
report=${report:-runs/gpu_bench/$(date +%Y%m%d-%H%M%S)/gpu_bench.md}
dir=$(dirname "$report")/gpu_bench_raw
mkdir -p "$dir"
status="$dir/status.txt"
: > "$status"

step() {  # step NAME SECONDS COMMAND... : run with a time limit, log, record the outcome
    local name=$1 limit=$2
    shift 2
    echo "[gpu_bench] $name (limit ${limit}s)"
    local start rc
    start=$(date +%s%N)
    timeout "$limit" "$@" > "$dir/$name.log" 2>&1
    rc=$?
    echo "$name $rc $((($(date +%s%N) - start) / 1000000))" >> "$status"
    [ $rc -eq 0 ] || echo "[gpu_bench] $name: exit $rc (see $dir/$name.log)"
}

if [ "${DRY_RUN:-0}" = 1 ]; then
    dev=cpu n=256 model=configs/model/tiny.yaml small="1 2" large="4" pairs=8 steps=(2 4) compile=()
    repeats=3
    train_size=(--trainer.accelerator cpu --trainer.precision 32-true --data.batch_size 2
                --data.num_matches 128 --data.num_workers 0 --model.net.width 32
                --model.net.heads 2 --model.net.num_states 4 --model.net.blocks_per_stage 2)
    $PY -c "import torch; print(torch.__version__, 'CPU dry run')" > "$dir/machine.txt"
else
    dev=cuda n=2000 model=configs/model/default.yaml small="1" large="64 256" pairs=200
    steps=(30 130) train_size=() compile=(--compile) repeats=50
    $PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" \
        > "$dir/machine.txt" 2>&1 || { cat "$dir/machine.txt"; exit 2; }
fi

[ "$dev" = cuda ] && step tests 150 $PY -m pytest -q -x tests/test_gpu_path.py \
    -k "inductor or sync or unchecked or fixed_pruning or predictor"

[ "$dev" = cuda ] && step syncs 60 $PY - <<'EOF'
"""Host synchronisations of one unchecked forward pass on CUDA, counted by the sync debug mode."""
import warnings

import torch

from corrnet.datasets import generate_pair
from corrnet.models import CorrNet, CorrNetConfig

net = CorrNet(CorrNetConfig()).cuda().eval()
x = torch.stack([generate_pair(0, i, num_matches=2000)["features"] for i in range(4)]).cuda()
mask = (torch.arange(2000) < torch.tensor([[2000], [1500], [900], [2000]])).cuda()
for m in (None, mask):
    with torch.inference_mode():
        net(x, m, validate=False)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            net(x, m, validate=False)
        torch.cuda.set_sync_debug_mode("default")
    where = sorted({str(w.message).splitlines()[0][:80] for w in seen})
    print(f"SYNCS {'masked' if m is not None else 'unmasked'} {len(seen)} {where}")
EOF

bench=(benchmarks/bench_network.py --config "$model" --device "$dev" --n "$n"
       --pairs 4 --target-s 2 --no-memory --profile "${compile[@]}")
# shellcheck disable=SC2086
step latency 240 $PY "${bench[@]}" --batch $small --dtype float32 bfloat16 --out "$dir/latency.json"
# shellcheck disable=SC2086
step throughput 240 $PY "${bench[@]}" --batch $large --dtype bfloat16 --out "$dir/throughput.json"
step layout 60 $PY benchmarks/bench_layout.py --device "$dev" --dtype float32 bfloat16 --batch 1 64 \
    --n "$n" --repeats "$repeats"
step eigen 60 $PY benchmarks/bench_eigen.py --device "$dev" --batch 1 64 256 --repeats "$repeats"

for b in 1 32; do
    step "eval-b$b" 120 $PY eval.py --data synthetic --synthetic-pairs "$pairs" --device "$dev" \
        --batch-size "$b" --methods corrnet corrnet-8pt --quiet --out "$dir/eval-b$b" --overwrite
done

train=(train.py --config configs/gpu.yaml --trainer.limit_val_batches 0
       --trainer.enable_progress_bar false --trainer.logger false "${train_size[@]}")
step train-a 180 $PY "${train[@]}" --trainer.max_steps "${steps[0]}" \
    --trainer.default_root_dir "$dir/train-a" --checkpoint.dirpath "$dir/train-a/ckpt"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 \
    > "$dir/nvidia-smi.csv" 2>/dev/null &
smi=$!
step train-b 240 $PY "${train[@]}" --trainer.max_steps "${steps[1]}" \
    --trainer.default_root_dir "$dir/train-b" --checkpoint.dirpath "$dir/train-b/ckpt"
kill "$smi" 2>/dev/null

$PY - "$dir" "$report" "${steps[@]}" "$dev" <<'EOF'
"""The markdown report from the raw outputs."""
import json
import re
import sys
from pathlib import Path

raw, report = Path(sys.argv[1]), Path(sys.argv[2])
first, last, dev = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
status = {
    name: (int(rc), float(ms) / 1e3)
    for name, rc, ms in (line.split() for line in (raw / "status.txt").read_text().splitlines())
}
lines = [f"# GPU benchmark\n\n{(raw / 'machine.txt').read_text().strip()}\n"]
lines.append("| step | exit | seconds |\n|---|---|---|")
lines += [f"| {name} | {rc} | {s:.0f} |" for name, (rc, s) in status.items()]

tests = (raw / "tests.log").read_text() if (raw / "tests.log").exists() else ""
lines.append(f"\ntests/test_gpu_path.py on the GPU: {(tests.strip().splitlines() or ['n/a'])[-1]}")
syncs = re.findall(r"SYNCS (.*)", (raw / "syncs.log").read_text()) if status.get("syncs") else []
lines.append(
    "\nHost syncs per unchecked forward pass (set_sync_debug_mode): "
    + ("; ".join(syncs) or "n/a")
)

lines.append(
    "\n| rows | dtype | mode | B | ms/pair | best | pairs/s | x eager | kernels/forward |"
    "\n|---|---|---|---|---|---|---|---|---|"
)
for name in ("latency", "throughput"):
    path = raw / f"{name}.json"
    if not path.exists():
        lines.append(f"| {name} | n/a (step failed) | | | | | | | |")
        continue
    for r in json.loads(path.read_text())["network"]:
        if r.get("skipped"):
            continue
        mode = r["mode"] if r.get("compiled", True) or r["mode"] == "eager" else "fallback"
        vs = f"{r['vs_eager']:.2f}" if "vs_eager" in r else ""
        kernels = r.get("profile", {}).get("kernels", "")
        lines.append(
            f"| {name} N={r['n']} | {r['dtype']} | {mode} | {r['batch']} | "
            f"{r['ms_per_pair']:.3f} | {r['best_ms_per_pair']:.3f} | {r['pairs_per_s']:.0f} | "
            f"{vs} | {kernels} |"
        )

for b in (1, 32):
    name = f"eval-b{b}"
    if name in status:
        table = raw / name / "report.md"
        head = table.read_text().splitlines()[:12] if table.exists() else ["(no report)"]
        lines.append(f"\neval.py --device {dev} --batch-size {b}: {status[name][1]:.0f} s wall\n")
        lines += head

if status.get("train-a", (1,))[0] == 0 and status.get("train-b", (1,))[0] == 0:
    dt = status["train-b"][1] - status["train-a"][1]
    lines.append(f"\nTraining (configs/gpu.yaml): {(last - first) / dt:.2f} steps/s over steps "
                 f"{first}-{last} ({dt:.1f} s; the difference of two runs removes the start-up)")
smi = raw / "nvidia-smi.csv"
if smi.exists() and smi.read_text().strip():
    util = [float(line.split(",")[0]) for line in smi.read_text().splitlines() if line.strip()]
    mem = [float(line.split(",")[1]) for line in smi.read_text().splitlines() if line.strip()]
    lines.append(f"GPU utilisation during the longer run: mean {sum(util) / len(util):.0f} %, "
                 f"median {sorted(util)[len(util) // 2]:.0f} %, {len(util)} samples; "
                 f"memory up to {max(mem):.0f} MiB")
for name, title in (
    ("layout", "Layout micro-benchmark (benchmarks/bench_layout.py)"),
    ("eigen", "Eight-point eigensolver: eigh and the sync-free one (benchmarks/bench_eigen.py)"),
):
    log = raw / f"{name}.log"
    if log.exists():
        lines += [f"\n{title}:\n", "```", log.read_text().strip(), "```"]
report.write_text("\n".join(lines) + "\n")
print(report.read_text())
EOF
echo "[gpu_bench] report: $report"
