#!/usr/bin/env bash
# MoDem vs TD-MPC2 from scratch: same tasks, seeds, frames and world-model size; MoDem gets NUM_DEMOS scripted-
# expert demos (generated on first use into its run dir). Success is the simulator's. Runs every (task, seed,
# agent), JOBS processes at a time (one torch thread each), the two agents of a task side by side so they share
# the machine's load; then plots IQM eval success and return, and training-episode success, over seeds per task.
#   TASKS="button-press-topdown push" AGENTS="modem tdmpc2" FRAMES=20000 SEEDS="1" OUT_DIR=runs/modem \
#       bash bench/modem_curves.sh [hydra overrides for every run]
# Defaults are sized for 2 CPU cores (state observations, model size 1, 3 eval episodes every 5k frames);
# on a GPU pass e.g. device=cuda agent.model_size=5 env.obs_type=pixels FRAMES=100000 SEEDS="1 2 3".
set -euo pipefail
source "$(dirname "$0")/jobs.sh"
tasks=${TASKS:-"button-press-topdown push"}
agents=${AGENTS:-"modem tdmpc2"}
frames=${FRAMES:-20000}
seeds=${SEEDS:-"1"}
out=${OUT_DIR:-runs/modem}
robotrl=${ROBOTRL:-robotrl}
run_one() {  # task agent seed [overrides...]
    local task=$1 agent=$2 seed=$3 dir="$out/$1/$2/seed$3"
    shift 3
    mkdir -p "$dir"
    local demos=()  # MoDem's demo count; TD-MPC2 has no such key
    if [ "$agent" != tdmpc2 ]; then demos=(agent.num_demos="${NUM_DEMOS:-5}"); fi
    OMP_NUM_THREADS=1 $robotrl train agent="$agent" env="metaworld/$task" env.obs_type=state agent.model_size=1 \
        "${demos[@]}" seed="$seed" frames="$frames" run_dir="$dir" resume="${RESUME:-false}" \
        torch_threads=1 device=cpu eval_every_frames=5000 eval_episodes=3 save_video=false compare_baselines=false \
        "$@" > "$dir/stdout.log" 2>&1
}
status=0
launch_grid run_one "$tasks" "$seeds" "$agents" "$@"
wait_all || status=1
if [ "${PLOT:-1}" = 1 ]; then
    for task in $tasks; do
        runs=()
        for agent in $agents; do runs+=("$out/$task/$agent"/seed*); done
        $robotrl plot "${runs[@]}" --metric success --out "$out/$task/success.png" || status=1
        $robotrl plot "${runs[@]}" --metric episode_return --out "$out/$task/return.png" || status=1
        $robotrl plot "${runs[@]}" --source train --metric success --reps 0 --out "$out/$task/train_success.png" \
            || status=1
    done
fi
exit $status
