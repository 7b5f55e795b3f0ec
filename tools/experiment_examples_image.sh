#!/usr/bin/env bash
# Issue 23 on image translation: the generator that reads the new concept's example pairs
# (trained on the task loss over 12,000 sampled concepts) against retrieval by prompt and by
# examples (embedded, and scored by the task loss on the examples), the dataset mean, the
# standard init, the shipped pack's text-conditioned generator and the oracles, at step 0 on
# every held-out concept (interpolation, extrapolation, composition: 108). Then, in order:
#   scaling   example generators after 300 / 1,000 / 3,000 draws (the scaling curve)
#   text      the text- and example+text-conditioned generators on the same task loss
#   family    leave-family-out: four edit families removed from the dataset and the fits
#   bench     dnw benchmark steps-to-target, 8 held-out concepts x 2 seeds
# Run alone on the machine; every stage resumes when rerun (finished stages are skipped).
# UNTIL=scaling|text|family stops after that stage.
#
#   tools/experiment_examples_image.sh [WORK]   (default WORK=runs/examples-image)
set -euo pipefail
WORK=${1:-runs/examples-image}
CONCEPTS=${CONCEPTS:-12000}  # draws; values are rounded, so ~11,000 distinct concepts
DNW=${DNW:-.venv/bin/dnw}
PY=${PY:-.venv/bin/python}
PACK=$($PY -c "import denoised_weights.pretrained as p; print(p.SHIPPED)")
export DNW_PLUGINS=${DNW_PLUGINS-}
mkdir -p "$WORK"

# the README's collection recipe from the pack's base: 191 single-edit concepts
$DNW collect --base "$PACK/base" --out "$WORK/dataset" --preset small --max-parts 1 \
    --checkpoints 3 --max-steps 80 --eval-every 20 --interval 10 --workers 2
fit() {  # fit OUT DATA DRAWS MODE [OPTIONS...]: the task-loss fit over DRAWS sampled concepts
  local out=$1 data=$2 n=$3 mode=$4; shift 4
  [ -f "$out/generator.json" ] || OMP_NUM_THREADS=2 $DNW fit --data "$data" --out "$out" \
      --prediction sample --objective task --base "$PACK/base" --conditioning "$mode" \
      --task-concepts 4 --task-batch 8 --max-steps $((n / 4)) --val-every 100000 "$@"
}
step0() {  # step0 OUT DATA GENERATOR INITS [OPTIONS...]
  local out=$1 data=$2 gen=$3 inits=$4; shift 4
  [ -f "$out/step0.json" ] || $DNW benchmark --preset small --step0-only --workers 2 \
      --out "$out" --base "$PACK/base" --data "$data" --generator "$gen" --inits "$inits" "$@"
}
fit "$WORK/gen-examples" "$WORK/dataset" "$CONCEPTS" examples
step0 "$WORK/step0" "$WORK/dataset" "$PACK/generator" \
    standard,generated,mean,nearest,nearest-param,interpolate,scored-examples
step0 "$WORK/step0-examples" "$WORK/dataset" "$WORK/gen-examples" generated,nearest-examples
$PY tools/compare_step0.py "$WORK/step0" examples="$WORK/step0-examples" \
    nearest-examples="$WORK/step0-examples:nearest-examples" --refs nearest-examples \
    --json "$WORK/compare.json" | tee "$WORK/compare.md"
echo "STAGE_DONE main: $WORK/compare.md"

# scaling: the same fit stopped after fewer sampled concepts
for n in 300 1000 3000; do
  fit "$WORK/gen-examples-$n" "$WORK/dataset" $n examples
  step0 "$WORK/step0-examples-$n" "$WORK/dataset" "$WORK/gen-examples-$n" generated
done
$PY tools/compare_step0.py "$WORK/step0" \
    $(for n in 300 1000 3000; do echo "examples-$n=$WORK/step0-examples-$n"; done) \
    examples-$CONCEPTS="$WORK/step0-examples" --json "$WORK/scaling.json" > "$WORK/scaling.md"
