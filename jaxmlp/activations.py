"""Activation functions, each a pair (f, f′) with f′ written by hand.

    a = f(z)                       elementwise, except softmax (row-wise)
    ∂L/∂z = ∂L/∂a ⊙ f′(z)          elementwise activations
    ∂L/∂z = a ⊙ (g − Σₖ gₖaₖ)       softmax, g = ∂L/∂a (its Jacobian-vector product)

| name         | f(z)                              | f′(z), from z and the cached a = f(z) |
| ------------ | --------------------------------- | -------------------------------------- |
| `identity`   | z                                 | 1                                      |
| `sigmoid`    | σ(z) = 1/(1 + e⁻ᶻ)                | a(1 − a)                               |
| `tanh`       | tanh z                            | 1 − a²                                 |
| `relu`       | max(z, 0)                         | 1 if z > 0 else 0 (0 at z = 0, as jax.nn.relu) |
| `leaky_relu` | z if z ≥ 0 else 0.01·z            | 1 if z ≥ 0 else 0.01                   |
| `elu`        | z if z > 0 else eᶻ − 1  (α = 1)   | 1 if z > 0 else a + 1                  |
| `gelu`       | z·Φ(z) (exact, Φ the normal CDF)  | Φ(z) + z·φ(z)                          |
| `softmax`    | exp(z − max z) / Σ exp(z − max z) | Jacobian diag(a) − a aᵀ (output only)  |

Shapes: z and a are (batch, n); softmax normalises over the last axis.

Custom activations.  `register(name, f, df)` adds an elementwise activation under a new
name, usable wherever a built-in name is (`MLP(activation="swish")`); `custom(name, f,
df)` builds the same checked `Activation` without registering it, to pass to `MLP`
directly.  f maps z to a elementwise (any shape, dtype kept); df gives f′(z) either
from (z, a) like the built-ins above or from z alone (told apart by its signature).
Both are checked before anything is returned, on the grid

    Z = {0, ±1e-3, ±0.1, ±0.5, ±1, ±2, ±3, ±5, ±10, ±20, ±50}    (float64)

against autodiff: df(z, f(z)) must equal jax.grad(f)(z) to |df − g| ≤ 1e-9 + 1e-6·|g|
at every z ∈ Z, except at a kink.  At a kink (the one-sided difference quotients
(f(z) − f(z − h))/h and (f(z + h) − f(z))/h, h = 1e-7·max(1, |z|), differ by more than
1e-3·max(1, |left|, |right|)) f′ is not defined and autodiff returns one subgradient of its
choosing (jnp.maximum(z, 0) gives ½ at 0, jax.nn.relu 0); there df may equal jax.grad's
value or either one-sided derivative (to 1e-5·max(1, |side|)), so relu′(0) = 0 and
relu′(0) = 1 are both accepted, 0.3 is not.  f and df must also be finite on Z, map
arrays of shape (1, n) and (n, 1) alike (elementwise), and keep float32 as float32.

The registry is one module-level dict, process-wide like matplotlib's colormap registry:
register in the same process (script, notebook, test) before building a model that names
the activation.  An `MLP` resolves each name when it is constructed and keeps the
`Activation` it found, so it is unaffected by a later `unregister` or `register(...,
overwrite=True)`, and a model built after an overwrite is a different (unequal) model:
jit caches, which key on the model, never mix the two functions.
"""
from __future__ import annotations

import inspect
import keyword
import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erfc

from jaxmlp import _validate as _v

Array = jax.Array

LEAKY_SLOPE = 0.01
ELU_ALPHA = 1.0

__all__ = ["Activation", "ACTIVATIONS", "HIDDEN_ACTIVATIONS", "RELU_FAMILY", "GRID", "get",
           "resolve", "register", "unregister", "custom", "registered", "hidden_names",
           "is_known", "fingerprint"]


