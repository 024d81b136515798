#!/usr/bin/env bash
# One training run per reward family beside the simulator's own reward, same agent/seeds/frames; success is
# always the simulator's (eval runs on the ground-truth env). Runs every (reward, seed), JOBS processes at a time
# (one torch thread each), then plots IQM eval success and return over seeds, one curve per reward.
#   ENV=metaworld/reach FRAMES=50000 SEEDS="1 2 3" REWARDS="env kagi lfvoid_demo_goals" OUT_DIR=runs/rewards \
#       bash bench/reward_curves.sh [hydra overrides for every run]
# lfvoid_demo_goals needs a goal set: made first with `robotrl goals generate ... source=demos` (true success frames
# of the scripted expert: an upper bound for LfVoid, not its diffusion-edited goals -- no weights here).
set -euo pipefail
source "$(dirname "$0")/jobs.sh"
env_name=${ENV:-metaworld/reach}
frames=${FRAMES:-50000}
seeds=${SEEDS:-"1 2 3"}
rewards=${REWARDS:-"env kagi lfvoid_demo_goals"}
out=${OUT_DIR:-runs/rewards}
robotrl=${ROBOTRL:-robotrl}
agent=${AGENT:-sb3_sac}
goals="$out/goals"
# LfVoid's discriminator costs ~0.12 s per update at its defaults (5 members, batch 64) on one core: fewer members,
# smaller batches and an update every 4 steps keep a CPU run to minutes (documented in docs/results.md).
lfvoid_cpu=(reward.ensemble_size=3 reward.train_batch_size=32 reward.update_every=4)
if [[ " $rewards " == *" lfvoid_demo_goals "* && ! -f "$goals/goals.npz" ]]; then
    OMP_NUM_THREADS=1 $robotrl goals generate env="$env_name" source=demos n=8 seed=0 out="$goals"
fi
run_one() {  # reward seed [overrides...]
    local reward=$1 seed=$2 dir="$out/$1/seed$2"
    shift 2
    local extra=()
    if [ "$reward" = lfvoid_demo_goals ]; then extra=(reward.goals="$goals" "${lfvoid_cpu[@]}"); fi
    mkdir -p "$dir"
    OMP_NUM_THREADS=1 $robotrl train agent="$agent" env="$env_name" env.obs_type=state reward="$reward" \
        seed="$seed" frames="$frames" run_dir="$dir" resume="${RESUME:-false}" torch_threads=1 device=cpu \
        save_video=false compare_baselines=false "${extra[@]}" "$@" > "$dir/stdout.log" 2>&1
}
status=0
for reward in $rewards; do
    for seed in $seeds; do
        launch run_one "$reward" "$seed" "$@"
    done
done
wait_all || status=1
if [ "${PLOT:-1}" = 1 ]; then
    runs=()
    for reward in $rewards; do runs+=("$out/$reward"/seed*); done
    $robotrl plot "${runs[@]}" --metric success --out "$out/success.png" || status=1
    $robotrl plot "${runs[@]}" --metric episode_return --out "$out/return.png" || status=1
fi
exit $status
