r"""Optimizers, learning-rate schedules, gradient clipping and composition.

Notation (DESIGN.md): g = ∂L/∂θ is the gradient of one parameter leaf θ (a ``W``, ``b``,
``gamma`` or ``beta`` array), η the learning rate, t = count + 1 the step number, where
count is the number of updates already applied (0 at the first update).  Every operation
below is elementwise on one leaf; only ‖g‖ in clipping runs over all leaves::

    sgd       v ← μv + g                          Δθ = −η(g + μv)  (nesterov)  or  −ηv
    rmsprop   s ← ρs + (1 − ρ)g²                  Δθ = −η g / (√(s + ε_root) + ε)
              centered: m ← ρm + (1 − ρ)g,  s − m² in place of s
              momentum: u ← μu + g / (√(·) + ε),  Δθ = −ηu
    adam      m ← β₁m + (1 − β₁)g,  v ← β₂v + (1 − β₂)g²
              m̂ = m / (1 − β₁ᵗ),  v̂ = v / (1 − β₂ᵗ)     Δθ = −η m̂ / (√(v̂ + ε_root) + ε)
    adamw     adam's Δθ − η·λ·θ                   (decoupled decay, masked leaves: ``W``)
    adagrad   s ← s + g²                          Δθ = −η g / (√s + ε)
    clip      g ← g · τ/‖g‖  if ‖g‖ > τ,   ‖g‖ = √(Σ_leaves Σ g²)

and the parameters move by θ ← θ + Δθ (:func:`apply_updates`).

The design is optax's: an optimizer is a :class:`GradientTransformation`, a NamedTuple of
two pure functions ``init(params) -> state`` and ``update(updates, state, params=None) ->
(updates, state)``; hyperparameters are closed over by a factory that validates them in
plain Python before any tracing; states are NamedTuples of pytrees, rebuilt and returned,
never mutated.  The updates returned are already negated, so :func:`apply_updates` adds::

    opt = adam(1e-3)
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    params = apply_updates(params, updates)

State leaves (moments, accumulators) have the shapes and dtypes of the params, and every
state carries an int32 scalar ``count``.  ``learning_rate`` is a positive number or a
schedule ``count -> η`` (see :func:`constant_schedule` and the others); η is cast to each
leaf's dtype, so float32 params stay float32.  Everything jit-compiles and works on any
params pytree.
"""
from __future__ import annotations

import collections
import functools
import hashlib
import inspect
import math
import numbers
import threading
import weakref
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import _validate as _v

__all__ = [
    "GradientTransformation",
    "Schedule",
    "EmptyState",
    "SgdState",
    "RmsPropState",
    "AdamState",
    "AdagradState",
    "apply_updates",
    "constant_schedule",
    "linear_schedule",
    "exponential_decay",
    "cosine_decay_schedule",
    "warmup_cosine_decay_schedule",
    "piecewise_constant_schedule",
    "join_schedules",
    "cosine_decay",
    "warmup_cosine_decay",
    "sgd",
    "rmsprop",
    "adam",
    "adamw",
    "adagrad",
    "global_norm",
    "clip_by_global_norm",
    "identity",
    "chain",
    "describe",
]

PyTree = Any
Schedule = Callable[[jax.Array], jax.Array]
"""A learning-rate schedule: int32 scalar count (updates already applied) -> scalar rate."""


# --------------------------------------------------------------------------------------
# Core types
# --------------------------------------------------------------------------------------


class GradientTransformation(NamedTuple):
    """A pair of pure functions; hashable, so it can be closed over or passed as static.

    Attributes:
      init: ``init(params) -> state``.
      update: ``update(updates, state, params=None) -> (updates, new_state)``; ``updates``
        in is a gradient-shaped pytree, ``updates`` out has the same structure and, for an
        optimizer, is the negated step Δθ to add to the params.
    """

    init: Callable[[PyTree], Any]
    update: Callable[..., tuple[PyTree, Any]]


class EmptyState(NamedTuple):
    """State of a stateless transformation (:func:`identity`, :func:`clip_by_global_norm`)."""


class SgdState(NamedTuple):
    """``count``: int32 scalar; ``velocity``: v, like params, or ``()`` when momentum is 0."""

    count: jax.Array
    velocity: PyTree


class RmsPropState(NamedTuple):
    """``count``: int32 scalar; ``nu``: s (running mean of g²), like params; ``mu``: m
    (running mean of g), like params when centered else ``()``; ``momentum``: u, like
    params when momentum > 0 else ``()``."""

    count: jax.Array
    nu: PyTree
    mu: PyTree
    momentum: PyTree


class AdamState(NamedTuple):
    """``count``: int32 scalar (t − 1); ``mu``: m, first moment; ``nu``: v, second moment
    (both like params, uncorrected).  Used by :func:`adam` and :func:`adamw`."""

    count: jax.Array
    mu: PyTree
    nu: PyTree


class AdagradState(NamedTuple):
    """``count``: int32 scalar; ``sum_of_squares``: s = s₀ + Σ g², like params."""

    count: jax.Array
    sum_of_squares: PyTree


def apply_updates(params: PyTree, updates: PyTree) -> PyTree:
    """θ ← θ + Δθ leaf by leaf; each result keeps its param's dtype.

    Args:
      params: any pytree of arrays.
      updates: a pytree with the same structure and shapes (an optimizer's output).
    Returns:
      The new params, same structure, shapes and dtypes as ``params``.
    """
    return jax.tree.map(
        lambda p, u: jnp.asarray(p + u).astype(jnp.result_type(p)), params, updates
    )


# --------------------------------------------------------------------------------------
# Validation (plain Python, before any tracing)
# --------------------------------------------------------------------------------------


_SHARED_MAX = 256  # distinct argument sets remembered per constructor