class Activation(NamedTuple):
    """An activation and its hand-written derivative.

    Attributes:
      name: the activation's name.
      f: z (batch, n) -> a (batch, n).
      df: (z, a) -> f′(z), elementwise, shape (batch, n); None for softmax, whose
        derivative is a Jacobian rather than a vector.
      vjp: (z, a, g) -> g·∂a/∂z, i.e. ∂L/∂z from g = ∂L/∂a, shape (batch, n).
      relu_like: whether `init="auto"` gives the layers it feeds He initialisation (the
        ReLU family; for a custom activation see `custom`).

    Equality and hashing are those of the tuple: two Activations are equal when they
    hold the same name and the same function objects.
    """

    name: str
    f: Callable[[Array], Array]
    df: Optional[Callable[[Array, Array], Array]]
    vjp: Callable[[Array, Array, Array], Array]
    relu_like: bool = False

    def __repr__(self) -> str:
        kind = "built-in" if ACTIVATIONS.get(self.name) is self else (
            "registered" if _REGISTRY.get(self.name) is self else "custom")
        return f"Activation({self.name!r}, {kind})"


#: Activations for which `init="auto"` picks He initialisation.
RELU_FAMILY = frozenset({"relu", "leaky_relu", "elu", "gelu"})


def _elementwise(name, f, df, relu_like=None) -> Activation:
    relu_like = name in RELU_FAMILY if relu_like is None else bool(relu_like)
    return Activation(name, f, df, lambda z, a, g: g * df(z, a), relu_like)


def _identity(z):
    return z


def _d_identity(z, a):
    return jnp.ones_like(z)


def _sigmoid(z):
    return jax.nn.sigmoid(z)


def _d_sigmoid(z, a):
    return a * (1 - a)


def _tanh(z):
    return jnp.tanh(z)


def _d_tanh(z, a):
    return 1 - a * a


def _relu(z):
    return jax.nn.relu(z)


def _d_relu(z, a):
    return (z > 0).astype(z.dtype)


def _leaky_relu(z):
    return jnp.where(z >= 0, z, LEAKY_SLOPE * z)


def _d_leaky_relu(z, a):
    return jnp.where(z >= 0, jnp.ones_like(z), jnp.full_like(z, LEAKY_SLOPE))


def _elu(z):
    # The inner where keeps the unused branch finite for large z; unlike minimum(z, 0),
    # whose derivative at the tie z = 0 is ½, it leaves autodiff's f′(0) = 1 = our df.
    return jnp.where(z > 0, z, ELU_ALPHA * jnp.expm1(jnp.where(z > 0, 0.0, z)))


def _d_elu(z, a):
    return jnp.where(z > 0, jnp.ones_like(z), a + ELU_ALPHA)


_SQRT_HALF = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


def _phi_cdf(z):
    # Φ(z) = ½·erfc(−z/√2): no cancellation for large negative z, unlike ½(1 + erf).
    return 0.5 * erfc(-z * _SQRT_HALF)


def _gelu(z):
    return z * _phi_cdf(z)


def _d_gelu(z, a):
    return _phi_cdf(z) + z * _INV_SQRT_2PI * jnp.exp(-0.5 * z * z)


def _softmax(z):
    e = jnp.exp(z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True)))
    return e / jnp.sum(e, axis=-1, keepdims=True)


def _softmax_vjp(z, a, g):
    return a * (g - jnp.sum(g * a, axis=-1, keepdims=True))


ACTIVATIONS = {
    "identity": _elementwise("identity", _identity, _d_identity),
    "sigmoid": _elementwise("sigmoid", _sigmoid, _d_sigmoid),
    "tanh": _elementwise("tanh", _tanh, _d_tanh),
    "relu": _elementwise("relu", _relu, _d_relu),
    "leaky_relu": _elementwise("leaky_relu", _leaky_relu, _d_leaky_relu),
    "elu": _elementwise("elu", _elu, _d_elu),
    "gelu": _elementwise("gelu", _gelu, _d_gelu),
    "softmax": Activation("softmax", _softmax, None, _softmax_vjp),
}

