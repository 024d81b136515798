"""robotrl's Hydra launchers for clusters (``configs/hydra/launcher/{slurm,slurm_cpu,slurm_local,ray_cluster}.yaml``).

- :class:`SlurmLauncher` / :class:`LocalLauncher`: hydra-submitit-launcher's, plus submitit's checkpointing protocol.
  A job warned of preemption or of its time limit (``SIGUSR2``, ``signal_delay_s`` ahead) checkpoints at its next
  episode end (:mod:`robotrl.preemption`) and is requeued with ``resume=auto``, so the requeued job resumes exactly
  there (or starts, if the signal came before its first checkpoint). A job that died without a result is one line
  naming ``sweep job #N (run dir)`` and its real log file.
- :class:`SharedStorageRayLauncher`: hydra-ray-launcher's, after checking that every node of the Ray cluster sees the
  sweep dir (a run dir on a node's local disk would be lost to the report and to resume).
- :func:`check_launcher`: ``hydra/launcher=slurm`` where SLURM is not installed is refused before Hydra writes
  anything.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import uuid
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from omegaconf import OmegaConf

from robotrl import preemption
from robotrl.errors import ConfigError, SweepJobError

try:  # optional extras: robotrl[slurm] and robotrl[ray-sweep]; Hydra names the missing plugin when a config needs it
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher as _submitit
except ImportError:  # pragma: no cover
    _submitit = None

RESUME_ON_REQUEUE = "resume=auto"  # the requeued job resumes from its checkpoint, or starts if it has none


def requeue_overrides(overrides: list[str]) -> list[str]:
    """A job's overrides for its requeued run: the same, with ``resume=auto``."""
    return [o for o in overrides if o.lstrip("+~").partition("=")[0] != "resume"] + [RESUME_ON_REQUEUE]


def job_run_dir(config: Any, hydra_context: Any, overrides: list[str]) -> Path:
    """The run dir of the sweep job with ``overrides`` (``hydra.sweep.dir / hydra.sweep.subdir``)."""
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    return Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)


class _RequeueMixin:
    """Submitit's checkpointing protocol for hydra-submitit-launcher's launchers (see the module docstring)."""

    def __call__(self, sweep_overrides: list[str], *args: Any) -> JobReturn:
        """Runs in the job's process, after submitit set its own SIGUSR2 handler (pickle the job, requeue, exit):
        that handler now runs once the training loop has checkpointed."""
        import submitit

        usr_sig = submitit.JobEnvironment._usr_sig()
        handler = signal.getsignal(usr_sig)
        if callable(handler):
            preemption.install(usr_sig, lambda signum: handler(signum, None))
        try:
            return super().__call__(sweep_overrides, *args)
        finally:
            preemption.uninstall()

    def checkpoint(self, sweep_overrides: list[str], *args: Any) -> Any:
        """The job to requeue: the same sweep point with ``resume=auto``."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, requeue_overrides(sweep_overrides), *args)

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        """hydra-submitit-launcher 1.2's ``launch``, with each job's failure named: job number, run dir, log."""
        import submitit

        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=self.params["submitit_folder"],
                                         **{f"{self._EXECUTOR}_max_num_timeout": self.params[key]
                                            for key in ("max_num_timeout",) if key in self.params})
        base = set(OmegaConf.structured(_submitit.BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in self.params.items()
                                      if k not in ("submitit_folder", "max_num_timeout")})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        _submitit.log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        params = []
        for num, overrides in enumerate(job_overrides, start=initial_job_idx):
            _submitit.log.info(f"\t#{num} : {' '.join(filter_overrides(overrides))}")
            params.append((list(overrides), "hydra.sweep.dir", num, f"job_id_for_{num}", Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*params, strict=True))
        results = []
        for job, (overrides, _, num, _, _) in zip(jobs, params, strict=True):
            try:
                results.append(job.results()[0])
            except (submitit.core.utils.UncompletedJobError, submitit.core.utils.FailedJobError) as e:
                raise self._job_failure(e, job, num, overrides) from None
        return results

    def _job_failure(self, error: Exception, job: Any, num: int, overrides: list[str]) -> SweepJobError:
        """One line for a job that died without a result (killed, out of memory, past its time limit)."""
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        first = lines[0] if lines else type(error).__name__
        if "has not produced any output" in " ".join(lines[:2]):  # submitit names the result pickle, not the log
            first = f"it ended without a result (state: {job.state})"
        run_dir = job_run_dir(self.config, self.hydra_context, overrides)
        return SweepJobError(f"sweep job #{num} ({run_dir}) failed under the submitit launcher: {first[:300]}; its "
                             f"log: {job.paths.stderr}; continue the sweep with resume=auto")


if _submitit is not None:
    class SlurmLauncher(_RequeueMixin, _submitit.SlurmLauncher):
        """hydra-submitit-launcher's SLURM launcher with preemption checkpoints and requeue (module docstring)."""

    class LocalLauncher(_RequeueMixin, _submitit.LocalLauncher):
        """The same on this machine (submitit's local executor): try a cluster sweep before submitting it."""


def check_launcher(args: list[str]) -> None:
    """Refuse a SLURM launcher where SLURM is not installed, before Hydra writes a sweep dir."""
    choices = [a.partition("=")[2] for a in args if a.startswith("hydra/launcher=")]
    if not choices or not any(a in ("-m", "--multirun") for a in args):
        return
    target = _launcher_target(choices[-1])
    if target.endswith("SlurmLauncher") and shutil.which("sbatch") is None:
        raise ConfigError(f"hydra/launcher={choices[-1]} submits SLURM jobs, but SLURM's sbatch is not on PATH; run "
                          f"the sweep on a login node of your cluster, or on this machine with "
                          f"hydra/launcher=slurm_local (the same jobs, run here) or ray_local (nothing was written)")


def _launcher_target(name: str) -> str:
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException

    try:
        with initialize_config_module("robotrl.configs", version_base="1.3"):
            cfg = compose("config", overrides=[f"hydra/launcher={name}"], return_hydra_config=True)
    except HydraException:
        return ""  # an unknown launcher: Hydra's own one-line error follows
    return str(cfg.hydra.launcher.get("_target_", ""))


# ------------------------------------------------------------------------------------------------ Ray
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
    return [(n.get("NodeManagerAddress", n["NodeID"]), bool(seen)) for n, seen in zip(nodes, ray.get(futures),
                                                                                      strict=True)]


try:
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as _RayLauncher
except ImportError:  # pragma: no cover
    _RayLauncher = None

if _RayLauncher is not None:
    class SharedStorageRayLauncher(_RayLauncher):
        """hydra-ray-launcher's launcher; before any job starts, every node must see the sweep dir."""

        def launch(self, job_overrides: Any, initial_job_idx: int) -> Any:
            from hydra_plugins.hydra_ray_launcher._launcher_util import start_ray

            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            self.ray_cfg.init.setdefault("object_store_memory", 78643200)  # as hydra-ray-launcher's launch does
            start_ray(self.ray_cfg.init)
            check_shared_storage(sweep_dir, ray_probe)
            return super().launch(job_overrides, initial_job_idx)