echo "STAGE_DONE scaling: $WORK/scaling.md"
[ "${UNTIL:-}" = scaling ] && exit 0

# text: prompt-only and prompt+examples generators on the same task loss and draws
for mode in text both; do
  fit "$WORK/gen-$mode" "$WORK/dataset" "$CONCEPTS" $mode
  step0 "$WORK/step0-$mode" "$WORK/dataset" "$WORK/gen-$mode" generated
done
$PY tools/compare_step0.py "$WORK/step0" examples="$WORK/step0-examples" \
    text-task="$WORK/step0-text" both="$WORK/step0-both" \
    nearest-examples="$WORK/step0-examples:nearest-examples" --refs nearest-examples \
    --json "$WORK/compare.json" > "$WORK/compare.md"
echo "STAGE_DONE text: $WORK/compare.md"
[ "${UNTIL:-}" = text ] && exit 0

# family: four edit families out of the dataset and of everything the fits sample. The base
# is the pack's; the dataset is the main one's concepts without those families (the same
# LoRAs a collection with the option would make: per-concept seeds), checked by dnw collect.
FAMILIES=${FAMILIES:-sepia,emboss,invert,pixelate}
LFO=$WORK/family
if [ ! -f "$LFO/dataset/README.md" ]; then
  mkdir -p "$LFO/dataset/shards" "$LFO/dataset/manifest"
  $PY - "$WORK/dataset" "$LFO/dataset" "$FAMILIES" <<'PY'
import json, shutil, sys
from pathlib import Path
from denoised_weights.pipeline.context import resolve_task
src, dst, families = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
task = resolve_task("image-translation", exclude_families=families)
keep = {c.id for c in task.concepts("train")}
config = json.loads((src / "dataset.json").read_text())
config["task_options"] = dict(task.options)
(dst / "dataset.json").write_text(json.dumps(config, indent=2) + "\n")
for frag in (src / "manifest").glob("*.json"):
    if frag.stem in keep:
        shutil.copy(frag, dst / "manifest" / frag.name)
        shutil.copy(src / "shards" / f"{frag.stem}.safetensors", dst / "shards")
PY
  $DNW collect --base "$PACK/base" --out "$LFO/dataset" --preset small --max-parts 1 \
      --checkpoints 3 --max-steps 80 --eval-every 20 --interval 10 --workers 2 \
      -T "exclude_families=$FAMILIES"
fi
# the pack's recipe (make pack) on this dataset: the text-conditioned weights objective
[ -f "$LFO/gen-weights/generator.json" ] || OMP_NUM_THREADS=2 $DNW fit --data "$LFO/dataset" \
    --out "$LFO/gen-weights" --max-steps 7500 --prediction sample
fit "$LFO/gen-examples" "$LFO/dataset" "$CONCEPTS" examples
step0 "$LFO/step0" "$LFO/dataset" "$LFO/gen-weights" \
    standard,generated,mean,nearest,nearest-param,interpolate,scored-examples \
    -T "exclude_families=$FAMILIES"
step0 "$LFO/step0-examples" "$LFO/dataset" "$LFO/gen-examples" generated,nearest-examples \
    -T "exclude_families=$FAMILIES"
$PY tools/compare_step0.py "$LFO/step0" examples="$LFO/step0-examples" \
    nearest-examples="$LFO/step0-examples:nearest-examples" --refs nearest-examples \
    --json "$LFO/compare.json" > "$LFO/compare.md"
echo "STAGE_DONE family: $LFO/compare.md"
[ "${UNTIL:-}" = family ] && exit 0

# bench: steps to scratch's final L1, the example generator against both retrievals
[ -f "$WORK/bench/benchmark.json" ] || $DNW benchmark --preset small --workers 2 \
    --out "$WORK/bench" --base "$PACK/base" --data "$WORK/dataset" \
    --generator "$WORK/gen-examples" --seeds 2 \
    --inits scratch,standard,generated,mean,nearest,scored-examples
echo "EXPERIMENT_DONE: $WORK/compare.md $WORK/scaling.md $LFO/compare.md $WORK/bench"
