"""Sweeps on clusters: preemption and requeue under submitit, and the checks and errors of the launchers.

Hydra accepts launcher classes only from its ``hydra_plugins`` package, so robotrl keeps the launchers of
hydra-submitit-launcher and hydra-ray-launcher as they are and works around them:

- **Preemption and time limits** (``hydra/launcher=slurm|slurm_cpu|submitit_local``): submitit's job process handles
  ``SIGUSR2`` (sent ``signal_delay_s`` before a preemption or the time limit) by pickling the job again and requeueing
  it. :func:`install_requeue` puts :mod:`robotrl.preemption` in front of that handler: the training loop checkpoints
  at its next episode end, a marker file (:data:`REQUEUE_MARKER`) is left in the run dir, then submitit requeues. The
  requeued job finds the marker and runs with ``resume=auto``: it resumes exactly from that checkpoint.
- :func:`submitit_failure`: a job that died without a result (killed, out of memory) as one line naming
  ``sweep job #N (run dir)`` and its real log file, read from the job's own submitit folder.
- :func:`check_launcher`, before Hydra writes anything: ``hydra/launcher=slurm`` where SLURM is not installed is
  refused in one line, and ``hydra/launcher=ray_cluster`` checks that every node of the cluster sees the sweep dir.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import uuid
from pathlib import Path
from typing import Any

from robotrl import preemption
from robotrl.atomic import atomic_write_text
from robotrl.errors import ConfigError, SweepJobError

REQUEUE_MARKER = ".requeued"  # in a run dir: its job was preempted after a checkpoint and requeued; resume it


# ------------------------------------------------------------------------------------------------ in the job
def under_submitit() -> bool:
    """This process is a submitit job (submitit's ``process_job`` sets ``SUBMITIT_FOLDER``)."""
    return "SUBMITIT_FOLDER" in os.environ


def take_requeue_marker(run_dir: Path) -> bool:
    """True (and the marker removed) when this job is the requeued run of a preempted one."""
    marker = Path(run_dir) / REQUEUE_MARKER
    if not marker.is_file():
        return False
    marker.unlink()
    return True


def install_requeue(run_dir: Path) -> None:
    """Run submitit's own preemption handler (requeue, exit) only after the training loop has checkpointed, and
    leave the marker that makes the requeued job resume."""
    import submitit

    usr_sig = submitit.JobEnvironment._usr_sig()
    handler = signal.getsignal(usr_sig)
    if not callable(handler):  # not set up by submitit's process_job: nothing to hand over to
        return

    def handoff(signum: int) -> None:
        marker = Path(run_dir) / REQUEUE_MARKER
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_text(marker, f"signal {signum}: requeued; the next start of this job resumes\n")
        try:
            handler(signum, None)  # submitit: pickle the job, requeue it, exit (SystemExit)
        except Exception:  # not requeued (e.g. past max_num_timeout): a later command decides, not the marker
            marker.unlink(missing_ok=True)
            raise

    preemption.install(usr_sig, handoff)


def submitit_resume(run_dir: Path, resume: bool | str) -> bool | str:
    """A sweep job's ``resume``: ``auto`` when this submitit job is the requeued run of a preempted one. From here
    on, in a submitit job, a preemption signal checkpoints before submitit requeues the job."""
    if not under_submitit():
        return resume
    if take_requeue_marker(run_dir):
        print(f"requeued after a preemption or time-limit signal: continuing {run_dir} from its last checkpoint")
        resume = "auto"
    install_requeue(run_dir)
    return resume


# ------------------------------------------------------------------------------------------------ errors
_UNCOMPLETED = re.compile(r"Job (\S+) \(task: (\d+)\) with path (\S+)")


def submitit_failure(error: Exception) -> SweepJobError | None:
    """A submitit job that ended without a result, as one line: ``sweep job #N (run dir)``, its log file and how
    to continue; None when ``error`` is not such a failure (or its submitit folder cannot be read)."""
    match = _UNCOMPLETED.search(str(error))
    if match is None:
        return None
    job_id, task, result = match.groups()
    folder = Path(result).parent
    log = folder / f"{job_id}_{task}_log.err"
    state = re.search(r"\(state: ([^)]*)\)", str(error))
    what = (f"it died without a result (killed, out of memory or past its time limit; submitit's state: "
            f"{state.group(1) if state else 'unknown'})")
    try:
        num, run_dir = _job_of(folder / f"{job_id}_submitted.pkl")
    except Exception:  # a submitit folder of another version: still name the log
        return SweepJobError(f"a sweep job failed under the submitit launcher: {what}; its log: {log}; continue "
                             f"the sweep with resume=auto")
    return SweepJobError(f"sweep job #{num} ({run_dir}) failed under the submitit launcher: {what}; its log: {log}; "
                         f"continue the sweep with resume=auto")


def _job_of(submitted: Path) -> tuple[int, Path]:
    """(job number, run dir) of a hydra-submitit-launcher job, from the job's pickle (written by this sweep)."""
    from submitit.core.utils import DelayedSubmission

    delayed = DelayedSubmission.load(submitted)
    overrides, _, num = delayed.args[:3]
    launcher = delayed.function
    sweep_config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
    # a relative sweep dir is relative to where `robotrl train -m` runs: this process
    return int(num), (Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)).absolute()


