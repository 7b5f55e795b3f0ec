#!/usr/bin/env bash
# Issue 15's experiment on the digits task: generators trained on the collected weights, on
# what their weights do, and on both, with one wall-clock budget each; step 0 of each against
# retrieval and the oracles on every held-out concept; the scaling of the weights objective
# with the number of training concepts.
#
#   tools/experiment_objectives_digits.sh BENCH [WORK]
#
# BENCH is a finished `dnw benchmark --task digits --preset small --out BENCH` (its base and
# dataset are reused); WORK defaults to runs/objectives-digits. Resumable: rerun it.
set -euo pipefail
BENCH=$1
WORK=${2:-runs/objectives-digits}
FIT_MINUTES=${FIT_MINUTES:-9}
SCALE_MINUTES=${SCALE_MINUTES:-$FIT_MINUTES}
DNW=${DNW:-.venv/bin/dnw}
export DNW_PLUGINS=
mkdir -p "$WORK"
INITS=scratch,standard,mean,nearest,nearest-param,interpolate,generated

fit() {  # name, then fit's options
    local name=$1; shift
    $DNW fit --data "$BENCH/dataset" --out "$WORK/gen-$name" --prediction sample --batch-size 64 \
        --val-every 250 "$@"
}
fit weights --max-minutes "$FIT_MINUTES"
fit task --objective task --base "$BENCH/base" --task-concepts 4 --task-batch 16 --max-minutes "$FIT_MINUTES"
fit both --objective both --base "$BENCH/base" --task-concepts 4 --task-batch 16 --max-minutes "$FIT_MINUTES"
# the weights generator, then half its budget again on the task loss
fit weights-then-task --objective task --base "$BENCH/base" --task-concepts 4 --task-batch 16 \
    --init-from "$WORK/gen-weights" --max-minutes "$(python3 -c "print($FIT_MINUTES / 2)")"
for n in 25 50 100; do
    fit "weights-$n" --concepts "$n" --max-minutes "$SCALE_MINUTES"
done

for name in weights task both weights-then-task weights-25 weights-50 weights-100; do
    inits=generated
    case $name in weights|task|both|weights-then-task) inits=$INITS,blend,fine-generated ;; esac
    $DNW benchmark --task digits --preset small --step0-only --out "$WORK/step0-$name" \
        --base "$BENCH/base" --data "$BENCH/dataset" --generator "$WORK/gen-$name" --inits "$inits"
done
