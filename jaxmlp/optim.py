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
(updates, state)``; a factory validates the hyperparameters (Python numbers in plain
Python before any tracing, concrete arrays the same way, traced ones not at all), and
``init`` puts every number into the state (``state.hyperparams``, as optax's
``inject_hyperparams`` does, without a wrapper), where ``update`` reads it: optimizers
that differ only in their numbers are equal and share compiled programs (see
:class:`GradientTransformation`, :func:`hyperparams`); states are NamedTuples of pytrees,
rebuilt and returned, never mutated.  The updates returned are already negated, so :func:`apply_updates` adds::

    opt = adam(1e-3)
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    params = apply_updates(params, updates)

State leaves (moments, accumulators) have the shapes and dtypes of the params, every
state carries an int32 scalar ``count``, and an optimizer's state a dict ``hyperparams``
of scalars (the default float dtype; int32 for a schedule's step counts).
``learning_rate`` is a positive number, a scalar array, or a schedule ``count -> η`` (see
:func:`constant_schedule` and the others); η and every hyperparameter are cast to each
leaf's dtype, so float32 params stay float32.  Everything jit-compiles and works on any
params pytree.
"""
from __future__ import annotations

import functools
import hashlib
import math
import numbers
from typing import Any, Callable, NamedTuple, Optional

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
    "hyperparams",
    "current_learning_rate",
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

    A transformation made by this module's factories keeps its numeric hyperparameters
    in its *state* (``state.hyperparams``, put there by ``init``), and its ``update``
    reads them from there only.  Two transformations are equal (and hash alike) when
    they have the same factory and the same structure (for example ``nesterov``,
    ``centered``, the kind of schedule, the ``adamw`` mask, whether a momentum or a
    weight decay is zero), whatever their numbers: ``adam(1e-3) == adam(3e-3)``, so
    ``jax.jit`` with the optimizer as a static argument (as in ``fit`` and
    ``make_train_step``) compiles once for both.  Because of that, call ``init``
    outside any function that takes the optimizer as a static argument and pass the
    state in (a function traced for ``adam(1e-3)`` and reused for ``adam(3e-3)`` would
    otherwise build ``adam(1e-3)``'s state); ``jax.jit(opt.init)`` itself is safe.
    Transformations assembled by hand from two functions compare by those functions.
    """

    init: Callable[[PyTree], Any]
    update: Callable[..., tuple[PyTree, Any]]

    def __eq__(self, other):
        if isinstance(self.update, _Made) and isinstance(other, GradientTransformation):
            return self.update == other.update
        return tuple.__eq__(self, other)

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        if isinstance(self.update, _Made):
            return hash(self.update)
        return tuple.__hash__(self)


class _Keyed:
    """Equal to (and hashing like) another object of the same class with an equal `key`:
    the factory's name and static structure, never its numbers."""

    __slots__ = ()

    def __eq__(self, other):
        return type(other) is type(self) and self.key == other.key

    def __hash__(self):
        return hash(self.key)


class _Made(_Keyed):
    """The ``update`` of a transformation made by a factory of this module: calls `fn`;
    equal to another when their `key` (factory name and static structure, no numbers)
    is equal; carries the factory's `name` and validated `args` for :func:`describe`."""

    def __init__(self, fn, key, name, args):
        functools.update_wrapper(self, fn)  # __name__, __wrapped__ (the signature), …
        self.fn, self.key, self.name, self.args = fn, key, name, args

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __repr__(self):
        return f"<{self.name}.update>"


def _made(name: str, args: dict, static: tuple, init, update) -> GradientTransformation:
    """A GradientTransformation whose equality is (name, static)."""
    return GradientTransformation(init, _Made(update, (name,) + tuple(static), name, args))


class EmptyState(NamedTuple):
    """State of a stateless transformation (:func:`identity`)."""


class ClipState(NamedTuple):
    """State of :func:`clip_by_global_norm`: ``hyperparams``, ``{"max_norm": τ}``."""

    hyperparams: dict


class SgdState(NamedTuple):
    """``count``: int32 scalar; ``velocity``: v, like params, or ``()`` when momentum is 0;
    ``hyperparams``: the numeric hyperparameters (see :func:`hyperparams`)."""

    count: jax.Array
    velocity: PyTree
    hyperparams: dict


class RmsPropState(NamedTuple):
    """``count``: int32 scalar; ``nu``: s (running mean of g²), like params; ``mu``: m
    (running mean of g), like params when centered else ``()``; ``momentum``: u, like
    params when momentum > 0 else ``()``; ``hyperparams``: see :func:`hyperparams`."""

    count: jax.Array
    nu: PyTree
    mu: PyTree
    momentum: PyTree
    hyperparams: dict


class AdamState(NamedTuple):
    """``count``: int32 scalar (t − 1); ``mu``: m, first moment; ``nu``: v, second moment
    (both like params, uncorrected); ``hyperparams``: see :func:`hyperparams`.  Used by
    :func:`adam` and :func:`adamw`."""

    count: jax.Array
    mu: PyTree
    nu: PyTree
    hyperparams: dict


class AdagradState(NamedTuple):
    """``count``: int32 scalar; ``sum_of_squares``: s = s₀ + Σ g², like params;
    ``hyperparams``: see :func:`hyperparams`."""

    count: jax.Array
    sum_of_squares: PyTree
    hyperparams: dict


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


def _float_dtype():
    """The dtype of a state's real hyperparameters: the default float (float64 under x64),
    so that scalar arithmetic on them (b₁ᵗ, a schedule) is as exact as on Python floats."""
    return jnp.result_type(float)


def _number(value, name: str, where: str, check, *, integer: bool = False):
    """A numeric hyperparameter, validated: a Python (or NumPy) number goes through
    `check` as before and comes back as a float (int for `integer`); a scalar array is
    checked the same way when concrete, taken as is when traced (a sweep can vmap over
    it), and comes back as an array of the state's dtype (int32 for `integer`).  An
    array that is not a scalar is refused, naming `name`."""
    if isinstance(value, (jax.Array, np.ndarray)) and not isinstance(value, np.bool_):
        dtype = value.dtype
        if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
            return check(value, name, where=where)  # TypeError naming the argument
        if jnp.ndim(value) != 0:
            hint = (" (for one value per model, jm.sweep takes a list of optimizers that "
                    "differ only in their numbers)" if jnp.ndim(value) == 1 else "")
            raise ValueError(f"{where}: {name} must be a scalar, got an array of shape "
                             f"{jnp.shape(value)}{hint}")
        if not isinstance(value, jax.core.Tracer):
            check(np.asarray(value).item(), name, where=where)
        return jnp.asarray(value, jnp.int32 if integer else _float_dtype())
    return check(value, name, where=where)


def _traced(value) -> bool:
    return isinstance(value, jax.core.Tracer)


def _is_zero(value) -> bool:
    """True for a concrete hyperparameter equal to 0 (a structural zero: no state for a
    momentum of 0, no decay for a weight decay of 0); a traced one may be anything."""
    return not _traced(value) and float(value) == 0.0


def _state_values(values):
    """A pytree of hyperparameters (Python numbers and arrays) as a state's arrays: a
    float in the default float dtype, an int as int32, an array as it is (`_number`
    already gave it its dtype)."""
    def leaf(v):
        if isinstance(v, (jax.Array, np.ndarray)):
            return jnp.asarray(v)
        if isinstance(v, numbers.Integral):
            return jnp.asarray(v, jnp.int32)
        return jnp.asarray(v, _float_dtype())
    return jax.tree.map(leaf, values)


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
    arguments as validated (defaults filled in; the numbers are the values its ``init``
    puts into the state's ``hyperparams``), recursively: ``describe(adam(1e-3))`` is
    ``{"name": "adam", "args": {"learning_rate": 0.001, "b1": 0.9, …}}``.  A user's own
    callable is named by its module and qualified name, with a digest of its code; an
    array by its shape, dtype and a SHA-256 of its bytes (no digest for a tracer); a
    dict (an ``adamw`` mask, ``boundaries_and_scales``) as a list of ``[key, value]``
    pairs sorted by key.  Two optimizers with equal descriptions compute the same
    updates; `fit` stores the description in its checkpoints and refuses to resume a run
    with another one (another type *or* other values, although both share a compile).
    """
    if isinstance(obj, GradientTransformation) and isinstance(obj.update, _Made):
        return {"name": obj.update.name,
                "args": {k: describe(v) for k, v in obj.update.args.items()}}
    if isinstance(obj, _Schedule):
        return {"name": obj.name, "args": {k: describe(v) for k, v in obj.args.items()}}
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


class _Rate(NamedTuple):
    """A validated learning rate: `arg` (for describe); `at(values, count)` the raw rate
    from the schedule's numbers as stored in the state (None for a constant rate);
    `values` the schedule's numbers; `key` its static part (compared by jit)."""

    arg: Any
    at: Optional[Callable]
    values: Any
    key: tuple


def _learning_rate(learning_rate: Any, where: str) -> _Rate:
    """Validates ``learning_rate``: a number > 0 (finite), a scalar array (checked when
    concrete, taken as is when traced, so a learning-rate sweep can ``vmap`` over it
    without recompiling), a schedule of this module, or a user's callable count -> rate
    (checked at count 0 now, when its rate is concrete)."""
    if isinstance(learning_rate, _Schedule):
        rate = _Rate(learning_rate, learning_rate.formula, learning_rate.values,
                     ("schedule", learning_rate))
    elif callable(learning_rate):
        fn = learning_rate
        rate = _Rate(fn, lambda values, count: fn(count), {}, ("callable", fn))
    elif isinstance(learning_rate, (bool, np.bool_)) or not isinstance(
            learning_rate, (numbers.Real, jax.Array, np.ndarray)):
        raise TypeError(
            f"{where}: learning_rate must be a number > 0 or a schedule callable "
            f"count -> rate, got {learning_rate!r}"
        )
    else:
        value = _number(learning_rate, "learning_rate", where, _v.positive_real)
        return _Rate(value, None, None, ("constant",))
    with jax.ensure_compile_time_eval():
        _checked_rate(rate.at(rate.values, jnp.zeros([], jnp.int32)), 0)  # refuses a bad rate now
    return rate


def _checked_rate(eta, count):
    """A schedule's rate, checked: a real scalar (else an error when traced), and finite
    and >= 0.  A concrete rate that is not is refused (ValueError naming the count); a
    traced one becomes NaN, so that the update is NaN and `fit`'s divergence guard stops
    at that very step with the last finite parameters kept (a negative rate would
    otherwise climb the loss without a sign).  Returned in the state's float dtype."""
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
    if not _traced(eta):
        value = float(eta)  # before the cast: the message shows the value returned
        if not (math.isfinite(value) and value >= 0):
            at = "" if _traced(count) else f" at count {int(count)}"
            raise ValueError(f"the learning_rate schedule returned {value!r}{at}: rates "
                             f"must be finite and >= 0")
        return jnp.asarray(eta, _float_dtype())
    return _guard(jnp.asarray(eta, _float_dtype()))


def _guard(eta):
    """η where it is finite and >= 0, else NaN (a NaN update, caught by fit's guard)."""
    return jnp.where(jnp.isfinite(eta) & (eta >= 0), eta, jnp.nan)


def _rate_hyperparams(rate: _Rate) -> dict:
    """The learning-rate entries of a new state: ``learning_rate`` (the number, or for a
    schedule η at count 0, the rate of the first update) and with a schedule,
    ``schedule``, the schedule's numbers."""
    if rate.at is None:
        return {"learning_rate": rate.arg}
    values = _state_values(rate.values)
    return {"learning_rate": _checked_rate(rate.at(values, _zero_count()), 0),
            "schedule": values}


def _rate_now(rate: _Rate, hp: dict, count):
    """(η for the update at `count`, the new state's hyperparams): a schedule is
    evaluated from the state's numbers and its rate stored as ``learning_rate``."""
    if rate.at is None:
        return _guard(hp["learning_rate"]), hp
    eta = _checked_rate(rate.at(hp["schedule"], count), count)
    return eta, dict(hp, learning_rate=eta)


def hyperparams(state) -> Any:
    """The current hyperparameters held by an optimizer state, for logging.

    A dict of scalar arrays for one optimizer's state, keyed by the factory's argument
    names (``learning_rate``, ``b1``, ``eps``, ``weight_decay``, …).  With a schedule,
    ``learning_rate`` is the rate the latest update used (before any update: the rate
    the first one will use, η(0)), and the schedule's own numbers are under
    ``schedule``.  For a :func:`chain`'s state, the
    tuple of its transformations' dicts (``{}`` for a stateless one).  Works eagerly and
    under ``jit``/``vmap``.
    """
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        hp = getattr(state, "hyperparams", None)
        return dict(hp) if isinstance(hp, dict) else {}
    if isinstance(state, tuple):
        return tuple(hyperparams(s) for s in state)
    return {}


def current_learning_rate(state) -> Optional[jax.Array]:
    """The learning rate of `state`'s latest update (a scalar array,
    ``hyperparams(state)["learning_rate"]``; before any update, the first update's), or
    None when the state holds none; in a :func:`chain`'s state, that of the first
    transformation that has one."""
    def first(hp):
        if isinstance(hp, tuple):
            for h in hp:
                found = first(h)
                if found is not None:
                    return found
            return None
        return hp.get("learning_rate")

    return first(hyperparams(state))


def _expect_state(state, kind: type, name: str) -> None:
    """TypeError, at trace time, when an optimizer's update gets another one's state."""
    if not isinstance(state, kind):
        raise TypeError(
            f"{name}'s update needs the {kind.__name__} of {name}(...).init(params) as its "
            f"state, got {type(state).__name__}: an opt_state of another optimizer?")


# --------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------


class _Schedule(_Keyed):
    """A schedule made by a factory of this module: ``schedule(count)`` is the rate.

    Its numbers are in `values` (Python numbers, or arrays and tracers: a schedule can
    be swept), its formula in `formula(values, count)`, which reads every number from
    `values`, so an optimizer keeps them in its state and evaluates the formula there.
    Equal (and hashing alike) to another when `key` (the factory and the static options:
    ``staircase``, whether ``end_value`` is given, the boundaries of a piecewise
    constant schedule, …) is; `name` and `args` are for :func:`describe`."""

    __slots__ = ("name", "args", "values", "formula", "key", "__weakref__")

    def __init__(self, name, args, values, formula, static=()):
        self.name, self.args, self.values, self.formula = name, args, values, formula
        self.key = (name,) + tuple(static)

    def __call__(self, count):
        return self.formula(self.values, count)

    def __repr__(self):
        return f"<schedule {self.name}>"


def _as_float(count: jax.Array) -> jax.Array:
    """count as the default float dtype (float64 under x64), for exact rate arithmetic."""
    return jnp.asarray(count).astype(jnp.result_type(float))


def constant_schedule(value: float) -> Schedule:
    """η(count) = value  (optax's ``constant_schedule``).

    Args:
      value: the rate, finite and >= 0.
    Returns:
      A schedule; ``schedule(count)`` is a float scalar array.
    """
    where = "constant_schedule"
    value = _number(value, "value", where, _v.nonneg_real)

    def formula(v, count):
        return jnp.full([], v["value"], dtype=_float_dtype())

    return _Schedule(where, {"value": value}, {"value": value}, formula)


def _steps(value, name: str, where: str) -> int:
    """A step count >= 1.  optax turns a count <= 0 into a constant schedule (with only a
    log line); here it is refused, with that said."""
    if isinstance(value, (jax.Array, np.ndarray)) and not isinstance(value, np.bool_):
        return _number(value, name, where, lambda x, n, where: _steps(x, n, where),
                       integer=True)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be a positive int, got {value!r}")
    value = int(value)
    if value < 1:
        raise ValueError(
            f"{where}: {name} must be a positive int, got {value!r} (optax silently gives "
            f"the constant init_value then: write constant_schedule(init_value) for that)")
    return value


def _count(value, name: str, where: str, low: int):
    """A step count or boundary: an int >= low (or a scalar int array: checked when
    concrete, kept as int32; traced, as is)."""
    return _number(value, name, where,
                   lambda x, n, where: _v.integer(x, n, where=where, low=low), integer=True)


def _is_one(value) -> bool:
    """True for a concrete exponent of 1 (no power taken: the plain cosine)."""
    return not _traced(value) and float(value) == 1.0


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
    args = dict(init_value=_number(init_value, "init_value", where, _v.nonneg_real),
                end_value=_number(end_value, "end_value", where, _v.nonneg_real),
                transition_steps=_steps(transition_steps, "transition_steps", where),
                transition_begin=_count(transition_begin, "transition_begin", where, 0))

    def formula(v, count):
        steps = v["transition_steps"]
        k = jnp.clip(_as_float(count) - v["transition_begin"], 0.0, steps)
        return (v["init_value"] - v["end_value"]) * (1.0 - k / steps) + v["end_value"]

    return _Schedule(where, args, dict(args), formula)


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
    args = dict(init_value=_number(init_value, "init_value", where, _v.nonneg_real),
                transition_steps=_steps(transition_steps, "transition_steps", where),
                decay_rate=_number(decay_rate, "decay_rate", where, _v.positive_real),
                transition_begin=_count(transition_begin, "transition_begin", where, 0),
                staircase=_v.flag(staircase, "staircase", where=where),
                end_value=None)
    if end_value is not None:
        args["end_value"] = _number(
            end_value, "end_value", where,
            lambda x, n, where: _v.real(x, n, where=where, low=0.0,
                                        expected="None or a finite number >= 0"))
    staircase, bounded = args["staircase"], end_value is not None
    values = {k: v for k, v in args.items() if k not in ("staircase", "end_value")}
    if bounded:
        values["end_value"] = args["end_value"]

    def formula(v, count):
        steps = _as_float(count) - v["transition_begin"]
        p = steps / v["transition_steps"]
        if staircase:
            p = jnp.floor(p)
        init, rate = v["init_value"], v["decay_rate"]
        value = jnp.where(steps <= 0, init, init * rate**p)
        if bounded:  # a lower bound when decaying, an upper bound when growing
            end = v["end_value"]
            value = jnp.where(rate < 1.0, jnp.maximum(value, end), jnp.minimum(value, end))
        return value

    return _Schedule(where, args, values, formula, (staircase, bounded))


def _cosine_factor(count, decay_steps, exponent):
    """(½(1 + cos(π·min(count, decay_steps)/decay_steps)))^exponent, count a float;
    exponent None for 1 (no power taken)."""
    cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(count, decay_steps) / decay_steps))
    return cosine if exponent is None else cosine**exponent


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
    args = dict(init_value=_number(init_value, "init_value", where, _v.nonneg_real),
                decay_steps=_count(decay_steps, "decay_steps", where, 1),
                alpha=_number(alpha, "alpha", where, _v.probability),
                exponent=_number(exponent, "exponent", where, _v.positive_real))
    plain = _is_one(args["exponent"])

    def formula(v, count):
        factor = _cosine_factor(_as_float(count), v["decay_steps"],
                                None if plain else v["exponent"])
        return v["init_value"] * ((1.0 - v["alpha"]) * factor + v["alpha"])

    return _Schedule(where, args, dict(args), formula, (plain,))


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
    args = dict(init_value=_number(init_value, "init_value", where, _v.nonneg_real),
                peak_value=_number(peak_value, "peak_value", where, _v.nonneg_real),
                warmup_steps=_count(warmup_steps, "warmup_steps", where, 0),
                decay_steps=_count(decay_steps, "decay_steps", where, 1),
                end_value=_number(end_value, "end_value", where, _v.nonneg_real),
                exponent=_number(exponent, "exponent", where, _v.positive_real))
    warm_n, decay_n = args["warmup_steps"], args["decay_steps"]
    if not _traced(warm_n) and not _traced(decay_n) and int(decay_n) <= int(warm_n):
        raise ValueError(
            f"{where}: decay_steps must be > warmup_steps ({int(warm_n)}): it is the total "
            f"length including warm-up, got {decay_steps!r}")
    peak, end = args["peak_value"], args["end_value"]
    if _is_zero(peak) and not _traced(end) and float(end) != 0.0:
        raise ValueError(
            f"{where}: end_value must be 0 when peak_value is 0 (the decay is relative to "
            f"the peak), got {end_value!r}")
    plain, warms = _is_one(args["exponent"]), not _is_zero(warm_n)

    def formula(v, count):
        c = _as_float(count)
        peak, warmup = v["peak_value"], v["warmup_steps"]
        safe_peak = jnp.where(peak == 0.0, 1.0, peak)
        alpha = jnp.where(peak == 0.0, 0.0, v["end_value"] / safe_peak)
        factor = _cosine_factor(c - warmup, v["decay_steps"] - warmup,
                                None if plain else v["exponent"])
        value = peak * ((1.0 - alpha) * factor + alpha)
        if warms:
            w = jnp.maximum(warmup, 1)  # a traced 0: the warm branch is never picked
            k = jnp.clip(c, 0.0, w)
            warm = (v["init_value"] - peak) * (1.0 - k / w) + peak
            value = jnp.where(c < warmup, warm, value)
        return value

    return _Schedule(where, args, dict(args), formula, (plain, warms))


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
    init_value = _number(init_value, "init_value", where, _v.nonneg_real)
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
            s = _number(s, f"boundaries_and_scales[{b!r}]", where, _v.nonneg_real)
            steps.append((b, s))
        steps = tuple(sorted(steps, key=lambda bs: bs[0]))
    boundaries = tuple(b for b, _ in steps)
    args = {"init_value": init_value,
            "boundaries_and_scales": None if boundaries_and_scales is None else dict(steps)}
    values = {"init_value": init_value, "scales": [s for _, s in steps]}

    def formula(v, count):
        c = jnp.asarray(count)
        value = jnp.full([], v["init_value"], dtype=_float_dtype())
        for boundary, scale in zip(boundaries, v["scales"]):
            value = jnp.where(c >= boundary, value * scale, value)
        return value

    return _Schedule(where, args, values, formula, (boundaries,))


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
    bounds = [_count(b, "each entry of boundaries", where, 0) for b in boundaries]
    if len(bounds) != len(schedules) - 1:
        raise ValueError(
            f"{where}: boundaries must have len(schedules) - 1 = {len(schedules) - 1} "
            f"entries, got {list(boundaries)!r}")
    concrete = [int(b) for b in bounds if not _traced(b)]
    if len(concrete) == len(bounds) and any(
            later <= earlier for earlier, later in zip(concrete, concrete[1:])):
        raise ValueError(f"{where}: boundaries must be increasing, got {list(boundaries)!r}")
    parts = tuple(schedules)
    args = {"schedules": list(parts), "boundaries": bounds}
    values = {"schedules": [p.values if isinstance(p, _Schedule) else {} for p in parts],
              "boundaries": bounds}

    def part_at(part, v, count):
        return part.formula(v, count) if isinstance(part, _Schedule) else part(count)

    def formula(v, count):
        count = jnp.asarray(count)
        value = part_at(parts[0], v["schedules"][0], count)
        for boundary, part, pv in zip(v["boundaries"], parts[1:], v["schedules"][1:]):
            value = jnp.where(count < boundary, value, part_at(part, pv, count - boundary))
        return value

    return _Schedule(where, args, values, formula, (parts,))


