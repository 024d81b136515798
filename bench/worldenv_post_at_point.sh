#!/usr/bin/env bash
# Issue 27 §2: post-training only where the gate passed. At one point of a bench/worldenv_curve.sh run (a kept world
# model and the reflector the gate measured with it), post-train the run's final BC policy with each of SEEDS in its
# own folder (the point's data, BC policies, model and reflector linked, never copied or changed), then the simulator
# success before (BC) / after / random / zero actions on the same eval.episodes per task. The table:
#   .venv/bin/python bench/worldenv_post_table.py RUN/curve/step<N>-post1 RUN/curve/step<N>-post2 ...
#   MUJOCO_GL=egl [SEEDS="1 2 3"] [EVAL=20] bash bench/worldenv_post_at_point.sh runs/curve/seed2 550
set -euo pipefail
run=$1 step=$(printf %05d "$2")
point=$run/curve/step$step
[ -f "$point/reflector/reflector.pt" ] || { echo "$point: no gated reflector (run bench/worldenv_curve.sh first)"; exit 2; }
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for seed in ${SEEDS:-1 2 3}; do
  d=$run/curve/step$step-post$seed
  mkdir -p "$d"
  for sub in data vla model reflector; do [ -e "$d/$sub" ] || ln -s "$(realpath "$point/$sub")" "$d/$sub"; done
  [ -f "$d/config.yaml" ] || cp "$point/config.yaml" "$d/config.yaml"
  start=$(date +%s)
  nice -n 10 .venv/bin/robotrl worldenv post-train out="$d" seed="$seed" eval.episodes="${EVAL:-20}"
  echo "post-train seed $seed at $step steps: $(( $(date +%s) - start )) s" | tee -a "$run/curve/post_timing.txt"
done
