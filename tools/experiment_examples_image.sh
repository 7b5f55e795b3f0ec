#!/usr/bin/env bash
# Issue 23 on image translation: the generator that reads the new concept's example pairs
# (trained on the task loss over 12,000 sampled concepts) against retrieval by prompt and by
# examples (embedded, and scored by the task loss on the examples), the dataset mean, the
# standard init, the shipped pack's text-conditioned generator and the oracles, at step 0 on
# every held-out concept (interpolation, extrapolation, composition: 108).
# Run alone on the machine; every stage resumes when rerun (finished stages are skipped).
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
[ -f "$WORK/gen-examples/generator.json" ] || OMP_NUM_THREADS=2 $DNW fit --data "$WORK/dataset" \
    --out "$WORK/gen-examples" --prediction sample --objective task --base "$PACK/base" \
    --conditioning examples --task-concepts 4 --task-batch 8 --max-steps $((CONCEPTS / 4)) \
    --val-every 100000
[ -f "$WORK/step0/step0.json" ] || $DNW benchmark --preset small --step0-only --workers 2 \
    --out "$WORK/step0" --base "$PACK/base" --data "$WORK/dataset" --generator "$PACK/generator" \
    --inits standard,generated,mean,nearest,nearest-param,interpolate,scored-examples
[ -f "$WORK/step0-examples/step0.json" ] || $DNW benchmark --preset small --step0-only \
    --workers 2 --out "$WORK/step0-examples" --base "$PACK/base" --data "$WORK/dataset" \
    --generator "$WORK/gen-examples" --inits generated,nearest-examples
$PY tools/compare_step0.py "$WORK/step0" examples="$WORK/step0-examples" \
    nearest-examples="$WORK/step0-examples:nearest-examples" --refs nearest-examples \
    --json "$WORK/compare.json" | tee "$WORK/compare.md"
echo "EXPERIMENT_DONE: $WORK/compare.md"