def _shared(constructor):
    """Makes `constructor` return one object per distinct set of arguments (defaults
    filled in).

    `fit` and `make_train_step` take the optimizer as a static argument of `jax.jit`, and
    a GradientTransformation compares by the identity of its two functions: without this,
    ``fit(..., adam(1e-3), ...)`` called twice compiled its epoch twice (seconds on a CPU).
    Arguments are keyed by type and value (so ``nesterov=1`` is still refused after
    ``nesterov=True`` was accepted); a call with an unhashable argument (an array, a
    tracer) builds a new object, as does a call after the ``_SHARED_MAX`` most recent
    argument sets have pushed its entry out.  Sharing is safe: the objects are immutable
    pairs of pure functions.
    """
    cache = collections.OrderedDict()
    lock = threading.Lock()
    signature = inspect.signature(constructor)

    @functools.wraps(constructor)
    def make(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:  # let the constructor itself refuse the call
            return constructor(*args, **kwargs)
        bound.apply_defaults()  # adam(1e-3) and adam(learning_rate=1e-3, b1=0.9) are one
        try:
            key = tuple((k, _freeze(v)) for k, v in bound.arguments.items())
            hash(key)
        except TypeError:  # unhashable: nothing to share
            made = constructor(*args, **kwargs)
            _remember(made, constructor.__name__, bound.arguments)
            return made
        with lock:
            made = cache.get(key)
            if made is not None:
                cache.move_to_end(key)
                return made
        made = constructor(*args, **kwargs)  # validates: an error is not remembered
        _remember(made, constructor.__name__, bound.arguments)
        with lock:
            made = cache.setdefault(key, made)  # another thread may have been first
            if len(cache) > _SHARED_MAX:
                cache.popitem(last=False)
        return made

    return make


def _freeze(value):
    """A hashable key for an argument: (type, value), with lists, tuples and dicts (a
    mask, ``boundaries_and_scales``, ``join_schedules``' lists) frozen entry by entry.
    TypeError when something inside is unhashable (an array) or a dict's keys do not
    sort."""
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: kv[0])
        return (dict, tuple((_freeze(k), _freeze(v)) for k, v in items))
    if isinstance(value, (list, tuple)):
        return (type(value), tuple(_freeze(v) for v in value))
    return (type(value), value)


# What each object made by a factory of this module was made from (its factory's name and
# arguments), for `describe`; keyed weakly by the object's function (a schedule, or an
# optimizer's `update`), so nothing here keeps an optimizer alive.
_MADE_FROM: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _remember(made, name: str, arguments) -> None:
    fn = made.update if isinstance(made, GradientTransformation) else made
    try:
        _MADE_FROM[fn] = (name, dict(arguments))
    except TypeError:  # not weak-referenceable: nothing to remember
        pass


def _code_digest(fn) -> str:
    """A short hash of a Python function's code, constants and closed-over numbers: a
    user's schedule edited between two runs gets another digest."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return ""
    h = hashlib.sha256(code.co_code)
    h.update(repr(code.co_consts).encode())
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(value, (numbers.Number, str, bool, type(None))):
            h.update(repr(value).encode())
    return h.hexdigest()[:16]


def describe(obj) -> Any:
    """A JSON-serialisable description of an optimizer, schedule or hyperparameter.

    An object made by this module's factories is described by the factory's name and its
    arguments (defaults filled in), recursively: ``describe(adam(1e-3))`` is
    ``{"name": "adam", "args": {"learning_rate": 0.001, "b1": 0.9, …}}``.  A user's own
    callable is named by its module and qualified name, with a digest of its code; an
    array by its shape, dtype and a SHA-256 of its bytes; a dict (an ``adamw`` mask,
    ``boundaries_and_scales``) as a list of ``[key, value]`` pairs sorted by key.  Two
    optimizers with equal descriptions compute the same updates; `fit` stores the
    description in its checkpoints and refuses to resume a run with another one.
    """
    if callable(obj) or isinstance(obj, GradientTransformation):
        try:
            made = _MADE_FROM.get(obj.update if isinstance(obj, GradientTransformation) else obj)
        except TypeError:  # not weak-referenceable (a builtin): not made here
            made = None
        if made is not None:
            return {"name": made[0], "args": {k: describe(v) for k, v in made[1].items()}}
    if isinstance(obj, GradientTransformation):  # assembled by hand from two functions
        return {"name": "GradientTransformation", "init": _qualname(obj.init),
                "update": _qualname(obj.update), "code": _code_digest(obj.update)}
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    if isinstance(obj, (jax.Array, np.ndarray)):
        out = {"array": list(np.shape(obj)), "dtype": str(obj.dtype)}
        if not isinstance(obj, jax.core.Tracer):
            out["sha256"] = hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest()
        return out
    if isinstance(obj, (tuple, list)):
        return [describe(v) for v in obj]
    if isinstance(obj, dict):  # [key, value] pairs, sorted: JSON would make int keys str
        items = list(obj.items())
        try:
            items.sort(key=lambda kv: kv[0])
        except TypeError:
            pass
        return [[describe(k), describe(v)] for k, v in items]
    if obj is None or isinstance(obj, str):
        return obj
    if callable(obj):
        return {"callable": _qualname(obj), "code": _code_digest(obj)}
    return {"object": type(obj).__qualname__, "repr": repr(obj)}


def _qualname(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _learning_rate(learning_rate: Any, where: str) -> Schedule:
    """Turns ``learning_rate`` into a schedule, validating a number (> 0, finite).

    A scalar array is accepted too: checked when concrete, taken as is when traced (so a
    learning-rate sweep can ``vmap`` over it without recompiling).
    """
    if callable(learning_rate):
        rate = _checked_schedule(learning_rate)
        with jax.ensure_compile_time_eval():
            rate(jnp.zeros([], jnp.int32))  # refuses a vector, NaN or negative rate now
        return rate
    if isinstance(learning_rate, (jax.Array, np.ndarray)) and not isinstance(
        learning_rate, (bool, np.bool_)
    ):
        if jnp.ndim(learning_rate) != 0:
            raise ValueError(
                f"{where}: learning_rate must be a scalar, got an array of shape "
                f"{jnp.shape(learning_rate)}"
            )
        try:
            _v.positive_real(float(learning_rate), "learning_rate", where=where)
        except jax.errors.ConcretizationTypeError:
            pass  # traced: its value is only known at run time
        return lambda count: learning_rate
    if isinstance(learning_rate, (bool, np.bool_)) or not isinstance(
        learning_rate, numbers.Real
    ):
        raise TypeError(
            f"{where}: learning_rate must be a number > 0 or a schedule callable "
            f"count -> rate, got {learning_rate!r}"
        )
    rate = _v.positive_real(learning_rate, "learning_rate", where=where)
    return lambda count: rate


def _checked_schedule(schedule: Schedule) -> Schedule:
    """`schedule` with its output checked: a real scalar (else an error when traced), and
    finite and >= 0.  A concrete rate that is not is refused (ValueError naming the
    count); a traced one becomes NaN, so that the update is NaN and `fit`'s divergence
    guard stops at that very step with the last finite parameters kept (a negative rate
    would otherwise climb the loss without a sign)."""

    def rate(count):
        eta = schedule(count)
        try:
            shape, dtype = jnp.shape(eta), jnp.result_type(eta)
        except TypeError:
            raise TypeError(f"the learning_rate schedule must return a number, got "
                            f"{type(eta).__name__}") from None
        if shape != ():
            raise ValueError(f"the learning_rate schedule must return a scalar rate, got an "
                             f"array of shape {shape}")
        if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
            raise TypeError(f"the learning_rate schedule must return a real number, got "
                            f"dtype {dtype}")
        if not isinstance(eta, jax.core.Tracer):
            value = float(eta)
            if not (math.isfinite(value) and value >= 0):
                at = ("" if isinstance(count, jax.core.Tracer)
                      else f" at count {int(count)}")
                raise ValueError(f"the learning_rate schedule returned {value!r}{at}: rates "
                                 f"must be finite and >= 0")
            return eta
        return jnp.where(jnp.isfinite(eta) & (eta >= 0), eta, jnp.nan)

    return rate


def _expect_state(state, kind: type, name: str) -> None:
    """TypeError, at trace time, when an optimizer's update gets another one's state."""
    if not isinstance(state, kind):
        raise TypeError(
            f"{name}'s update needs the {kind.__name__} of {name}(...).init(params) as its "
            f"state, got {type(state).__name__}: an opt_state of another optimizer?")


# --------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------


def _as_float(count: jax.Array) -> jax.Array:
    """count as the default float dtype (float64 under x64), for exact rate arithmetic."""
    return jnp.asarray(count).astype(jnp.result_type(float))


@_shared
def constant_schedule(value: float) -> Schedule:
    """η(count) = value  (optax's ``constant_schedule``).

    Args:
      value: the rate, finite and >= 0.
    Returns:
      A schedule; ``schedule(count)`` is a float scalar array.
    """
    value = _v.nonneg_real(value, "value", where="constant_schedule")

    def schedule(count):
        return jnp.full([], value, dtype=jnp.result_type(float))

    return schedule


def _steps(value, name: str, where: str) -> int:
    """A step count >= 1.  optax turns a count <= 0 into a constant schedule (with only a
    log line); here it is refused, with that said."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be a positive int, got {value!r}")
    value = int(value)
    if value < 1:
        raise ValueError(
            f"{where}: {name} must be a positive int, got {value!r} (optax silently gives "
            f"the constant init_value then: write constant_schedule(init_value) for that)")
    return value


