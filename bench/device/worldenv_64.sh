#!/usr/bin/env bash
# World-Env at 64x64 on a lent GPU (issue 27 §2): bench/worldenv_results.sh's SIZE=64 data and BC stages (3 tasks;
# collect, train-vla, collect) with device=cuda, 3 seeds side by side on the one GPU, then per seed the CPU curve's
# method (bench/worldenv_curve.py train + gate, docs/results.md "The gate as the world model trains"): the world
# model trained on to each of CURVE_STEPS while the gate's simulator episodes are measured, then the powered gate
# (GATE_EPISODES=12 per task, as on the CPU: a perfect model would pass on these policy sets) at the newest kept
# model each time, as often as the call's time allows. No post-training here: it counts only where the gate passes
# (bench/worldenv_post_at_point.sh, afterwards, on the point's files). Every stage is time-boxed so that the whole
# call ends by ~BUDGET_S (540 s).
#
# On the device machine, from the repo root, with two git-ignored folders carried (see docs/results.md, World-Env
# on a GPU): .gl (EGL/GL loader debs) and .whl (py3.12 wheels: mujoco 3.3.0, metaworld 3.1.1 without its unused
# textures, gymnasium, hydra-core, omegaconf, antlr4-python3-runtime 4.9.3, open_clip_torch, ftfy, wcwidth,
# diffusers, glfw, PyOpenGL, farama-notifications):
#   bash bench/device/worldenv_64.sh
# A dry run of every stage at a tiny scale on this CPU machine (no setup, device=cpu, one seed, a few steps):
#   DRY=1 OUT=/tmp/wout MUJOCO_GL=egl bash bench/device/worldenv_64.sh
# Writes to $OUT as it goes: log.txt (setup, stage timings, summary), smi.csv (nvidia-smi every SNAP_S), seed<N>.log
# (the stages' output) and results.tgz (reports, CSVs, configs, timing; no checkpoints or data), re-packed every
# SNAP_S so that a timeout still returns them. Exit: 3 wheels, 4 robotrl install, 5 imports, 6 EGL render, 7 CUDA
# (setup, before the long run); otherwise 0, with what did not finish named in log.txt.
set -u
T0=$(date +%s)
: "${OUT:?OUT must name the folder for results (the device tool sets it)}"
DRY=${DRY:-0}
if [ "$DRY" = 1 ]; then
  PY=${PY:-.venv/bin/python} DEV=cpu SEEDS=${SEEDS:-1} RUNS=${RUNS:-runs/worldenv64_dry} BUDGET_S=${BUDGET_S:-3000}
  CURVE_STEPS=${CURVE_STEPS:-"4,8,12"} GATE_EPISODES=${GATE_EPISODES:-2} POINT_S=${POINT_S:-600} EPISODES1=9 CAP_X=4
else
  PY=${PY:-python3} DEV=cuda SEEDS=${SEEDS:-"1 2 3"} RUNS=${RUNS:-runs/worldenv64_gpu} BUDGET_S=${BUDGET_S:-540}
  CURVE_STEPS=${CURVE_STEPS:-"600,1200,2000,3000,4000,6000,8000,12000"} GATE_EPISODES=${GATE_EPISODES:-12}
  POINT_S=${POINT_S:-150} EPISODES1=45 CAP_X=1
fi
SNAP_S=${SNAP_S:-20}
DEADLINE=$(( T0 + BUDGET_S ))           # every stage ends by then
# POINT_S: what one gate point (a reflector + GATE_EPISODES x 3 tasks x 11 policies in WorldEnv) is given: the trainer
# keeps no model after DEADLINE - POINT_S (not measured on a GPU: 150 s is a guess; the CPU's 32x32 point takes ~4 min)
SETTINGS="image_size=64 max_episode_steps=150 device=$DEV torch_threads=1 tasks=[reach,drawer-close,button-press-topdown]
  vla.steps=600 vla.snapshot_every=200 model.block_channels=[16,32,32] model.hidden=32 model.batch_size=8
  model.horizon=6 reflector.steps=300 post_train.iterations=15 post_train.horizon=75 eval.episodes=10
  fidelity.episodes=$GATE_EPISODES fidelity.noise=[0.0,1.0] fidelity.bootstrap=1000"
