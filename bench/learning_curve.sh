#!/usr/bin/env bash
# DrQ-v2 learning curve: SEEDS in parallel (one process each), then the rliable IQM plot over seeds.
#   ENV=dmc/cartpole_swingup FRAMES=200000 SEEDS="1 2 3 4 5" OUT_DIR=runs/curve bash bench/learning_curve.sh [overrides]
# Extra arguments are hydra overrides passed to every run (e.g. device=cuda save_video=false).
# RESUME=true continues runs that already exist in OUT_DIR (exact resume from their latest checkpoints).
set -euo pipefail
env_name=${ENV:-dmc/cartpole_swingup}
frames=${FRAMES:-200000}
seeds=${SEEDS:-"1 2 3 4 5"}
out=${OUT_DIR:-runs/curve}
robotrl=${ROBOTRL:-robotrl}
pids=()
for seed in $seeds; do
    mkdir -p "$out/seed$seed"
    OMP_NUM_THREADS=1 $robotrl train env="$env_name" seed="$seed" frames="$frames" run_dir="$out/seed$seed" \
        resume="${RESUME:-false}" torch_threads=1 "$@" > "$out/seed$seed/stdout.log" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
if [ "${PLOT:-1}" = 1 ]; then $robotrl plot "$out"/seed* --out "$out/curve.png"; fi
exit $status