@_shared
def linear_schedule(
    init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    """A linear ramp from ``init_value`` to ``end_value`` (optax's ``linear_schedule``)::

        η(count) = init + (end − init) · clip((count − transition_begin) / transition_steps, 0, 1)

    computed as optax does, (init − end)·(1 − k/transition_steps) + end with
    k = clip(count − transition_begin, 0, transition_steps): η = init up to
    ``transition_begin``, end from ``transition_begin + transition_steps`` on.

    Args:
      init_value, end_value: rates, finite and >= 0.
      transition_steps: int >= 1, the length of the ramp (optax makes a value <= 0 a
        constant ``init_value``; this refuses it).
      transition_begin: int >= 0, the count where the ramp starts.
    """
    where = "linear_schedule"
    init_value = _v.nonneg_real(init_value, "init_value", where=where)
    end_value = _v.nonneg_real(end_value, "end_value", where=where)
    transition_steps = _steps(transition_steps, "transition_steps", where)
    transition_begin = _v.integer(transition_begin, "transition_begin", where=where, low=0)

    def schedule(count):
        k = jnp.clip(_as_float(count) - transition_begin, 0.0, transition_steps)
        return (init_value - end_value) * (1.0 - k / transition_steps) + end_value

    return schedule


@_shared
def exponential_decay(
    init_value: float,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | None = None,
) -> Schedule:
    """Exponential decay, optax's ``exponential_decay`` (same names and argument order)::

        p = (count − transition_begin) / transition_steps      (⌊p⌋ with staircase=True)
        η(count) = init_value                      count <= transition_begin
        η(count) = init_value · decay_rate^p       count >  transition_begin

    then clipped at ``end_value`` when given: a lower bound when ``decay_rate < 1``
    (η = max(η, end_value)), an upper bound when ``decay_rate >= 1`` (η = min(η,
    end_value)).  With ``staircase=True`` the rate drops by a factor ``decay_rate`` every
    ``transition_steps`` updates.

    Before this version the order was ``(init_value, decay_rate, transition_steps,
    staircase)``: ``exponential_decay(0.1, 0.5, 10)`` is now
    ``exponential_decay(0.1, 10, 0.5)``.

    Args:
      init_value: η until ``transition_begin``, finite and >= 0.
      transition_steps: int >= 1 (optax makes a value <= 0 a constant ``init_value``;
        this refuses it).
      decay_rate: factor per ``transition_steps`` updates, finite and > 0 (< 1 decays).
      transition_begin: int >= 0.
      staircase: bool.
      end_value: None, or a bound, finite and >= 0.
    """
    where = "exponential_decay"
    init_value = _v.nonneg_real(init_value, "init_value", where=where)
    transition_steps = _steps(transition_steps, "transition_steps", where)
    decay_rate = _v.positive_real(decay_rate, "decay_rate", where=where)
    transition_begin = _v.integer(transition_begin, "transition_begin", where=where, low=0)
    staircase = _v.flag(staircase, "staircase", where=where)
    if end_value is not None:
        end_value = _v.real(end_value, "end_value", where=where, low=0.0,
                            expected="None or a finite number >= 0")
    bound = jnp.maximum if decay_rate < 1.0 else jnp.minimum

    def schedule(count):
        steps = _as_float(count) - transition_begin
        p = steps / transition_steps
        if staircase:
            p = jnp.floor(p)
        value = jnp.where(steps <= 0, init_value, init_value * decay_rate**p)
        if end_value is not None:
            value = bound(value, end_value)
        return value

    return schedule


def _cosine_factor(count, decay_steps: int, exponent: float):
    """(½(1 + cos(π·min(count, decay_steps)/decay_steps)))^exponent, count a float."""
    cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(count, decay_steps) / decay_steps))
    return cosine if exponent == 1.0 else cosine**exponent


