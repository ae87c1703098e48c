"""Argument checks shared by the public entry points: the one place they are written.

The rule, everywhere:

- a value of the wrong **type** (a str, None or a list where a number belongs; a bool
  where an int or a float belongs; a float where an int belongs) raises ``TypeError``;
- a value of the right type but a bad **value** (negative, NaN or Inf, out of range, an
  unknown name) raises ``ValueError``.

Both say the same thing, in one style::

    <function>: <argument> must be <expected>, got <repr of the value>

e.g. ``adam: b1 must be a number in [0, 1), got '0.9'`` (a TypeError) or
``spirals: n must be a positive int, got 0`` (a ValueError).  ``where`` is the public
function (or class) the user called; ``name`` the argument as the user wrote it.

The scalar checks return the value converted (``int`` or ``float``), so a caller writes
``n = positive_int(n, "n", where="spirals")``.

Array checks run in plain Python on static information (shapes, dtypes), so they work the
same under `jax.jit`.  Value checks (finiteness, label range) only run on concrete arrays
and are skipped under a trace, where the values are not known.
"""
from __future__ import annotations

import math
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


# --------------------------------------------------------------------------- scalars


def _say(where, name: str, expected: str, value) -> str:
    prefix = f"{where}: " if where else ""
    return f"{prefix}{name} must be {expected}, got {value!r}"


def _is_bool(value) -> bool:
    return isinstance(value, (bool, np.bool_))


def integer(value, name: str, *, where: str, low: int | None = None) -> int:
    """`value` as an int >= `low` (no bound when None).

    TypeError unless `value` is an integer (Python or NumPy; a bool, a float such as 3.0
    or a str is refused); ValueError when it is below `low`."""
    expected = ("a positive int" if low == 1 else "an int" if low is None
                else f"an int >= {low}")
    if _is_bool(value) or not isinstance(value, numbers.Integral):
        raise TypeError(_say(where, name, expected, value))
    if low is not None and value < low:
        raise ValueError(_say(where, name, expected, value))
    return int(value)


def positive_int(value, name: str, *, where: str) -> int:
    """`value` as an int >= 1 (see `integer`)."""
    return integer(value, name, where=where, low=1)


def positive_ints(value, name: str, *, where: str) -> tuple:
    """A non-empty list or tuple of positive ints (a lone int counts as a 1-tuple), as a
    sorted tuple without repeats.  TypeError for anything but a non-empty list or tuple
    of ints; ValueError for an entry < 1."""
    expected = "a positive int or a non-empty tuple of positive ints"
    if isinstance(value, numbers.Integral) and not _is_bool(value):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not value:
        raise TypeError(_say(where, name, expected, value))
    for v in value:
        if _is_bool(v) or not isinstance(v, numbers.Integral):
            raise TypeError(_say(where, name, expected, value))
        if v < 1:
            raise ValueError(_say(where, name, expected, value))
    return tuple(sorted(set(int(v) for v in value)))


def _interval(low, high, low_open, high_open) -> str:
    if low is not None and high is not None:
        return (f"a number in {'(' if low_open else '['}{low:g}, {high:g}"
                f"{')' if high_open else ']'}")
    if low is not None:
        return f"a finite number {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"a finite number {'<' if high_open else '<='} {high:g}"
    return "a finite number"


def real(value, name: str, *, where: str, low: float | None = None,
         high: float | None = None, low_open: bool = False, high_open: bool = False,
         expected: str | None = None) -> float:
    """`value` as a finite float in the interval given by `low` and `high` (a bound that
    is None is absent; `low_open`/`high_open` exclude the bound itself).

    TypeError unless `value` is a real number (Python or NumPy int or float; a bool, a
    str, None or an array is refused); ValueError for NaN, ±Inf or a value outside the
    interval.  `expected` replaces the generated "a number in [0, 1)" in the message."""
    expected = expected or _interval(low, high, low_open, high_open)
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise TypeError(_say(where, name, expected, value))
    x = float(value)
    if not math.isfinite(x) or (
            low is not None and (x <= low if low_open else x < low)) or (
            high is not None and (x >= high if high_open else x > high)):
        raise ValueError(_say(where, name, expected, value))
    return x


def nonneg_real(value, name: str, *, where: str) -> float:
    """`value` as a finite float >= 0 (see `real`)."""
    return real(value, name, where=where, low=0.0)


def positive_real(value, name: str, *, where: str) -> float:
    """`value` as a finite float > 0 (see `real`)."""
    return real(value, name, where=where, low=0.0, low_open=True)


def probability(value, name: str, *, where: str, high_open: bool = False) -> float:
    """`value` as a float in [0, 1] ([0, 1) with `high_open`; see `real`)."""
    return real(value, name, where=where, low=0.0, high=1.0, high_open=high_open)


def flag(value, name: str, *, where: str) -> bool:
    """`value` as a bool; TypeError for anything else (1, "yes", None)."""
    if not _is_bool(value):
        raise TypeError(_say(where, name, "a bool (True or False)", value))
    return bool(value)


def one_of(value, name: str, choices, *, where: str):
    """`value` itself when it is one of `choices` (names, None, True/False).

    TypeError when its type is not among the choices' types (3 where a name belongs);
    ValueError when it is of the right type but not a choice (an unknown name)."""
    choices = list(choices)
    expected = f"one of {choices}"
    types = {type(c) for c in choices}
    if type(value) not in types and not (
            isinstance(value, str) and str in types):  # a str subclass is a str
        raise TypeError(_say(where, name, expected, value))
    if value not in choices:
        raise ValueError(_say(where, name, expected, value))
    return value


# --------------------------------------------------------------------------- arrays


def array(value, name: str, *, where: str, ndim: int | None = None,
          dtype_kind: str | None = None, min_rows: int = 0) -> np.ndarray:
    """`value` as a NumPy array, checked.

    TypeError unless it is array-like with a real numeric dtype, one of the kinds in
    `dtype_kind` ("biuf" by default: bool, int, unsigned, float); ValueError when it has
    not `ndim` dimensions or fewer than `min_rows` rows."""
    kinds = dtype_kind or "biuf"
    try:
        arr = np.asarray(value)
    except Exception as e:  # ragged lists and the like
        raise TypeError(f"{where}: {name} must be a numeric array, got "
                        f"{type(value).__name__}: {e}") from None
    if arr.dtype.kind not in kinds:
        what = {"f": "a float array", "iu": "an int array", "ui": "an int array"}.get(
            kinds, "a real numeric array")
        raise TypeError(f"{where}: {name} must be {what}, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{where}: {name} must have {ndim} dimension(s), got shape "
                         f"{arr.shape}")
    if min_rows and (arr.ndim == 0 or arr.shape[0] < min_rows):
        raise ValueError(f"{where}: {name} must have at least {min_rows} row(s), got shape "
                         f"{arr.shape}")
    return arr


def finite_array(value, name: str, *, where: str, **kw) -> np.ndarray:
    """`array(value, ...)` that is also free of NaN and Inf (ValueError otherwise)."""
    arr = array(value, name, where=where, **kw)
    bad = nonfinite(arr)
    if bad is not None:
        raise ValueError(f"{where}: {name} must be finite, got an array with {bad} values")
    return arr


# --------------------------------------------------------------------------- files


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def regular_file(path, what: str, error: type):
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