[ "$DRY" = 1 ] && SETTINGS="$SETTINGS collect.demos_per_task=1 collect.noisy_per_task=1 collect.policy_per_task=1
  collect.random_per_task=1 vla.steps=20 vla.snapshot_every=10 reflector.steps=10 post_train.iterations=2
  post_train.horizon=10 eval.episodes=1 fidelity.noise=[0.0] fidelity.bootstrap=20"

# EXTRA: more settings, last so they win, e.g. EXTRA="model.batch_size=16"
SETTINGS="$SETTINGS ${EXTRA:-}"
# PRINT_SETTINGS=1: print them and stop (tests/test_device_worldenv.py checks each is a valid worldenv setting)
[ "${PRINT_SETTINGS:-0}" = 1 ] && { echo "$SETTINGS" | tr -s ' \n' '  '; echo; exit 0; }
LOG=$OUT/log.txt
mkdir -p "$OUT" "$RUNS"
export MUJOCO_GL=egl PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
say() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$LOG"; }
now() { date +%s; }

# ------------------------------------------------------------------------------------------------ setup
setup_fail() { say "SETUP FAILED (exit $1): $2"; exit "$1"; }
if [ "$DRY" != 1 ]; then
  for f in .gl/*.deb; do dpkg -x "$f" / || setup_fail 3 "dpkg -x $f"; done
  ldconfig
  [ -f /usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json ] && \
    export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  $PY -m pip install -q --no-index --no-deps --no-compile .whl/*.whl >>"$LOG" 2>&1 || setup_fail 3 "pip install .whl/*.whl"
  $PY -m pip install -q --no-index --no-deps --no-build-isolation -e . >>"$LOG" 2>&1 || setup_fail 4 "pip install -e ."
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv >>"$LOG" 2>&1
fi
say "setup: installed; checking imports, an EGL Meta-World frame and a $DEV model step"
$PY bench/device/worldenv_check.py $DEV >>"$LOG" 2>&1
rc=$?
[ $rc -eq 0 ] || setup_fail $rc "bench/device/worldenv_check.py $DEV (see the check lines above)"
say "setup: done (cores $(nproc --all))"

# ------------------------------------------------------------------------------------------------ snapshots
snapshot() {  # results.tgz of every run's small files, replaced atomically
  tar czf "$OUT/results.tgz.tmp" --exclude='*.pt' --exclude=data --exclude='*.npz' -C "$(dirname "$RUNS")" \
    "$(basename "$RUNS")" 2>/dev/null && mv "$OUT/results.tgz.tmp" "$OUT/results.tgz"
}
(
  echo "t_s,gpu_util,mem_used,sm_clock,power,load1" > "$OUT/smi.csv"
  while true; do
    sleep "$SNAP_S"
    echo "$(( $(date +%s) - T0 )),$(nvidia-smi --query-gpu=utilization.gpu,memory.used,clocks.sm,power.draw \
      --format=csv,noheader 2>/dev/null | head -1),$(cut -d' ' -f1 /proc/loadavg)" >> "$OUT/smi.csv"
    snapshot
  done
) &
SNAP_PID=$!

# ------------------------------------------------------------------------------------------------ stages
# stage SEED RUN NAME CAP_S [key=value ...]: one `robotrl worldenv` stage, ended at CAP_S or at the deadline,
# whichever is first, by SIGTERM (not SIGINT: background jobs of a script start with SIGINT ignored); what the stage
# saved before (its checkpoints/, fidelity rows) stays. Timing in RUN/timing.txt.
stage() {
  local seed=$1 run=$2 name=$3 cap=$(( $4 * CAP_X )); shift 4
  local left=$(( DEADLINE - $(now) ))
  (( cap > left )) && cap=$left
  if (( cap < 5 )); then say "seed $seed $run $name: SKIPPED (no time left)"; echo "$name: skipped" >> "$run/timing.txt"; return 124; fi
  local s=$(now) rc
  # shellcheck disable=SC2086
  timeout -k 10 "$cap" $PY -m robotrl.cli worldenv $name out="$run" seed="$seed" $SETTINGS "$@" \
    >>"$run/stdout.log" 2>&1
  rc=$?
  LAST_S=$(( $(now) - s ))
  echo "$name $*: $LAST_S s rc=$rc" >> "$run/timing.txt"
  say "seed $seed $(basename "$run") $name $*: $(( $(now) - s )) s rc=$rc"
  return $rc
}

# curve SEED RUN: bench/worldenv_curve.py's two roles side by side, as on the CPU (docs/results.md "The gate as the
# world model trains"): the world model trained on to each of CURVE_STEPS (a model kept at each) until POINT_S before
# the deadline; the gate's simulator episodes measured once while it trains (they do not depend on the model), then
# at the newest kept model each time: a reflector trained on it and the powered gate (GATE_EPISODES per task).
curve() {
  local seed=$1 run=$2 left=$(( DEADLINE - $(now) ))
  (( left > 60 )) || { say "seed $seed: no time left for the curve"; return 1; }
  timeout -k 10 "$left" $PY bench/worldenv_curve.py train "$run" --steps "$CURVE_STEPS" \
    --stop-in $(( left - POINT_S )) >> "$run/curve_train.log" 2>&1 &
  local trainer=$!
  timeout -k 10 "$left" $PY bench/worldenv_curve.py gate "$run" --steps "$CURVE_STEPS" --episodes "$GATE_EPISODES" \
    --latest --stop-in "$left" >> "$run/curve_gate.log" 2>&1
  local rc=$? rows
  rows=$(grep -c '' "$run/curve/curve.csv" 2>/dev/null) || rows=1
  say "seed $seed: gate rc=$rc, $(( rows - 1 )) point(s) gated"
  wait $trainer
  say "seed $seed: trainer rc=$?; kept $(ls "$run/curve/models" 2>/dev/null | grep -c '\.pt$') models"
}

stages() {
  local seed=$1 run=$RUNS/seed$1
  mkdir -p "$run"
  stage "$seed" "$run" collect 240 || return
  say "seed $seed: $LAST_S s for $EPISODES1 simulator episodes"
  stage "$seed" "$run" train-vla 120 || return
  stage "$seed" "$run" collect 120 || return
  curve "$seed" "$run"
}

say "running seeds $SEEDS: models kept until +$(( DEADLINE - POINT_S - T0 )) s, everything until +$(( DEADLINE - T0 )) s"
PIDS=()
for seed in $SEEDS; do
  ( stages "$seed" > "$OUT/seed$seed.log" 2>&1 ) &
  PIDS+=($!)
done
for p in "${PIDS[@]}"; do wait "$p"; done
kill "$SNAP_PID" 2>/dev/null; wait "$SNAP_PID" 2>/dev/null
for seed in $SEEDS; do cat "$RUNS/seed$seed/stdout.log" >> "$OUT/seed$seed.log" 2>/dev/null; done
snapshot

# ------------------------------------------------------------------------------------------------ summary
csvs=$(ls "$RUNS"/seed*/curve/curve.csv 2>/dev/null)
if [ -n "$csvs" ]; then
  # the table (printed into log.txt too) and plot go into results.tgz: $OUT may hold at most 8 files
  # shellcheck disable=SC2086
  $PY bench/worldenv_curve.py table $csvs --out "$RUNS/curve_table" >>"$LOG" 2>&1 && snapshot
else
  say "no gate point finished"
fi
say "done; total $(( $(now) - T0 )) s"
tail -n 40 "$LOG"
exit 0
