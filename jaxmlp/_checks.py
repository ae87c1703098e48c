"""Argument checks shared by the public entry points.

Every check runs in plain Python on static information (shapes, dtypes), so it works the
same under `jax.jit`.  Value checks (finiteness, label range) only run on concrete arrays
and are skipped under a trace, where the values are not known.
"""
from __future__ import annotations

import numbers
import os
import stat

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when `x` holds actual values (not a tracer inside jit/grad/vmap)."""
    return not isinstance(x, jax.core.Tracer)


def as_array(x, name: str):
    """Turns array-likes into arrays; TypeError naming `name` for anything else.

    Lists, tuples and numbers become NumPy arrays (not JAX ones), so their values keep
    their own dtype until they are checked: `jnp.asarray([2**32])` overflows (int32
    without x64) before a label check could see the value.  Complex arrays are refused,
    since every later cast to a float dtype would drop the imaginary part."""
    if isinstance(x, (jax.Array, np.ndarray)):
        out = x
    elif isinstance(x, (list, tuple, numbers.Number)):
        try:
            out = np.asarray(x)
        except (TypeError, ValueError, OverflowError) as e:
            raise TypeError(f"{name} must be an array, got {type(x).__name__}: {e}") from None
        if out.dtype == object:
            raise TypeError(f"{name} must be a numeric array, got {type(x).__name__} "
                            f"of mixed or non-numeric entries")
    elif hasattr(x, "__jax_array__"):
        out = jnp.asarray(x)
    elif hasattr(x, "__array__"):
        out = np.asarray(x)
    else:
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    if jnp.issubdtype(out.dtype, jnp.complexfloating):
        raise TypeError(
            f"{name} must be a real array, got dtype {out.dtype}: complex values are refused "
            f"(a cast to float would silently drop the imaginary part)")
    return out


def check_finite(x, name: str) -> None:
    """ValueError when concrete `x` holds NaN or Inf (see `nonfinite`)."""
    if nonfinite(x) is not None:
        raise ValueError(f"{name} contains NaN or Inf values")


def nonfinite(a) -> str | None:
    """"NaN" or "Inf" when concrete float array `a` holds one (NaN first), else None.

    CPU arrays are read through NumPy (no compile per shape), in the dtype JAX will hold
    them in (a float64 NumPy array is float32 without x64, so 1e39 is Inf); arrays
    elsewhere reduce on their device and send back two booleans.  Tracers, non-float and not fully addressable
    (multi-process) arrays are not checked."""
    if not is_concrete(a) or not jnp.issubdtype(a.dtype, jnp.inexact):
        return None
    if isinstance(a, jax.Array):
        if not a.is_fully_addressable:
            return None
        if any(d.platform != "cpu" for d in a.devices()):
            with jax.ensure_compile_time_eval():
                has_nan, has_inf = jax.device_get((jnp.isnan(a).any(), jnp.isinf(a).any()))
            return "NaN" if has_nan else "Inf" if has_inf else None
    v = np.asarray(a)
    with np.errstate(over="ignore"):  # as JAX will hold it: float64 → float32 without x64
        v = v.astype(jax.dtypes.canonicalize_dtype(v.dtype), copy=False)
    if np.isfinite(v).all():
        return None
    return "NaN" if np.isnan(v).any() else "Inf"


def check_finite_leaves(named_leaves, hint: str = "") -> None:
    """ValueError "NAME contains NaN" for the first of (name, array) pairs that holds a
    NaN (or Inf); `hint` is appended to the message."""
    for name, a in named_leaves:
        bad = nonfinite(a)
        if bad is not None:
            v = np.asarray(a)
            count = int(np.count_nonzero(~np.isfinite(v)))
            raise ValueError(f"{name} contains {bad} ({count} of {v.size} entries are not "
                             f"finite){hint}")


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


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def open_regular(path, what: str, error: type):
    """`path` opened for binary reading, if it is a regular file (symlinks followed).

    Anything else (a directory, a FIFO, /dev/zero, a socket) raises ``error(f"{what} is a
    FIFO (named pipe), not a regular file")`` without being opened: ``os.stat`` looks first,
    and a FIFO swapped in after that is opened non-blocking and caught by ``os.fstat``.
    FileNotFoundError (and other OSErrors) propagate.  Used by every reader of untrusted
    files (checkpoints, `jaxmlp check` inputs, CSV).
    """
    def refuse(mode):
        kind = next((k for test, k in _FILE_KINDS if test(mode)), "not a regular file")
        return error(f"{what} is {kind}, not a regular file")

    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise refuse(mode)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise refuse(mode)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
