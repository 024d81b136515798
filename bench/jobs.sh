# Sourced by the bench/*_curves.sh scripts: run commands in the background, at most JOBS (default 2) at a time.
pids=()
launch() {  # command [args...]: start it, then wait while JOBS runs are going
    "$@" &
    pids+=($!)
    while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-2}" ]; do sleep 5; done
}
wait_all() {  # wait for every launched run; non-zero if any failed
    local failed=0 pid
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    return $failed
}
launch_grid() {  # run_fn "items" "seeds" "agents" [overrides...]: launch `run_fn item agent seed overrides` for each
    local fn=$1 items=$2 seeds=$3 agents=$4 item seed agent
    shift 4
    for item in $items; do
        for seed in $seeds; do
            # the agents of one (item, seed) side by side, so they share the machine's load
            for agent in $agents; do launch "$fn" "$item" "$agent" "$seed" "$@"; done
        done
    done
}
