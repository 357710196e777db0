#!/usr/bin/env bash
# The main job on the embedded default: train a small CorrNet on synthetic pairs for a few
# minutes on the CPU, evaluate it against RANSAC baselines on the synthetic test split, and
# write a report and a picture.  Every run gets its own folder under runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
run=runs/demo/$(date +%Y%m%d-%H%M%S)
mkdir -p "$run"
export PYTHONUNBUFFERED=1

echo "[demo] 1/2 training a small model on synthetic pairs -> $run"
$PY -m corrnet train --config demo \
    --trainer.default_root_dir "$run" --checkpoint.dirpath "$run/checkpoints" \
    --trainer.logger.init_args.save_dir "$run"

echo "[demo] 2/2 evaluating on the synthetic test split"
$PY -m corrnet eval --data synthetic --checkpoint "$run/checkpoints/last.ckpt" --out "$run/eval" \
    --max-pairs 200 --viz 1

echo "[demo] done: report $run/eval/report.md, pictures in $run/eval/viz/"