# Older spellings, kept (with their old descriptions, so checkpoints written with them
# still resume); the optax-shaped factories above are preferred.


def cosine_decay(init_value: float, decay_steps: int, alpha: float = 0.0) -> Schedule:
    """The older spelling of :func:`cosine_decay_schedule` (``exponent=1``).

    η(count) = init_value · ((1 − α)·½(1 + cos(π·min(count, decay_steps)/decay_steps)) + α).

    Args:
      init_value: η at count 0, finite and >= 0.
      decay_steps: int >= 1.
      alpha: final rate as a fraction of ``init_value``, in [0, 1].
    """
    where = "cosine_decay"
    args = dict(init_value=_number(init_value, "init_value", where, _v.nonneg_real),
                decay_steps=_count(decay_steps, "decay_steps", where, 1),
                alpha=_number(alpha, "alpha", where, _v.probability))

    def formula(v, count):
        progress = jnp.minimum(_as_float(count), v["decay_steps"]) / v["decay_steps"]
        cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        return v["init_value"] * ((1.0 - v["alpha"]) * cosine + v["alpha"])

    return _Schedule(where, args, dict(args), formula)


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
    where = "warmup_cosine_decay"
    args = dict(init_value=_number(init_value, "init_value", where, _v.nonneg_real),
                peak_value=_number(peak_value, "peak_value", where, _v.nonneg_real),
                warmup_steps=_count(warmup_steps, "warmup_steps", where, 0),
                decay_steps=_count(decay_steps, "decay_steps", where, 1),
                end_value=_number(end_value, "end_value", where, _v.nonneg_real))
    warm_n, decay_n = args["warmup_steps"], args["decay_steps"]
    if not _traced(warm_n) and not _traced(decay_n) and int(decay_n) <= int(warm_n):
        raise ValueError(
            f"warmup_cosine_decay: decay_steps must be > warmup_steps ({int(warm_n)}): it "
            f"is the total length "
            f"including warm-up, got {decay_steps!r}"
        )

    def formula(v, count):
        c = _as_float(count)
        init, peak, end = v["init_value"], v["peak_value"], v["end_value"]
        warmup = v["warmup_steps"]
        cosine_steps = v["decay_steps"] - warmup
        warm = init + (peak - init) * c / jnp.maximum(warmup, 1)
        progress = jnp.clip(c - warmup, 0.0, cosine_steps) / cosine_steps
        cosine = end + (peak - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        return jnp.where(c < warmup, warm, cosine)

    return _Schedule(where, args, dict(args), formula)


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


def _cast(h: jax.Array, ref: jax.Array) -> jax.Array:
    """A state's scalar hyperparameter in the dtype of the leaf it multiplies (as a
    Python float would be: float32 leaves stay float32)."""
    return jnp.asarray(h).astype(ref.dtype)


def _like(g: jax.Array, ref: jax.Array) -> jax.Array:
    """The gradient in the dtype of its stored moment (the param's dtype)."""
    return jnp.asarray(g).astype(ref.dtype)


# --------------------------------------------------------------------------------------
# Optimizers
# --------------------------------------------------------------------------------------


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
    where = "sgd"
    rate = _learning_rate(learning_rate, where)
    mu = _number(momentum, "momentum", where,
                 lambda x, n, where: _v.probability(x, n, where=where, high_open=True))
    nesterov = _v.flag(nesterov, "nesterov", where=where)
    moving = not _is_zero(mu)  # structure: a velocity only with momentum
    args = {"learning_rate": rate.arg, "momentum": mu, "nesterov": nesterov}

    def init(params):
        hp = _state_values(dict(_rate_hyperparams(rate), momentum=mu))
        return SgdState(count=_zero_count(), velocity=_zeros_like(params) if moving else (),
                        hyperparams=hp)

    def update(updates, state, params=None):
        _expect_state(state, SgdState, "sgd")
        hp = state.hyperparams
        eta, new_hp = _rate_now(rate, hp, state.count)
        count = _increment(state.count)
        if not moving:
            return _descend(eta, updates), SgdState(count, (), new_hp)
        mu = hp["momentum"]
        velocity = jax.tree.map(lambda g, v: _cast(mu, v) * v + _like(g, v), updates,
                                state.velocity)
        if nesterov:
            direction = jax.tree.map(
                lambda g, v: _like(g, v) + _cast(mu, v) * v, updates, velocity
            )
        else:
            direction = velocity
        return _descend(eta, direction), SgdState(count, velocity, new_hp)

    return _made(where, args, (rate.key, moving, nesterov), init, update)


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
    where = "rmsprop"
    rate = _learning_rate(learning_rate, where)
    below_one = lambda x, n, where: _v.probability(x, n, where=where, high_open=True)  # noqa: E731
    args = {"learning_rate": rate.arg,
            "decay": _number(decay, "decay", where, below_one),
            "eps": _number(eps, "eps", where, _v.nonneg_real),
            "eps_root": _number(eps_root, "eps_root", where, _v.nonneg_real),
            "centered": _v.flag(centered, "centered", where=where),
            "momentum": _number(momentum, "momentum", where, below_one)}
    centered = args["centered"]
    moving = not _is_zero(args["momentum"])

    def init(params):
        zeros = lambda: _zeros_like(params)  # noqa: E731
        numbers_ = {k: args[k] for k in ("decay", "eps", "eps_root", "momentum")}
        return RmsPropState(
            count=_zero_count(),
            nu=zeros(),
            mu=zeros() if centered else (),
            momentum=zeros() if moving else (),
            hyperparams=_state_values(dict(_rate_hyperparams(rate), **numbers_)),
        )

    def update(updates, state, params=None):
        _expect_state(state, RmsPropState, "rmsprop")
        hp = state.hyperparams
        eta, new_hp = _rate_now(rate, hp, state.count)
        rho, eps, eps_root = hp["decay"], hp["eps"], hp["eps_root"]
        nu = jax.tree.map(
            lambda g, s: _cast(rho, s) * s + _cast(1.0 - rho, s) * jnp.square(_like(g, s)),
            updates, state.nu
        )
        if centered:
            mean = jax.tree.map(
                lambda g, m: _cast(rho, m) * m + _cast(1.0 - rho, m) * _like(g, m),
                updates, state.mu
            )
            variance = jax.tree.map(lambda s, m: s - jnp.square(m), nu, mean)
        else:
            mean, variance = (), nu
        direction = jax.tree.map(
            lambda g, s: _like(g, s) / (jnp.sqrt(s + _cast(eps_root, s)) + _cast(eps, s)),
            updates, variance
        )
        if moving:
            mu = hp["momentum"]
            direction = jax.tree.map(lambda d, u: _cast(mu, u) * u + d, direction,
                                     state.momentum)
        count = _increment(state.count)
        new_state = RmsPropState(count, nu, mean, direction if moving else (),
                                 new_hp)
        return _descend(eta, direction), new_state

    return _made(where, args, (rate.key, centered, moving), init, update)


def _adam_direction(b1, b2, eps, eps_root, updates, state, t_count, scale=1.0):
    """scale · m̂ / (√(v̂ + ε_root) + ε) and the new (m, v); shared by adam and adamw.

    b1, b2, eps and eps_root are the state's scalars (eps_root None: a structural 0).

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
    mu = jax.tree.map(lambda g, m: _cast(b1, m) * m + _cast(1.0 - b1, m) * _like(g, m),
                      updates, state.mu)
    nu = jax.tree.map(
        lambda g, v: _cast(b2, v) * v + _cast(1.0 - b2, v) * jnp.square(_like(g, v)),
        updates, state.nu
    )
    t = t_count.astype(jnp.result_type(float))
    c1 = 1.0 - b1**t
    c2 = 1.0 - b2**t
    root_c2 = jnp.sqrt(c2)
    gain = scale * root_c2 / c1

    def direction(m, v):
        dt = m.dtype
        if eps_root is not None:
            v = v + (c2 * eps_root).astype(dt)
        return gain.astype(dt) * m / (jnp.sqrt(v) + (root_c2 * eps).astype(dt))

    return jax.tree.map(direction, mu, nu), mu, nu


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
    return _adam("adam", learning_rate, b1, b2, eps, eps_root)



def _adam(where, learning_rate, b1, b2, eps, eps_root, weight_decay=None, mask=None):
    """adam, and adamw when `where` is "adamw" (with weight_decay and mask)."""
    rate = _learning_rate(learning_rate, where)
    below_one = lambda x, n, where: _v.probability(x, n, where=where, high_open=True)  # noqa: E731
    args = {"learning_rate": rate.arg,
            "b1": _number(b1, "b1", where, below_one),
            "b2": _number(b2, "b2", where, below_one),
            "eps": _number(eps, "eps", where, _v.nonneg_real),
            "eps_root": _number(eps_root, "eps_root", where, _v.nonneg_real)}
    rooted = not _is_zero(args["eps_root"])  # structure: ε_root = 0 adds nothing
    numbers_ = dict(args)
    del numbers_["learning_rate"]
    decoupled = where == "adamw"
    static = (rate.key, rooted)
    if decoupled:
        args["weight_decay"] = numbers_["weight_decay"] = _number(
            weight_decay, "weight_decay", where, _v.nonneg_real)
        decays = not _is_zero(args["weight_decay"])
        if mask is not None and not callable(mask):
            for leaf in jax.tree.leaves(mask):
                if not isinstance(leaf, (bool, np.bool_)):
                    raise TypeError(
                        f"adamw: mask must be None, a pytree of bools (True: decay that leaf "
                        f"or subtree) or a function params -> one, got a leaf {leaf!r}")
        args["mask"] = mask
        static += (decays, _mask_key(mask))

        def full_mask(params):
            if mask is None and decays:
                _check_default_mask(params)
            return _decay_mask(mask, params)

    def init(params):
        if decoupled:
            full_mask(params)  # refuses a mask that does not fit, or a default that finds no W
        return AdamState(count=_zero_count(), mu=_zeros_like(params), nu=_zeros_like(params),
                         hyperparams=_state_values(dict(_rate_hyperparams(rate), **numbers_)))

    def update(updates, state, params=None):
        _expect_state(state, AdamState, where)
        if decoupled and params is None:
            raise ValueError(
                "adamw's update needs the current params for the weight decay: call "
                "opt.update(grads, state, params)"
            )
        hp = state.hyperparams
        eta, new_hp = _rate_now(rate, hp, state.count)
        count = _increment(state.count)
        step, mu, nu = _adam_direction(hp["b1"], hp["b2"], hp["eps"],
                                       hp["eps_root"] if rooted else None, updates, state,
                                       count, scale=-eta)
        if decoupled and decays:
            decay_here = full_mask(params)
            factor = eta * hp["weight_decay"]

            def decayed(u, theta, decay):  # −η m̂/(…) − η λ θ
                if not decay:
                    return u
                return u - factor.astype(u.dtype) * jnp.asarray(theta).astype(u.dtype)

            step = jax.tree.map(decayed, step, params, decay_here)
        elif decoupled:
            full_mask(params)
        return step, AdamState(count, mu, nu, new_hp)

    return _made(where, args, static, init, update)


def _mask_key(mask):
    """The static part of an adamw mask: None, a function (by identity), or the
    structure and bools of a pytree."""
    if mask is None or callable(mask):
        return mask
    leaves, treedef = jax.tree_util.tree_flatten(mask)
    return treedef, tuple(bool(x) for x in leaves)

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
    return _adam("adamw", learning_rate, b1, b2, eps, eps_root, weight_decay, mask)


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
    where = "adagrad"
    rate = _learning_rate(learning_rate, where)
    args = {"learning_rate": rate.arg,
            "initial_accumulator_value": _number(
                initial_accumulator_value, "initial_accumulator_value", where,
                _v.nonneg_real),
            "eps": _number(eps, "eps", where, _v.nonneg_real)}

    def init(params):
        hp = _state_values(dict(_rate_hyperparams(rate), initial_accumulator_value=args[
            "initial_accumulator_value"], eps=args["eps"]))
        s0 = hp["initial_accumulator_value"]
        return AdagradState(
            count=_zero_count(),
            sum_of_squares=jax.tree.map(
                lambda p: jnp.full(jnp.shape(p), s0, jnp.result_type(p)), params),
            hyperparams=hp,
        )

    def update(updates, state, params=None):
        _expect_state(state, AdagradState, "adagrad")
        hp = state.hyperparams
        eta, new_hp = _rate_now(rate, hp, state.count)
        eps = hp["eps"]
        sums = jax.tree.map(
            lambda g, s: s + jnp.square(_like(g, s)), updates, state.sum_of_squares
        )
        direction = jax.tree.map(
            lambda g, s: _like(g, s) / (jnp.sqrt(s) + _cast(eps, s)), updates, sums
        )
        count = _increment(state.count)
        return _descend(eta, direction), AdagradState(count, sums, new_hp)

    return _made(where, args, (rate.key,), init, update)


# --------------------------------------------------------------------------------------
# Clipping and composition
# --------------------------------------------------------------------------------------


def global_norm(tree: PyTree) -> jax.Array:
    """‖tree‖ = √(Σ over all leaves of Σ x²), a scalar (0 for a tree with no leaves)."""
    # the Python 0.0 is weakly typed: an all-float32 tree gives a float32 norm
    squares = sum((jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)), 0.0)
    return jnp.sqrt(squares)


def clip_by_global_norm(max_norm) -> GradientTransformation:
    """Rescales the whole update tree so its global norm is at most τ = ``max_norm``::

        g ← g · τ/‖g‖   if ‖g‖ > τ,   else unchanged     (‖g‖ over all leaves)

    The direction is kept; place it first in a :func:`chain`, before the optimizer, to
    clip gradients: ``chain(clip_by_global_norm(1.0), adam(1e-3))``.

    Like every hyperparameter of this module, τ lives in the state
    (``state.hyperparams["max_norm"]``), so transformations that differ only in τ are
    equal and share a compiled step, and τ may be an array or a tracer (a sweep can vmap
    over it).

    Args:
      max_norm: τ, finite and > 0 (a traced one is not checked).
    Returns:
      A :class:`GradientTransformation` with :class:`ClipState`.
    """
    tau = _number(max_norm, "max_norm", "clip_by_global_norm", _v.positive_real)

    def init(params):
        return ClipState(hyperparams=_state_values({"max_norm": tau}))

    def update(updates, state, params=None):
        _expect_state(state, ClipState, "clip_by_global_norm")
        norm = global_norm(updates)
        limit = state.hyperparams["max_norm"].astype(norm.dtype)
        # where() picks 1 when ‖g‖ <= τ, so a zero norm never divides
        factor = jnp.where(norm > limit, limit / norm, 1.0)
        return jax.tree.map(lambda g: g * factor.astype(g.dtype), updates), state

    return _made("clip_by_global_norm", {"max_norm": tau}, (), init, update)


def identity() -> GradientTransformation:
    """Passes updates through unchanged (state :class:`EmptyState`)."""

    def init(params):
        return EmptyState()

    def update(updates, state, params=None):
        _expect_state(state, EmptyState, "identity")
        return updates, state

    return _made("identity", {}, (), init, update)


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

    return _made("chain", {"transforms": list(transforms)}, (tuple(transforms),), init, update)