@_shared
def cosine_decay_schedule(
    init_value: float, decay_steps: int, alpha: float = 0.0, exponent: float = 1.0
) -> Schedule:
    """Cosine decay, optax's ``cosine_decay_schedule``::

        η(count) = init_value · ((1 − α)·(½(1 + cos(π·min(count, decay_steps)/decay_steps)))^exponent + α)

    Falls from ``init_value`` at count 0 to ``alpha · init_value`` at ``decay_steps`` and
    stays there.

    Args:
      init_value: η at count 0, finite and >= 0.
      decay_steps: int >= 1.
      alpha: final rate as a fraction of ``init_value``, in [0, 1].
      exponent: the power of the cosine factor, finite and > 0.
    """
    where = "cosine_decay_schedule"
    init_value = _v.nonneg_real(init_value, "init_value", where=where)
    decay_steps = _v.integer(decay_steps, "decay_steps", where=where, low=1)
    alpha = _v.probability(alpha, "alpha", where=where)
    exponent = _v.positive_real(exponent, "exponent", where=where)

    def schedule(count):
        factor = _cosine_factor(_as_float(count), decay_steps, exponent)
        return init_value * ((1.0 - alpha) * factor + alpha)

    return schedule


@_shared
def warmup_cosine_decay_schedule(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    end_value: float = 0.0,
    exponent: float = 1.0,
) -> Schedule:
    """Linear warm-up, then cosine decay: optax's ``warmup_cosine_decay_schedule``.

    ``decay_steps`` is the TOTAL length and includes the warm-up.  With w =
    ``warmup_steps``, D = ``decay_steps − w`` and α = end_value / peak_value (0 when
    peak_value is 0), as optax builds it (``join_schedules`` of a
    :func:`linear_schedule` and a :func:`cosine_decay_schedule`)::

        η(count) = (init − peak)·(1 − count/w) + peak                         count < w
        η(count) = peak · ((1 − α)·(½(1 + cos(π·min(count − w, D)/D)))^exponent + α)   count >= w

    so η = init at count 0, peak at count w, end_value at ``decay_steps`` and after.

    Args:
      init_value, peak_value, end_value: rates, finite and >= 0; ``end_value`` must be 0
        when ``peak_value`` is (optax would ignore it).
      warmup_steps: int >= 0 (0: start at ``peak_value``).
      decay_steps: int > warmup_steps.
      exponent: the power of the cosine factor, finite and > 0.
    """
    where = "warmup_cosine_decay_schedule"
    init_value = _v.nonneg_real(init_value, "init_value", where=where)
    peak_value = _v.nonneg_real(peak_value, "peak_value", where=where)
    warmup_steps = _v.integer(warmup_steps, "warmup_steps", where=where, low=0)
    decay_steps = _v.integer(decay_steps, "decay_steps", where=where, low=1)
    end_value = _v.nonneg_real(end_value, "end_value", where=where)
    exponent = _v.positive_real(exponent, "exponent", where=where)
    if decay_steps <= warmup_steps:
        raise ValueError(
            f"{where}: decay_steps must be > warmup_steps ({warmup_steps}): it is the total "
            f"length including warm-up, got {decay_steps!r}")
    if peak_value == 0.0 and end_value != 0.0:
        raise ValueError(
            f"{where}: end_value must be 0 when peak_value is 0 (the decay is relative to "
            f"the peak), got {end_value!r}")
    alpha = 0.0 if peak_value == 0.0 else end_value / peak_value
    cosine_steps = decay_steps - warmup_steps

    def schedule(count):
        c = _as_float(count)
        factor = _cosine_factor(c - warmup_steps, cosine_steps, exponent)
        value = peak_value * ((1.0 - alpha) * factor + alpha)
        if warmup_steps:
            k = jnp.clip(c, 0.0, warmup_steps)
            warm = (init_value - peak_value) * (1.0 - k / warmup_steps) + peak_value
            value = jnp.where(c < warmup_steps, warm, value)
        return value

    return schedule


@_shared
def piecewise_constant_schedule(
    init_value: float, boundaries_and_scales: dict | None = None
) -> Schedule:
    """A rate scaled at given counts: optax's ``piecewise_constant_schedule``::

        η(count) = init_value · Π scale   over every (boundary, scale) with count >= boundary

    A boundary takes effect AT its count (optax's indicator max(0, sign(boundary −
    count)) is 0 there): ``{10: 0.1}`` gives init_value for counts 0..9 and
    0.1·init_value from count 10 on.  The scales multiply in order of boundary.

    Args:
      init_value: η before the first boundary, finite and >= 0.
      boundaries_and_scales: None (a constant) or a dict {boundary: scale}, boundaries
        ints >= 0, scales finite and >= 0.
    """
    where = "piecewise_constant_schedule"
    init_value = _v.nonneg_real(init_value, "init_value", where=where)
    if boundaries_and_scales is None:
        steps = ()
    elif not isinstance(boundaries_and_scales, dict):
        raise TypeError(
            f"{where}: boundaries_and_scales must be None or a dict {{boundary: scale}}, got "
            f"{boundaries_and_scales!r}")
    else:
        steps = []
        for b, s in boundaries_and_scales.items():
            b = _v.integer(b, "each boundary (key) of boundaries_and_scales", where=where, low=0)
            s = _v.nonneg_real(s, f"boundaries_and_scales[{b!r}]", where=where)
            steps.append((b, s))
        steps = tuple(sorted(steps))

    def schedule(count):
        c = jnp.asarray(count)
        value = jnp.full([], init_value, dtype=jnp.result_type(float))
        for boundary, scale in steps:
            value = jnp.where(c >= boundary, value * scale, value)
        return value

    return schedule