#: Activations allowed on hidden layers (softmax is output-only).
HIDDEN_ACTIVATIONS = tuple(n for n in ACTIVATIONS if n != "softmax")



# --------------------------------------------------------------------------- custom ones

#: The points at which custom activations are checked (and fingerprinted in checkpoints).
GRID = (-50.0, -20.0, -10.0, -5.0, -3.0, -2.0, -1.0, -0.5, -0.1, -1e-3, 0.0,
        1e-3, 0.1, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0)

_RTOL, _ATOL = 1e-6, 1e-9          # df against jax.grad(f)
_KINK_H = 1e-7                     # one-sided step, times max(1, |z|)
_KINK_JUMP = 1e-3                  # one-sided derivatives this far apart: a kink
_SIDE_RTOL = 1e-5                  # df against a one-sided derivative at a kink

#: name -> Activation: the process-wide registry (see the module docstring).
_REGISTRY: dict = {}
#: every Activation that `custom`/`register` checked -> its fingerprint on GRID.
_CHECKED: dict = {}


def get(name: str, *, where: str = "get") -> Activation:
    """The `Activation` called `name`, built-in or registered; ValueError naming the
    choices otherwise (TypeError for a `name` that is not a str)."""
    expected = (f"one of {sorted(ACTIVATIONS)}"
                + (f" or a registered one {sorted(_REGISTRY)}" if _REGISTRY else
                   " (or a name registered with jaxmlp.activations.register)"))
    if not isinstance(name, str):
        raise TypeError(f"{where}: name must be {expected}, got {name!r}")
    act = ACTIVATIONS.get(name, _REGISTRY.get(name))
    if act is None:
        raise ValueError(f"{where}: name must be {expected}, got {name!r}")
    return act


def resolve(spec, *, where: str = "resolve") -> Activation:
    """The `Activation` that `spec` stands for: a name (built-in or registered) or an
    `Activation` that jaxmlp checked (a built-in, or one `custom`/`register` returned).

    ValueError for an unknown name or for an `Activation` built by hand, whose df was
    never checked against jax.grad (build it with `custom(name, f, df)`)."""
    if isinstance(spec, Activation):
        if (ACTIVATIONS.get(spec.name) == spec or _REGISTRY.get(spec.name) == spec
                or spec in _CHECKED):
            return spec
        raise ValueError(
            f"{where}: Activation {spec.name!r} was not built by jaxmlp.activations.custom or "
            f"register, so its df was never checked against jax.grad(f): build it with "
            f"jaxmlp.activations.custom({spec.name!r}, f, df)")
    return get(spec, where=where)


def is_named(act: Activation) -> bool:
    """Whether `act`'s name alone stands for it now (a built-in, or the one registered
    under that name): a model can then hold the name instead of the object."""
    return ACTIVATIONS.get(act.name) == act or _REGISTRY.get(act.name) == act


def registered() -> tuple:
    """The names of the registered (non-built-in) activations, oldest first."""
    return tuple(_REGISTRY)


def hidden_names() -> tuple:
    """Every name a hidden layer accepts: the built-ins except softmax, then the
    registered ones."""
    return HIDDEN_ACTIVATIONS + tuple(_REGISTRY)


def is_known(name) -> bool:
    """Whether `name` is a built-in (softmax included: output-only) or registered name."""
    return isinstance(name, str) and (name in ACTIVATIONS or name in _REGISTRY)


