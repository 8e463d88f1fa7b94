#!/usr/bin/env bash
# Measure the whole pipeline on real footage: every video in ../shared/media/video (or $MEDIA) is onboarded as a
# presenter next to the demo presenter in a scratch clone, `dvc repro` runs up to $TARGET (default: evaluate), and
# one table of the held-out metrics per presenter is printed (also written to $WORK/real_clips.md).
#
#   make real-clips                          # everything, ~45 min on 2 CPU cores with the 75 s demo (GAN per presenter)
#   TARGET=crossdrive make real-clips        # up to the lip models only, ~15 min with the 300 s demo
#   TARGET=crossdrive ENCODER=mel WORK=/tmp/rc-mel make real-clips   # the log-mel baseline on the same clips
#
# After the pipeline, one lip model per real presenter is trained without that presenter (leave-one-out) and
# stage crossdrive drives every other face with that presenter's whole recording (reports/crossdrive_loo/); one more
# lip model, trained on the demo alone, measures each recording's own timing (reports/crossdrive_demo_only/).
#
# The scratch clone (default /tmp/talkinghead-real-clips) keeps its data, reports/index.html and mlflow.db; run the
# script again to resume (DVC skips what is up to date). Nothing is written to this checkout. With a TARGET before
# evaluate, the demo's later columns show the numbers committed with the clone, not a new run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MEDIA=$(cd "${MEDIA:-$ROOT/../shared/media/video}" 2>/dev/null && pwd) || {
  echo "error: ${MEDIA:-$ROOT/../shared/media/video}: no such folder (set MEDIA to a folder of presenter videos)" >&2
  exit 2
}
WORK=${WORK:-/tmp/talkinghead-real-clips}
TARGET=${TARGET:-evaluate}

if [ ! -d "$WORK/.git" ]; then
  git clone -q "$ROOT" "$WORK"
fi
# the checkout's venv (not when the script runs from inside the scratch clone itself: that would link .venv to itself)
[ "$(cd "$WORK" && pwd -P)" = "$(cd "$ROOT" && pwd -P)" ] || ln -sfn "$ROOT/.venv" "$WORK/.venv"
cd "$WORK"
if [ -n "${ENCODER:-}" ]; then  # align.encoder of the scratch clone (whisper | mel | phones | whisper+phones)
  sed -i "s/^  encoder: [a-z+]*/  encoder: $ENCODER/" params.yaml
fi
# The clone's own sources, not the checkout the venv's editable install points at.
export PYTHONPATH="$WORK/src"
TH="$WORK/.venv/bin/talkinghead"

