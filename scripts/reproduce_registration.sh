#!/usr/bin/env bash
# Reproduce corrnet/pretrained/corrnet-registration.pt: synthetic 3-D pairs only (never real-dev-3d),
# 15 min on 2 CPU cores, one thread (configs/registration.yaml; docs/registration.md#training).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

# Training and validation pairs from the synthetic 3-D generator.
[[ -f data/generated/syn3d-train.hdf5 ]] ||
    $PY data/prepare3d.py --synthetic --pairs 1500 --seed 0 --out data/generated/syn3d-train.hdf5
[[ -f data/generated/syn3d-val.hdf5 ]] ||
    $PY data/prepare3d.py --synthetic --pairs 60 --seed 1 --out data/generated/syn3d-val.hdf5
# Train; checkpoints are kept by val/RR, the network's own Kabsch on the validation pairs.
OMP_NUM_THREADS=1 $PY train.py --config configs/registration.yaml
# Export the newest best checkpoint (step 5,800 for the shipped weights; it can differ in a rerun).
best=$(ls -t runs/registration/checkpoints/best-*.ckpt | head -n 1)
$PY -c "from corrnet.checkpoint import export_model; export_model('$best', 'runs/registration/corrnet-registration.pt')"
echo "reproduce_registration.sh: done: runs/registration/corrnet-registration.pt from $best"