@_shared
def join_schedules(schedules, boundaries) -> Schedule:
    """Schedules one after another: optax's ``join_schedules``::

        η(count) = schedules[0](count)                         count < boundaries[0]
        η(count) = schedules[i](count − boundaries[i − 1])     boundaries[i − 1] <= count < boundaries[i]
        η(count) = schedules[−1](count − boundaries[−1])       count >= boundaries[−1]

    so each schedule after the first starts again from count 0 at its boundary.  As in
    optax, every schedule is evaluated at every count (as an array; a shifted count may
    be negative) and ``jnp.where`` picks one value.

    Args:
      schedules: a non-empty list or tuple of schedules (callables count -> rate).
      boundaries: a list or tuple of len(schedules) − 1 increasing ints >= 0.
    """
    where = "join_schedules"
    if (not isinstance(schedules, (list, tuple)) or not schedules
            or not all(callable(s) for s in schedules)):
        raise TypeError(
            f"{where}: schedules must be a non-empty list of schedules (callables count -> "
            f"rate), got {schedules!r}")
    if not isinstance(boundaries, (list, tuple)):
        raise TypeError(f"{where}: boundaries must be a list of ints >= 0, got {boundaries!r}")
    bounds = tuple(_v.integer(b, "each entry of boundaries", where=where, low=0)
                   for b in boundaries)
    if len(bounds) != len(schedules) - 1:
        raise ValueError(
            f"{where}: boundaries must have len(schedules) - 1 = {len(schedules) - 1} "
            f"entries, got {list(boundaries)!r}")
    if any(later <= earlier for earlier, later in zip(bounds, bounds[1:])):
        raise ValueError(f"{where}: boundaries must be increasing, got {list(boundaries)!r}")
    parts = tuple(schedules)

    def schedule(count):
        count = jnp.asarray(count)
        value = parts[0](count)
        for boundary, part in zip(bounds, parts[1:]):
            value = jnp.where(count < boundary, value, part(count - boundary))
        return value

    return schedule


# Older spellings, kept (with their old descriptions, so checkpoints written with them
# still resume); the optax-shaped factories above are preferred.


@_shared
def cosine_decay(init_value: float, decay_steps: int, alpha: float = 0.0) -> Schedule:
    """The older spelling of :func:`cosine_decay_schedule` (``exponent=1``).

    η(count) = init_value · ((1 − α)·½(1 + cos(π·min(count, decay_steps)/decay_steps)) + α).

    Args:
      init_value: η at count 0, finite and >= 0.
      decay_steps: int >= 1.
      alpha: final rate as a fraction of ``init_value``, in [0, 1].
    """
    init_value = _v.nonneg_real(init_value, "init_value", where="cosine_decay")
    decay_steps = _v.integer(decay_steps, "decay_steps", where="cosine_decay", low=1)
    alpha = _v.probability(alpha, "alpha", where="cosine_decay")

    def schedule(count):
        progress = jnp.minimum(_as_float(count), decay_steps) / decay_steps
        cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        return init_value * ((1.0 - alpha) * cosine + alpha)

    return schedule


@_shared
def warmup_cosine_decay(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    end_value: float = 0.0,
) -> Schedule:
    """The older spelling of :func:`warmup_cosine_decay_schedule` (same arguments, equal
    values up to rounding; ``decay_steps`` is the total length)::

        η(count) = init + (peak − init) · count / w                     count < w
        η(count) = end + (peak − end) · ½(1 + cos(π · min(count − w, D) / D))   count >= w

    Args:
      init_value, peak_value, end_value: rates, finite and >= 0.
      warmup_steps: int >= 0 (0: start at ``peak_value``).
      decay_steps: int > warmup_steps.
    """
    init_value = _v.nonneg_real(init_value, "init_value", where="warmup_cosine_decay")
    peak_value = _v.nonneg_real(peak_value, "peak_value", where="warmup_cosine_decay")
    end_value = _v.nonneg_real(end_value, "end_value", where="warmup_cosine_decay")
    warmup_steps = _v.integer(warmup_steps, "warmup_steps", where="warmup_cosine_decay", low=0)
    decay_steps = _v.integer(decay_steps, "decay_steps", where="warmup_cosine_decay", low=1)
    if decay_steps <= warmup_steps:
        raise ValueError(
            f"warmup_cosine_decay: decay_steps must be > warmup_steps ({warmup_steps}): it "
            f"is the total length "
            f"including warm-up, got {decay_steps!r}"
        )
    cosine_steps = decay_steps - warmup_steps

    def schedule(count):
        c = _as_float(count)
        warm = init_value + (peak_value - init_value) * c / max(warmup_steps, 1)
        progress = jnp.clip(c - warmup_steps, 0.0, cosine_steps) / cosine_steps
        cosine = end_value + (peak_value - end_value) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        return jnp.where(c < warmup_steps, warm, cosine)

    return schedule


# --------------------------------------------------------------------------------------
# Shared pieces of the optimizers
# --------------------------------------------------------------------------------------

_INT32_MAX = np.iinfo(np.int32).max


def _zero_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


def _increment(count: jax.Array) -> jax.Array:
    """count + 1, saturating at the int32 maximum instead of wrapping to negative."""
    return jnp.where(count < _INT32_MAX, count + 1, _INT32_MAX).astype(jnp.int32)


def _zeros_like(params: PyTree) -> PyTree:
    return jax.tree.map(jnp.zeros_like, params)


def _descend(eta: jax.Array, direction: PyTree) -> PyTree:
    """−η · direction, η cast to each leaf's dtype (float32 leaves stay float32)."""
    return jax.tree.map(lambda d: -jnp.asarray(eta, d.dtype) * d, direction)


def _like(g: jax.Array, ref: jax.Array) -> jax.Array:
    """The gradient in the dtype of its stored moment (the param's dtype)."""
    return jnp.asarray(g).astype(ref.dtype)


# --------------------------------------------------------------------------------------
# Optimizers
# --------------------------------------------------------------------------------------


@_shared
def sgd(learning_rate, momentum: float = 0.0, nesterov: bool = False) -> GradientTransformation:
    """Stochastic gradient descent, optionally with (Nesterov) momentum.

    Update rule, per leaf, with η = ``learning_rate`` (at count), μ = ``momentum``::

        v ← μv + g
        Δθ = −η(g + μv)   if nesterov   else   −ηv

    With μ = 0 no velocity is stored and Δθ = −ηg.

    Conventions: this is PyTorch's ``SGD(momentum=μ, dampening=0, nesterov=...)`` and
    optax's ``sgd``.  Keras accumulates the *lr-scaled* step instead (v ← μv − ηg,
    θ ← θ + v): identical for a constant η, different under a schedule.

    Args:
      learning_rate: η, a number > 0 or a schedule ``count -> η``.
      momentum: μ in [0, 1).
      nesterov: bool; Nesterov's look-ahead form.
    Returns:
      A :class:`GradientTransformation` with :class:`SgdState` (``velocity`` like params,
      or ``()`` when μ = 0).
    """
    schedule = _learning_rate(learning_rate, "sgd")
    mu = _v.probability(momentum, "momentum", where="sgd", high_open=True)
    nesterov = _v.flag(nesterov, "nesterov", where="sgd")

    def init(params):
        return SgdState(count=_zero_count(), velocity=_zeros_like(params) if mu else ())

    def update(updates, state, params=None):
        _expect_state(state, SgdState, "sgd")
        eta = schedule(state.count)
        if not mu:
            return _descend(eta, updates), SgdState(_increment(state.count), ())
        velocity = jax.tree.map(lambda g, v: mu * v + _like(g, v), updates, state.velocity)
        if nesterov:
            direction = jax.tree.map(
                lambda g, v: _like(g, v) + mu * v, updates, velocity
            )
        else:
            direction = velocity
        return _descend(eta, direction), SgdState(_increment(state.count), velocity)

    return GradientTransformation(init, update)


