"""The oracle: reference gradients for your own backprop, and a referee that says what is wrong.

NumPy in, NumPy out, float64 inside whatever your dtype.  For dense layers l = 0 … L−1
(W⁽ˡ⁾ of shape (n_out, n_in) in both layouts):

    batch_first  (rows are examples):   z⁽ˡ⁾ = a⁽ˡ⁻¹⁾ W⁽ˡ⁾ᵀ + b⁽ˡ⁾,  x (m, n_x),  δ (m, n_out)
                 dW⁽ˡ⁾ = δ⁽ˡ⁾ᵀ a⁽ˡ⁻¹⁾,  db⁽ˡ⁾ = Σ_rows δ⁽ˡ⁾                     (n_out,)
    features_first (the course convention, columns are examples):
                 z⁽ˡ⁾ = W⁽ˡ⁾ a⁽ˡ⁻¹⁾ + b⁽ˡ⁾,    x (n_x, m),  δ (n_out, m)
                 dW⁽ˡ⁾ = δ⁽ˡ⁾ a⁽ˡ⁻¹⁾ᵀ,  db⁽ˡ⁾ = Σ_columns δ⁽ˡ⁾                 (n_out, 1)

    a⁽ˡ⁾ = f(z⁽ˡ⁾), a⁽⁻¹⁾ = x, ŷ = a⁽ᴸ⁻¹⁾;   δ⁽ˡ⁾ = ∂L/∂z⁽ˡ⁾ = (W⁽ˡ⁺¹⁾ᵀδ⁽ˡ⁺¹⁾) ⊙ f′(z⁽ˡ⁾)

Losses and activations are exactly those of `jaxmlp` (DESIGN.md §3): `mse` averages over
m·K, `sse` is (1/m)Σ½Σₖ(ŷ − y)², `bce` averages over m·K, `cce` over m; so the output
layer's δ holds the batch mean's 1/m (and the 1/K of mse and bce).

`reference_gradients` runs `jaxmlp.backprop` (the library's verified manual backprop) on
float64 copies of your arrays; `compare` checks your gradients against it, layer by layer
from the output down, and names the likely mistake; `jaxmlp check` (`run_check`) does both
from one `.npz` file.

The `.npz` format of `jaxmlp check` (names are 1-based, layer l of the file is layer l − 1
of the Python API):

    W1 … WL    weights, each (n_out, n_in)                       required
    b1 … bL    biases, (n_out,) or (n_out, 1)                     required
    X, Y       data in the --layout: X (m, n_x) or (n_x, m);      required
               Y (m, n_y) or (n_y, m), or (m,) when n_y == 1 or for cce's integer labels
    dW1 … dWL  your weight gradients, each (n_out, n_in)          required
    db1 … dbL  your bias gradients, shaped like the reference db  required
    delta1 … deltaL   your δ = ∂L/∂z per layer, (m, n_out) or (n_out, m)   optional
    loss       your loss value, a scalar                           optional

`jaxmlp check` reads only these keys (other members are named, never read), each at most
512 MiB and 1 GiB in all as declared uncompressed in the zip, refused before decompressing;
a path that is not a regular file (a directory, a FIFO, ``/dev/zero``) is not opened.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import numbers
import os
import re
import sys
import zipfile
from collections.abc import Mapping
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import activations as _act
from jaxmlp import checkpoint as _ck
from jaxmlp._checks import open_regular
from jaxmlp.backprop import backprop as _backprop
from jaxmlp.model import LOSSES, MLP, forward_pass

__all__ = ["reference_gradients", "compare", "OracleReport", "Entry", "LAYOUTS",
           "add_check_arguments", "run_check", "main"]

LAYOUTS = ("batch_first", "features_first")


# --------------------------------------------------------------------------- validation

def _as_float64(value, name: str) -> np.ndarray:
    """A float64 copy of a real numeric array-like; TypeError naming `name` otherwise."""
    try:
        arr = np.asarray(value)
    except Exception as e:  # ragged lists and the like
        raise TypeError(
            f"{name} must be a numeric array, got {type(value).__name__}: {e}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
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


def _check_layout(layout) -> str:
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    return layout


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
        if name not in _act.HIDDEN_ACTIVATIONS:
            raise ValueError(f"unknown activation {name!r}; expected one of "
                             f"{list(_act.HIDDEN_ACTIVATIONS)}")
    for arg, value, choices in (("output", output, list(_act.ACTIVATIONS)),
                                ("loss", loss, list(LOSSES))):
        if not isinstance(value, str):
            raise TypeError(f"{arg} must be a string, got {type(value).__name__}")
        if value not in choices:
            raise ValueError(f"unknown {arg} {value!r}; expected one of {choices}")
    return activation


def _check_weights(weights, biases):
    """Shapes of the layer stack; returns (Ws, bs, sizes)."""
    Ws = [_as_float64(W, f"weights[{l}]") for l, W in enumerate(_as_list(weights, "weights"))]
    bs = [_as_float64(b, f"biases[{l}]") for l, b in enumerate(_as_list(biases, "biases"))]
    if len(bs) != len(Ws):
        raise ValueError(f"weights has {len(Ws)} layers but biases has {len(bs)}; "
                         f"expected one bias per weight matrix")
    for l, W in enumerate(Ws):
        if W.ndim != 2 or 0 in W.shape:
            raise ValueError(f"weights[{l}] must be a non-empty 2-D array (n_out, n_in), "
                             f"got shape {W.shape}")
        if l and W.shape[1] != Ws[l - 1].shape[0]:
            n = Ws[l - 1].shape[0]
            raise ValueError(
                f"weights[{l}] must have shape (n_out, {n}): its n_in must equal "
                f"weights[{l - 1}]'s n_out = {n}, got {W.shape}; weights are (n_out, n_in) "
                f"in both layouts" + (" (transposed?)" if W.shape[0] == n else ""))
    for l, (W, b) in enumerate(zip(Ws, bs)):
        n = W.shape[0]
        if b.shape not in ((n,), (n, 1)):
            raise ValueError(f"biases[{l}] must have shape ({n},) or ({n}, 1) to match "
                             f"weights[{l}] {W.shape}, got {b.shape}")
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
        hint = (f"; it looks {other}: pass layout={other!r} or transpose x"
                if xb.shape[0] == n_x else "")
        raise ValueError(f"x must have shape {want} for layout={layout!r} (n_x = {n_x} from "
                         f"weights[0]), got {x.shape}{hint}")
    if xb.shape[0] < 1:
        raise ValueError(f"x must hold at least one example, got shape {x.shape}")
    return xb


def _check_y(y, K: int, m: int, layout: str, loss: str) -> np.ndarray:
    """y in the layout → batch-first (m, K) float64, or (m,) int labels for cce."""
    try:
        y = np.asarray(y)
    except Exception as e:
        raise TypeError(f"y must be a numeric array, got {type(y).__name__}: {e}") from None
    if y.dtype.kind not in "biuf":
        raise TypeError(f"y must be a real numeric array, got dtype {y.dtype}")
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
            hint = f"; it looks {other}: pass layout={other!r} or transpose y"
        if loss == "cce" and y.ndim == 1:
            hint = "; 1-D y for cce must hold integer class labels"
        raise ValueError(f"y must have shape {' or '.join(expected)} for layout={layout!r} "
                         f"(n_y = {K} from the last weight matrix, m = {m} from x), "
                         f"got {y.shape}{hint}")
    if loss == "bce" and np.any((yb < 0) | (yb > 1)):
        raise ValueError("for loss='bce', y must lie in [0, 1]")
    return yb


# --------------------------------------------------------------------------- reference

@functools.partial(jax.jit, static_argnums=0)
def _forward_cache(model: MLP, params, x):
    """Per layer z⁽ˡ⁾ and a⁽ˡ⁾ = f(z⁽ˡ⁾) (batch-first), the last a being ŷ."""
    yhat, cache, _ = forward_pass(model, params, x, train=True)
    zs = [c.z for c in cache.hidden] + [cache.z]
    acts = [c.h for c in cache.hidden] + [yhat]
    return zs, acts


def reference_gradients(weights, biases, x, y, *, activation, output: str, loss: str,
                        layout: str = "batch_first") -> dict:
    """The loss, gradients, δ, z and a of an MLP, by `jaxmlp.backprop` in float64.

    Args:
      weights: list of L arrays, W⁽ˡ⁾ of shape (n_out, n_in) in both layouts, chained
        (weights[l].shape[1] == weights[l−1].shape[0]).
      biases: list of L arrays, (n_out,) or (n_out, 1) each.
      x: inputs, (m, n_x) for `batch_first`, (n_x, m) for `features_first`.
      y: targets, (m, n_y) / (n_y, m); (m,) when n_y == 1; for `cce` also integer class
        labels of shape (m,) (or (1, m) in `features_first`).
      activation: hidden activation, one name or a tuple with one per hidden layer
        (identity, sigmoid, tanh, relu, leaky_relu, elu, gelu).
      output: output activation (any of the above or softmax).
      loss: `mse`, `sse`, `bce` (needs sigmoid output) or `cce` (needs softmax output).
      layout: `"batch_first"` (rows are examples) or `"features_first"` (columns are).

    Any input dtype is accepted; everything is computed and returned in float64.

    Returns:
      A dict of NumPy float64 arrays; lists hold one entry per layer l = 0 … L−1:
        "loss":  the loss, a Python float;
        "dW":    ∂L/∂W⁽ˡ⁾, (n_out, n_in);
        "db":    ∂L/∂b⁽ˡ⁾, in the shape of the bias you passed: (n_out,) or (n_out, 1);
        "delta": δ⁽ˡ⁾ = ∂L/∂z⁽ˡ⁾, (m, n_out) batch_first or (n_out, m) features_first;
        "z", "a": z⁽ˡ⁾ and a⁽ˡ⁾ = f(z⁽ˡ⁾), shaped like delta; the last a is ŷ;
      and what `compare` uses to diagnose mistakes: "layout", "model" (the `jaxmlp.MLP`),
      "W" (the weights), "x", "y" (float64, in the layout; cce labels one-hot).

    Raises:
      TypeError: a non-list weights/biases, non-numeric arrays, non-string names.
      ValueError: unknown layout or names, shapes that do not chain or fit x and y
        (naming expected and actual shapes), NaN/Inf, labels or targets out of range.
    """
    layout = _check_layout(layout)
    activation = _check_names(activation, output, loss)
    Ws, bs, sizes = _check_weights(weights, biases)
    model = MLP(sizes, activation=activation, output=output, loss=loss)
    xb = _check_x(x, sizes[0], layout)
    yb = _check_y(y, sizes[-1], xb.shape[0], layout, loss)

    params = [{"W": W, "b": b.reshape(-1)} for W, b in zip(Ws, bs)]
    with jax.enable_x64(True):
        out = _backprop(model, params, xb, yb)
        zs, acts = _forward_cache(model, params, xb)
        f64 = functools.partial(np.asarray, dtype=np.float64)
        value = float(out.loss)
        dW = [f64(g["W"]) for g in out.grads]
        db = [f64(g["b"]).reshape(b.shape) for g, b in zip(out.grads, bs)]
        deltas = [f64(d) for d in out.deltas]
        zs = [f64(z) for z in zs]
        acts = [f64(a) for a in acts]
    if yb.ndim == 1:  # cce labels → one-hot, for the diagnoses
        yb = np.eye(sizes[-1])[yb]
    lay = (lambda a: a) if layout == "batch_first" else (lambda a: a.T)
    return {
        "loss": value,
        "dW": dW,
        "db": db,
        "delta": [lay(d) for d in deltas],
        "z": [lay(z) for z in zs],
        "a": [lay(a) for a in acts],
        "layout": layout,
        "model": model,
        "W": Ws,
        "x": lay(xb),
        "y": lay(yb),
    }


# --------------------------------------------------------------------------- report

class Entry(NamedTuple):
    """One compared array: `quantity` ("dW", "db", "delta" or "loss") of 0-based `layer`
    (None for the loss).

    expected_shape, shape: the reference's and the candidate's shapes.
    max_abs_err: max |c − r|; max_rel_err: max |c − r| / max |r| (normwise; inf when the
      reference is all zeros and the candidate is not); both NaN when the shapes differ.
    status: "ok", "mismatch" (values) or "shape" (shapes differ).
    diagnosis: the likely mistake, "" when ok.
    """

    quantity: str
    layer: Optional[int]
    expected_shape: tuple
    shape: tuple
    max_abs_err: float
    max_rel_err: float
    status: str
    diagnosis: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        d = self._asdict()
        d["expected_shape"], d["shape"] = list(self.expected_shape), list(self.shape)
        for k in ("max_abs_err", "max_rel_err"):
            d[k] = d[k] if math.isfinite(d[k]) else None  # JSON has no NaN/Inf
        return d


class OracleReport(NamedTuple):
    """The result of `compare`.

    ok: every compared array matches (numpy.allclose semantics, shapes equal).
    first_bad_layer: the 0-based layer where the error *enters*: walking backwards from
      the output layer (the order backprop computes δ), the first layer with any
      mismatching array, i.e. the highest-index bad layer.  A mistake in layer l's δ
      spreads to every layer below l, so the layers under it are usually wrong too; fix
      this one first.  None when every layer matches.
    dW, db: one `Entry` per layer (index = layer).
    delta: one `Entry` per layer, or () when the candidate has no "delta".
    loss: an `Entry` for the loss, or None when the candidate has no "loss".
    diagnosis: the summary, one line per finding.
    reference_loss: the reference's loss (NaN if it has none).
    rtol, atol: the tolerances used.
    """

    ok: bool
    first_bad_layer: Optional[int]
    dW: tuple
    db: tuple
    delta: tuple
    loss: Optional[Entry]
    diagnosis: str
    reference_loss: float
    rtol: float
    atol: float

    @property
    def entries(self) -> tuple:
        """Every layer entry, output layer first (backprop order), then the loss entry."""
        rows = []
        for l in reversed(range(len(self.dW))):
            rows += [q[l] for q in (self.dW, self.db, self.delta) if q]
        return tuple(rows) + ((self.loss,) if self.loss is not None else ())

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (NaN/Inf errors become None)."""
        return {
            "ok": self.ok,
            "first_bad_layer": self.first_bad_layer,
            "rtol": self.rtol,
            "atol": self.atol,
            "reference_loss": (self.reference_loss if math.isfinite(self.reference_loss)
                               else None),
            "entries": [e.to_dict() for e in self.entries],
            "diagnosis": self.diagnosis,
        }

    def __str__(self) -> str:
        return self.format()

    def format(self, file_keys: bool = False) -> str:
        """The table and the diagnosis; `file_keys` adds the 1-based `.npz` key of each row
        (dW1 is layer 0), as `jaxmlp check` prints it."""
        L = len(self.dW)
        head = "OK" if self.ok else "MISMATCH"
        lines = [f"jaxmlp oracle: {head}  (rtol={self.rtol:g}, atol={self.atol:g}; "
                 f"{L} layer{'s' if L > 1 else ''}, 0-based, output layer {L - 1} first as "
                 f"backprop runs)"]
        key_col = f"{'key':<8}" if file_keys else ""
        lines.append(f"{'layer':>5}  {'grad':<6} {key_col}{'shape':<14} {'max abs err':>11} "
                     f"{'max rel err':>11}  status")
        for e in self.entries:
            layer = "-" if e.layer is None else str(e.layer)
            key = ("loss" if e.layer is None else f"{e.quantity}{e.layer + 1}")
            key = f"{key:<8}" if file_keys else ""
            errs = [("n/a" if math.isnan(v) else f"{v:.3e}") for v in
                    (e.max_abs_err, e.max_rel_err)]
            status = {"ok": "ok", "mismatch": "MISMATCH", "shape": "SHAPE"}[e.status]
            lines.append(f"{layer:>5}  {e.quantity:<6} {key}{str(e.shape):<14} {errs[0]:>11} "
                         f"{errs[1]:>11}  {status}")
        lines += ["", "diagnosis:"] + ["  " + s for s in self.diagnosis.splitlines()]
        return "\n".join(lines)


