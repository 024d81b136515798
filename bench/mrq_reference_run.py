"""Run facebookresearch/MRQ's own training script on this machine's CPU, beside robotrl's MR.Q on the same task.

    OMP_NUM_THREADS=1 MUJOCO_GL=egl python bench/mrq_reference_run.py --ref /work/.mirror/facebookresearch+MRQ/repo \\
        --out runs/mrq_reference/walker_walk_state -- --env Dmc-walker-walk --seed 1 --total_timesteps 20000

Everything after ``--`` goes to the reference's ``main.py`` unchanged (``--env``, ``--seed``, ``--total_timesteps`` in
agent steps, ``--eval_freq``...). Its ``MRQ/*.py`` are read from the git dir into a temporary directory and run from
there (nothing of it is copied into robotrl); its evals land in ``<out>/evals/MRQ+<env>+<seed>.txt`` (one mean return
per line, every ``eval_freq`` agent steps from 0) and its log in ``<out>/logs/``. Two things are set for this machine
and change nothing of the algorithm: ``--device cpu`` and torch's thread count (``--threads``), and the replay's
``torch.cuda.mem_get_info`` probe answers "no GPU memory" so that it keeps its storage on the CPU (a CUDA build of
torch raises there without a GPU). The reference seeds numpy and torch itself from ``--seed``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mrq_parity import load_reference  # noqa: E402
from robotrl.envs.rendering import ensure_gl  # noqa: E402


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--ref, --out, --threads and the reference main.py's own arguments after ``--``."""
    parser.add_argument("--ref", type=Path, required=True, help="facebookresearch/MRQ git dir or checkout")
    parser.add_argument("--out", type=Path, required=True, help="folder for the reference's evals/ and logs/")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 per process on a shared CPU)")
    parser.add_argument("main_args", nargs=argparse.REMAINDER, help="-- then the reference main.py's arguments")


def run(args: argparse.Namespace, label: str, patch: Callable[[ModuleType], None] | None = None) -> None:
    """The reference's main.py from a temp copy, on the CPU, writing into ``args.out``; ``patch`` sees its module
    before it runs (``bench/mrq_hybrid_run.py`` swaps the agent there)."""
    main_args = args.main_args[1:] if args.main_args[:1] == ["--"] else args.main_args
    if any(a.startswith("--device") or a.endswith("_folder") for a in main_args):
        raise SystemExit(f"--device and the *_folder arguments are set by this script, got {main_args}")
    ensure_gl()  # MUJOCO_GL defaults to egl; robotrl's GL set-up order (triton before Mesa), also for pixel envs
    torch.set_num_threads(args.threads)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        sys.argv = ["main.py", *main_args, "--device", "cpu", "--eval_folder", str(out / "evals"),
                    "--log_folder", str(out / "logs"), "--save_folder", str(out / "checkpoint")]
        print(f"{label}:", " ".join(sys.argv), flush=True)
        # the reference's MRQ/*.py on sys.path, its replay's cuda probe patched
        main_module = load_reference(args.ref, Path(tmp), module="main")
        if patch is not None:
            patch(main_module)
        main_module.main()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    run(parser.parse_args(), "reference")


if __name__ == "__main__":
    main()
