#!/bin/bash
# Issue 23's first measurement on digits: text-, example- and example+text-conditioned
# generators trained on the task loss at one wall-clock budget each (run alone on the
# machine), against the weights-objective generator and the reference inits, step 0 on all 54
# held-out concepts. Every stage resumes when rerun.
#   FIT_MINUTES=5 tools/experiment_examples_digits.sh runs/examples-digits
set -e
R=${1:?usage: $0 OUT_DIR}
M=${FIT_MINUTES:-5}
D=${DNW:-dnw}
export DNW_PLUGINS=${DNW_PLUGINS-}
# base, the 211-concept dataset, the weights generator and the references' step-0 table
OMP_NUM_THREADS=1 $D benchmark --task digits --preset small --out $R/bench --step0-only --workers 2 \
   --inits standard,generated,mean,nearest,nearest-param,interpolate
for mode in text examples both; do
  OMP_NUM_THREADS=2 $D fit --data $R/bench/dataset --out $R/gen-$mode --objective task \
     --base $R/bench/base --prediction sample --max-steps 100000 --max-minutes $M --val-every 250 \
     --conditioning $mode
done
for mode in text examples both; do
  inits=generated; [ $mode = examples ] && inits=generated,nearest-examples
  OMP_NUM_THREADS=1 $D benchmark --task digits --preset small --out $R/step0-$mode --step0-only \
     --workers 2 --base $R/bench/base --data $R/bench/dataset --generator $R/gen-$mode --inits $inits
done
python "$(dirname "$0")/compare_step0.py" $R/bench text-task=$R/step0-text examples=$R/step0-examples \
   both=$R/step0-both nearest-examples=$R/step0-examples:nearest-examples --refs nearest-examples \
   --json $R/compare.json | tee $R/compare.md