def custom(name: str, f: Callable, df: Callable, *, relu_like: Optional[bool] = None
           ) -> Activation:
    """A checked elementwise `Activation` named `name`, not registered: pass it to
    `MLP(activation=...)` directly (alone or in a tuple with names).

    Args:
      name: a non-empty Python identifier, neither a built-in nor a registered name.
      f: z -> a = f(z), elementwise on arrays of any shape (the network calls it on
        (batch, n)), written with jax.numpy (it is traced by jit and differentiated by
        the checks), keeping the dtype (float32 in, float32 out).
      df: its derivative f′, elementwise, of z's shape: either `df(z, a)` with the cached
        a = f(z) (like the built-ins: σ′ = a(1 − a)) or `df(z)`; the two are told apart
        by the number of positional parameters in its signature.
      relu_like: whether `init="auto"` picks He initialisation after it; None decides from
        f′: ReLU-like when f′(20) is within 0.05 of 1 and |f′(−20)| ≤ 0.05 (softplus,
        swish, mish do; tanh, sigmoid, identity do not).

    Returns:
      An `Activation` whose `df` is df(z, a) (a one-argument df is wrapped).

    Raises:
      TypeError: a name that is not a str; f or df not callable, or a df whose signature
        cannot be read or takes neither (z) nor (z, a).
      ValueError: a bad or taken name; on the grid `GRID` (float64): f or df not finite,
        not elementwise or not shape-preserving, df differing from jax.grad(f) (the
        message lists each point: z, df's value, jax.grad's; kinks as in the module
        docstring), jax.grad(f) failing or not finite; f or df turning float32 into
        another dtype.
    """
    _check_name(name, "custom")
    if name in _REGISTRY:
        raise ValueError(
            f"custom: name must not be a registered name, got {name!r}: activation {name!r} "
            f"is already registered; pick another name, or replace the registered one with "
            f"jaxmlp.activations.register({name!r}, f, df, overwrite=True)")
    return _build(name, f, df, relu_like, "custom")


def register(name: str, f: Callable, df: Callable, *, overwrite: bool = False,
             relu_like: Optional[bool] = None) -> Activation:
    """Checks (f, f′) exactly as `custom` does and registers it under `name`, so that
    `MLP(activation=name)` (or `output=name`) finds it.

    The registry is process-wide (see the module docstring).  Models already built keep
    the activation they resolved; with `overwrite=True` the name stands for the new pair
    from now on.  Built-in names can never be replaced.

    Returns:
      The registered `Activation`.

    Raises:
      ValueError: as `custom` (a wrong f′, a non-finite or non-elementwise f), and for a
        name already registered unless `overwrite`.
      TypeError: as `custom`.
    """
    _check_name(name, "register")
    overwrite = _v.flag(overwrite, "overwrite", where="register")
    if name in _REGISTRY and not overwrite:
        raise ValueError(
            f"register: name must not be a registered name unless overwrite=True, got "
            f"{name!r}: activation {name!r} is already registered; pass overwrite=True to "
            f"replace it, or call jaxmlp.activations.unregister({name!r}) first")
    act = _build(name, f, df, relu_like, "register")
    _REGISTRY[name] = act
    return act


def unregister(name: str) -> Activation:
    """Removes `name` from the registry and returns its `Activation` (models built with
    it keep working). ValueError for a built-in or an unregistered name, TypeError for a
    name that is not a str."""
    expected = f"a registered name {sorted(_REGISTRY)}"
    if not isinstance(name, str):
        raise TypeError(f"unregister: name must be {expected}, got {name!r}")
    if name in ACTIVATIONS:
        raise ValueError(f"unregister: name must be {expected}, got {name!r}: {name!r} is a "
                         f"built-in activation and cannot be unregistered")
    if name not in _REGISTRY:
        raise ValueError(f"unregister: name must be {expected}, got {name!r}: no activation "
                         f"{name!r} is registered")
    return _REGISTRY.pop(name)


def fingerprint(act: Activation) -> dict:
    """`{"z": GRID, "f": f(z), "df": f′(z)}` (lists of floats, computed in float64): what
    a checkpoint records of a custom activation, so that loading it can tell whether the
    activation registered under that name now is the same function."""
    fp = _CHECKED.get(act)
    if fp is None:
        with jax.enable_x64(True):
            z = jnp.asarray(GRID, jnp.float64)[None, :]
            a = act.f(z)
            d = act.df(z, a)
        fp = {"z": list(GRID), "f": np.asarray(a, np.float64).ravel().tolist(),
              "df": np.asarray(d, np.float64).ravel().tolist()}
    return fp


