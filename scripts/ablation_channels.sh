#!/usr/bin/env bash
# Equal-budget ablation of the input channels (docs/channels.md): three fine-tunes of the shipped
# weights (corrnet/pretrained/corrnet-real.pt) with the same data, seed, steps and settings, that
# differ only in model.net.side_info:
#   ratio-mutual   [ratio, mutual]                      (the shipped weights' channels)
#   sift-geometry  [ratio, mutual, log_scale_ratio, orientation, descriptor_distance]
#   ratio-free     [log_scale_ratio, orientation]       (any OpenCV detector gives these)
# New channels start at zero weight (corrnet.checkpoint.adapt_input_channels). Held out of
# training: sceaux_castle, kitchen, tum_desk (val-holdout.hdf5). Needs data/real-train/*.hdf5
# prepared with data/prepare.py --sfm (docs/training.md). STEPS (default 3000) per run, at most MAX_TIME (default 75 min); the three
# runs go in parallel, one thread each.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
R=${R:-data/real-train}
STEPS=${STEPS:-3000}
OUT=${OUT:-runs/channels}
for f in kitti_drive lund_street cyprus office_lounge fox_room nerf_database mary_rose ethiopian_head \
         sceaux_castle kitchen tum_desk; do
    [ -f "$R/$f.hdf5" ] || { echo "ablation_channels.sh: error: $R/$f.hdf5 missing (docs/training.md)" >&2; exit 2; }
done
[ -f "$R/val-holdout.hdf5" ] || $PY data/merge.py "$R/sceaux_castle.hdf5" "$R/kitchen.hdf5" \
    "$R/tum_desk.hdf5" --out "$R/val-holdout.hdf5"
TRAIN="[synthetic, $R/kitti_drive.hdf5, $R/lund_street.hdf5, $R/cyprus.hdf5, $R/office_lounge.hdf5, \
$R/fox_room.hdf5, $R/nerf_database.hdf5, $R/mary_rose.hdf5, $R/ethiopian_head.hdf5]"
run() {  # name, channels
    OMP_NUM_THREADS=1 $PY train.py --config configs/real.yaml \
        --model.net.side_info "$2" --model.init_weights corrnet/pretrained/corrnet-real.pt \
        --model.reset_graph_heads false --model.lr 1.5e-4 --model.loss.label_px 1.0 \
        --data.train "$TRAIN" --data.train_weights "[0.3, 0.0875, 0.0875, 0.0875, 0.0875, 0.0875, 0.0875, 0.0875, 0.0875]" \
        --data.batch_size 4 --data.num_matches 2000 --data.val "$R/val-holdout.hdf5" \
        --trainer.max_steps "$STEPS" --trainer.max_time "${MAX_TIME:-00:01:15:00}" --checkpoint.save_top_k -1 \
        --trainer.default_root_dir "$OUT/$1" --trainer.logger.init_args.save_dir "$OUT/$1" \
        --checkpoint.dirpath "$OUT/$1/checkpoints" > "$OUT/$1.log" 2>&1
}
mkdir -p "$OUT"
run ratio-mutual "[ratio, mutual]" &
run sift-geometry "[ratio, mutual, log_scale_ratio, orientation, descriptor_distance]" &
run ratio-free "[log_scale_ratio, orientation]" &
wait
