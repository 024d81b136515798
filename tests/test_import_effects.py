"""Importing robotrl changes nothing in the process: no OmegaConf resolver, no hydra ConfigStore entry, no
environment variable, warnings filter, torch thread count, logging handler or exit hook. Whatever needs one of
those sets it up when it runs (``register_hydra()`` before a composition, ``ensure_gl()`` before a GL context)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# Runs in a fresh interpreter: the third-party libraries the package imports are loaded first (their own import
# effects are not robotrl's), then the state is taken, then every robotrl module is imported, then compared.
PROBE = r"""
import atexit, importlib, importlib.util, json, logging, os, pkgutil, sys, warnings
import gymnasium, hydra, mujoco, numpy, omegaconf, torch  # noqa: F401  (their import effects are their own:
import matplotlib, matplotlib.figure, stable_baselines3, torch.utils.tensorboard  # urllib3's warnings filters, cv2's
# LD_LIBRARY_PATH and tqdm's filter through SB3, matplotlib's exit hooks)
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

def state():
    return {"env": dict(os.environ), "filters": [repr(f) for f in warnings.filters],
            "threads": torch.get_num_threads(), "interop": torch.get_num_interop_threads(),
            "handlers": [repr(h) for h in logging.getLogger().handlers], "level": logging.getLogger().level,
            "run_tag": OmegaConf.has_resolver("run_tag"), "store": sorted(ConfigStore.instance().repo),
            "exit_hooks": atexit._ncallbacks(), "mpl_backend": matplotlib.rcParams._get_backend_or_none()}

before = state()
skipped, imported = {}, []
# pyproject maps envs/ agents/ rewards/ hardware/ configs/ into the package: walk each of them too
for root in ("robotrl", "robotrl.envs", "robotrl.agents", "robotrl.rewards", "robotrl.hardware", "robotrl.configs"):
    package = importlib.import_module(root)
    imported.append(root)
    for info in pkgutil.walk_packages(package.__path__, root + ".", onerror=lambda name: None):
        if info.name in imported:
            continue
        try:
            importlib.import_module(info.name)
            imported.append(info.name)
        except ImportError as e:  # an optional extra that is not installed here: named in the output
            skipped[info.name] = f"{type(e).__name__}: {e}"[:200]
after = state()
print(json.dumps({"changed": {k: [before[k], after[k]] for k in before if before[k] != after[k]},
                  "imported": imported, "skipped": skipped}))
"""


def test_importing_every_module_changes_no_process_state():
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT")}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    print("skipped (optional extras not installed):", report["skipped"] or "none")
    # walk_packages reached the mapped plug-in packages and the workflows, not only robotrl/*.py
    for module in ("robotrl.cli", "robotrl.configs", "robotrl.envs.metaworld", "robotrl.agents.modem",
                   "robotrl.rewards.kagi", "robotrl.hardware.franka", "robotrl.workflows.trainer.factory",
                   "robotrl.workflows.worldenv.settings"):
        assert module in report["imported"], (module, report["skipped"].get(module))
    assert len(report["imported"]) > 150
    changed = report["changed"]
    if "env" in changed:  # name only the variables that differ
        before, after = changed.pop("env")
        changed["env"] = {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
                          if before.get(k) != after.get(k)}
    assert changed == {}, changed


def test_a_sweep_jobs_process_registers_what_resolving_its_dir_needs():
    """submitit and Ray unpickle hydra's task in a fresh process, then resolve ``hydra.sweep.subdir`` (run_tag)
    before calling it: the import-time registration was what made that work; unpickling the task does it now."""
    import pickle

    from robotrl.workflows.train_command import TrainJob

    code = ("import pickle, sys; from omegaconf import OmegaConf; from hydra.core.config_store import ConfigStore; "
            "import robotrl.workflows.train_command; before = OmegaConf.has_resolver('run_tag'); "
            "job = pickle.loads(sys.stdin.buffer.read()); "
            "print(before, OmegaConf.has_resolver('run_tag'), 'base' in ConfigStore.instance().repo, job.plan)")
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(TrainJob("the plan")),
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert out.stdout.decode().split() == ["False", "True", "True", "the", "plan"]
