#!/usr/bin/env bash
# World-Env at 64x64 on a lent GPU (issue 27 §2): bench/worldenv_results.sh's SIZE=64 pipeline (3 tasks; collect,
# train-vla, collect, train-model, train-reflector, post-train, fidelity) with device=cuda, 3 seeds side by side on
# the one GPU, and the world model trained for as many steps as the call's time allows (the CPU runs stopped at
# 300 / 1,200; frames follow the actions only between 400 and 1,200). The world model trains in increments (300,
# 1,200, then one sized to end by BUDGET_S - RESERVE_S), each writing model/report.json (frame / proprio errors with
# recorded, other and zero actions), kept as model/report_step<N>.json: the curve. At BRANCH_AT steps a copy of each
# run also trains its reflector and runs the fidelity gate (without a post-trained policy) beside the main run: the
# gate at two points of training. Every stage is time-boxed so that the whole call ends by ~BUDGET_S (540 s).
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
  RESERVE_S=${RESERVE_S:-600} BRANCH_AT=${BRANCH_AT:-8} MODEL_STEPS=${MODEL_STEPS:-"4 8"}
  MAX_MODEL_STEPS=${MAX_MODEL_STEPS:-12} ROUND=1 EPISODES1=9 EP_REF_S=${EP_REF_S:-1000} CAP_X=4
else
  PY=${PY:-python3} DEV=cuda SEEDS=${SEEDS:-"1 2 3"} RUNS=${RUNS:-runs/worldenv64_gpu} BUDGET_S=${BUDGET_S:-540}
  RESERVE_S=${RESERVE_S:-250} BRANCH_AT=${BRANCH_AT:-1200} MODEL_STEPS=${MODEL_STEPS:-"300 1200"}
  MAX_MODEL_STEPS=${MAX_MODEL_STEPS:-50000} ROUND=25 EPISODES1=45 EP_REF_S=${EP_REF_S:-0.4} CAP_X=1
fi
SNAP_S=${SNAP_S:-20}
DEADLINE=$(( T0 + BUDGET_S ))           # every stage ends by then
MODEL_END=$(( DEADLINE - RESERVE_S ))   # world-model training ends by then (reflector, post-train, fidelity after);
# per seed moved earlier by (s per simulator episode in the first collect - EP_REF_S) x the 240 simulator episodes of
# post-train's evaluation and the gate, so that a slower simulator than planned for still leaves them their time
SETTINGS="image_size=64 max_episode_steps=150 device=$DEV torch_threads=1 tasks=[reach,drawer-close,button-press-topdown]
  vla.steps=600 vla.snapshot_every=200 model.block_channels=[16,32,32] model.hidden=32 model.batch_size=8
  model.horizon=6 reflector.steps=300 post_train.iterations=15 post_train.horizon=75 eval.episodes=10
  fidelity.episodes=4 fidelity.noise=[0.0,1.0] fidelity.bootstrap=1000"
[ "$DRY" = 1 ] && SETTINGS="$SETTINGS collect.demos_per_task=1 collect.noisy_per_task=1 collect.policy_per_task=1
  collect.random_per_task=1 vla.steps=20 vla.snapshot_every=10 reflector.steps=10 post_train.iterations=2
  post_train.horizon=10 eval.episodes=1 fidelity.episodes=1 fidelity.noise=[0.0] fidelity.bootstrap=20"

# EXTRA: more settings, last so they win, e.g. EXTRA="fidelity.episodes=16" (the gate's power; docs/results.md)
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

last_model_step() { tail -n 1 "$1/model/train.csv" 2>/dev/null | cut -d, -f1 | grep -E '^[0-9]+$' || echo 0; }

