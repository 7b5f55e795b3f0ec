#!/usr/bin/env bash
# Issue 15's experiment on the image-translation small preset: does a generator trained on what
# its weights do beat retrieval, on held-out concepts of every kind?
#
#   tools/experiment_objectives.sh [WORK]      (default WORK=runs/objectives; resumable: rerun it)
#
# 1. A weight dataset of every single-edit training concept except four whole families, which
#    stay unseen by the dataset and every generator (leave-one-family-out: sepia, exposure,
#    emboss, vignette); the base is the shipped pack's (it saw them, as E2GAN's base would).
# 2. Four generators with the same wall-clock budget (FIT_MINUTES each): --objective weights
#    (the paper's; the shipped recipe), task, both, and weights-then-task (half and half).
# 3. Step 0 of every generator and of the reference inits (standard, mean, nearest by prompt,
#    nearest by true parameter and interpolation between the bracketing values, both oracles)
#    on every held-out concept: interpolation, extrapolation, composition and the four families.
set -euo pipefail
WORK=${1:-runs/objectives}
FIT_MINUTES=${FIT_MINUTES:-25}
FAMILIES=${FAMILIES:-sepia,exposure,emboss,vignette}
DNW=${DNW:-.venv/bin/dnw}
PACK=$(.venv/bin/python -c "import denoised_weights.pretrained as p; print(p.SHIPPED)")
export DNW_PLUGINS=
T="-T exclude_families=$FAMILIES"
mkdir -p "$WORK"

$DNW collect --base "$PACK/base" --out "$WORK/dataset" --preset small --max-parts 1 --checkpoints 3 \
    --max-steps 80 --eval-every 20 --interval 10 --workers 2 $T

fit() {  # name, then fit's options
    local name=$1; shift
    $DNW fit --data "$WORK/dataset" --out "$WORK/gen-$name" --prediction sample --val-every 250 "$@"
}
fit weights --max-minutes "$FIT_MINUTES"
fit task --objective task --base "$PACK/base" --task-concepts 2 --task-batch 8 --max-minutes "$FIT_MINUTES" $T
fit both --objective both --base "$PACK/base" --task-concepts 2 --task-batch 8 --max-minutes "$FIT_MINUTES" $T
fit half-weights --max-minutes "$(.venv/bin/python -c "print($FIT_MINUTES / 2)")"
fit weights-then-task --objective task --base "$PACK/base" --task-concepts 2 --task-batch 8 --lr 3e-4 \
    --init-from "$WORK/gen-half-weights" --max-minutes "$(.venv/bin/python -c "print($FIT_MINUTES / 2)")" $T

for name in weights task both weights-then-task; do
    $DNW benchmark --preset small --step0-only --out "$WORK/step0-$name" --base "$PACK/base" \
        --data "$WORK/dataset" --generator "$WORK/gen-$name" $T \
        --inits scratch,standard,mean,nearest,nearest-param,interpolate,generated
done
