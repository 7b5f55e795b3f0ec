#!/usr/bin/env bash
# A shorter form of experiment_objectives.sh that fits a 2-core afternoon: the shipped pack's
# generator (7,500 steps of the paper's weights objective on the 191 single-edit training
# concepts) continued on the task loss for FIT_MINUTES, against the pack's own generator and
# retrieval at step 0 on every held-out concept (interpolation, extrapolation, composition).
#
#   tools/experiment_task_loss_pack.sh [WORK]   (default WORK=runs/task-loss-pack; resumable)
#
# The weight dataset is the pack's recipe again (make pack's collect, same base): retrieval
# and the oracles read it, and fit takes its validation checkpoints from it.
set -euo pipefail
WORK=${1:-runs/task-loss-pack}
FIT_MINUTES=${FIT_MINUTES:-15}
INITS=${INITS:-nearest,nearest-param,generated}
DNW=${DNW:-.venv/bin/dnw}
PACK=$(.venv/bin/python -c "import denoised_weights.pretrained as p; print(p.SHIPPED)")
export DNW_PLUGINS=
mkdir -p "$WORK"

$DNW collect --base "$PACK/base" --out "$WORK/dataset" --preset small --max-parts 1 --checkpoints 3 \
    --max-steps 80 --eval-every 20 --interval 10 --workers 2
$DNW fit --data "$WORK/dataset" --out "$WORK/gen-pack-then-task" --prediction sample --val-every 250 \
    --objective task --base "$PACK/base" --task-concepts 2 --task-batch 8 --lr 3e-4 \
    --init-from "$PACK/generator" --max-minutes "$FIT_MINUTES"
$DNW benchmark --preset small --step0-only --out "$WORK/step0-pack" --base "$PACK/base" \
    --data "$WORK/dataset" --generator "$PACK/generator" --inits "$INITS"
$DNW benchmark --preset small --step0-only --out "$WORK/step0-pack-then-task" --base "$PACK/base" \
    --data "$WORK/dataset" --generator "$WORK/gen-pack-then-task" --inits generated
.venv/bin/python tools/compare_step0.py "$WORK/step0-pack" "$WORK/step0-pack-then-task"
