"""Parameter checks shared by every module: one rule for integers, one for real numbers.

Each check returns the value as a plain Python ``int`` / ``float`` and raises a
``ValueError`` that names the parameter and the value. Booleans are never numbers here.
Estimators declare the same rule in their ``_parameter_constraints`` with
:class:`NumberInterval` (scikit-learn validates them at ``fit``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from sklearn.utils._param_validation import Interval

__all__ = ["NumberInterval", "check_int", "check_real", "is_int", "is_real"]


def is_int(value) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """A real number (Python or numpy), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(value, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int in ``[minimum, maximum]``; ValueError naming ``name`` otherwise."""
    if (
        not is_int(value)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        raise ValueError(f"{name} must be {_int_range(minimum, maximum)}, got {value!r}")
    return int(value)


def check_real(
    value,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
) -> float:
    """``value`` as a finite float within the bounds; ValueError naming ``name`` otherwise.

    ``exclusive_minimum=True`` asks for ``value > minimum`` (else ``value >= minimum``);
    likewise for the maximum.
    """
    ok = is_real(value) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if exclusive_minimum else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if exclusive_maximum else value <= maximum
    if not ok:
        bounds = []
        if minimum is not None:
            bounds.append(f"{'>' if exclusive_minimum else '>='} {minimum:g}")
        if maximum is not None:
            bounds.append(f"{'<' if exclusive_maximum else '<='} {maximum:g}")
        where = f" {' and '.join(bounds)}" if bounds else ""
        raise ValueError(f"{name} must be a finite number{where}, got {value!r}")
    return float(value)


def _int_range(minimum, maximum) -> str:
    if minimum == 1 and maximum is None:
        return "a positive integer"
    if minimum is not None and maximum is not None:
        return f"an integer in {minimum}..{maximum}"
    if minimum is not None:
        return f"an integer >= {minimum}"
    if maximum is not None:
        return f"an integer <= {maximum}"
    return "an integer"


class NumberInterval(Interval):
    """scikit-learn's ``Interval`` constraint that refuses booleans.

    For an estimator's ``_parameter_constraints``: ``True`` is an ``Integral`` to Python,
    but never a number of clusters or a tolerance here (the rule of :func:`is_int`).
    The error message is scikit-learn's ``InvalidParameterError`` (a ``ValueError``),
    which names the parameter and the value.
    """

    def is_satisfied_by(self, val) -> bool:
        return not isinstance(val, bool | np.bool_) and super().is_satisfied_by(val)
