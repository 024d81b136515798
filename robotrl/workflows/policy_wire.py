"""The policy server's wire format (:mod:`robotrl.workflows.policy_server`). A message is::

    b"RRL1" | uint32 little-endian header length | header (UTF-8 JSON) | array payloads

where the header lists ``arrays: [{name, dtype, shape, nbytes}]`` in payload order (dtypes from a fixed
allow-list) plus small JSON ``meta``; :func:`decode` checks every length, dtype and shape before any array is
built, and :func:`check_values` refuses non-finite or huge observations.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

MAGIC = b"RRL1"
DTYPES = frozenset({"uint8", "float32", "float64", "int64", "bool"})
MAX_HEADER_BYTES = 64 * 1024
# Largest magnitude accepted in a float observation. Observations are pixels, positions in m, angles in rad,
# velocities: anything past 1e6 is a broken sensor or an attack, and a network fed 1e30 returns inf/NaN actions.
MAX_OBS_ABS = 1e6


class MessageError(ValueError):
    """A message does not follow the wire format (the server answers INVALID_ARGUMENT)."""


def encode(arrays: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> bytes:
    """Arrays (raw little-endian bytes) + JSON meta -> one message."""
    parts, specs = [], []
    for name, value in arrays.items():
        arr = np.ascontiguousarray(value)
        if arr.dtype.name not in DTYPES:
            raise MessageError(f"array {name!r} has dtype {arr.dtype}, expected one of {sorted(DTYPES)}")
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        specs.append({"name": name, "dtype": arr.dtype.name, "shape": list(arr.shape), "nbytes": arr.nbytes})
        parts.append(arr.tobytes())
    header = json.dumps({"arrays": specs, "meta": meta or {}}).encode()
    return b"".join([MAGIC, struct.pack("<I", len(header)), header, *parts])


def decode(message: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One message -> (arrays, meta); raises MessageError naming the first thing wrong."""
    if len(message) < 8 or message[:4] != MAGIC:
        raise MessageError(f"message does not start with {MAGIC!r} (got {bytes(message[:4])!r}, {len(message)} bytes)")
    (size,) = struct.unpack("<I", message[4:8])
    if size > MAX_HEADER_BYTES or 8 + size > len(message):
        raise MessageError(f"header length {size} exceeds the message ({len(message)} bytes) or {MAX_HEADER_BYTES}")
    try:  # RecursionError: a header nested ~30,000 deep fits in MAX_HEADER_BYTES and exhausts json's stack
        header = json.loads(bytes(message[8:8 + size]))
        specs, meta = header["arrays"], header.get("meta", {})
        if not isinstance(specs, list) or not isinstance(meta, dict):
            raise TypeError("arrays must be a list and meta an object")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise MessageError(f"header is not valid ({type(exc).__name__}: {exc})") from None
    arrays, offset = {}, 8 + size
    for spec in specs:
        try:
            name, dtype, shape, nbytes = str(spec["name"]), spec["dtype"], tuple(spec["shape"]), int(spec["nbytes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageError(f"array spec {spec!r} is not valid ({type(exc).__name__})") from None
        if dtype not in DTYPES:
            raise MessageError(f"array {name!r} has dtype {dtype!r}, expected one of {sorted(DTYPES)}")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise MessageError(f"array {name!r} has shape {list(shape)}, expected non-negative ints")
        # Python ints, not int64: a shape like [2**62, 2**62, 4] wraps to 0 bytes in int64 and passed this check
        expected = math.prod(shape) * np.dtype(dtype).itemsize
        if nbytes != expected or offset + nbytes > len(message):
            raise MessageError(f"array {name!r}: {nbytes} bytes declared, shape {list(shape)} {dtype} needs {expected}"
                               f", {len(message) - offset} left in the message")
        arrays[name] = np.frombuffer(message, np.dtype(dtype).newbyteorder("<"), count=expected // np.dtype(
            dtype).itemsize, offset=offset).reshape(shape).astype(dtype)
        offset += nbytes
    if offset != len(message):
        raise MessageError(f"{len(message) - offset} trailing bytes after the declared arrays")
    return arrays, meta


def check_values(obs: dict[str, np.ndarray]) -> None:
    """Refuse (MessageError) a float observation with a NaN, an inf or a value beyond +-MAX_OBS_ABS, naming the first
    such element: the policy would answer it with non-finite or saturated actions."""
    for name, arr in obs.items():
        if arr.dtype.kind != "f":
            continue
        bad = ~(np.abs(arr) <= MAX_OBS_ABS)  # NaN compares False: caught here too
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            where = "".join(f"[{i}]" for i in index)
            raise MessageError(f"observation[{name!r}]{where}={float(arr[index])!r} is not a finite value within "
                               f"+-{MAX_OBS_ABS:g}")
