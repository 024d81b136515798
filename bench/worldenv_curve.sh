#!/usr/bin/env bash
# Issue 27 §2: gate r and its noise ceiling vs world-model training steps, 32x32, on the CPU (docs/results.md
# "World-Env: the gate as the world model trains"). Per seed: the published runs' collect, train-vla, collect
# (bench/worldenv_results.sh's settings), then two niced processes side by side: the world model trained on to each
# of STEPS (bench/worldenv_curve.py train) and the fidelity gate at each kept model (... gate: a reflector trained on
# that model, EPISODES per task per policy, the simulator episodes measured once). Then the table and plot.
#   MUJOCO_GL=egl [STEPS=300,800,1500,2500,4000] [EPISODES=20] [STOP_AT=22:50] bash bench/worldenv_curve.sh [seeds...]
set -euo pipefail
STEPS=${STEPS:-300,800,1500,2500,4000} EPISODES=${EPISODES:-20} STOP_AT=${STOP_AT:-}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
SETTINGS="image_size=32 max_episode_steps=150 device=cpu torch_threads=1 tasks=[reach,drawer-close,button-press-topdown]
  vla.steps=600 vla.snapshot_every=200 model.block_channels=[16,32] model.hidden=32 model.steps=300 model.batch_size=8
  model.horizon=6 reflector.steps=300 post_train.iterations=15 post_train.horizon=75 eval.episodes=10
  fidelity.episodes=$EPISODES fidelity.noise=[0.0,1.0] fidelity.bootstrap=1000"
seeds=("$@"); [ ${#seeds[@]} -eq 0 ] && seeds=(1)
stop=(); [ -n "$STOP_AT" ] && stop=(--stop-at "$STOP_AT")
csvs=()
for seed in "${seeds[@]}"; do
  out=runs/curve/seed$seed
  # once the curve has started, the run's config carries the curve's model.steps, which SETTINGS' 300 would undo
  [ -d $out/curve/models ] || for stage in collect train-vla collect; do
    start=$(date +%s)
    nice -n 10 .venv/bin/robotrl worldenv $stage out=$out seed=$seed $SETTINGS
    echo "seed $seed $stage: $(( $(date +%s) - start )) s" | tee -a $out/timing.txt
  done
  nice -n 10 .venv/bin/python bench/worldenv_curve.py train $out --steps $STEPS "${stop[@]}" > $out/curve_train.log 2>&1 &
  trainer=$!
  nice -n 10 .venv/bin/python bench/worldenv_curve.py gate $out --steps $STEPS --episodes $EPISODES "${stop[@]}" \
    2>&1 | tee $out/curve_gate.log
  wait $trainer
  csvs+=("$out/curve/curve.csv")
done
.venv/bin/python bench/worldenv_curve.py table "${csvs[@]}" --out docs/results/worldenv/curve
