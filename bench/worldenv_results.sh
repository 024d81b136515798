#!/usr/bin/env bash
# The World-Env results of docs/results.md: 3 Meta-World tasks x 3 seeds on the 2-core CPU machine, niced (seeds
# run side by side). SIZE=32 (default): runs/worldenv/seed<N>; SIZE=64: runs/worldenv64/seed<N>, with a third
# AutoencoderKL block so the latent stays 16x16x4 as at 32x32 (8x8x4 would lose the gripper).
#   MUJOCO_GL=egl [SIZE=64] bash bench/worldenv_results.sh [seeds...]     (default: 1 2 3)
set -euo pipefail
SIZE=${SIZE:-32}
case $SIZE in
  32) BLOCKS="[16,32]"; root=runs/worldenv ;;
  64) BLOCKS="[16,32,32]"; root=runs/worldenv64 ;;
  *) echo "SIZE=$SIZE, expected 32 or 64" >&2; exit 2 ;;
esac
SETTINGS="image_size=$SIZE max_episode_steps=150 device=cpu torch_threads=1 tasks=[reach,drawer-close,button-press-topdown]
  vla.steps=600 vla.snapshot_every=200 model.block_channels=$BLOCKS model.hidden=32 model.steps=300 model.batch_size=8
  model.horizon=6 reflector.steps=300 post_train.iterations=15 post_train.horizon=75 eval.episodes=10
  fidelity.episodes=4 fidelity.noise=[0.0,1.0] fidelity.bootstrap=1000"
seeds=("$@"); [ ${#seeds[@]} -eq 0 ] && seeds=(1 2 3)
for seed in "${seeds[@]}"; do
  out=$root/seed$seed
  for stage in collect train-vla collect train-model train-reflector post-train fidelity; do
    start=$(date +%s)
    nice -n 10 .venv/bin/robotrl worldenv $stage out=$out seed=$seed $SETTINGS
    echo "seed $seed $stage: $(( $(date +%s) - start )) s" | tee -a $out/timing.txt
  done
done