@_shared
def rmsprop(
    learning_rate,
    decay: float = 0.9,
    eps: float = 0.0,
    eps_root: float = 1e-8,
    centered: bool = False,
    momentum: float = 0.0,
) -> GradientTransformation:
    """RMSprop (Tieleman & Hinton), optionally centered and with momentum.

    Update rule, per leaf, with η = ``learning_rate``, ρ = ``decay``, μ = ``momentum``,
    ε = ``eps`` (outside the root), ε_root = ``eps_root`` (inside)::

        s ← ρs + (1 − ρ)g²
        m ← ρm + (1 − ρ)g          (centered only; then s − m² replaces s below)
        d = g / (√(s + ε_root) + ε)
        Δθ = −ηd                   (μ = 0)
        u ← μu + d,  Δθ = −ηu      (μ > 0)

    s, m, u start at 0.  The defaults give η·g/√(s + 1e-8) (ε inside the root);
    ``eps=1e-8, eps_root=0`` gives η·g/(√s + 1e-8) (ε outside).

    Conventions differ between libraries, check before porting hyperparameters:
      * PyTorch ``RMSprop`` puts ε *outside* the root (``eps=ε, eps_root=0`` here) and
        defaults to ρ = 0.99; its centered and momentum forms are the ones above.
      * Keras / TF put ε *inside* the root (``eps=0, eps_root=ε`` here), ρ = 0.9.
      * optax ``rmsprop`` multiplies by η *before* the momentum trace (u accumulates
        η-scaled steps): identical for a constant η, different under a schedule.
    A centered s − m² can round slightly below 0; keep ε_root > 0 when ``centered``.

    Args:
      learning_rate: η, a number > 0 or a schedule ``count -> η``.
      decay: ρ in [0, 1).
      eps: ε >= 0, added after the square root.
      eps_root: ε_root >= 0, added inside the square root.
      centered: bool; divide by the estimated standard deviation √(s − m²).
      momentum: μ in [0, 1).
    Returns:
      A :class:`GradientTransformation` with :class:`RmsPropState`.
    """
    schedule = _learning_rate(learning_rate, "rmsprop")
    rho = _v.probability(decay, "decay", where="rmsprop", high_open=True)
    eps = _v.nonneg_real(eps, "eps", where="rmsprop")
    eps_root = _v.nonneg_real(eps_root, "eps_root", where="rmsprop")
    centered = _v.flag(centered, "centered", where="rmsprop")
    mu = _v.probability(momentum, "momentum", where="rmsprop", high_open=True)

    def init(params):
        zeros = lambda: _zeros_like(params)  # noqa: E731
        return RmsPropState(
            count=_zero_count(),
            nu=zeros(),
            mu=zeros() if centered else (),
            momentum=zeros() if mu else (),
        )

    def update(updates, state, params=None):
        _expect_state(state, RmsPropState, "rmsprop")
        eta = schedule(state.count)
        nu = jax.tree.map(
            lambda g, s: rho * s + (1.0 - rho) * jnp.square(_like(g, s)), updates, state.nu
        )
        if centered:
            mean = jax.tree.map(
                lambda g, m: rho * m + (1.0 - rho) * _like(g, m), updates, state.mu
            )
            variance = jax.tree.map(lambda s, m: s - jnp.square(m), nu, mean)
        else:
            mean, variance = (), nu
        direction = jax.tree.map(
            lambda g, s: _like(g, s) / (jnp.sqrt(s + eps_root) + eps), updates, variance
        )
        if mu:
            direction = jax.tree.map(lambda d, u: mu * u + d, direction, state.momentum)
        new_state = RmsPropState(
            _increment(state.count), nu, mean, direction if mu else ()
        )
        return _descend(eta, direction), new_state

    return GradientTransformation(init, update)


def _adam_direction(b1, b2, eps, eps_root, updates, state, t_count, scale=1.0):
    """scale · m̂ / (√(v̂ + ε_root) + ε) and the new (m, v); shared by adam and adamw.

    `t_count` is t as an int32 scalar: the incremented count, which the caller also
    stores.  Reading t off the new count rather than recomputing count + 1 leaves the
    increment the only reader of the old count, so a donated optimizer state is updated
    in place (XLA otherwise copies the old count first: one more kernel per step).

    With c₁ = 1 − β₁ᵗ, c₂ = 1 − β₂ᵗ, the bias corrections move onto scalars:

        m̂ / (√(v̂ + ε_root) + ε) = (√c₂ / c₁) · m / (√(v + c₂ ε_root) + √c₂ ε)

    (multiply numerator and denominator by √c₂), the same number in exact arithmetic.
    Per element this is one multiply, one root, one add and one divide instead of three
    divides; the scalars (and `scale`, −η for adam) are computed once per step.
    """
    mu = jax.tree.map(lambda g, m: b1 * m + (1.0 - b1) * _like(g, m), updates, state.mu)
    nu = jax.tree.map(
        lambda g, v: b2 * v + (1.0 - b2) * jnp.square(_like(g, v)), updates, state.nu
    )
    t = t_count.astype(jnp.result_type(float))
    c1 = 1.0 - b1**t
    c2 = 1.0 - b2**t
    root_c2 = jnp.sqrt(c2)
    gain = scale * root_c2 / c1

    def direction(m, v):
        dt = m.dtype
        if eps_root:
            v = v + (c2 * eps_root).astype(dt)
        return gain.astype(dt) * m / (jnp.sqrt(v) + (root_c2 * eps).astype(dt))

    return jax.tree.map(direction, mu, nu), mu, nu