for video in "$MEDIA"/*.mp4 "$MEDIA"/*.mov "$MEDIA"/*.mkv "$MEDIA"/*.webm; do
  [ -f "$video" ] || continue
  # presenter names: lower case letters, digits and underscores, from the file name
  name=$(basename "${video%.*}" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9_\n' '_')
  [ -e "data/raw/$name.dvc" ] && continue  # onboarded by an earlier run
  "$TH" add-presenter "$name" "$video" >/dev/null
  echo "added presenter $name <- $video"
done

"$TH" repro "$TARGET"
"$TH" repro crossdrive >/dev/null
"$TH" repro predict_lip >/dev/null  # each presenter's own held-out tail (r, AV offset): the table's lip columns

# Leave-one-out: for every real presenter S a lip model trained on all the others; S's whole recording drives them.
PY="$WORK/.venv/bin/python"
presenters=$("$PY" -c 'import yaml; print(" ".join(yaml.safe_load(open("params.yaml"))["presenters"]))')
mkdir -p models/lip/loo
for s in $presenters; do
  [ -e "data/raw/$s/visemes.parquet" ] && continue  # the generated demo presenter is not a real speaker
  [ models/lip/loo/$s.pt -nt models/lip/lip.pt ] && continue  # trained by an earlier run of this script
  others=$(printf '%s\n' $presenters | grep -vx "$s" | tr '\n' ' ')
  "$PY" -m talkinghead.stages.train_lip --presenters $others --out "models/lip/loo/$s.pt" --no-track --no-reports \
    2>&1 | tail -1
done
"$PY" -m talkinghead.stages.crossdrive --speaker-checkpoints models/lip/loo --out reports/crossdrive_loo \
  --no-track >/dev/null
# The clips' own timing: a lip model trained on the generated demo alone (its voices, a face that follows their phones)
# has never heard a real recording, so where its best lag lands on a clip is that recording's AV offset (or its
# speaker's lead), not something learnt from it (reports/crossdrive_demo_only/).
if [ -e data/raw/demo/visemes.parquet ]; then
  mkdir -p models/lip/demo_only
  [ models/lip/demo_only.pt -nt models/lip/lip.pt ] ||
    "$PY" -m talkinghead.stages.train_lip --presenters demo --out models/lip/demo_only.pt --no-track --no-reports \
      2>&1 | tail -1
  for s in $presenters; do [ -e "data/raw/$s/visemes.parquet" ] || ln -sfn ../demo_only.pt "models/lip/demo_only/$s.pt"; done
  "$PY" -m talkinghead.stages.crossdrive --speaker-checkpoints models/lip/demo_only --out reports/crossdrive_demo_only \
    --no-track >/dev/null
fi
"$TH" report >/dev/null
"$WORK/.venv/bin/python" - "$WORK" <<'EOF' """One row per presenter from the reports the stages wrote (missing stages print as '-')."""
import json
import sys
from pathlib import Path

import yaml

work = Path(sys.argv[1])
presenters = yaml.safe_load((work / "params.yaml").read_text())["presenters"]


def load(stage, name):
    path = work / "reports" / stage / name / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def cell(value, fmt):
    return "-" if value is None else format(value, fmt)


train = work / "reports" / "lip" / "train_metrics.json"
val = json.loads(train.read_text()).get("val_loss_relative_to_static", {}) if train.exists() else {}
print("| presenter | held-out frames | sync: applied (measured lag, r) | fit NME / lip NME % | lip model: val / static | "
      "r | AV offset | LVE / static | ridge: val / static | LVE / static | GAN mouth PSNR (composite) | "
      "eval LMD (static) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for name in presenters:
    sync, fit, lip, gan, ev = (load(stage, name) for stage in ("sync", "fit", "lip", "gan", "eval"))
    ridge = (lip or {}).get("baseline_ridge")
    static_lve = lip["baseline_static_mean"]["lve_mm2"] if lip else None
    row = [name, cell(lip and lip["heldout_frames"], "d"),
           f"{cell(sync and sync['offset_frames'], '+d')} ({cell(sync and sync['measured_lag'], '+d')}, "
           f"{cell(sync and sync['r_at_lag'], '+.2f')})",
           f"{cell(fit and fit['nme_pct'], '.2f')} / {cell(fit and fit['lip_nme_pct'], '.2f')}",
           cell(val.get(name), ".2f"), cell(lip and lip["model"]["mouth_opening_r"], "+.2f"),
           cell(lip and lip["model"]["av_offset"], "d"), cell(lip and lip["model"]["lve_mm2"] / static_lve, ".2f"),
           cell(ridge and ridge["validation_ratio"], ".2f"), cell(ridge and ridge["lve_mm2"] / static_lve, ".2f"),
           f"{cell(gan and gan['gan_mouth_psnr'], '.1f')} ({cell(gan and gan['composite_mouth_psnr'], '.1f')})",
           f"{cell(ev and ev['model']['lmd'], '.2f')} ({cell(ev and ev['baseline_static']['lmd'], '.2f')})"]
    print("| " + " | ".join(row) + " |")
print("\nsync: the footage's audio offset applied before align, frames (+ = sound late), and the sync detector's best "
      "lag and r on the frames before the held-out tail (talkinghead.sync_detector). val / static: the training "
      "objective on the validation slice (before the held-out tail) over a still face's "
      "(< 1 = an audio cue that beats a still face). LVE / static: lip vertex error on the held-out tail over the still "
      "(training-mean) face's (< 1 = better). ridge: a linear regression from the same features fitted on that "
      "presenter alone (talkinghead.lip.ridge).")
EOF
echo
echo "Cross-speaker lip sync, shared lip model on held-out tails:"
"$PY" -m talkinghead.stages.crossdrive --show reports/crossdrive/metrics.json
echo
echo "Cross-speaker lip sync, leave-one-out lip models on whole recordings:"
"$PY" -m talkinghead.stages.crossdrive --show reports/crossdrive_loo/metrics.json
if [ -e reports/crossdrive_demo_only/metrics.json ]; then
  echo
  echo "Each recording's own timing: a lip model trained on the demo alone, driven by each whole recording:"
  "$PY" -m talkinghead.stages.crossdrive --show reports/crossdrive_demo_only/metrics.json
fi
echo "report: $WORK/reports/index.html"
