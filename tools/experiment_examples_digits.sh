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

bench() {  # bench SPLIT [TASK_OPTS...]: base, dataset, weights generator, references' step 0
  local S=$R/$1; shift
  [ -f "$S/bench/step0.json" ] || OMP_NUM_THREADS=1 $D benchmark --task digits --preset small \
     --out "$S/bench" --step0-only --workers 2 "$@" \
     --inits standard,generated,mean,nearest,nearest-param,interpolate,scored-examples
}
generator() {  # generator SPLIT MODE CONCEPTS [TASK_OPTS...]: fit, then its step-0 table
  local S=$R/$1 mode=$2 n=$3; shift 3
  local inits=generated; [ "$mode$n" = examples10000 ] && inits=generated,nearest-examples
  fit "$S/gen-$mode-$n" "$S/bench/dataset" "$S/bench/base" "$n" "$mode" "$@"
  step0 "$S/step0-$mode-$n" "$S/bench" "$S/gen-$mode-$n" "$inits" "$@"
}
table() {  # table SPLIT: every generator at 10,000 concepts against the references
  local S=$R/$1 extra=()
  [ -f "$S/step0-both-10000/step0.json" ] && extra=(both=$S/step0-both-10000)
  ${PY:-python} "$TOOLS/compare_step0.py" "$S/bench" \
     examples=$S/step0-examples-10000 text-task=$S/step0-text-10000 "${extra[@]}" \
     nearest-examples=$S/step0-examples-10000:nearest-examples --refs nearest-examples \
     --json "$S/compare.json" > "$S/compare.md"
}
B_OPTS=(-T "exclude_families=$FAMILIES")
bench A
for n in 300 1000 3000 10000; do generator A examples $n; done
generator A text 10000
table A
bench B "${B_OPTS[@]}"
generator B examples 10000 "${B_OPTS[@]}"
generator B text 10000 "${B_OPTS[@]}"
table B
for split in A B; do  # example+text last: the slowest fit, and the worst last time
  opts=(); [ $split = B ] && opts=("${B_OPTS[@]}")
  generator $split both 10000 "${opts[@]}"
  table $split
done
${PY:-python} "$TOOLS/compare_step0.py" "$R/A/bench" \
   $(for n in 300 1000 3000 10000; do echo "examples-$n=$R/A/step0-examples-$n"; done) \
   --json "$R/A/scaling.json" > "$R/A/scaling.md"
echo "EXPERIMENT_DONE: $R/A/compare.md $R/B/compare.md $R/A/scaling.md"