@_shared
def adam(
    learning_rate,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
) -> GradientTransformation:
    """Adam (Kingma & Ba, 2015).

    Update rule, per leaf, with η = ``learning_rate``, β₁ = ``b1``, β₂ = ``b2``,
    ε = ``eps`` (outside the root), ε_root = ``eps_root`` (inside), t = count + 1::

        m ← β₁m + (1 − β₁)g
        v ← β₂v + (1 − β₂)g²
        m̂ = m / (1 − β₁ᵗ),   v̂ = v / (1 − β₂ᵗ)
        Δθ = −η m̂ / (√(v̂ + ε_root) + ε)

    m, v start at 0 and are stored uncorrected.  With ε = ε_root = 0 the first step
    moves every parameter with g ≠ 0 by exactly η (m̂/√v̂ = g/|g|).

    Conventions: PyTorch ``Adam`` and optax ``adam`` are this rule (ε outside the root,
    added to the bias-corrected √v̂).  TF / Keras add ε to the *uncorrected* √v (the
    paper's ε̂), which acts like ε/√(1 − β₂ᵗ) here: larger during the first steps.
    ``eps_root > 0`` keeps the gradient of the update finite when differentiating
    through the optimizer (meta-learning).

    Args:
      learning_rate: η, a number > 0 or a schedule ``count -> η``.
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1).
      eps: ε >= 0.
      eps_root: ε_root >= 0.
    Returns:
      A :class:`GradientTransformation` with :class:`AdamState` (``mu``, ``nu`` like params).
    """
    schedule = _learning_rate(learning_rate, "adam")
    b1 = _v.probability(b1, "b1", where="adam", high_open=True)
    b2 = _v.probability(b2, "b2", where="adam", high_open=True)
    eps = _v.nonneg_real(eps, "eps", where="adam")
    eps_root = _v.nonneg_real(eps_root, "eps_root", where="adam")

    def init(params):
        return AdamState(count=_zero_count(), mu=_zeros_like(params), nu=_zeros_like(params))

    def update(updates, state, params=None):
        _expect_state(state, AdamState, "adam")
        eta = schedule(state.count)
        count = _increment(state.count)
        step, mu, nu = _adam_direction(b1, b2, eps, eps_root, updates, state, count,
                                       scale=-eta)
        return step, AdamState(count, mu, nu)

    return GradientTransformation(init, update)


def _is_weight(path) -> bool:
    """True for a leaf stored under the dict key ``"W"`` (a dense layer's weight matrix)."""
    return bool(path) and getattr(path[-1], "key", None) == "W"


def _decay_mask(mask, params) -> PyTree:
    """The full mask for `params`: a tree like params of Python bools (True: decay).

    `mask` is None (the default: the leaves under the dict key "W"), a pytree of bools
    with params' structure or a prefix of it (a bool at a node applies to every leaf
    below), or a function params -> such a pytree.  Runs in plain Python at trace time.
    """
    if mask is None:
        return jax.tree_util.tree_map_with_path(lambda path, _: _is_weight(path), params)
    tree = mask(params) if callable(mask) else mask
    source = "the pytree returned by mask(params)" if callable(mask) else "mask"
    for leaf in jax.tree.leaves(tree):
        if not isinstance(leaf, (bool, np.bool_)):
            raise TypeError(
                f"adamw: {source} must hold Python bools (True: decay that leaf or "
                f"subtree), got a leaf {leaf!r}")
    try:
        return jax.tree.map(lambda m, sub: jax.tree.map(lambda _: bool(m), sub), tree, params)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"adamw: {source} must have the structure of params or of a prefix of it "
            f"(params is {jax.tree.structure(params)}), got {jax.tree.structure(tree)}: "
            f"{e}") from None


def _check_default_mask(params) -> None:
    """ValueError when the default mask would decay nothing (no leaf under "W")."""
    if not any(_is_weight(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]):
        raise ValueError(
            "adamw: mask=None (the default) decays the leaves under the dict key \"W\" (an "
            "MLP's weight matrices), and these params have none, so nothing would be "
            "decayed: pass mask= (a pytree of bools like params or a prefix of it, or a "
            "function params -> one; mask=True decays every leaf), or weight_decay=0.0")