# --------------------------------------------------------------------------- compare

def _tolerance(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _array_list(d: Mapping, key: str, owner: str, n: Optional[int]) -> list:
    value = d[key]
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{owner}[{key!r}] must be a list with one array per layer, "
                        f"got {type(value).__name__}")
    if n is not None and len(value) != n:
        raise ValueError(f"{owner}[{key!r}] has {len(value)} entries but the reference has "
                         f"{n} layers")
    out = []
    for l, v in enumerate(value):
        try:
            a = np.asarray(v)
        except Exception as e:
            raise TypeError(f"{owner}[{key!r}][{l}] must be an array: {e}") from None
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{owner}[{key!r}][{l}] must be a real numeric array, "
                            f"got dtype {a.dtype}")
        out.append(a)
    return out


class _Ref:
    """The reference, plus batch-first views of what the diagnoses need (None if absent)."""

    def __init__(self, reference):
        if not isinstance(reference, Mapping):
            raise TypeError(f"reference must be the dict from reference_gradients, "
                            f"got {type(reference).__name__}")
        for key in ("dW", "db"):
            if key not in reference:
                raise ValueError(f"reference has no {key!r}; pass the dict returned by "
                                 f"reference_gradients")
        self.dW = [a.astype(np.float64) for a in _array_list(reference, "dW", "reference", None)]
        self.L = len(self.dW)
        self.db = [a.astype(np.float64) for a in _array_list(reference, "db", "reference", self.L)]
        self.delta = None
        if "delta" in reference:
            self.delta = [a.astype(np.float64)
                          for a in _array_list(reference, "delta", "reference", self.L)]
        self.layout = reference.get("layout", "batch_first")
        if self.layout not in LAYOUTS:
            raise ValueError(f"reference['layout'] must be one of {list(LAYOUTS)}, "
                             f"got {self.layout!r}")
        self.model = reference.get("model")
        loss = reference.get("loss")
        self.loss = float(loss) if isinstance(loss, numbers.Real) else math.nan
        bf = (lambda a: a) if self.layout == "batch_first" else (lambda a: a.T)
        get = lambda k: ([bf(np.asarray(a, np.float64)) for a in reference[k]]  # noqa: E731
                         if k in reference else None)
        self.delta_bf, self.z_bf, self.a_bf = get("delta"), get("z"), get("a")
        self.W = ([np.asarray(W, np.float64) for W in reference["W"]]
                  if "W" in reference else None)
        self.x_bf = bf(np.asarray(reference["x"], np.float64)) if "x" in reference else None
        self.y_bf = bf(np.asarray(reference["y"], np.float64)) if "y" in reference else None
        if self.x_bf is not None:
            self.m = self.x_bf.shape[0]
        elif self.delta_bf is not None:
            self.m = self.delta_bf[0].shape[0]
        else:
            self.m = None
        self.K = self.dW[-1].shape[0] if self.dW[-1].ndim == 2 else None

    def get(self, q):
        return getattr(self, q)

    def in_layout(self, q: str, l: int, delta_bf: np.ndarray) -> np.ndarray:
        """dW, db or delta of layer l computed from a batch-first δ, in the caller's shapes."""
        a_in = self.x_bf if l == 0 else self.a_bf[l - 1]
        if q == "dW":
            return delta_bf.T @ a_in
        if q == "db":
            return delta_bf.sum(axis=0).reshape(self.db[l].shape)
        return delta_bf if self.layout == "batch_first" else delta_bf.T