# ------------------------------------------------------------------------------------------------ before Hydra
def check_launcher(args: list[str], probe: Any = None) -> list[str]:
    """Checks of ``robotrl train -m ... hydra/launcher=NAME`` before Hydra writes a sweep dir (one-line errors);
    returns the arguments to run, for ``ray_cluster`` with the sweep dir made absolute (the jobs run on other nodes,
    in other working dirs)."""
    choices = [a.partition("=")[2] for a in args if a.startswith("hydra/launcher=")]
    if not choices or not any(a in ("-m", "--multirun") for a in args):
        return args
    hydra_keys = [a for a in args if a.startswith("hydra.")]
    cfg = _hydra_config(choices[-1], hydra_keys)
    if cfg is None:
        return args  # an unknown launcher: Hydra's own one-line error follows
    target = str(cfg.launcher.get("_target_", ""))
    if target.endswith("SlurmLauncher") and shutil.which("sbatch") is None:
        raise ConfigError(f"hydra/launcher={choices[-1]} submits SLURM jobs, but SLURM's sbatch is not on PATH; run "
                          f"the sweep on a login node of your cluster, or on this machine with "
                          f"hydra/launcher=submitit_local or ray_local (nothing was written)")
    if target.endswith("RayLauncher") and cfg.launcher.ray.init.get("address") is not None:
        _connect_ray(cfg.launcher.ray.init)
        sweep_dir = Path(str(cfg.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        check_shared_storage(sweep_dir, probe or ray_probe)
        args = [a for a in args if not a.startswith("hydra.sweep.dir=")] + [f"hydra.sweep.dir={sweep_dir}"]
    return args


def _hydra_config(launcher: str, hydra_keys: list[str]) -> Any:
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from robotrl.config import register_hydra

    register_hydra()

    try:
        with initialize_config_module("robotrl.configs", version_base="1.3"):
            cfg = compose("config", overrides=[f"hydra/launcher={launcher}", *hydra_keys], return_hydra_config=True)
    except HydraException:
        return None
    return OmegaConf.create({"launcher": cfg.hydra.launcher, "sweep": {"dir": cfg.hydra.sweep.dir}})


def _connect_ray(init: Any) -> None:
    """Join the cluster with the launcher's ``ray.init`` settings; hydra-ray-launcher's launch then finds Ray running
    and reuses it. (Left to itself it would add ``object_store_memory``, which Ray refuses when joining a cluster.)"""
    import ray
    from omegaconf import OmegaConf

    if ray.is_initialized():
        return
    try:
        ray.init(**OmegaConf.to_container(init, resolve=True))
    except (ConnectionError, ValueError) as e:  # no cluster there, or settings it refuses
        raise ConfigError(f"hydra/launcher=ray_cluster could not join a Ray cluster at "
                          f"hydra.launcher.ray.init.address={init.get('address')} (RAY_ADDRESS wins when set): "
                          f"{' '.join(str(e).split())[:300]}; start one with `ray start --head` (nothing was "
                          f"launched)") from None


def check_shared_storage(sweep_dir: Path, probe: Any) -> None:
    """Raise a one-line ConfigError unless every node sees ``sweep_dir``: a marker file is written there and
    ``probe(marker)`` returns ``[(node, seen), ...]`` from every node of the cluster."""
    marker = Path(sweep_dir) / f".robotrl-shared-storage-{uuid.uuid4().hex}"
    marker.write_text(socket.gethostname())
    try:
        blind = [node for node, seen in probe(marker) if not seen]
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        raise ConfigError(f"hydra.sweep.dir={sweep_dir} is not on storage every Ray node shares: "
                          f"{', '.join(blind)} cannot see it (their run dirs would be lost to `robotrl report` and "
                          f"resume); set hydra.sweep.dir to a path every node mounts (NFS, Lustre, ...). Nothing "
                          f"was launched")


def ray_probe(marker: Path) -> list[tuple[str, bool]]:
    """(node address, whether it sees ``marker``) for every alive node of the connected Ray cluster."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        return Path(path).exists()

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    futures = [sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
               .remote(str(marker)) for n in nodes]
    return [(n.get("NodeManagerAddress", n["NodeID"]), bool(seen))
            for n, seen in zip(nodes, ray.get(futures), strict=True)]