def _check_name(name, where: str) -> str:
    expected = "a non-empty Python identifier (letters, digits and underscores)"
    if not isinstance(name, str):
        raise TypeError(f"{where}: name must be a str, {expected}, got {name!r}")
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"{where}: name must be {expected}, got {name!r}")
    if name in ACTIVATIONS:
        raise ValueError(f"{where}: name must not be a built-in name, got {name!r}: {name!r} "
                         f"is a built-in activation and cannot be replaced; pick another name")
    return name


def _arity(df, where: str) -> int:
    """1 for df(z), 2 for df(z, a), judged by df's positional parameters."""
    try:
        sig = inspect.signature(df)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: df must be a Python function whose signature can be read, "
                        f"got {df!r}: pass a Python function, "
                        f"e.g. lambda z, a: ... or lambda z: ...") from None
    params = list(sig.parameters.values())
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if len(positional) >= 2 and len(required) <= 2:
        return 2
    if len(positional) == 1:
        return 1
    raise TypeError(f"{where}: df must take (z, a) or (z), got a function with signature "
                    f"{sig}")


def _from_z(df1):
    def df(z, a):
        return df1(z)
    df.__name__ = f"{getattr(df1, '__name__', 'df')}_of_z"
    return df


def _build(name, f, df, relu_like, where: str) -> Activation:
    if not callable(f):
        raise TypeError(f"{where}: f must be callable (z -> a), got {type(f).__name__}")
    if not callable(df):
        raise TypeError(f"{where}: df must be callable ((z, a) -> f′(z), or z -> f′(z)), got "
                        f"{type(df).__name__}")
    if relu_like is not None:
        relu_like = _v.flag(relu_like, "relu_like", where=where)
    if _arity(df, where) == 1:
        df = _from_z(df)
    with jax.enable_x64(True), np.errstate(all="ignore"):
        fp, guess = _check(name, f, df)
    act = _elementwise(name, f, df, guess if relu_like is None else relu_like)
    _CHECKED[act] = fp
    return act


def _points(z, mask, *values) -> str:
    idx = np.flatnonzero(mask)
    if not values:
        return ", ".join(f"{z[i]:g}" for i in idx)
    return ", ".join(f"{z[i]:g} ({', '.join(f'{v[i]:.6g}' for v in values)})" for i in idx)


def _why(e: Exception) -> str:
    """An exception of the user's f or df in one line, with a hint for tracing errors."""
    text = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    if isinstance(e, (jax.errors.JAXTypeError, jax.errors.JAXIndexError)):
        text += (" (f and df are traced by jax.jit, jax.vmap and jax.grad: write them with "
                 "jax.numpy, not NumPy, and without Python branches on values; jnp.where "
                 "instead of if)")
    return text


