#!/usr/bin/env bash
# Reproduce corrnet/pretrained/corrnet-synthetic.pt: synthetic pairs only, 55 min on 2 CPU cores
# (configs/pretrained.yaml; docs/training.md#the-shipped-weights).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

# Train on the embedded synthetic generator until the config's time limit.
$PY train.py --config configs/pretrained.yaml
# Export the last checkpoint.
$PY -c "from corrnet.checkpoint import export_model; export_model('runs/pretrained/checkpoints/last.ckpt', 'runs/pretrained/corrnet-synthetic.pt')"
echo "reproduce_synthetic.sh: done: runs/pretrained/corrnet-synthetic.pt"
