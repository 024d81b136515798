#!/usr/bin/env bash
# MoDem vs TD-MPC2 from pixels+proprio on a lent H100: 3 seeds each, 6 runs sharing the GPU, for RUN_S seconds.
# Run from the repo root on the device machine with two carried folders prepared here (both git-ignored):
#   .whl: py3.12 wheels of mujoco==3.3.0 metaworld==3.1.1 gymnasium==1.4.0 hydra-core==1.3.8 omegaconf==2.3.1
#         antlr4-python3-runtime==4.9.3 glfw PyOpenGL farama-notifications (pip download --no-deps --python-version 3.12)
#   .gl:  the Debian EGL/GL loader packages (libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2), see the device notes.
# Writes grid.log, smi.txt (GPU utilisation) and runs.tgz (CSVs, no checkpoints) to $OUT.
set -u
T0=$(date +%s)
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
[ -f /usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json ] && \
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
python3 -m pip install -q --no-index --no-deps --no-compile .whl/*.whl || exit 3
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 4
export MUJOCO_GL=egl PYTHONUNBUFFERED=1
python3 -c "import torch, mujoco, metaworld, gymnasium; print(torch.__version__, torch.cuda.get_device_name(), mujoco.__version__, gymnasium.__version__)"
echo "setup took $(( $(date +%s) - T0 )) s"
TASKS=button-press-topdown AGENTS="modem tdmpc2" FRAMES=100000 SEEDS="1 2 3" JOBS=6 OUT_DIR=runs PLOT=0 \
  ROBOTRL="python3 -m robotrl.cli" bash bench/modem_curves.sh device=cuda agent.model_size=5 \
  env.obs_type=pixels_proprio env.image_size=84 env.frame_stack=2 agent.batch_size=256 eval_every_frames=4000 \
  eval_episodes=5 checkpoint_every_frames=1000000 > $OUT/grid.log 2>&1 &
RUN_S=${RUN_S:-420}
for i in 1 2 3; do sleep $(( RUN_S / 4 )); nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv >> $OUT/smi.txt; uptime >> $OUT/smi.txt; done
sleep $(( RUN_S / 4 ))
pkill -INT -f "robotrl.cli train"; sleep 25; pkill -KILL -f "robotrl.cli train"
for f in runs/*/*/seed*/stdout.log; do echo "== $f"; tail -n 4 "$f"; done
tar czf $OUT/runs.tgz --exclude=demos --exclude=tb --exclude='*.pt' --exclude='*.npz' --exclude='*.mp4' runs
echo "total $(( $(date +%s) - T0 )) s"
