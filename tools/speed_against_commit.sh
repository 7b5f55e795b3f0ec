#!/bin/bash
# The training-speed measurements of the README, alone on the machine: dnw speed; CLI finetune standard vs scratch per
# step (1 and 2 threads); collection of 4 concepts old (REV) vs this tree; task-loss fit old vs new
PACK=$(dirname "$0")/../src/denoised_weights/pretrained/small
D=${DNW:-dnw}
M=${1:?usage: $0 OUT_DIR REV DATASET (REV: the commit to compare with; DATASET: a small dnw collect folder)}; REV=${2:?}; DS=${3:?}; mkdir -p $M
OLD=$M/old-src; [ -d $OLD ] || git -C "$(dirname "$0")/.." worktree add -f $M/old-tree $REV >/dev/null && ln -sfn $M/old-tree/src $OLD
export DNW_PLUGINS=
echo "== dnw speed"; $D speed --threads 1,2 --rounds 20 | tee $M/speed.md
echo "== finetune per step (train_seconds/steps, init excluded)"
for t in 1 2; do for r in 1 2 3; do for init in scratch standard; do
  OMP_NUM_THREADS=$t $D finetune --concept gamma-2.2 --init $init --max-steps 100 --eval-every 100 --out $M/ft-$init-$t-$r >/dev/null 2>&1
  python3 -c "
import json; c=json.load(open('$M/ft-$init-$t-$r/curve.json')); p=c['points']; print('threads $t round $r $init', round((p[-1]['train_seconds']-c['init_seconds'])/p[-1]['step']*1000,1),'ms/step')"
done; done; done
echo "== collect 4 concepts, README recipe, --workers 2"
for r in 1 2; do for code in old new; do
  if [ $code = old ]; then export PYTHONPATH=$OLD; else unset PYTHONPATH; fi
  s=$(date +%s.%N)
  $D collect --base $PACK/base --out $M/col-$code-$r --preset small --concepts 4 --max-parts 1 --checkpoints 3 --max-steps 80 --eval-every 20 --interval 10 --workers 2 > $M/col-$code-$r.log 2>&1
  echo "collect $code round $r: $(python3 -c "print(round($(date +%s.%N) - $s,1))") s"
done; done
unset PYTHONPATH
echo "== task-loss fit on the 12-concept dataset: (35 steps - 5 steps) x 4 concepts / wall-clock difference"
for code in old new; do
  if [ $code = old ]; then export PYTHONPATH=$OLD; else unset PYTHONPATH; fi
  for n in 5 35; do
    s=$(date +%s.%N)
    OMP_NUM_THREADS=2 $D fit --data $DS --out $M/fit-$code-$n --objective task --base $PACK/base --prediction sample --max-steps $n --val-every 1000 > $M/fit-$code-$n.log 2>&1
    python3 -c "print(round($(date +%s.%N) - $s, 2))" > $M/fit-$code-$n.sec
  done
  python3 -c "
a=float(open('$M/fit-$code-5.sec').read()); b=float(open('$M/fit-$code-35.sec').read())
print('fit $code: 5 steps', a, 's, 35 steps', b, 's ->', round(30*4/(b-a),3), 'concepts/s')"
done
unset PYTHONPATH
echo MEASURE_DONE
