#!/usr/bin/env bash
# The "longer world-model training" rows of docs/results.md's World-Env section: a copy of a finished
# bench/worldenv_results.sh run whose world model resumes from its 300 steps to 1200, then the reflector,
# post-training and the fidelity gate again (the data and the BC VLA are the run's own).
#   MUJOCO_GL=egl bash bench/worldenv_longer_model.sh 1      # runs/worldenv/seed1 -> runs/worldenv_long/seed1
set -euo pipefail
seed=$1
src=runs/worldenv/seed$seed out=runs/worldenv_long/seed$seed
[ -d "$out" ] || { mkdir -p runs/worldenv_long; cp -a "$src" "$out"; rm -rf "$out"/{reflector,post,fidelity} "$out/timing.txt"; }
for stage in "train-model model.steps=1200" train-reflector post-train fidelity; do
  start=$(date +%s)
  nice -n 10 .venv/bin/robotrl worldenv $stage out=$out
  echo "seed $seed $stage: $(( $(date +%s) - start )) s" | tee -a $out/timing.txt
done
