"""Reference gradients in your convention, from jaxmlp's verified manual backprop.

For dense layers l = 0 … L−1, in jaxmlp's own terms (W⁽ˡ⁾ of shape (n_out, n_in), rows
of x are examples):

    z⁽ˡ⁾ = a⁽ˡ⁻¹⁾ W⁽ˡ⁾ᵀ + b⁽ˡ⁾,  a⁽ˡ⁾ = f(z⁽ˡ⁾),  a⁽⁻¹⁾ = x,  ŷ = a⁽ᴸ⁻¹⁾
    δ⁽ˡ⁾ = ∂L/∂z⁽ˡ⁾ = (δ⁽ˡ⁺¹⁾ W⁽ˡ⁺¹⁾) ⊙ f′(z⁽ˡ⁾),  dW⁽ˡ⁾ = δ⁽ˡ⁾ᵀ a⁽ˡ⁻¹⁾,  db⁽ˡ⁾ = Σ_rows δ⁽ˡ⁾

A `Convention` (see `conventions`) changes only how these are laid out and scaled: W
(n_in, n_out) is returned as dWᵀ, features-first data as δᵀ (n_out, m) and db (n_out, 1),
a summed or differently halved loss as s·(jaxmlp's gradient), the L2 penalty c·ΣW² as
+2c·W on the weights.  Everything is computed in float64 whatever your dtype.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import _validate as _v
from jaxmlp import activations as _act
from jaxmlp.oracle.report import real_array
from jaxmlp.backprop import backprop as _backprop
from jaxmlp.model import LOSSES, MLP, forward_pass
from jaxmlp.oracle import containers as _containers
from jaxmlp.oracle.conventions import CONVENTIONS, Convention, base_loss, resolve

__all__ = ["reference_gradients", "LAYOUTS", "Internals"]

LAYOUTS = ("batch_first", "features_first")
_UNSET = object()  # reference_gradients(params, x, y): the three-argument form

_EXAMPLE = {"batch_first": "e.g. 'jaxmlp', 'cs231n', 'sklearn'",
            "features_first": "e.g. 'deeplearning_ai'"}


def _hidden_names() -> tuple:
    """Hidden activations jaxmlp knows, registered ones included."""
    names = getattr(_act, "hidden_names", None)
    return tuple(names()) if names is not None else _act.HIDDEN_ACTIVATIONS


# --------------------------------------------------------------------------- validation

def _as_float64(value, name: str) -> np.ndarray:
    """A float64 copy of a real numeric array-like; TypeError naming `name` otherwise."""
    arr = real_array(value, name).astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or Inf values")
    return arr


def _as_list(value, name: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise TypeError(
            f"{name} must be a list with one array per layer, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must hold at least one layer, got an empty list")
    return list(value)


def _check_convention(convention, layout) -> Convention:
    """The Convention, with the older `layout=` argument folded into its `data`."""
    conv = resolve(convention)
    if layout is None:
        return conv
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    data = "batch_first" if conv.data == "batch_first" else "features_first"
    if layout == data:
        return conv
    if conv != CONVENTIONS["jaxmlp"]:
        raise ValueError(f"layout={layout!r} contradicts convention {conv.name!r} "
                         f"(data={conv.data!r}); pass only the convention")
    return dataclasses.replace(conv, name="custom", data=layout)


def _check_names(activation, output, loss):
    """Type and name checks of the architecture's strings; returns activation as str/tuple."""
    if isinstance(activation, str):
        names = (activation,)
    elif isinstance(activation, (list, tuple)):
        activation = tuple(activation)
        names = activation
    else:
        raise TypeError(
            f"activation must be a name or a tuple with one name per hidden layer, "
            f"got {type(activation).__name__}")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"activation names must be strings, got {name!r}")
        if name not in _hidden_names():
            raise ValueError(f"unknown activation {name!r}; expected one of "
                             f"{list(_hidden_names())}")
    for arg, value, choices in (("output", output, list(_hidden_names()) + ["softmax"]),
                                ("loss", loss, list(LOSSES))):
        if not isinstance(value, str):
            raise TypeError(f"{arg} must be a string, got {type(value).__name__}")
        if value not in choices:
            raise ValueError(f"unknown {arg} {value!r}; expected one of {choices}")
    return activation


