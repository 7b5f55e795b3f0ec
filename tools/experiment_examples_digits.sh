#!/bin/bash
# Issue 23 on digits: does a generator that reads the new concept's examples beat retrieval?
# Run alone on the machine; every stage resumes when rerun (finished stages are skipped).
#
#   tools/experiment_examples_digits.sh runs/examples-digits
#
# A. the standard split (interpolation, extrapolation, composition: 54 held-out concepts):
#    base, the 211-concept weight dataset, the weights-objective generator and the reference
#    inits' step-0 table (standard, mean, retrieval by prompt, the oracles); then
#    example-conditioned generators trained on the task loss over 300 / 1,000 / 3,000 / 10,000
#    sampled concepts (the scaling curve), the text- and example+text-conditioned ones at
#    10,000, and retrieval by examples (embedded, and scored by the task loss on the examples).
# B. leave-family-out: four transformation families (rotate, shear, blur, invert) removed from
#    everything the base, the dataset and the generators see; the same at 10,000 concepts.
set -e
R=${1:?usage: $0 OUT_DIR}
D=${DNW:-dnw}
FAMILIES=${FAMILIES:-rotate,shear,blur,invert}
export DNW_PLUGINS=${DNW_PLUGINS-}
TOOLS="$(dirname "$0")"

fit() {  # fit OUT DATA BASE CONCEPTS MODE [TASK_OPTS...]: task-loss fit over CONCEPTS draws
  local out=$1 data=$2 base=$3 n=$4 mode=$5; shift 5
  [ -f "$out/generator.json" ] && return 0
  OMP_NUM_THREADS=2 $D fit --data "$data" --out "$out" --objective task --base "$base" \
     --prediction sample --task-concepts 4 --max-steps $((n / 4)) --val-every 100000 \
     --conditioning "$mode" "$@"
}
step0() {  # step0 OUT BENCH GENERATOR INITS [TASK_OPTS...]
  local out=$1 bench=$2 gen=$3 inits=$4; shift 4
  [ -f "$out/step0.json" ] && return 0
  OMP_NUM_THREADS=1 $D benchmark --task digits --preset small --out "$out" --step0-only \
     --workers 2 --base "$bench/base" --data "$bench/dataset" --generator "$gen" --inits "$inits" "$@"
}

for split in A B; do
  S=$R/$split; opts=(); [ $split = B ] && opts=(-T "exclude_families=$FAMILIES")
  [ -f "$S/bench/step0.json" ] || OMP_NUM_THREADS=1 $D benchmark --task digits --preset small \
     --out "$S/bench" --step0-only --workers 2 "${opts[@]}" \
     --inits standard,generated,mean,nearest,nearest-param,interpolate,scored-examples
  sizes="10000"; [ $split = A ] && sizes="300 1000 3000 10000"
  for n in $sizes; do
    fit "$S/gen-examples-$n" "$S/bench/dataset" "$S/bench/base" $n examples "${opts[@]}"
    inits=generated; [ $n = 10000 ] && inits=generated,nearest-examples
    step0 "$S/step0-examples-$n" "$S/bench" "$S/gen-examples-$n" $inits "${opts[@]}"
  done
  for mode in text both; do
    fit "$S/gen-$mode-10000" "$S/bench/dataset" "$S/bench/base" 10000 $mode "${opts[@]}"
    step0 "$S/step0-$mode-10000" "$S/bench" "$S/gen-$mode-10000" generated "${opts[@]}"
  done
  ${PY:-python} "$TOOLS/compare_step0.py" "$S/bench" \
     examples=$S/step0-examples-10000 text-task=$S/step0-text-10000 both=$S/step0-both-10000 \
     nearest-examples=$S/step0-examples-10000:nearest-examples --refs nearest-examples \
     --json "$S/compare.json" > "$S/compare.md"
done
${PY:-python} "$TOOLS/compare_step0.py" "$R/A/bench" \
   $(for n in 300 1000 3000 10000; do echo "examples-$n=$R/A/step0-examples-$n"; done) \
   --json "$R/A/scaling.json" > "$R/A/scaling.md"
echo "EXPERIMENT_DONE: $R/A/compare.md $R/B/compare.md $R/A/scaling.md"
