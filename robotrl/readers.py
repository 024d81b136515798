"""Read data files with one-line errors naming the file: ``.npz`` archives (a file that is not an npz is named as
such, not as a pickle), JSON and YAML (a file cut short by a crash is "not valid JSON", not a decoder's traceback)."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.errors import RobotRLError


def read_npz(path: Path, error: type[RobotRLError], what: str = "npz archive") -> dict[str, np.ndarray]:
    """All arrays of the npz at ``path``; any problem raises ``error`` with one line naming the file.

    numpy reads a non-zip file as a pickled array and, with ``allow_pickle=False``, says "Cannot load file
    containing pickled data", which misleads when the file is simply text; check for the zip format first.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} missing (expected a .npz file)")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(16)
        raise error(f"{path} is not a {what}: expected a .npz (zip) file, it starts with {head!r}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise error(f"{path}: unreadable {what} ({type(exc).__name__}: {exc})".splitlines()[0]) from exc


def read_json(path: str | Path, error: type[RobotRLError], what: str = "JSON file") -> Any:
    """The JSON value in ``path``; a missing, unreadable or invalid file raises ``error`` with one line naming it."""
    return _parsed(path, error, what, "JSON", json.loads, (ValueError,))


def read_yaml(path: str | Path, error: type[RobotRLError], what: str = "YAML file",
              parse: Callable[[str], Any] | None = None) -> Any:
    """The YAML value in ``path``, by ``parse`` (default ``yaml.safe_load``; ``OmegaConf.create`` reads numbers as
    hydra does); a missing, unreadable or invalid file raises ``error`` naming it."""
    import yaml

    return _parsed(path, error, what, "YAML", parse or yaml.safe_load, (yaml.YAMLError,))


def _parsed(path: str | Path, error: type[RobotRLError], what: str, kind: str, parse: Callable[[str], Any],
            invalid: tuple[type[Exception], ...]) -> Any:
    path = Path(path)
    try:
        return parse(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: {what} missing") from None
    except (OSError, UnicodeDecodeError, *invalid) as exc:
        raise error(f"{path}: {what} is not valid {kind} ({' '.join(str(exc).split())})"[:300]) from exc
