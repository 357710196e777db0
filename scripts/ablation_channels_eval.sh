#!/usr/bin/env bash
# Scores the runs of scripts/ablation_channels.sh at equal budget: for each run the checkpoint of
# the largest step that all three reached (no choice among checkpoints), on the held-out
# collections, beside the shipped weights and the baselines; prints mAP5/10/20 per collection.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
R=${R:-data/real-train}
OUT=${OUT:-runs/channels}
RUNS="ratio-mutual sift-geometry ratio-free"
step=$(for r in $RUNS; do ls "$OUT/$r/checkpoints" | sed -n 's/^best-\([0-9]*\)\.ckpt$/\1/p' | sort -n | tail -1; done | sort -n | head -1)
echo "equal budget: step $step"
for c in sceaux_castle kitchen tum_desk; do
    ev() {  # name, extra args
        $PY -m corrnet eval --data "$R/$c.hdf5" --workers 2 --quiet --overwrite \
            --out "$OUT/eval/$c/$1" "${@:2}" > /dev/null
    }
    ev baselines --methods ratio+poselib poselib
    ev shipped --methods corrnet corrnet+poselib
    for r in $RUNS; do
        ev "$r" --checkpoint "$OUT/$r/checkpoints/best-$step.ckpt" --methods corrnet corrnet+poselib
    done
done
$PY - "$OUT/eval" <<'PYEOF'
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
rows = [("shipped", "corrnet+poselib"), ("shipped", "corrnet"), ("ratio-mutual", "corrnet+poselib"),
        ("sift-geometry", "corrnet+poselib"), ("ratio-free", "corrnet+poselib"),
        ("ratio-mutual", "corrnet"), ("sift-geometry", "corrnet"), ("ratio-free", "corrnet"),
        ("baselines", "ratio+poselib"), ("baselines", "poselib")]
cols = ["sceaux_castle", "kitchen", "tum_desk"]
print("| weights | method | " + " | ".join(cols) + " |")
print("|---|---|" + "---|" * len(cols))
for run, method in rows:
    cells = []
    for c in cols:
        m = json.loads((root / c / run / "report.json").read_text())["methods"][method]
        cells.append("/".join(f"{100 * m[k]:.1f}" for k in ("mAP5", "mAP10", "mAP20")))
    print(f"| {run} | `{method}` | " + " | ".join(cells) + " |")
PYEOF
