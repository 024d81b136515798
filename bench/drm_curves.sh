#!/usr/bin/env bash
# DrM vs DrQ-v2 (issue 4): same envs, seeds and frames for both agents, then per env the IQM curves over seeds of
# eval return, eval success (Meta-World) and both agents' actor dormant ratio (train.csv; DrQ-v2 logs it as a
# diagnostic every `dormant_every` updates, DrM on every update). JOBS runs at a time, one torch thread each on CPU.
#   ENVS="dmc/dog_walk metaworld/coffee-push" FRAMES=1000000 SEEDS="1 2 3" OUT_DIR=runs/drm \
#       bash bench/drm_curves.sh device=cuda save_video=false
# The paper's gaps appear after 0.5-3M frames on Dog, Manipulator and the hard Meta-World tasks: a GPU job.
# FRAMES unset uses each env config's own budget (the papers' frames).
set -euo pipefail
source "$(dirname "$0")/jobs.sh"
envs=${ENVS:-"dmc/dog_walk metaworld/coffee-push"}
agents=${AGENTS:-"drm drqv2"}
seeds=${SEEDS:-"1 2 3"}
out=${OUT_DIR:-runs/drm}
robotrl=${ROBOTRL:-robotrl}
run_one() {  # env agent seed [overrides...]
    local env_name=$1 agent=$2 seed=$3 dir="$out/$1/$2/seed$3"
    shift 3
    local frames=()
    if [ -n "${FRAMES:-}" ]; then frames=(frames="$FRAMES"); fi
    mkdir -p "$dir"
    OMP_NUM_THREADS=1 $robotrl train agent="$agent" env="$env_name" seed="$seed" "${frames[@]}" run_dir="$dir" \
        resume="${RESUME:-false}" torch_threads="${TORCH_THREADS:-1}" compare_baselines=false "$@" \
        > "$dir/stdout.log" 2>&1
}
status=0
launch_grid run_one "$envs" "$seeds" "$agents" "$@"
wait_all || status=1
if [ "${PLOT:-1}" = 1 ]; then
    for env_name in $envs; do
        runs=()
        for agent in $agents; do runs+=("$out/$env_name/$agent"/seed*); done
        $robotrl plot "${runs[@]}" --metric episode_return --out "$out/$env_name/return.png" || status=1
        if [[ $env_name == metaworld/* ]]; then
            $robotrl plot "${runs[@]}" --metric success --out "$out/$env_name/success.png" || status=1
        fi
        $robotrl plot "${runs[@]}" --source train --metric actor_dormant_ratio --reps 0 \
            --out "$out/$env_name/dormant_ratio.png" || status=1
    done
fi
exit $status