def _chains(Ws, in_out: bool) -> bool:
    """The 2-D arrays Ws chain as a layer stack in that W layout."""
    if any(np.ndim(W) != 2 for W in Ws):
        return False
    n_in = (lambda W: W.shape[0]) if in_out else (lambda W: W.shape[1])
    n_out = (lambda W: W.shape[1]) if in_out else (lambda W: W.shape[0])
    return all(n_in(W) == n_out(V) for V, W in zip(Ws, Ws[1:]))


def _check_weights(weights, biases, conv: Convention):
    """Shapes of the layer stack in `conv`'s W layout; returns (Ws (n_out, n_in), bs, sizes)."""
    Ws = [_as_float64(W, f"weights[{l}]") for l, W in enumerate(_as_list(weights, "weights"))]
    bs = [_as_float64(b, f"biases[{l}]") for l, b in enumerate(_as_list(biases, "biases"))]
    if len(bs) != len(Ws):
        raise ValueError(f"weights has {len(Ws)} layers but biases has {len(bs)}; "
                         f"expected one bias per weight matrix")
    in_out = conv.weights == "in_out"
    form = "(n_in, n_out)" if in_out else "(n_out, n_in)"
    other = "'out_in' (n_out, n_in)" if in_out else "'in_out' (n_in, n_out), e.g. 'cs231n'"
    for l, W in enumerate(Ws):
        if W.ndim != 2 or 0 in W.shape:
            raise ValueError(f"weights[{l}] must be a non-empty 2-D array {form}, "
                             f"got shape {W.shape}")
        if l:
            n = Ws[l - 1].shape[1] if in_out else Ws[l - 1].shape[0]
            n_in = W.shape[0] if in_out else W.shape[1]
            if n_in != n:
                want = f"({n}, n_out)" if in_out else f"(n_out, {n})"
                flipped = (W.shape[1] if in_out else W.shape[0]) == n
                if _chains(Ws, not in_out):
                    presets = ("'jaxmlp', 'deeplearning_ai', 'nielsen'" if in_out
                               else "'cs231n', 'sklearn'")
                    raise ValueError(
                        f"weights[{l}] has shape {W.shape}, which does not chain in convention "
                        f"{conv.name!r}'s W {form}; your weights chain as "
                        f"{'(n_out, n_in)' if in_out else '(n_in, n_out)'}: pass "
                        f"convention={presets.split(', ')[0]} or another with "
                        f"weights={'out_in' if in_out else 'in_out'!r} ({presets})")
                raise ValueError(
                    f"weights[{l}] must have shape {want}: its n_in must equal "
                    f"weights[{l - 1}]'s n_out = {n}, got {W.shape}; convention "
                    f"{conv.name!r} has W {form}" + (
                        f" (transposed? then your weights are {other})" if flipped else ""))
    Ws = [W.T for W in Ws] if in_out else Ws
    for l, (W, b) in enumerate(zip(Ws, bs)):
        n = W.shape[0]
        if b.shape not in ((n,), (n, 1)):
            raise ValueError(f"biases[{l}] must have shape ({n},) or ({n}, 1) to match "
                             f"weights[{l}] {W.T.shape if in_out else W.shape}, got {b.shape}")
    sizes = (Ws[0].shape[1],) + tuple(W.shape[0] for W in Ws)
    return Ws, bs, sizes


