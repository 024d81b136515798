"""Same seed, same numbers: a tiny World-Env pipeline through the command line, every number it writes digested.

    python bench/worldenv_parity.py --out /tmp/we --save before.json     # on one commit
    python bench/worldenv_parity.py --out /tmp/we2 --compare before.json  # on another: exit 1 on any difference

Runs ``robotrl worldenv`` collect, train-vla, collect, train-model, train-reflector, post-train, fidelity and then
train-vla again with more steps (a resume from the stage's checkpoint), each stage in its own process as a user runs
them, and digests what they wrote: every CSV row and JSON report number, and the sum and absolute sum of every tensor
of every checkpoint (the layout of checkpoint files may change between commits, their numbers may not).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

TINY = ["image_size=32", "max_episode_steps=40", "tasks=[reach]", "device=cpu", "collect.demos_per_task=2",
        "collect.noisy_per_task=2", "collect.policy_per_task=1", "collect.random_per_task=1", "vla.steps=20",
        "vla.snapshot_every=10", "vla.batch_size=8", "model.steps=4", "model.batch_size=2", "model.horizon=3",
        "model.block_channels=[8,16]", "model.hidden=16", "reflector.steps=4", "reflector.batch_size=8",
        "post_train.iterations=2", "post_train.group=3", "post_train.horizon=6", "eval.episodes=2",
        "fidelity.episodes=1", "fidelity.noise=[0.0,1.0]", "fidelity.degrade=[0.5]", "fidelity.bootstrap=50"]
STAGES = ["collect", "train-vla", "collect", "train-model", "train-reflector", "post-train", "fidelity"]
FINAL = {"vla": "vla/vla.pt", "model": "model/model.pt", "reflector": "reflector/reflector.pt",
         "post": "post/policy.pt"}
SKIP_JSON = ("digest", "weights")  # file hashes and weight origins: layout, not numbers


def run_pipeline(out: Path) -> None:
    for stage, extra in [*((s, []) for s in STAGES), ("train-vla", ["vla.steps=30"])]:
        cmd = [sys.executable, "-m", "robotrl.cli", "worldenv", stage, f"out={out}", *TINY, *extra]
        print("$", " ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, check=True)


def tensors(obj: Any, prefix: str = "") -> dict[str, list[float]]:
    """[sum, abs sum] of every tensor in a nested checkpoint payload, keyed by its path."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().double()
        return {prefix: [float(t.sum()), float(t.abs().sum())]}
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in tensors(val, f"{prefix}.{key}").items()}
    if isinstance(obj, list | tuple):
        return {k: v for i, val in enumerate(obj) for k, v in tensors(val, f"{prefix}[{i}]").items()}
    return {}


def plain(obj: Any) -> Any:
    """JSON numbers and strings without the file hashes."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items() if k not in SKIP_JSON}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    return obj


def digest(out: Path) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for path in sorted(out.rglob("*.csv")):
        with open(path, newline="") as f:
            d[str(path.relative_to(out))] = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    for path in sorted(out.rglob("report.json")):
        d[str(path.relative_to(out))] = plain(json.loads(path.read_text()))
    for name, rel in FINAL.items():
        payload = torch.load(out / rel, map_location="cpu", weights_only=True)
        d[f"weights/{name}"] = tensors(payload.get("model", payload))
    for snap in sorted((out / "vla" / "snapshots").glob("*.pt")):
        d[f"weights/{snap.name}"] = tensors(torch.load(snap, map_location="cpu", weights_only=True)["model"])
    return d


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in (differences(a[k], b[k], f"{where}/{k}") if k in a and k in b
                                          else [f"{where}/{k}: only in {'before' if k in a else 'after'}"])]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} items before, {len(b)} after"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{where}[{i}]")]
    same = a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    return [] if same else [f"{where}: {a!r} before, {b!r} after"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="a new run directory")
    ap.add_argument("--save", type=Path, help="write the digest here")
    ap.add_argument("--compare", type=Path, help="compare with a saved digest; exit 1 on any difference")
    args = ap.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; expected a new directory")
    run_pipeline(args.out)
    d = digest(args.out)
    if args.save:
        args.save.write_text(json.dumps(d, indent=1, sort_keys=True))
    if args.compare:
        diff = differences(json.loads(args.compare.read_text()), json.loads(json.dumps(d)))
        print(f"{len(diff)} differences from {args.compare}" + "".join(f"\n  {x}" for x in diff[:40]))
        return 1 if diff else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
