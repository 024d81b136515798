#!/usr/bin/env bash
# MR.Q at the paper's dm-control budget (500k agent steps = 1M frames at action repeat 2) on a lent GPU, beside
# TD-MPC2 and DrQ-v2 on the same task, frames and seeds (AGENTS; DrQ-v2 from pixels only): one task, state and
# pixels, SEEDS seeds each, all runs sharing the GPU, stopped after RUN_S seconds (a lease is ~10 minutes a call,
# so a call gets a slice of the budget; rerun with resume=auto to continue: checkpoints every CKPT_FRAMES).
# Each agent's reference hyperparameters (configs/agent/*.yaml) and the reference's dm-control settings (84x84 RGB,
# 3 frames, action repeat 2), 10 eval episodes every 10k frames (the reference's 5k steps).
#
# On the device machine, from the repo root, with carried .whl (py3.12 wheels: dm_control, mujoco, gymnasium,
# hydra-core, omegaconf, antlr4-python3-runtime, ...) and .gl (EGL loaders), as bench/device/modem_pixels_h100.sh.
# Dry run on CPU (a few hundred frames, tiny nets, no GPU, no wheels): DRY=1 bash bench/device/mrq_paper_budget.sh
# Writes grid.log and runs.tgz (CSVs, no checkpoints) to $OUT (./mrq_out when OUT is unset). Back here, beside the
# reference's published per-seed results at the same agent steps (the reference's git dir, fetched outside the repo):
#   bench/mrq_curve_table.py runs/dmc/walker_walk/mrq-state/seed* --ref <MRQ git dir> --ref-env Dmc-walker-walk
#   bench/mrq_curve_table.py runs/dmc/walker_walk/mrq-pixels/seed* --ref <MRQ git dir> --ref-env Dmc-visual-walker-walk \
#     --beside TD-MPC2='runs/dmc/walker_walk/tdmpc2-pixels/seed*' --beside DrQ-v2='runs/dmc/walker_walk/drqv2-pixels/seed*'
set -u
T0=$(date +%s)
OUT=${OUT:-./mrq_out}; mkdir -p "$OUT"
TASK=${TASK:-dmc/walker_walk}; SEEDS=${SEEDS:-"1 2 3"}; OBS=${OBS:-"state pixels"}; AGENTS=${AGENTS:-"mrq tdmpc2 drqv2"}
FRAMES=${FRAMES:-1000000}; RUN_S=${RUN_S:-480}; CKPT_FRAMES=${CKPT_FRAMES:-50000}; PY=${PY:-python3}
EXTRA=(device=cuda torch_threads=2)
declare -A TINY=()  # per agent: nothing on the GPU
if [ "${DRY:-0}" = 1 ]; then  # CPU dry run of the same command lines
  FRAMES=400; RUN_S=${RUN_S_DRY:-240}; SEEDS=1; CKPT_FRAMES=400; PY=${PY_DRY:-.venv/bin/python}
  EXTRA=(device=cpu torch_threads=1 env.max_episode_steps=100 eval_episodes=1)
  TINY[mrq]="seed_frames=0 agent.num_expl_steps=100 agent.target_update_freq=5 agent.batch_size=16 agent.zs_dim=32
             agent.zsa_dim=32 agent.za_dim=16 agent.enc_hdim=32 agent.value_hdim=32 agent.policy_hdim=32"
  TINY[tdmpc2]="seed_frames=100 agent.model_size=1 agent.batch_size=16 agent.num_samples=32 agent.num_elites=8
                agent.num_pi_trajs=4 agent.iterations=2"
  TINY[drqv2]="seed_frames=100 agent.batch_size=16 agent.hidden_dim=32 agent.feature_dim=16 agent.num_expl_steps=50"
else
  for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
  [ -f /usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json ] && \
    export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  $PY -m pip install -q --no-index --no-deps --no-compile .whl/*.whl || exit 3
  $PY -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 4
fi
export MUJOCO_GL=egl PYTHONUNBUFFERED=1
$PY -c "import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"
echo "setup took $(( $(date +%s) - T0 )) s"
pids=()
for agent in $AGENTS; do
  for obs in $OBS; do
    [ "$agent" = drqv2 ] && [ "$obs" = state ] && continue  # DrQ-v2 is a pixel agent
    for seed in $SEEDS; do
      run=runs/$TASK/$agent-$obs/seed$seed
      # shellcheck disable=SC2086  # TINY's words are separate overrides
      $PY -m robotrl.cli train agent=$agent env=$TASK env.obs_type=$obs seed=$seed frames=$FRAMES \
        eval_every_frames=$(( FRAMES < 10000 ? FRAMES : 10000 )) checkpoint_every_frames=$CKPT_FRAMES \
        save_video=false resume=auto run_dir=$run "${EXTRA[@]}" ${TINY[$agent]:-} \
        > "$OUT/train_${agent}_${obs}_${seed}.log" 2>&1 &
      pids+=($!)
    done
  done
done
end=$(( $(date +%s) + RUN_S ))
while [ "$(date +%s)" -lt $end ] && kill -0 "${pids[@]}" 2>/dev/null; do sleep 5; done
for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null; done  # graceful stop at the next episode end
sleep 20; for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
for f in runs/$TASK/*-*/seed*/eval.csv; do echo "== $f"; tail -n 3 "$f"; done | tee "$OUT/grid.log"
tar czf "$OUT/runs.tgz" --exclude='*.pt' --exclude='*.npz' --exclude='*.mp4' --exclude=tb runs/$TASK 2>/dev/null
echo "total $(( $(date +%s) - T0 )) s" | tee -a "$OUT/grid.log"