class _Measure(NamedTuple):
    ok: bool
    shape_ok: bool
    abs_err: float
    rel_err: float


def _measure(c: np.ndarray, r: np.ndarray, rtol: float, atol: float) -> _Measure:
    if c.shape != r.shape:
        return _Measure(False, False, math.nan, math.nan)
    c = c.astype(np.float64)
    diff = np.abs(c - r)
    with np.errstate(invalid="ignore"):
        ok = bool(np.all(diff <= atol + rtol * np.abs(r)))  # NaN compares False
    if c.size == 0:
        return _Measure(True, True, 0.0, 0.0)
    abs_err = float(np.max(diff)) if np.all(np.isfinite(diff)) else math.inf
    scale = float(np.max(np.abs(r)))
    rel = abs_err / scale if scale > 0 else (0.0 if abs_err == 0 else math.inf)
    return _Measure(ok, True, abs_err, rel)


_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def _sup(n: int) -> str:
    """Layer index as a math superscript: 2 → ⁽²⁾."""
    return f"⁽{str(n).translate(_SUPERSCRIPT)}⁾"


_OUTPUT_DELTA = {("identity", "mse"): "2(ŷ − y)/(m·K)", ("identity", "sse"): "(ŷ − y)/m",
                 ("sigmoid", "bce"): "(ŷ − y)/(m·K)", ("softmax", "cce"): "(ŷ − y)/m"}


