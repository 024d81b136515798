"""Range checks for hyperparameters: a bad value is one :class:`ConfigError` naming it and what was expected.

An agent calls :func:`require` first thing in ``__init__``, so ``MRQAgent(batch_size=0)`` in Python is refused like
``robotrl train agent=mrq agent.batch_size=0``, before any network is built. One keyword per kind of range::

    require("agent", positive_int={"batch_size": batch_size}, nonneg={"alpha": alpha}, unit={"discount": discount})

NaN and infinity are refused by every numeric kind: a NaN hyperparameter trains silently on garbage.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

from robotrl.errors import ConfigError


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


def _integer(value: Any) -> bool:  # an int (numpy's too), not a float that happens to be whole: 256.0 is a typo
    return not isinstance(value, bool) and isinstance(value, numbers.Integral)


KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "positive_int": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "nonneg_int": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "positive": (lambda v: _number(v) and v > 0, "a finite number > 0"),
    "nonneg": (lambda v: _number(v) and v >= 0, "a finite number >= 0"),
    "finite": (_number, "a finite number"),
    "fraction": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "unit": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "probability": (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
}


def require(where: str, **kinds: Mapping[str, Any]) -> None:
    """Raise ConfigError ``<where>.<key>=<value>, expected <range>`` (``<key>=...`` for ``where=""``: a command-line
    option) for the first value outside its kind's range (:data:`KINDS`: positive_int, nonneg_int, positive, nonneg,
    finite, fraction, unit, probability)."""
    for kind, values in kinds.items():
        if kind not in KINDS:
            raise TypeError(f"unknown range kind {kind!r}; known: {sorted(KINDS)}")
        ok, expected = KINDS[kind]
        for key, value in values.items():
            if not ok(value):
                raise ConfigError(f"{f'{where}.' if where else ''}{key}={value!r}, expected {expected}")


def given(**values: Any) -> dict[str, Any]:
    """The values that are set: optional hyperparameters (None: a default chosen later) are checked only when given,
    ``require("agent", positive=given(bc_lr=bc_lr))``."""
    return {key: value for key, value in values.items() if value is not None}


def require_below(where: str, low: tuple[str, Any], high: tuple[str, Any], equal_ok: bool = False) -> None:
    """Raise ConfigError unless ``low`` < ``high`` (or <= with ``equal_ok``); both are (key, value), already finite."""
    (low_key, low_value), (high_key, high_value) = low, high
    if not (low_value <= high_value if equal_ok else low_value < high_value):
        raise ConfigError(f"{where}.{low_key}={low_value!r} must be {'<=' if equal_ok else '<'} "
                          f"{where}.{high_key}={high_value!r}")