def _check_x(x, n_x: int, layout: str) -> np.ndarray:
    """x in the layout → batch-first float64 (m, n_x)."""
    x = _as_float64(x, "x")
    want = f"(m, {n_x})" if layout == "batch_first" else f"({n_x}, m)"
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D {want} for layout={layout!r}, got shape {x.shape}")
    xb = x if layout == "batch_first" else x.T
    if xb.shape[1] != n_x:
        other = "features_first" if layout == "batch_first" else "batch_first"
        hint = (f"; it looks {other}: pass a convention with data={other!r} "
                f"({_EXAMPLE[other]}) or transpose x"
                if xb.shape[0] == n_x else "")
        raise ValueError(f"x must have shape {want} for layout={layout!r} (n_x = {n_x} from "
                         f"weights[0]), got {x.shape}{hint}")
    if xb.shape[0] < 1:
        raise ValueError(f"x must hold at least one example, got shape {x.shape}")
    return xb


def _check_y(y, K: int, m: int, layout: str, loss: str) -> np.ndarray:
    """y in the layout → batch-first (m, K) float64, or (m,) int labels for cce."""
    y = real_array(y, "y")
    want = f"({m}, {K})" if layout == "batch_first" else f"({K}, {m})"
    labels = loss == "cce" and y.dtype.kind in "iu"
    if labels and layout == "features_first" and y.shape == (1, m):
        y = y.reshape(m)
    if y.ndim == 1 and labels:
        if y.shape != (m,):
            raise ValueError(f"y (class labels) must have shape ({m},), got {y.shape}")
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= K:
            raise ValueError(f"y holds class labels outside [0, {K}): min {lo}, max {hi}")
        return y.astype(np.int64)
    expected = [want] + ([f"({m},)"] if K == 1 else []) + (
        [f"({m},) integer labels"] if loss == "cce" else [])
    y = _as_float64(y, "y")
    if y.ndim == 1 and K == 1 and y.shape == (m,):
        yb = y[:, None]
    elif y.ndim == 2:
        yb = y if layout == "batch_first" else y.T
    else:
        yb = None
    if yb is None or yb.shape != (m, K):
        hint = ""
        if y.ndim == 2 and y.shape[::-1] == ((m, K) if layout == "batch_first" else (K, m)) \
                and m != K:
            other = "features_first" if layout == "batch_first" else "batch_first"
            hint = (f"; it looks {other}: pass a convention with data={other!r} "
                    f"({_EXAMPLE[other]}) or transpose y")
        if loss == "cce" and y.ndim == 1:
            hint = "; 1-D y for cce must hold integer class labels"
        raise ValueError(f"y must have shape {' or '.join(expected)} for layout={layout!r} "
                         f"(n_y = {K} from the last weight matrix, m = {m} from x), "
                         f"got {y.shape}{hint}")
    if loss == "bce" and np.any((yb < 0) | (yb > 1)):
        raise ValueError("for loss='bce', y must lie in [0, 1]")
    return yb


def _check_l2(l2, where: str) -> float:
    return _v.real(l2, "l2", where=where, low=0.0,
                   expected="a finite number >= 0 (the L2 strength as your code writes it: "
                            "λ, reg, lambd, alpha)")


def _check_n_train(n_train, m: Optional[int], where: str) -> Optional[int]:
    """n_train (default m) as a positive int (the training-set size n of an L2 penalty
    λ/(2n)ΣW²); TypeError or ValueError naming it otherwise."""
    if n_train is None:
        return m
    return _v.positive_int(n_train, "n_train", where=where)


# --------------------------------------------------------------------------- reference

class Internals(NamedTuple):
    """What the diagnoses need, in jaxmlp's own terms (batch-first rows, W (n_out, n_in)):
    W, b (n_out,), x (m, n_x), y (m, K) (cce labels one-hot), z, a, delta (∂L/∂z of *your* loss, with
    the 1/m in it), data_dW (the data part of dW, no penalty), c (the penalty c·ΣW²), s
    (your data loss over jaxmlp's `base_loss`), m, K, l2, loss (the name you passed), n_train
    (the n of a λ/(2n)ΣW² penalty; m unless you passed another)."""

    W: list
    b: list
    x: np.ndarray
    y: np.ndarray
    z: list
    a: list
    delta: list
    data_dW: list
    c: float
    s: float
    m: int
    K: int
    l2: float
    loss: str
    n_train: Optional[int] = None