class _Diagnoser:
    """Names the likely mistake of one mismatching entry, most specific explanation first."""

    def __init__(self, ref: _Ref, cand: dict, measures: dict, first_bad, rtol, atol):
        self.ref, self.cand, self.measures, self.first_bad = ref, cand, measures, first_bad
        self.rtol, self.atol = rtol, atol
        # Explanations are matched with a looser, normwise tolerance than the verdict, so a
        # float32 implementation of a known mistake is still recognised.
        self.tol = max(100 * rtol, 1e-4)

    def close(self, c, r) -> bool:
        if c.shape != r.shape or not np.all(np.isfinite(c)):
            return False
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        return float(np.max(np.abs(c - r), initial=0.0)) <= self.atol + self.tol * scale

    def layer_ok(self, l: int) -> bool:
        return all(self.measures[q][l].ok for q in self.measures)

    def delta_ok(self, l: int) -> bool:
        """Layer l's δ is right: its db (and delta, if given) match."""
        return all(self.measures[q][l].ok for q in ("db", "delta") if q in self.measures)

    # -- entry points

    def entry(self, q: str, l: int) -> str:
        c, r = self.cand[q][l], self.ref.get(q)[l]
        if c.shape != r.shape:
            return self.shape(q, l, c, r)
        if not np.all(np.isfinite(c)):
            return ("contains NaN or Inf: an overflow (exp of a large z?) or log(0) in the "
                    "loss? (jaxmlp computes bce/cce from the logits z)")
        text = self.values(q, l, c, r)
        return text or self.structure(q, l)

    def loss_entry(self, c: float, r: float) -> str:
        if not math.isfinite(c):
            return "the loss is NaN or Inf: log(0)? compute bce/cce from the logits z"
        text = self.factor(np.array([c]), np.array([r]), "loss")
        return text or f"does not match: {c:.10g} vs the reference {r:.10g}"

    # -- diagnoses

    def shape(self, q, l, c, r) -> str:
        exp, got = r.shape, c.shape
        head = f"shape mismatch: expected {exp}, got {got}"
        ref, m = self.ref, self.ref.m
        if c.ndim == 2 and r.ndim == 2 and got == exp[::-1]:
            text = f"transposed: {head}"
            if self.close(c.T, r):
                text += "; candidate.T matches the reference"
            else:
                inner = self.values(q, l, c.T, r)
                text += f"; after .T: {inner}" if inner else ""
            if q == "dW":
                text += (" (dW is (n_out, n_in): δᵀ·a_prev batch-first, δ·a_prevᵀ "
                         "features-first)")
            elif q == "delta":
                text += f" (layout={ref.layout!r} wants δ as {exp})"
            return text
        if q == "db" and m is not None and c.ndim == 2:
            n = r.size
            if got in ((n, m), (m, n)):
                axis = 1 if got == (n, m) and (n != m or ref.layout == "features_first") else 0
                text = (f"db not summed over the batch: expected {exp}, got {got} (one entry "
                        f"per example); db = Σ δ over the m = {m} examples")
                if self.close(c.sum(axis=axis).reshape(exp), r):
                    text += ", and then it matches"
                return text
        if q == "db" and m is not None and c.size == m and r.size != m:
            return (f"{head}: one value per example — summed over the units instead of "
                    f"over the batch?")
        if c.size == r.size:
            v = c.reshape(exp)
            if self.close(v, r):
                return (f"{head}: same values, only the shape differs (reshape to {exp}"
                        + (", e.g. keepdims=True" if len(exp) == 2 and exp[1] == 1 else "")
                        + ")")
            inner = self.values(q, l, v, r)
            return f"{head}; after reshaping: {inner}" if inner else head
        return head

    def values(self, q, l, c, r) -> str:
        """A specific explanation of same-shaped c ≠ r, or "" when none fits."""
        if not np.all(np.isfinite(c)):
            return ""
        if c.ndim == 2 and c.shape[0] == c.shape[1] and c.shape[0] > 1 and self.close(c.T, r):
            return ("transposed: candidate.T matches the reference (dW is (n_out, n_in): "
                    "δᵀ·a_prev batch-first, δ·a_prevᵀ features-first)")
        for alt, text in self.alternatives(q, l, c):
            if self.close(c, alt):
                return text
        return self.factor(c, r, q)

    def alternatives(self, q, l, c):
        """(what the candidate would be, explanation) for common mistakes at layer l."""
        ref = self.ref
        have = ref.delta_bf is not None and ref.a_bf is not None and ref.x_bf is not None
        if not have:
            return
        m = ref.m
        L = ref.L
        model = ref.model
        if l == self.first_bad and l < L - 1 and ref.W is not None:
            g = ref.delta_bf[l + 1] @ ref.W[l + 1]  # δ⁽ˡ⁺¹⁾W⁽ˡ⁺¹⁾: ∂L/∂a⁽ˡ⁾
            yield (ref.in_layout(q, l, g),
                   f"δ of layer {l} is missing the activation derivative f′(z): it matches "
                   f"W{_sup(l + 1)}ᵀδ{_sup(l + 1)} without the ⊙ f′(z{_sup(l)})")
            if model is not None:
                name = model.hidden_activations[l]
                act = _act.get(name)
                with jax.enable_x64(True):
                    a = jnp.asarray(ref.a_bf[l])
                    d_at_a = np.asarray(act.df(a, act.f(a)), np.float64)
                yield (ref.in_layout(q, l, g * d_at_a),
                       f"δ of layer {l} has f′ evaluated at a = f(z) instead of at z "
                       f"(e.g. {name}′(A) where {name}′(Z), or a(1 − a) written as "
                       f"σ(a)(1 − σ(a)))")
        if l == self.first_bad and l == L - 1 and model is not None and model.output not in (
                "identity", "softmax"):
            act = _act.get(model.output)
            with jax.enable_x64(True):
                d_out = np.asarray(act.df(jnp.asarray(ref.z_bf[l]), jnp.asarray(ref.a_bf[l])),
                                   np.float64)
            if model.loss == "bce":
                yield (ref.in_layout(q, l, ref.delta_bf[l] * d_out),
                       f"output layer: δ multiplied by f′(z) once more; for sigmoid + bce, "
                       f"δ = {_OUTPUT_DELTA[('sigmoid', 'bce')]} already includes it")
            elif ref.y_bf is not None:
                scale = (2.0 / (m * ref.K)) if model.loss == "mse" else 1.0 / m
                yield (ref.in_layout(q, l, scale * (ref.a_bf[l] - ref.y_bf)),
                       f"output layer: δ is missing the output activation's derivative "
                       f"f′(z): δ = ∂L/∂ŷ ⊙ {model.output}′(z)")
        if q == "dW" and l >= 1 and ref.z_bf is not None:
            yield (ref.delta_bf[l].T @ ref.z_bf[l - 1],
                   f"dW uses layer {l - 1}'s z (before the activation) instead of its "
                   f"output a = f(z) as this layer's input")
        if q == "db" and m is not None and m > 1 and c.size == ref.delta_bf[l].shape[1]:
            d = ref.delta_bf[l]
            i = int(np.argmin(np.max(np.abs(d - c.reshape(1, -1)), axis=1)))
            yield (d[i].reshape(ref.db[l].shape),
                   f"db is the δ of one example (#{i}) instead of the sum of δ over the batch")

    def factor(self, c, r, q) -> str:
        """c ≈ f·r for a constant f: names the usual f, else reports it."""
        c = c.ravel()
        r = r.ravel()
        rr = float(r @ r)
        if rr == 0:
            return ""
        f = float(c @ r) / rr
        if f == 0 or not math.isfinite(f):
            return ""
        resid = float(np.linalg.norm(c - f * r)) / (abs(f) * math.sqrt(rr))
        if resid > self.tol or abs(f - 1) <= 1e-2:  # near 1: a small error, not a factor
            return ""
        named = self.named_factor(f, q)
        if named:
            return named
        if c.size < 2:  # any single number is a multiple of another
            return ""
        return (f"{f:.6g}× the reference (a constant factor, none of the usual m, 2, ½, K, "
                f"−1): a scaling mistake, e.g. a learning rate or normalisation folded into "
                f"the gradient?")

    def named_factor(self, f, q) -> str:
        m, K = self.ref.m, self.ref.K
        half = ("the ½ in the loss (sse vs mse convention) / the factor 2 of the square's "
                "derivative: sse = ½(ŷ − y)² has derivative ŷ − y, mse = (ŷ − y)² has 2(ŷ − y)")
        base = []
        if m is not None and m > 1:
            base.append(("m", m, f"summed over the batch of m = {m} instead of averaging?" + (
                " (or your δ leaves out the 1/m and you divide by m in dW and db instead: "
                "then the gradients can still be right, but δ = ∂L/∂z includes the 1/m)"
                if q == "delta" else "")))
            base.append(("1/m", 1 / m, "divided by m twice?" + (
                " (db is the sum of δ over the batch, not its mean: the 1/m already lives in "
                "the output δ)" if q == "db" else "")))
        base.append(("2", 2.0, "an extra factor 2: " + half))
        base.append(("½", 0.5, "a missing factor 2: " + half))
        if K is not None and K > 1:
            base.append(("K", K, f"K = {K} outputs: averaged over m instead of m·K? (mse and "
                                 f"bce average over m·K)"))
            base.append(("1/K", 1 / K, f"K = {K} outputs: averaged over m·K instead of m? "
                                       f"(sse and cce average over m only)"))
        sign = ("−1", -1.0, "wrong sign (y − ŷ instead of ŷ − y, or gradient ascent?)")
        inverse = {("m", "1/m"), ("2", "½"), ("K", "1/K")}
        combos = [[b] for b in base] + [[sign]] + [[sign, b] for b in base]
        combos += [[a, b] for i, a in enumerate(base) for b in base[i + 1:]
                   if (a[0], b[0]) not in inverse]
        combos += [[sign, a, b] for i, a in enumerate(base) for b in base[i + 1:]
                   if (a[0], b[0]) not in inverse]
        matches = []
        for combo in combos:
            value = math.prod(v for _, v, _ in combo)
            if abs(f - value) <= 1e-3 * abs(value):
                matches.append(combo)
        if not matches:
            return ""
        fewest = min(len(c) for c in matches)
        texts = []
        for combo in (c for c in matches if len(c) == fewest):
            names = [n for n, _, _ in combo]
            label = ("−" + "·".join(names[1:]) if names[0] == "−1" and len(names) > 1
                     else "·".join(names))
            texts.append(f"{label}× the reference: " + "; and ".join(t for _, _, t in combo))
        return " — or — ".join(texts)

    def structure(self, q, l) -> str:
        """Where the error is, from which layers are right, when nothing more specific fits."""
        meas = self.measures[q][l]
        fb, L, ref = self.first_bad, self.ref.L, self.ref
        rel = f"max rel err {meas.rel_err:.2e}"
        if meas.rel_err < 1e-3:
            low = sorted({str(a.dtype) for a in self.cand[q] if a.dtype.kind == "f"
                          and a.dtype.itemsize < 8})
            if low:
                return (f"does not match ({rel}), but only by round-off: your {low[0]} "
                        f"arithmetic; compare with rtol=1e-4, atol=1e-6 for float32")
            return (f"does not match ({rel}), but only slightly: round-off of a lower "
                    f"precision somewhere, an ε (clipped log, ε in a denominator), or a "
                    f"finite-difference gradient?")
        if fb is None:
            return f"does not match ({rel})"
        if l < fb:
            if self.delta_ok(fb):
                return (f"does not match ({rel}); layer {fb}'s δ is right (its db matches), "
                        f"so this is a separate mistake, not one propagated from there")
            return (f"does not match: follows from layer {fb} — a wrong δ there "
                    f"propagates to every earlier layer; fix layer {fb} first")
        if l > fb:  # cannot happen: fb is the highest bad layer
            return f"does not match ({rel})"
        if q == "dW" and self.delta_ok(l):
            return (f"does not match ({rel}): layer {l}'s δ is right (db matches) but dW is "
                    f"not: check dW = δᵀ·a_prev (batch_first) / δ·a_prevᵀ (features_first), "
                    f"with a_prev the previous layer's activation (x for layer 0)")
        if q == "db" and self.measures["dW"][l].ok:
            return (f"does not match ({rel}): dW is right but db is not: db = Σ δ over the "
                    f"batch (features_first: np.sum(dZ, axis=1, keepdims=True))")
        if l == L - 1:
            model = ref.model
            formula = ""
            if model is not None:
                pair = (model.output, model.loss)
                formula = _OUTPUT_DELTA.get(pair) or (
                    ("2(ŷ − y) ⊙ f′(z)/(m·K)" if model.loss == "mse" else "(ŷ − y) ⊙ f′(z)/m"))
                formula = (f"; for output={model.output!r}, loss={model.loss!r} it is "
                           f"{formula} (m = {ref.m}, K = {ref.K})")
            return (f"does not match ({rel}): the error enters at the output layer: check "
                    f"its δ = ∂L/∂z{formula}")
        earlier_bad = any(not self.layer_ok(k) for k in range(l))
        if earlier_bad or l == 0:
            return (f"does not match ({rel}): the error enters at layer {l}, likely in its δ "
                    f"(the activation derivative f′(z{_sup(l)}) or the W{_sup(l + 1)}ᵀδ"
                    f"{_sup(l + 1)} product)")
        return (f"does not match ({rel}): the error enters at layer {l}, but the earlier "
                f"layers are right, so its δ is probably fine (a wrong δ would spread to "
                f"them): check how dW and db are formed from δ")