@_shared
def adamw(
    learning_rate,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 1e-4,
    mask=None,
) -> GradientTransformation:
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), on masked leaves.

    Update rule, per leaf, with λ = ``weight_decay`` and the symbols of :func:`adam`::

        Δθ = −η (m̂ / (√(v̂ + ε_root) + ε) + λθ)   for θ where the mask is True
        Δθ = −η  m̂ / (√(v̂ + ε_root) + ε)         elsewhere

    The default mask (``mask=None``) is True for the leaves stored under the dict key
    ``"W"``: an MLP's weight matrices; biases and normalisation parameters are never
    decayed, matching DESIGN.md's penalties.  On params with no ``"W"`` leaf the default
    would decay nothing, so ``init`` (and ``update``) raise a ``ValueError`` asking for a
    mask instead (unless ``weight_decay`` is 0).  As in optax, ``mask`` may be a pytree
    of bools with the structure of the params or a prefix of it (a bool at a node covers
    the whole subtree: ``mask=True`` decays everything), or a function ``params -> mask``
    (called at ``init`` and at each ``update`` with the current params; it must return
    Python bools, e.g. ``lambda p: jax.tree.map(lambda x: x.ndim > 1, p)``).

    η is the scheduled rate at this step, so the decay follows the schedule (as in
    optax and PyTorch ``AdamW``; the paper uses a separate multiplier).  Unlike an L2
    penalty (``MLP(l2=...)``), the decay bypasses the moments.  PyTorch's ``AdamW``
    defaults to λ = 1e-2 and decays every parameter unless told otherwise.

    ``update`` needs ``params`` (the current θ): ``opt.update(grads, state, params)``.

    Args:
      learning_rate: η, a number > 0 or a schedule ``count -> η``.
      b1, b2: β₁, β₂ in [0, 1).
      eps, eps_root: ε, ε_root >= 0.
      weight_decay: λ >= 0.
      mask: None (the ``"W"`` leaves), a pytree of bools (params' structure or a prefix),
        or a function params -> such a pytree.
    Returns:
      A :class:`GradientTransformation` with :class:`AdamState`.
    """
    schedule = _learning_rate(learning_rate, "adamw")
    b1 = _v.probability(b1, "b1", where="adamw", high_open=True)
    b2 = _v.probability(b2, "b2", where="adamw", high_open=True)
    eps = _v.nonneg_real(eps, "eps", where="adamw")
    eps_root = _v.nonneg_real(eps_root, "eps_root", where="adamw")
    weight_decay = _v.nonneg_real(weight_decay, "weight_decay", where="adamw")
    if mask is not None and not callable(mask):
        for leaf in jax.tree.leaves(mask):
            if not isinstance(leaf, (bool, np.bool_)):
                raise TypeError(
                    f"adamw: mask must be None, a pytree of bools (True: decay that leaf or "
                    f"subtree) or a function params -> one, got a leaf {leaf!r}")

    def full_mask(params):
        if mask is None and weight_decay:
            _check_default_mask(params)
        return _decay_mask(mask, params)

    def init(params):
        full_mask(params)  # refuses a mask that does not fit, or a default that finds no W
        return AdamState(count=_zero_count(), mu=_zeros_like(params), nu=_zeros_like(params))

    def update(updates, state, params=None):
        _expect_state(state, AdamState, "adamw")
        if params is None:
            raise ValueError(
                "adamw's update needs the current params for the weight decay: call "
                "opt.update(grads, state, params)"
            )
        decay_here = full_mask(params)
        eta = schedule(state.count)
        count = _increment(state.count)
        step, mu, nu = _adam_direction(b1, b2, eps, eps_root, updates, state, count,
                                       scale=-eta)

        def decayed(u, theta, decay):  # −η m̂/(…) − η λ θ
            if not decay or not weight_decay:
                return u
            factor = jnp.asarray(eta * weight_decay).astype(u.dtype)
            return u - factor * jnp.asarray(theta).astype(u.dtype)

        step = jax.tree.map(decayed, step, params, decay_here)
        return step, AdamState(count, mu, nu)

    return GradientTransformation(init, update)


@_shared
def adagrad(
    learning_rate, initial_accumulator_value: float = 0.1, eps: float = 1e-7
) -> GradientTransformation:
    """Adagrad (Duchi, Hazan & Singer, 2011).

    Update rule, per leaf, with η = ``learning_rate``, s₀ = ``initial_accumulator_value``,
    ε = ``eps``::

        s ← s + g²            (s starts at s₀)
        Δθ = −η g / (√s + ε)

    Conventions: PyTorch ``Adagrad`` is this rule (ε outside the root) with defaults
    s₀ = 0, ε = 1e-10.  optax ``adagrad`` has these defaults but puts ε *inside* the root,
    g / √(s + ε); Keras too (ε inside).

    Args:
      learning_rate: η, a number > 0 or a schedule ``count -> η``.
      initial_accumulator_value: s₀ >= 0.
      eps: ε >= 0.
    Returns:
      A :class:`GradientTransformation` with :class:`AdagradState`.
    """
    schedule = _learning_rate(learning_rate, "adagrad")
    s0 = _v.nonneg_real(initial_accumulator_value, "initial_accumulator_value", where="adagrad")
    eps = _v.nonneg_real(eps, "eps", where="adagrad")

    def init(params):
        return AdagradState(
            count=_zero_count(),
            sum_of_squares=jax.tree.map(lambda p: jnp.full_like(p, s0), params),
        )

    def update(updates, state, params=None):
        _expect_state(state, AdagradState, "adagrad")
        eta = schedule(state.count)
        sums = jax.tree.map(
            lambda g, s: s + jnp.square(_like(g, s)), updates, state.sum_of_squares
        )
        direction = jax.tree.map(
            lambda g, s: _like(g, s) / (jnp.sqrt(s) + eps), updates, sums
        )
        return _descend(eta, direction), AdagradState(_increment(state.count), sums)

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------------------
# Clipping and composition
# --------------------------------------------------------------------------------------


def global_norm(tree: PyTree) -> jax.Array:
    """‖tree‖ = √(Σ over all leaves of Σ x²), a scalar (0 for a tree with no leaves)."""
    # the Python 0.0 is weakly typed: an all-float32 tree gives a float32 norm
    squares = sum((jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)), 0.0)
    return jnp.sqrt(squares)


@_shared
def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Rescales the whole update tree so its global norm is at most τ = ``max_norm``::

        g ← g · τ/‖g‖   if ‖g‖ > τ,   else unchanged     (‖g‖ over all leaves)

    The direction is kept; place it first in a :func:`chain`, before the optimizer, to
    clip gradients: ``chain(clip_by_global_norm(1.0), adam(1e-3))``.

    Args:
      max_norm: τ, finite and > 0.
    Returns:
      A stateless :class:`GradientTransformation` (state :class:`EmptyState`).
    """
    tau = _v.positive_real(max_norm, "max_norm", where="clip_by_global_norm")

    def init(params):
        return EmptyState()

    def update(updates, state, params=None):
        _expect_state(state, EmptyState, "clip_by_global_norm")
        norm = global_norm(updates)
        # where() picks 1 when ‖g‖ <= τ, so a zero norm never divides
        factor = jnp.where(norm > tau, tau / norm, 1.0)
        return jax.tree.map(lambda g: g * factor.astype(g.dtype), updates), state

    return GradientTransformation(init, update)


@_shared
def identity() -> GradientTransformation:
    """Passes updates through unchanged (state :class:`EmptyState`)."""

    def init(params):
        return EmptyState()

    def update(updates, state, params=None):
        _expect_state(state, EmptyState, "identity")
        return updates, state

    return GradientTransformation(init, update)


@_shared
def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Composes transformations left to right: the first one sees the raw gradients.

    ``chain(a, b).update(g, (sa, sb), θ)`` is ``u, sa = a.update(g, sa, θ)`` then
    ``u, sb = b.update(u, sb, θ)``.  The state is the tuple of the inner states, in order.
    """
    for i, t in enumerate(transforms):
        if not isinstance(t, GradientTransformation):
            raise TypeError(
                f"chain: argument {i} must be a GradientTransformation (e.g. adam(1e-3)), "
                f"got {t!r}"
            )

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(updates, state, params=None):
        if not isinstance(state, tuple) or len(state) != len(transforms):
            raise TypeError(
                f"chain of {len(transforms)} transformations needs the tuple of their "
                f"{len(transforms)} states (from chain(...).init(params)), got "
                f"{type(state).__name__}"
                + (f" of length {len(state)}" if isinstance(state, tuple) else "")
            )
        new_state = []
        for t, s in zip(transforms, state):
            updates, s = t.update(updates, s, params)
            new_state.append(s)
        return updates, tuple(new_state)

    return GradientTransformation(init, update)
