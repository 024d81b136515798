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