# train_model SEED RUN: increments of MODEL_STEPS, then one sized to end by MODEL_END (from the s/step of the last
# increment, process start included, so it errs short); a copy of the run at BRANCH_AT steps gets its own reflector
# and fidelity gate in the background.
train_model() {
  local seed=$1 run=$2 cur=0 target t0 dt sps="" rc fit last=0 got
  for target in $MODEL_STEPS max; do
    if [ -n "$sps" ]; then  # the steps that still fit before MODEL_END, in whole saves (ROUND: every 25 steps)
      fit=$(awk "BEGIN{n = int(($MODEL_END - $(now) - 15) / $sps / $ROUND) * $ROUND; print $cur + (n > 0 ? n : 0)}")
      if [ "$target" = max ] || (( target > fit )); then target=$fit; last=1; fi
    elif [ "$target" = max ]; then
      break
    fi
    (( target > MAX_MODEL_STEPS )) && target=$MAX_MODEL_STEPS
    (( target <= cur )) && break
    t0=$(now)
    stage "$seed" "$run" train-model $(( MODEL_END - t0 + 30 )) model.steps="$target"
    rc=$?
    if [ $rc -ne 0 ]; then  # stopped at its cap: finish with the steps saved so far (a checkpoint every 25 steps)
      got=$(last_model_step "$run")
      if (( got > cur )) && stage "$seed" "$run" train-model 90 model.steps="$got"; then
        cur=$got
        cp "$run/model/report.json" "$run/model/report_step$cur.json"
      fi
      break
    fi
    dt=$(( $(now) - t0 ))
    sps=$(awk "BEGIN{print $dt / ($target - $cur)}")
    cur=$target
    cp "$run/model/report.json" "$run/model/report_step$cur.json"
    say "seed $seed: world model at $cur steps, $sps s/step over the last increment (process start included)"
    if [ "$cur" = "$BRANCH_AT" ]; then
      rm -rf "${run}_at$cur"
      cp -a "$run" "${run}_at$cur"
      : > "${run}_at$cur/timing.txt"
      : > "${run}_at$cur/stdout.log"
      ( stage "$seed" "${run}_at$cur" train-reflector 200 && stage "$seed" "${run}_at$cur" fidelity 400 ) &
    fi
    (( last == 1 || cur >= MAX_MODEL_STEPS )) && break
  done
  (( cur > 0 ))
}

stages() {
  local seed=$1 run=$RUNS/seed$1
  mkdir -p "$run"
  stage "$seed" "$run" collect 240 || return
  MODEL_END=$(awk "BEGIN{t = ($LAST_S - 8) / $EPISODES1; x = (t - $EP_REF_S) * 240; print int($MODEL_END - (x > 0 ? x : 0))}")
  say "seed $seed: $LAST_S s for $EPISODES1 simulator episodes; world model until +$(( MODEL_END - T0 )) s"
  stage "$seed" "$run" train-vla 120 || return
  stage "$seed" "$run" collect 120 || return
  train_model "$seed" "$run" || { say "seed $seed: no world model"; return 1; }
  stage "$seed" "$run" train-reflector 120 || return
  stage "$seed" "$run" post-train 300  # a post-trained policy saved before a cut evaluation still enters the gate
  stage "$seed" "$run" fidelity 400
}

pipeline() { stages "$1"; wait; }  # wait: the branch's reflector and gate

say "running seeds $SEEDS: world model until +$(( MODEL_END - T0 )) s, everything until +$(( DEADLINE - T0 )) s"
PIDS=()
for seed in $SEEDS; do
  ( pipeline "$seed" > "$OUT/seed$seed.log" 2>&1 ) &
  PIDS+=($!)
done
for p in "${PIDS[@]}"; do wait "$p"; done
kill "$SNAP_PID" 2>/dev/null; wait "$SNAP_PID" 2>/dev/null
for seed in $SEEDS; do cat "$RUNS/seed$seed/stdout.log" >> "$OUT/seed$seed.log" 2>/dev/null; done
snapshot

# ------------------------------------------------------------------------------------------------ summary
$PY - "$RUNS" >>"$LOG" 2>&1 <<'EOF'
import json, sys
from pathlib import Path
for run in sorted(Path(sys.argv[1]).glob("seed*")):
    def rep(name):
        p = run / name / "report.json"
        return json.loads(p.read_text()) if p.is_file() else None
    line = [run.name]
    for f in sorted((run / "model").glob("report_step*.json"), key=lambda p: int(p.stem[11:])):
        m = json.loads(f.read_text())["frame_mse"]
        line.append(f"model {f.stem[11:]}: frame mse {m['recorded']:.4f}/{m['other_episode'] or float('nan'):.4f}/"
                    f"{m['zero']:.4f}")
    post, fid = rep("post"), rep("fidelity")
    if post:
        t = post.get("trivial", {})
        line.append(f"sim success BC {post['before']['mean']['success']:.2f} post {post['after']['mean']['success']:.2f}"
                    f" random {t.get('random', {}).get('mean', {}).get('success', float('nan')):.2f}"
                    f" zero {t.get('zero', {}).get('mean', {}).get('success', float('nan')):.2f}")
    else:
        line.append("post-train: no report")
    line.append(f"fidelity r {fid['pearson']:.2f} CI {fid['pearson_ci95']}" if fid else "fidelity: no report")
    print("summary " + "; ".join(line))
EOF
say "done; total $(( $(now) - T0 )) s"
tail -n 40 "$LOG"
exit 0