@functools.partial(jax.jit, static_argnums=0)
def _forward_cache(model: MLP, params, x):
    """Per layer z⁽ˡ⁾ and a⁽ˡ⁾ = f(z⁽ˡ⁾) (batch-first), the last a being ŷ."""
    yhat, cache, _ = forward_pass(model, params, x, train=True)
    zs = [c.z for c in cache.hidden] + [cache.z]
    acts = [c.h for c in cache.hidden] + [yhat]
    return zs, acts


def _named(e: Exception, where: str) -> Exception:
    """The same error with the public function's name in front (the house style: "<function>:
    <argument> must be …"), unless it already has one."""
    text = str(e)
    if text.startswith((f"{where}: ", "probe: ", "compare: ", "MLP: ", "Convention ")):
        return e
    return type(e)(f"{where}: {text}")


def reference_gradients(weights, biases, x=_UNSET, y=_UNSET, *, activation, output: str, loss: str,
                        convention="jaxmlp", l2: float = 0.0, layout=None,
                        n_train=None) -> dict:
    """The loss, gradients, δ, z and a of an MLP in your convention, by jaxmlp's backprop.

    Two call forms: ``reference_gradients(weights, biases, x, y, ...)`` with two lists, or
    ``reference_gradients(params, x, y, ...)`` with your own parameter container, as your
    course holds it: CS231n's ``params`` dict (``W1``, ``b1``, …), deeplearning.ai's
    ``parameters`` dict, an object with ``.params`` (CS231n's nets), ``.weights`` and
    ``.biases`` (Nielsen's ``Network``) or ``.coefs_`` and ``.intercepts_``
    (scikit-learn), or a pair ``(weights, biases)``.  The reference then also comes back
    in your form, under "grads" (see `jaxmlp.oracle.containers`), and `compare` takes
    your gradients in that form.

    Args:
      weights: list of L arrays W⁽ˡ⁾, (n_out, n_in), or (n_in, n_out) when the
        convention's `weights` is "in_out" (CS231n, scikit-learn); they must chain.
        In the three-argument form: your parameter container.
      biases: list of L arrays, (n_out,) or (n_out, 1) each (in the three-argument
        form, this position holds x).
      x: inputs, (m, n_x) batch-first or (n_x, m) features-first (per the convention).
      y: targets, (m, n_y) / (n_y, m); (m,) when n_y == 1; for `cce` also integer class
        labels of shape (m,) (or (1, m) features-first).
      activation: hidden activation, one name or a tuple with one per hidden layer
        (identity, sigmoid, tanh, relu, leaky_relu, elu, gelu, or a registered one).
      output: output activation (any of the above or softmax).
      loss: `mse` or `sse` (squared error: their exact form is the convention's
        `squared`, by default as jaxmlp names them), `bce` (sigmoid output) or `cce`
        (softmax output).
      convention: a preset name ("jaxmlp", "cs231n", "deeplearning_ai", "nielsen",
        "sklearn") or a `Convention`.
      l2: the L2 strength as your code writes it (λ, reg, lambd, alpha); the penalty's
        form is the convention's `l2`.  Weights only, never biases.
      layout: the older spelling of the data layout ("batch_first"/"features_first");
        with the default convention it selects the layout, otherwise it must agree.
      n_train: the n of an L2 penalty λ/(2n)ΣW² (the convention's l2="half_m") when n is
        your training-set size, not the m examples of this batch (Nielsen's network2.py,
        scikit-learn); default m.  A positive integer; the other L2 forms ignore it.

    Any input dtype is accepted; everything is computed and returned in float64.

    Returns:
      A dict of NumPy float64 arrays, lists with one entry per layer l = 0 … L−1:
        "loss":  your loss, penalty included, a Python float;
        "dW":    ∂L/∂W⁽ˡ⁾, in the shape of your weights;
        "db":    ∂L/∂b⁽ˡ⁾, in the shape of the bias you passed: (n_out,) or (n_out, 1);
        "delta": what your convention calls δ⁽ˡ⁾ (∂L/∂z, or m·∂L/∂z when the 1/m is in
                 dW): (m, n_out) batch-first or (n_out, m) features-first;
        "z", "a": z⁽ˡ⁾ and a⁽ˡ⁾ = f(z⁽ˡ⁾), shaped like delta; the last a is ŷ;
        "grads": dW and db in your own form: the container's keys (deeplearning.ai:
                 dW1, db1, …), Nielsen's (nabla_b, nabla_w), scikit-learn's
                 (coef_grads, intercept_grads), or {"dW": […], "db": […]};
      and for `compare`: "layout", "convention" (the `Convention`), "model" (the
      `jaxmlp.MLP` of the base loss) and "internals" (an `Internals`).

    Raises:
      TypeError: a non-list weights/biases or an unknown container, non-numeric arrays,
        non-string names, a call with two positional arguments.
      ValueError: unknown convention, layout or names, a container with a missing, extra
        or unknown key (named), shapes that do not chain or fit x
        and y (naming expected and actual shapes), NaN/Inf, labels or targets out of
        range, a negative l2, an n_train that is not a positive integer.
    """
    try:
        conv = _check_convention(convention, layout)
        if y is _UNSET:
            if x is _UNSET:
                raise TypeError("reference_gradients takes (weights, biases, x, y) or "
                                "(params, x, y): got two positional arguments")
            params, x, y = weights, biases, x
            weights, biases, container = _containers.unpack(params)
        else:
            container = _containers.Container("lists")
        data_layout = "batch_first" if conv.data == "batch_first" else "features_first"
        activation = _check_names(activation, output, loss)
        l2 = _check_l2(l2, "reference_gradients")
        Ws, bs, sizes = _check_weights(weights, biases, conv)
        model = MLP(sizes, activation=activation, output=output, loss=base_loss(loss))
        xb = _check_x(x, sizes[0], data_layout)
        yb = _check_y(y, sizes[-1], xb.shape[0], data_layout, loss)
    except (TypeError, ValueError) as e:
        raise _named(e, "reference_gradients") from None
    m, K = xb.shape[0], sizes[-1]

    params = [{"W": W, "b": b.reshape(-1)} for W, b in zip(Ws, bs)]
    with jax.enable_x64(True):
        out = _backprop(model, params, xb, yb)
        zs, acts = _forward_cache(model, params, xb)
        f64 = functools.partial(np.asarray, dtype=np.float64)
        base_value = float(out.loss)
        data_dW = [f64(g["W"]) for g in out.grads]
        base_db = [f64(g["b"]) for g in out.grads]
        base_deltas = [f64(d) for d in out.deltas]
        zs = [f64(z) for z in zs]
        acts = [f64(a) for a in acts]
    s = conv.scale(loss, m, K)
    n_train = _check_n_train(n_train, m, "reference_gradients")
    c = conv.l2_coef(l2, m, n_train)
    data_dW = [s * g for g in data_dW]
    deltas = [s * d for d in base_deltas]
    value = s * base_value + c * sum(float(np.sum(W * W)) for W in Ws)
    dW = [g + 2 * c * W for g, W in zip(data_dW, Ws)]
    db = [s * g.reshape(b.shape) for g, b in zip(base_db, bs)]
    if yb.ndim == 1:  # cce labels → one-hot, for the diagnoses
        yb = np.eye(K)[yb]
    lay = (lambda a: a) if data_layout == "batch_first" else (lambda a: a.T)
    wlay = (lambda W: W.T) if conv.weights == "in_out" else (lambda W: W)
    ds = conv.delta_scale(m)
    dW = [wlay(g) for g in dW]
    return {
        "loss": value,
        "dW": dW,
        "db": db,
        "grads": _containers.pack(dW, db, container, conv),
        "delta": [lay(ds * d) for d in deltas],
        "z": [lay(z) for z in zs],
        "a": [lay(a) for a in acts],
        "layout": data_layout,
        "convention": conv,
        "model": model,
        "internals": Internals(Ws, [b.reshape(-1) for b in bs], xb, yb, zs, acts, deltas, data_dW, c, s, m, K, l2, loss, n_train),
    }
