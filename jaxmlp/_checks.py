"""Argument checks shared by the public entry points.

Every check runs in plain Python on static information (shapes, dtypes), so it works the
same under `jax.jit`.  Value checks (finiteness, label range) only run on concrete arrays
and are skipped under a trace, where the values are not known.
"""
from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when `x` holds actual values (not a tracer inside jit/grad/vmap)."""
    return not isinstance(x, jax.core.Tracer)


def as_array(x, name: str):
    """Turns array-likes into arrays; TypeError naming `name` for anything else."""
    if isinstance(x, (jax.Array, np.ndarray)):
        return x
    if isinstance(x, (list, tuple, numbers.Number)):
        try:
            return jnp.asarray(x)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must be an array, got {type(x).__name__}: {e}") from None
    if hasattr(x, "__array__") or hasattr(x, "__jax_array__"):
        return jnp.asarray(x)
    raise TypeError(f"{name} must be an array, got {type(x).__name__}")


def check_finite(x, name: str) -> None:
    """ValueError when concrete `x` holds NaN or Inf."""
    if is_concrete(x) and jnp.issubdtype(x.dtype, jnp.inexact):
        with jax.ensure_compile_time_eval():  # concrete values evaluate even inside a trace
            finite = bool(jnp.isfinite(x).all())
        if not finite:
            raise ValueError(f"{name} contains NaN or Inf values")


def positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def nonneg_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number >= 0, got {value!r}")
    value = float(value)
    if not (value >= 0 and np.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value
