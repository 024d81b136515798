"""One format for the global RNG states (Python, NumPy, torch, CUDA) in a checkpoint.

The trainer's checkpoints and World-Env's stage states both restore the global RNGs from it. It is made of tensors
and plain types only, so ``torch.load(weights_only=True)`` reads it back.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def get_rng_state() -> dict[str, Any]:
    """The global RNG states (``cuda`` only where CUDA is available)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned (after a round trip through ``torch.save``/``torch.load``)."""
    random.setstate(_tuplify(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys).astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x: Any) -> Any:
    """``torch.load`` gives lists where ``random.getstate`` gave tuples; ``random.setstate`` wants tuples."""
    return tuple(_tuplify(v) for v in x) if isinstance(x, list | tuple) else x
