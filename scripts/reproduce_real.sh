#!/usr/bin/env bash
# Reproduce corrnet/pretrained/corrnet-real.pt: six training runs on 2 CPU cores, 3 h 19 min in all
# (docs/training.md#the-shipped-weights). Run 2 is configs/real.yaml; the others override it.
# Needs the real-train SfM pairs in data/real-train/ (docs/training.md#real-training-pairs-from-sharedreal-train).
# SfM is not bit-reproducible, so the best checkpoint's step can differ from the one exported below.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
R=data/real-train
T="$R/statue_of_liberty.hdf5, $R/bonsai_room.hdf5, $R/mary_rose.hdf5"
U="$R/ethiopian_head.hdf5, $R/mold_gold_cape.hdf5, $R/nerf_database.hdf5, $R/kitti_drive.hdf5, $R/lund_street.hdf5, $R/cyprus.hdf5"
export_to() { $PY -c "from corrnet.checkpoint import export_model; export_model('$1', '$2')"; }

for c in statue_of_liberty bonsai_room mary_rose ethiopian_head mold_gold_cape nerf_database kitti_drive \
    lund_street cyprus kitchen sceaux_castle; do
    [[ -f $R/$c.hdf5 ]] || { echo "reproduce_real.sh: error: $R/$c.hdf5 missing (see docs/training.md)" >&2; exit 2; }
done
# Validation file of runs 3-6: sceaux_castle + kitchen.
[[ -f $R/val-sceaux-kitchen.hdf5 ]] ||
    $PY data/merge.py $R/sceaux_castle.hdf5 $R/kitchen.hdf5 --out $R/val-sceaux-kitchen.hdf5

# 1. From the synthetic-only weights, graph heads re-initialised open (3,750 steps, 29 min).
$PY train.py --config configs/finetune.yaml --trainer.max_steps 3750 \
    --data.train "[synthetic, $R/kitchen.hdf5, $R/kitti_drive.hdf5, $R/lund_street.hdf5]" \
    --data.train_weights "[0.6, 0.14, 0.13, 0.13]" --data.val $R/sceaux_castle.hdf5 \
    --trainer.default_root_dir runs/ft1 --trainer.logger.init_args.save_dir runs/ft1 \
    --checkpoint.dirpath runs/ft1/checkpoints
# 2. configs/real.yaml: from run 1's last checkpoint on seven real collections (22 min; best at step 250).
$PY train.py --config configs/real.yaml
export_to runs/real/checkpoints/best-250.ckpt runs/real/run2.pt
# 3. Pixel labels within 2 px, kitchen held out (40 min, 7,442 steps).
$PY train.py --config configs/real.yaml --model.init_weights runs/real/run2.pt \
    --model.lr 2.0e-4 --model.loss.label_px 2.0 --data.train "[synthetic, $T, $U]" \
    --data.train_weights "[0.3, 0.15, 0.15, 0.07, 0.07, 0.07, 0.07, 0.04, 0.04, 0.04]" \
    --data.val $R/val-sceaux-kitchen.hdf5 --checkpoint.save_top_k 5 --trainer.max_time 00:00:40:00 \
    --trainer.default_root_dir runs/lpx --trainer.logger.init_args.save_dir runs/lpx --checkpoint.dirpath runs/lpx/checkpoints
# 4. From run 3's last checkpoint with kitchen back in the mix (25 min, 5,583 steps).
$PY train.py --config configs/real.yaml --model.init_weights runs/lpx/checkpoints/last.ckpt \
    --model.lr 2.0e-4 --model.loss.label_px 2.0 --data.train "[synthetic, $T, $R/kitchen.hdf5, $U]" \
    --data.train_weights "[0.23, 0.15, 0.15, 0.07, 0.07, 0.07, 0.07, 0.07, 0.04, 0.04, 0.04]" \
    --data.val $R/val-sceaux-kitchen.hdf5 --checkpoint.save_top_k 3 --trainer.max_time 00:00:25:00 \
    --trainer.default_root_dir runs/lpx2 --trainer.logger.init_args.save_dir runs/lpx2 --checkpoint.dirpath runs/lpx2/checkpoints
# 5. From run 4's last checkpoint, positives within 1 px (45 min, 9,243 steps).
$PY train.py --config configs/real.yaml --model.init_weights runs/lpx2/checkpoints/last.ckpt \
    --model.lr 2.0e-4 --model.loss.label_px 1.0 --data.train "[synthetic, $T, $R/kitchen.hdf5, $U]" \
    --data.train_weights "[0.23, 0.15, 0.15, 0.07, 0.07, 0.07, 0.07, 0.07, 0.04, 0.04, 0.04]" \
    --data.val $R/val-sceaux-kitchen.hdf5 --checkpoint.save_top_k 3 --trainer.max_time 00:00:45:00 \
    --trainer.default_root_dir runs/lpx1 --trainer.logger.init_args.save_dir runs/lpx1 --checkpoint.dirpath runs/lpx1/checkpoints
# 6. From run 5's last checkpoint, batches of 4 pairs x 2000 matches, learning rate 1.5e-4 (38 min, 6,262 steps).
$PY train.py --config configs/real.yaml --model.init_weights runs/lpx1/checkpoints/last.ckpt \
    --model.lr 1.5e-4 --model.loss.label_px 1.0 --data.train "[synthetic, $T, $R/kitchen.hdf5, $U]" \
    --data.train_weights "[0.23, 0.15, 0.15, 0.07, 0.07, 0.07, 0.07, 0.07, 0.04, 0.04, 0.04]" \
    --data.batch_size 4 --data.num_matches 2000 \
    --data.val $R/val-sceaux-kitchen.hdf5 --checkpoint.save_top_k 3 --trainer.max_time 00:00:38:00 \
    --trainer.default_root_dir runs/lpx3 --trainer.logger.init_args.save_dir runs/lpx3 --checkpoint.dirpath runs/lpx3/checkpoints
# The shipped weights are run 6's checkpoint at step 4,500, chosen by the rule in docs/training.md#selection.
export_to runs/lpx3/checkpoints/best-4500.ckpt runs/lpx3/corrnet-real.pt
echo "reproduce_real.sh: done: runs/lpx3/corrnet-real.pt (eval.py --checkpoint it)"