def _check(name, f, df):
    """Runs the checks of `custom` in float64 (x64 on); returns (fingerprint, relu_like)."""
    where = f"activation {name!r}"
    zs = np.asarray(GRID, np.float64)
    z = jnp.asarray(zs)
    n = z.shape[0]

    def call(what, fn, *args):
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - any failure of the user's code is reported
            raise ValueError(f"{where}: {what} raised {_why(e)}") from e

    def values(what, out, shape):
        """out as a float64 NumPy array of `shape`, or ValueError."""
        if tuple(getattr(out, "shape", ())) != shape or not hasattr(out, "dtype"):
            got = tuple(getattr(out, "shape", ())) if hasattr(out, "shape") else type(out).__name__
            raise ValueError(f"{where}: {what} must be elementwise and keep its input's "
                             f"shape {shape}, got {got}")
        if not jnp.issubdtype(out.dtype, jnp.floating):
            raise ValueError(f"{where}: {what} must return floats, got dtype {out.dtype}")
        return np.asarray(out, np.float64)

    def finite(what, v):
        bad = ~np.isfinite(v)
        if bad.any():
            raise ValueError(f"{where}: {what} is not finite at z = {_points(zs, bad, v)}; "
                             f"it must be finite for every finite z")

    def same(what, v, w, how):
        off = ~np.isclose(v, w, rtol=1e-12, atol=1e-300)
        if off.any():
            raise ValueError(
                f"{where}: {what} is not elementwise: {how} at z = {_points(zs, off, v, w)}; "
                f"it must act on each entry alone (no sums or normalisation over an axis)")

    a_row = call("f(z)", f, z[None, :])
    a = values("f", a_row, (1, n)).ravel()
    finite("f", a)
    a_col = values("f", call("f(z)", f, z[:, None]), (n, 1)).ravel()
    same("f", a, a_col, "f of the grid as a row and as a column differ")
    a_one = values("f", call("jax.vmap(f)", jax.vmap(f), z), (n,))
    same("f", a, a_one, "f of the grid and f of each point alone differ")

    d = values("df", call("df(z, a)", df, z[None, :], a_row), (1, n)).ravel()
    finite("df", d)
    d_col = values("df", call("df(z, a)", df, z[:, None], f(z[:, None])), (n, 1)).ravel()
    same("df", d, d_col, "df of the grid as a row and as a column differ")

    try:
        g_out = jax.vmap(jax.grad(f))(z)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{where}: jax.grad(f) failed ({_why(e)}); f must map a scalar "
                         f"to a scalar with jax.numpy operations") from e
    g = values("jax.grad(f)", g_out, (n,))
    bad = ~np.isfinite(g)
    if bad.any():
        raise ValueError(f"{where}: jax.grad(f) is not finite at z = {_points(zs, bad, g)}, "
                         f"so df cannot be checked there; f must be differentiable by JAX")

    h = _KINK_H * np.maximum(1.0, np.abs(zs))
    a_minus = np.asarray(f(jnp.asarray(zs - h)[None, :]), np.float64).ravel()
    a_plus = np.asarray(f(jnp.asarray(zs + h)[None, :]), np.float64).ravel()
    left, right = (a - a_minus) / h, (a_plus - a) / h
    kink = np.abs(left - right) > _KINK_JUMP * np.maximum(
        1.0, np.maximum(np.abs(left), np.abs(right)))

    def near(side):
        return np.abs(d - side) <= _SIDE_RTOL * np.maximum(1.0, np.abs(side))
    ok = np.abs(d - g) <= _ATOL + _RTOL * np.abs(g)
    ok |= kink & (near(left) | near(right))
    if not ok.all():
        lines = [f"  z = {zs[i]:g}: df gives {d[i]:.10g}, jax.grad(f) gives {g[i]:.10g}"
                 + (f" (a kink: one-sided derivatives {left[i]:.6g} and {right[i]:.6g})"
                    if kink[i] else "") for i in np.flatnonzero(~ok)]
        raise ValueError(
            f"{where}: df is not the derivative of f: it differs from jax.grad(f) at "
            f"{int((~ok).sum())} of the {n} grid points:\n" + "\n".join(lines))

    z32 = jnp.asarray(zs, jnp.float32)[None, :]
    a32 = f(z32)
    d32 = df(z32, a32)
    kinds = (jnp.result_type(a32), jnp.result_type(d32))
    if kinds != (jnp.float32, jnp.float32):
        raise ValueError(
            f"{where}: f and df must keep float32 as float32 (a float32 model would "
            f"otherwise compute in another dtype), got f: {kinds[0]}, df: {kinds[1]}; write "
            f"constants as Python floats, not np.float64")

    i20, m20 = GRID.index(20.0), GRID.index(-20.0)
    relu_like = bool(abs(g[i20] - 1.0) <= 0.05 and abs(g[m20]) <= 0.05)
    fp = {"z": list(GRID), "f": a.tolist(), "df": d.tolist()}
    return fp, relu_like