def _summary(ok, first_bad, entries_by_q, loss_entry, L) -> str:
    if ok:
        return "all gradients match the reference"
    lines = []
    if first_bad is not None:
        where = "the output layer" if first_bad == L - 1 else f"the output layer is {L - 1}"
        lines.append(
            f"the error enters at layer {first_bad} (0-based; {where}): the first mismatch "
            f"walking back from the output, as backprop computes δ; a wrong δ spreads to "
            f"every layer below")
        for l in reversed(range(L)):
            groups: dict = {}
            for q, entries in entries_by_q.items():
                e = entries[l]
                if not e.ok:
                    groups.setdefault(e.diagnosis, []).append(q)
            for text, qs in groups.items():
                lines.append(f"layer {l} {', '.join(qs)}: {text}")
    else:
        lines.append("the gradients match; the loss does not")
    if loss_entry is not None and not loss_entry.ok:
        lines.append(f"loss: {loss_entry.diagnosis}")
    return "\n".join(lines)


def compare(candidate, reference, *, rtol: float = 1e-6, atol: float = 1e-9) -> OracleReport:
    """Checks your gradients against `reference_gradients` and names the likely mistake.

    Args:
      candidate: a dict with "dW" and "db" (lists, one array per layer, shaped like the
        reference's), optionally "delta" (list of δ per layer) and "loss" (a number).
      reference: the dict returned by `reference_gradients`.
      rtol, atol: an array matches iff the shapes are equal and every element has
        |c − r| ≤ atol + rtol·|r| (`numpy.allclose` semantics).  A float32
        implementation needs about rtol=1e-4, atol=1e-6.

    Returns:
      An `OracleReport`: `.ok`; `.first_bad_layer`, the layer where the error enters —
      the highest-index (0-based) layer with any mismatch, i.e. the first one met walking
      backwards from the output layer as backprop does; a wrong δ at layer l makes every
      layer < l wrong too, so the layers below it are symptoms — None when all match;
      per-layer `Entry`s in `.dW`, `.db`, `.delta` (max abs/rel error, status,
      diagnosis) and `.loss`; `.diagnosis`; `str(report)` is a table plus the diagnosis.

    The diagnoses, most specific first: shape mismatches (transposed, db not summed over
    the batch, reshapes), NaN/Inf, a transposed square dW, the known wrong alternatives
    (at the entering layer: δ missing f′(z), f′ evaluated at a, an output δ with an extra
    or a missing f′; dW from z instead of a; db from one example's δ), a constant factor
    c = ⟨cand, ref⟩/⟨ref, ref⟩ with a small residual (m, 1/m, 2, ½, K, 1/K, −1 and their
    products, or the value of c), and otherwise where the error sits, from which layers
    are right.

    Raises:
      TypeError, ValueError: a candidate or reference of the wrong structure (not a
        dict, missing keys, list lengths that differ from the number of layers,
        non-numeric arrays), or a negative tolerance.
    """
    rtol, atol = _tolerance(rtol, "rtol"), _tolerance(atol, "atol")
    ref = _Ref(reference)
    if not isinstance(candidate, Mapping):
        raise TypeError(f"candidate must be a dict with 'dW' and 'db' lists, "
                        f"got {type(candidate).__name__}")
    for key in ("dW", "db"):
        if key not in candidate:
            raise ValueError(f"candidate has no {key!r}: it must be a dict with 'dW' and "
                             f"'db' lists (one array per layer), got keys {sorted(candidate)}")
    quantities = ["dW", "db"]
    if candidate.get("delta") is not None:
        if ref.delta is None:
            raise ValueError("candidate has 'delta' but the reference has none")
        quantities.append("delta")
    cand = {q: _array_list(candidate, q, "candidate", ref.L) for q in quantities}

    measures = {q: [_measure(c, r, rtol, atol) for c, r in zip(cand[q], ref.get(q))]
                for q in quantities}
    bad = [l for l in range(ref.L) if not all(measures[q][l].ok for q in quantities)]
    first_bad = max(bad) if bad else None
    diag = _Diagnoser(ref, cand, measures, first_bad, rtol, atol)

    entries = {}
    for q in quantities:
        rows = []
        for l, (c, r, mm) in enumerate(zip(cand[q], ref.get(q), measures[q])):
            status = "ok" if mm.ok else ("mismatch" if c.shape == r.shape else "shape")
            text = "" if mm.ok else diag.entry(q, l)
            rows.append(Entry(q, l, r.shape, c.shape, mm.abs_err, mm.rel_err, status, text))
        entries[q] = tuple(rows)

    loss_entry = None
    if candidate.get("loss") is not None:
        try:
            c_loss = float(np.asarray(candidate["loss"], np.float64).reshape(()))
        except (TypeError, ValueError):
            raise TypeError(f"candidate['loss'] must be a number, "
                            f"got {candidate['loss']!r}") from None
        if math.isnan(ref.loss):
            raise ValueError("candidate has 'loss' but the reference has none")
        mm = _measure(np.array(c_loss), np.array(ref.loss), rtol, atol)
        loss_entry = Entry("loss", None, (), (), mm.abs_err, mm.rel_err,
                           "ok" if mm.ok else "mismatch",
                           "" if mm.ok else diag.loss_entry(c_loss, ref.loss))

    ok = first_bad is None and (loss_entry is None or loss_entry.ok)
    return OracleReport(
        ok=ok, first_bad_layer=first_bad, dW=entries["dW"], db=entries["db"],
        delta=entries.get("delta", ()), loss=loss_entry,
        diagnosis=_summary(ok, first_bad, entries, loss_entry, ref.L),
        reference_loss=ref.loss, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------- CLI

_NPZ_HELP = """\
The .npz file (np.savez) holds, with 1-based layer numbers l = 1 … L:
  W1..WL    weights (n_out, n_in)          b1..bL    biases (n_out,) or (n_out, 1)
  X, Y      data in the --layout           dW1..dWL, db1..dbL   your gradients
  optional: delta1..deltaL (your δ = dL/dz per layer), loss (your loss value)
Exit status: 0 all match, 1 something does not, 2 unusable input."""


class _InputError(Exception):
    """Unusable input to `jaxmlp check` (exit status 2)."""


def add_check_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the arguments of `jaxmlp check` to `parser` (a parser or a subparser)."""
    parser.add_argument("npz", help="the .npz file with W1..WL, b1..bL, X, Y, dW1..dWL, "
                                    "db1..dbL (see below)")
    parser.add_argument("--activation", default=None,
                        help="hidden activation: one name, or a comma list with one per hidden "
                             "layer (e.g. relu,tanh); required when there are hidden layers")
    parser.add_argument("--output", required=True, help="output activation, e.g. sigmoid")
    parser.add_argument("--loss", required=True, help="mse, sse, bce or cce")
    parser.add_argument("--layout", default="batch_first", choices=LAYOUTS,
                        help="batch_first: X (m, n_x); features_first: X (n_x, m), b (n_out, 1)"
                             " (default batch_first)")
    parser.add_argument("--rtol", type=float, default=1e-6, help="default 1e-6")
    parser.add_argument("--atol", type=float, default=1e-9, help="default 1e-9")
    parser.add_argument("--json", action="store_true",
                        help="print the report as one JSON object instead of a table")
    if parser.epilog is None:
        parser.epilog = _NPZ_HELP
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


# The arrays `jaxmlp check` reads: W1, b1, dW1, db1, delta1, …, X, Y and loss; any other
# member of the file is only named in the "ignoring keys" note, never read.
_CHECK_KEY = re.compile(r"(?:W|b|dW|db|delta)[1-9]\d*|X|Y|loss")
_CHECK_MEMBER_MAX = 512 * 2**20   # bytes, one array's declared uncompressed .npy size
_CHECK_TOTAL_MAX = 2**30          # bytes, all the arrays read together


def _load_npz(path: str) -> dict:
    """{key: array} of the `.npz` at `path`, read with bounded memory; a key that
    `jaxmlp check` does not use maps to None and is never read.

    Refused (as _InputError, exit status 2), each before the data in question is read:
    a `path` that is not a regular file (a directory, a FIFO, ``/dev/zero``, a socket:
    not even opened); a member declaring more than 512 MiB uncompressed
    (``_CHECK_MEMBER_MAX``), or members declaring more than 1 GiB together
    (``_CHECK_TOTAL_MAX``); a member whose zip sizes are impossible (only stored and
    deflated members, at most deflate's 1032:1 expansion, as for checkpoints); a member
    whose .npy header disagrees with its declared size, or that holds a pickled object
    array.  Every read is bounded by the member's declared size.
    """
    try:
        f = open_regular(path, path, _InputError)
    except FileNotFoundError:
        raise _InputError(f"no such file: {path}") from None
    except OSError as e:
        raise _InputError(f"cannot open {path}: {e}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if f.read(6) == b"\x93NUMPY":
            raise _InputError(f"{path} holds a single array (.npy); save the arrays with "
                              f"np.savez(path, W1=..., b1=..., ...)")
        f.seek(0)
        try:
            zf = zipfile.ZipFile(f)
        except Exception as e:  # zipfile raises many kinds on a damaged archive
            raise _InputError(f"cannot read {path} as an .npz file: {e}") from None
        with zf:
            return _read_npz_members(zf, size, path)


def _read_npz_members(zf: zipfile.ZipFile, size: int, path: str) -> dict:
    """The arrays of `_load_npz`, from the open archive of a `size`-byte file: every size
    is checked first, then the members are read."""
    arrays, wanted, total = {}, [], 0
    for info in {info.filename: info for info in zf.infolist()}.values():  # last of a name
        name = info.filename
        key = name[:-4] if name.endswith(".npy") else name
        if not _CHECK_KEY.fullmatch(key):
            arrays[key] = None
            continue
        if not name.endswith(".npy"):
            raise _member_error(path, name, "is not a .npy array (np.savez names its "
                                            "members KEY.npy)")
        why = _ck._sizes_problem(info, size)
        if why is not None:
            raise _member_error(path, name, why)
        if info.file_size > _CHECK_MEMBER_MAX:
            raise _member_error(path, name, f"declares {info.file_size} bytes uncompressed, "
                                            f"more than the 512 MiB jaxmlp check reads for "
                                            f"one array; nothing is read")
        total += info.file_size
        if total > _CHECK_TOTAL_MAX:
            raise _member_error(path, name, f"brings the arrays' declared uncompressed size "
                                            f"to {total} bytes, more than the 1 GiB jaxmlp "
                                            f"check reads in all; nothing is read")
        wanted.append((key, info))
    for key, info in wanted:
        try:
            with zf.open(info) as m:
                dtype, shape, fortran, offset = _ck._npy_header(m, info)
                arrays[key] = _ck._npy_data(m, info, dtype, shape, fortran, offset)
        except _ck._Pickled:
            raise _member_error(path, info.filename, "holds a pickled object array, which "
                                                     "is never loaded (allow_pickle=False)"
                                ) from None
        except Exception as e:  # a bad header, a CRC mismatch, a cut-off stream…
            raise _member_error(path, info.filename, f"is not a readable .npy array "
                                                     f"({type(e).__name__}: {e})") from None
    return arrays


def _member_error(path: str, member: str, why: str) -> _InputError:
    return _InputError(f"cannot read {path}: member {member!r} {why}")


def _layers_from(arrays: dict) -> int:
    numbers_ = sorted(int(m.group(1)) for k in arrays if (m := re.fullmatch(r"W(\d+)", k)))
    if not numbers_:
        raise _InputError(f"no weights found: expected keys W1..WL; the file has "
                          f"{sorted(arrays)}")
    L = len(numbers_)
    if numbers_ != list(range(1, L + 1)):
        raise _InputError(f"weight keys must be W1..W{L} without gaps, got "
                          f"{['W%d' % n for n in numbers_]}")
    required = ["X", "Y"] + [f"{p}{l}" for p in ("b", "dW", "db") for l in range(1, L + 1)]
    missing = [k for k in required if k not in arrays]
    if missing:
        raise _InputError(f"missing keys {missing} (the file has {sorted(arrays)})")
    deltas = [f"delta{l}" for l in range(1, L + 1)]
    present = [k for k in deltas if k in arrays]
    if present and len(present) != L:
        raise _InputError(f"give all of delta1..delta{L} or none, got {present}")
    return L


def _cli_names(message: str) -> str:
    """Python-API names in a message → the file's keys (weights[0] → W1, …)."""
    for api, key in (("weights", "W"), ("biases", "b")):
        message = re.sub(api + r"\[(\d+)\]", lambda m: f"{key}{int(m.group(1)) + 1}", message)
    message = re.sub(r"^(x|y)\b", lambda m: m.group(1).upper(), message)
    message = re.sub(r"candidate\['(dW|db|delta)'\]\[(\d+)\]",
                     lambda m: f"{m.group(1)}{int(m.group(2)) + 1}", message)
    return message


def _emit(text: str, stream) -> None:
    try:
        print(text, file=stream)
    except UnicodeEncodeError:  # a terminal that cannot print δ, ½, ′
        print(text.encode("ascii", "backslashreplace").decode("ascii"), file=stream)


def run_check(args: argparse.Namespace) -> int:
    """`jaxmlp check`: compares the gradients in `args.npz` with the reference.

    Prints the report (a table, or JSON with `args.json`) on stdout and returns 0 when
    everything matches, 1 when something does not, 2 for unusable input (a missing or
    unreadable file, missing keys, inconsistent shapes, NaN/Inf, bad flag values), with
    the reason on stderr.
    """
    try:
        for name in ("rtol", "atol"):
            value = getattr(args, name)
            if not (math.isfinite(value) and value >= 0):
                raise _InputError(f"--{name} must be a finite number >= 0, got {value}")
        arrays = _load_npz(args.npz)
        L = _layers_from(arrays)
        if args.activation is None:
            if L > 1:
                raise _InputError(f"--activation is required: the network has {L - 1} hidden "
                                  f"layer(s) (one name, or a comma list with one per layer)")
            activation = "identity"  # unused without hidden layers
        else:
            names = [s.strip() for s in args.activation.split(",")]
            activation = names[0] if len(names) == 1 else tuple(names)
        ix = range(1, L + 1)
        ref = reference_gradients([arrays[f"W{l}"] for l in ix], [arrays[f"b{l}"] for l in ix],
                                  arrays["X"], arrays["Y"], activation=activation,
                                  output=args.output, loss=args.loss, layout=args.layout)
        candidate = {"dW": [arrays[f"dW{l}"] for l in ix], "db": [arrays[f"db{l}"] for l in ix]}
        if "delta1" in arrays:
            candidate["delta"] = [arrays[f"delta{l}"] for l in ix]
        if "loss" in arrays:
            candidate["loss"] = arrays["loss"]
        report = compare(candidate, ref, rtol=args.rtol, atol=args.atol)
    except (_InputError, ValueError, TypeError) as e:
        _emit(f"jaxmlp check: error: {_cli_names(str(e))}", sys.stderr)
        return 2
    ignored = sorted(set(arrays) - {"X", "Y", "loss"} - {
        f"{p}{l}" for p in ("W", "b", "dW", "db", "delta") for l in range(1, L + 1)})
    if ignored and not args.json:
        _emit(f"jaxmlp check: note: ignoring keys {ignored}", sys.stderr)
    if args.json:
        out = report.to_dict()
        for e in out["entries"]:  # the file's 1-based key of each row
            e["key"] = "loss" if e["layer"] is None else f"{e['quantity']}{e['layer'] + 1}"
        _emit(json.dumps(out, indent=2, ensure_ascii=False), sys.stdout)
    else:
        _emit(report.format(file_keys=True), sys.stdout)
    return 0 if report.ok else 1


def main(argv=None) -> int:
    """`python -m jaxmlp.oracle FILE.npz --output … --loss …` (the same as `jaxmlp check`)."""
    parser = argparse.ArgumentParser(
        prog="jaxmlp check",
        description="Check your own MLP backprop against jaxmlp's reference gradients.")
    add_check_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: 2 for bad flags, 0 for --help
        return e.code if isinstance(e.code, int) else 2
    return run_check(args)


if __name__ == "__main__":
    sys.exit(main())
