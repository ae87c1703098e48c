"""`check_layer`: one CS231n-style layer's forward and backward against hand-written NumPy.

    report = check_layer("affine", affine_forward, affine_backward, convention="cs231n")
    print(report)          # a table (out, dx, dw, db) and the diagnosis

The layer is called on generated float64 inputs whose dimensions all differ (a transposed
or unreshaped array cannot hide behind a square matrix), with a random upstream gradient
dout.  The references are the textbook formulas written out in NumPy float64 (the tests
check them against `jax.vjp`/`jax.grad`).  Every array the layer returns is compared with
|c − r| ≤ atol + rtol·|r| elementwise (`numpy.allclose` semantics, shapes equal).

Calling conventions (CS231n assignment 2):

| kind | forward | backward returns |
| --- | --- | --- |
| `affine` | `forward(x, w, b) -> (out, cache)` | `(dx, dw, db)` |
| `relu`, `leaky_relu`, `sigmoid`, `tanh` | `forward(x) -> (out, cache)` | `dx` |
| `batchnorm` | `forward(x, gamma, beta, bn_param)`, {"mode": "train", "eps", "momentum"} | `(dx, dgamma, dbeta)` |
| `layernorm` | `forward(x, gamma, beta, ln_param)`, ln_param {"eps"} | `(dx, dgamma, dbeta)` |
| `dropout` | `forward(x, dropout_param)`, {"p": keep probability, "mode", "seed"} | `dx` |
| `softmax_loss`, `svm_loss` | `forward(x, y) -> (loss, dx)`, y (N,) integer labels; no backward | |

`convention` matters for `affine` only: `"cs231n"` (weights "in_out") passes w (D, M) and
x (N, d1, d2) = (7, 3, 5), D = 15, M = 4, out = x.reshape(N, D) @ w + b; `"jaxmlp"`
passes W (M, D) = (4, 5) and x (N, D) = (7, 5), out = x @ W.T + b; `"deeplearning_ai"`
(data "features_first") passes A_prev (D, m) = (5, 7), W (4, 5), b (4, 1), Z = W A_prev
+ b, and its one_over_m="dW" means dW = (1/m) dZ A_prevᵀ, db = (1/m) Σ dZ (keepdims),
dA_prev = Wᵀ dZ (reported as dx).  The other layers take x (N, D) = (7, 5) (dropout
(40, 50), p = 0.7; the losses N = 7 examples, C = 5 classes).  Options override these:
`x_shape=`, `n_out=` (affine), `eps=` (batchnorm, layernorm), `momentum=` (batchnorm),
`p=` (dropout), `alpha=` (leaky_relu's negative slope, default 0.01: out = x for x > 0,
αx otherwise).

Dropout replays your own mask: it is recovered as out / x (x has no zeros), and the
reference is out = x ⊙ (mask ≠ 0)/p, dx = dout ⊙ mask; the fraction kept must be p (the
"keep" entry, within 6 standard deviations), and test mode must return x ("out_test").
softmax_loss is also called on x + 1000 ("loss_shifted", "dx_shifted": softmax is
shift-invariant, so the same numbers are expected).

Your functions get copies of the inputs (mutating them changes nothing here) and run
under `np.errstate(all="ignore")`: an overflow shows up as a NaN/Inf entry, not a warning.

Entries (`LayerReport.entries`, each a `jaxmlp.oracle.report.Entry` with layer None):
"out" (the forward's output), the gradients "dx", "dw", "db", "dgamma", "dbeta", the
loss kinds' "loss" and "dx", and the extra dropout/softmax entries above.  Status "ok",
"mismatch", "shape", or "error" (your function raised, or returned the wrong structure).

A mismatching entry is explained by the first rule, in this order, whose predicted array
(the reference with that one mistake made) matches yours, normwise within
max(100·rtol, 1e-4); a prediction equal to the reference is never used, so no rule fires
on a guess.  `RULES` lists them:

1. `no_max_shift` (softmax at x + 1000 wrong while right at x: exp overflows),
   `nonfinite` (NaN or Inf).
2. Shapes: `shape_transposed` (the transpose; for dx also the transpose of the
   un-reshaped (N, D)), `reshape` (the same numbers in another shape: dx not reshaped
   back to x's shape, keepdims or its absence), `db_not_summed` (db, dgamma or dbeta with
   one row per example), `wrong_axis` (summed over the units instead of the batch; for
   batchnorm/layernorm also statistics or backward sums over the other axis: layer vs
   batch statistics), `dw_from_out` (dW from the output instead of the input).
3. Activations: `df_at_out` (f′ evaluated at the output, σ(out)(1 − σ(out)), or the
   output's formula applied to the input, 1 − x²), `times_out` (relu: dout ⊙ out),
   `no_slope` (leaky_relu: ReLU's mask, the slope α for x ≤ 0 missing), `partial_fprime` (half of σ′ = out(1 − out) or tanh′ = 1 − out²), `mask_from_dout`
   (relu: dout > 0), `missing_fprime` (dx = dout).
4. Normalisation: `no_mean_path`, `no_var_path`, `no_paths` (the dμ and/or dσ² branch of
   the graph dropped), `dgamma_from_x` (Σ dout ⊙ x instead of x̂), `unbiased_var`
   (variance with ddof=1).
5. Dropout: `drop_rate` (p read as the drop rate: scaled by 1/(1 − p)), `not_inverted`
   (forward mask without 1/p), `keep_fraction` (the "keep" entry: a fraction 1 − p
   kept), `train_at_test` / `test_scaled` (test mode masks or scales),
   `mask_not_applied` (dx = dout), `not_rescaled` (dx = dout ⊙ (mask ≠ 0), off by 1/p).
6. Losses: `no_subtract` (softmax dx = probs/N), `no_correct_count` (svm: no −count at
   the correct class), `correct_class_margin` (svm: loss + Δ, the correct class's margin
   not zeroed).
7. Constant factors: `db_averaged` (db × 1/N), `not_divided` (loss kinds ×N, or dw/db
   ×m where one_over_m="dW" wants the 1/m), `wrong_sign` (×−1), `factor` (×N, 1/N, 2,
   ½ or any other constant, named when it is one of those).
8. Fallbacks: `forward` (out is wrong too: fix the forward first), `roundoff` (rel err
   < 1e-3), `shape`, `mismatch` (with the error numbers).
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, NamedTuple, Optional

import numpy as np

from jaxmlp.oracle.conventions import Convention, resolve
from jaxmlp.oracle.limits import TimeLimitExceeded, time_limit
from jaxmlp import _validate as _v
from jaxmlp.oracle.report import Entry, measure

__all__ = ["check_layer", "LayerReport", "KINDS", "RULES"]

#: The layer kinds `check_layer` takes.
KINDS = ("affine", "relu", "leaky_relu", "sigmoid", "tanh", "softmax_loss", "svm_loss",
         "batchnorm", "layernorm", "dropout")

#: Every diagnosis rule, in the order they are tried (see the module docstring).
RULES = ("no_max_shift", "nonfinite", "shape_transposed", "reshape", "db_not_summed",
         "wrong_axis", "dw_from_out", "df_at_out", "times_out", "no_slope", "partial_fprime",
         "mask_from_dout", "missing_fprime", "no_mean_path", "no_var_path", "no_paths",
         "dgamma_from_x", "unbiased_var", "drop_rate", "not_inverted", "keep_fraction",
         "train_at_test", "test_scaled", "mask_not_applied", "not_rescaled", "no_subtract",
         "no_correct_count", "correct_class_margin", "db_averaged", "not_divided",
         "wrong_sign", "factor", "forward", "roundoff", "shape", "mismatch")

_LOSS_KINDS = ("softmax_loss", "svm_loss")
_ELEMENTWISE = ("relu", "leaky_relu", "sigmoid", "tanh")
_NORMS = ("batchnorm", "layernorm")
_OPTIONS = {"affine": ("x_shape", "n_out"), "relu": ("x_shape",),
            "leaky_relu": ("x_shape", "alpha"), "sigmoid": ("x_shape",),
            "tanh": ("x_shape",), "softmax_loss": ("x_shape",), "svm_loss": ("x_shape",),
            "batchnorm": ("x_shape", "eps", "momentum"), "layernorm": ("x_shape", "eps"),
            "dropout": ("x_shape", "p")}
_GRADS = {"affine": ("dx", "dw", "db"), "batchnorm": ("dx", "dgamma", "dbeta"),
          "layernorm": ("dx", "dgamma", "dbeta")}
_SHIFT = 1000.0  # softmax_loss is also called on x + _SHIFT
_DELTA = 1.0     # the SVM margin


class LayerReport(NamedTuple):
    """The result of `check_layer`.

    ok: every entry matches.
    kind: the layer kind checked.
    status: "ok", "mismatch" (some entry differs) or "error" (your function raised or
      returned the wrong structure).
    entries: one `Entry` per compared array (layer None): "out", then the gradients
      ("dx", "dw", "db", "dgamma", "dbeta"), or "loss" and "dx" for the loss kinds, plus
      dropout's "keep", "out_test" and softmax's "loss_shifted", "dx_shifted".
    diagnosis: one line per finding ("" never: "… match" when ok).
    convention: the convention, as you would pass it.
    rtol, atol: the tolerances used.
    inputs: what your functions were called with, e.g. "x (7, 3, 5), w (15, 4), b (4,)".
    """

    ok: bool
    kind: str
    status: str
    entries: tuple
    diagnosis: str
    convention: str
    rtol: float
    atol: float
    inputs: str = ""

    def entry(self, quantity: str) -> Optional[Entry]:
        """The entry of `quantity` ("dx", "dw", …), or None."""
        for e in self.entries:
            if e.quantity == quantity:
                return e
        return None

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (NaN/Inf errors become None)."""
        return {"ok": self.ok, "kind": self.kind, "status": self.status,
                "convention": self.convention, "rtol": self.rtol, "atol": self.atol,
                "inputs": self.inputs, "entries": [e.to_dict() for e in self.entries],
                "diagnosis": self.diagnosis}

    def __str__(self) -> str:
        head = {"ok": "OK", "mismatch": "MISMATCH", "error": "ERROR"}[self.status]
        lines = [f"jaxmlp check_layer {self.kind}: {head}  (convention={self.convention}, "
                 f"rtol={self.rtol:g}, atol={self.atol:g}; {self.inputs})"]
        lines.append(f"{'grad':<13} {'shape':<14} {'max abs err':>11} {'max rel err':>11}  "
                     f"status")
        for e in self.entries:
            errs = [("n/a" if math.isnan(v) else f"{v:.3e}") for v in
                    (e.max_abs_err, e.max_rel_err)]
            shape = "-" if e.status == "error" else str(e.shape)
            lines.append(f"{e.quantity:<13} {shape:<14} {errs[0]:>11} {errs[1]:>11}  "
                         f"{e.status.upper() if e.status != 'ok' else 'ok'}")
        lines += ["", "diagnosis:"] + ["  " + s for s in self.diagnosis.splitlines()]
        return "\n".join(lines)


# --------------------------------------------------------------------------- validation

def _shape_option(value, kind: str, conv: Convention) -> tuple:
    expected = "a non-empty tuple of positive ints"
    if not isinstance(value, (tuple, list)) or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in value):
        raise TypeError(f"check_layer: x_shape must be {expected}, got {value!r}")
    if not value or not all(d >= 1 for d in value):
        raise ValueError(f"check_layer: x_shape must be {expected}, got {value!r}")
    shape = tuple(int(d) for d in value)
    two_d = kind in _NORMS or kind in _LOSS_KINDS or (kind == "affine" and conv.features_first)
    if two_d and len(shape) != 2:
        raise ValueError(f"check_layer: x_shape for {kind!r} must have 2 dimensions, got "
                         f"{shape}")
    if kind == "affine" and len(shape) < 2:
        raise ValueError(f"check_layer: x_shape for 'affine' must be (N, d1, ...), got "
                         f"{shape}")
    if kind in _LOSS_KINDS and shape[1] < 2:
        raise ValueError(f"check_layer: x_shape for {kind!r} must have at least 2 classes, "
                         f"got {shape}")
    return shape


def _real(value, name: str, low: float, high: float, closed_low: bool) -> float:
    return _v.real(value, name, where="check_layer", low=low,
                   high=None if high == math.inf else high, low_open=not closed_low,
                   high_open=True)


def _options(kind: str, conv: Convention, options: dict) -> dict:
    allowed = _OPTIONS[kind]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"check_layer: unknown option(s) {unknown} for kind {kind!r}; it takes "
                         f"{list(allowed)}")
    opts = {}
    if "x_shape" in options:
        opts["x_shape"] = _shape_option(options["x_shape"], kind, conv)
    if "n_out" in options:
        opts["n_out"] = _v.positive_int(options["n_out"], "n_out", where="check_layer")
    if "eps" in options:
        opts["eps"] = _real(options["eps"], "eps", 0.0, math.inf, closed_low=False)
    if "momentum" in options:
        opts["momentum"] = _real(options["momentum"], "momentum", 0.0, 1.0, closed_low=True)
    if "p" in options:
        opts["p"] = _real(options["p"], "p (the keep probability)", 0.0, 1.0,
                          closed_low=False)
    if "alpha" in options:
        opts["alpha"] = _real(options["alpha"], "alpha (the negative slope)", 0.0, 1.0,
                              closed_low=False)
    return opts


# --------------------------------------------------------------------------- references

def _softmax_ref(x, y):
    N = x.shape[0]
    shifted = x - x.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    probs = np.exp(logp)
    loss = -logp[np.arange(N), y].sum() / N
    dx = probs.copy()
    dx[np.arange(N), y] -= 1
    return loss, dx / N, probs


def _svm_ref(x, y):
    N = x.shape[0]
    margins = np.maximum(0.0, x - x[np.arange(N), y][:, None] + _DELTA)
    margins[np.arange(N), y] = 0.0
    loss = margins.sum() / N
    pos = (margins > 0).astype(np.float64)
    dx = pos.copy()
    dx[np.arange(N), y] -= pos.sum(axis=1)
    return loss, dx / N, pos


def _norm_stats(x, axis, eps, ddof=0):
    mu = x.mean(axis=axis, keepdims=True)
    var = x.var(axis=axis, ddof=ddof, keepdims=True)
    std = np.sqrt(var + eps)
    return mu, std, (x - mu) / std


def _norm_forward(x, gamma, beta, eps, axis, ddof=0):
    return gamma * _norm_stats(x, axis, eps, ddof)[2] + beta


def _norm_backward(dout, x, gamma, eps, stat_axis, sum_axis=None, ddof=0):
    """(dx, dgamma, dbeta) of out = γ x̂ + β with statistics over `stat_axis`; the
    backward's sums over `sum_axis` (the same axis when right)."""
    sum_axis = stat_axis if sum_axis is None else sum_axis
    _, std, xh = _norm_stats(x, stat_axis, eps, ddof)
    n = x.shape[sum_axis]
    g = dout * gamma
    dx = (n * g - g.sum(axis=sum_axis, keepdims=True)
          - xh * (g * xh).sum(axis=sum_axis, keepdims=True)) / (n * std)
    return dx, (dout * xh).sum(axis=0), dout.sum(axis=0)


def _norm_paths(dout, x, gamma, eps, axis):
    """dx of the staged graph with the dμ path, the dσ² path, or both dropped."""
    mu, std, _ = _norm_stats(x, axis, eps)
    n = x.shape[axis]
    g = dout * gamma
    dvar = (g * (x - mu) * -0.5 * std ** -3).sum(axis=axis, keepdims=True)
    dmu = (-g / std).sum(axis=axis, keepdims=True)  # + dvar·mean(−2(x − μ)) = 0
    return {"no_mean_path": g / std + dvar * 2 * (x - mu) / n,
            "no_var_path": g / std + dmu / n,
            "no_paths": g / std}


class _Case(NamedTuple):
    args: tuple        # what forward is called with (copied per call)
    dout: Optional[np.ndarray]
    ref: dict          # quantity → reference array, in your shapes
    extra: dict        # what the rules need to predict mistakes
    inputs: str        # "x (7, 3, 5), w (15, 4), b (4,)"
    n: int             # the batch size N (m)


def _sh(a) -> str:
    return str(tuple(np.shape(a)))


def _affine_case(conv: Convention, rng, opts) -> _Case:
    in_out, ff = conv.weights == "in_out", conv.features_first
    if "x_shape" in opts:
        x_shape = opts["x_shape"]
    else:
        x_shape = (5, 7) if ff else ((7, 3, 5) if in_out else (7, 5))
    M = opts.get("n_out", 4)
    if ff:
        D, N = x_shape
    else:
        N, D = x_shape[0], int(np.prod(x_shape[1:]))
    x = rng.normal(size=x_shape)
    w = rng.normal(size=(D, M) if in_out else (M, D))
    b = rng.normal(size=(M, 1) if ff else (M,))
    w_oi = w.T if in_out else w  # (M, D)
    s = 1.0 / N if conv.one_over_m == "dW" else 1.0
    if ff:
        out = w_oi @ x + b
        dout = rng.normal(size=out.shape)
        dx = w_oi.T @ dout
        dw_oi = s * (dout @ x.T)
        db = s * dout.sum(axis=1, keepdims=True)
        per_example, other_axis = s * dout, s * dout.sum(axis=0)
        from_out = [s * (dout @ out.T), s * (out @ dout.T)]
    else:
        x2 = x.reshape(N, D)
        out = x2 @ w_oi.T + b
        dout = rng.normal(size=out.shape)
        dx = (dout @ w_oi).reshape(x_shape)
        dw_oi = s * (dout.T @ x2)
        db = s * dout.sum(axis=0)
        per_example, other_axis = s * dout, s * dout.sum(axis=1)
        from_out = [s * (out.T @ dout), s * (dout.T @ out)]
    dw = dw_oi.T if in_out else dw_oi
    names = ("A_prev", "W", "b") if ff else ("x", "w" if in_out else "W", "b")
    inputs = ", ".join(f"{n} {_sh(a)}" for n, a in zip(names, (x, w, b)))
    inputs += f"; {'dZ' if ff else 'dout'} {_sh(dout)}"
    return _Case((x, w, b), dout, {"out": out, "dx": dx, "dw": dw, "db": db},
                 {"per_example": {"db": per_example}, "other_axis": {"db": other_axis},
                  "from_out": from_out, "names": names, "s": s}, inputs, N)


def _elementwise_case(kind, rng, opts) -> _Case:
    x_shape = opts.get("x_shape", (7, 5))
    x = rng.normal(size=x_shape) * 1.5
    if kind in ("relu", "leaky_relu"):
        x = np.where(np.abs(x) < 1e-3, 0.5, x)  # no kink within round-off
        slope = opts.get("alpha", 0.01) if kind == "leaky_relu" else 0.0
        out, df = np.where(x > 0, x, slope * x), np.where(x > 0, 1.0, slope)
    elif kind == "sigmoid":
        out = 1 / (1 + np.exp(-x))
        df = out * (1 - out)
    else:
        out = np.tanh(x)
        df = 1 - out ** 2
    dout = rng.normal(size=x_shape)
    extra = {"x": x, "a": out, "alpha": opts.get("alpha", 0.01)}
    return _Case((x,), dout, {"out": out, "dx": dout * df}, extra,
                 f"x {_sh(x)}; dout {_sh(dout)}", x_shape[0])


def _loss_case(kind, rng, opts) -> _Case:
    N, C = opts.get("x_shape", (7, 5))
    x = rng.normal(size=(N, C))
    y = rng.integers(0, C, size=N)
    loss, dx, aux = (_softmax_ref if kind == "softmax_loss" else _svm_ref)(x, y)
    ref = {"loss": np.asarray(loss), "dx": dx}
    if kind == "softmax_loss":
        ref.update(loss_shifted=np.asarray(loss), dx_shifted=dx)
    return _Case((x, y), None, ref, {"aux": aux, "x": x, "y": y},
                 f"x {_sh(x)}, y {_sh(y)} integer labels in [0, {C})", N)


def _norm_case(kind, rng, opts) -> _Case:
    N, D = opts.get("x_shape", (7, 5))
    eps = opts.get("eps", 1e-5)
    x = rng.normal(size=(N, D)) * 2 + rng.normal(size=D)
    gamma, beta = rng.normal(size=D), rng.normal(size=D)
    dout = rng.normal(size=(N, D))
    axis, other = (0, 1) if kind == "batchnorm" else (1, 0)
    param = {"mode": "train", "eps": eps, "momentum": opts.get("momentum", 0.9)} \
        if kind == "batchnorm" else {"eps": eps}
    out = _norm_forward(x, gamma, beta, eps, axis)
    dx, dgamma, dbeta = _norm_backward(dout, x, gamma, eps, axis)
    # the mistakes the rules predict
    o_dx, o_dg, o_db = _norm_backward(dout, x, gamma, eps, other)
    u_dx, u_dg, _ = _norm_backward(dout, x, gamma, eps, axis, ddof=1)
    extra = {
        "other_norm": {"out": _norm_forward(x, gamma, beta, eps, other), "dx": o_dx,
                       "dgamma": o_dg},
        "other_sums": _norm_backward(dout, x, gamma, eps, axis, sum_axis=other)[0],
        "unbiased": {"out": _norm_forward(x, gamma, beta, eps, axis, ddof=1), "dx": u_dx,
                     "dgamma": u_dg},
        "paths": _norm_paths(dout, x, gamma, eps, axis),
        "xh": _norm_stats(x, axis, eps)[2], "x": x, "dout": dout,
    }
    pname = "bn_param" if kind == "batchnorm" else "ln_param"
    return _Case((x, gamma, beta, param), dout,
                 {"out": out, "dx": dx, "dgamma": dgamma, "dbeta": dbeta}, extra,
                 f"x {_sh(x)}, gamma {_sh(gamma)}, beta {_sh(beta)}, {pname} {param}; "
                 f"dout {_sh(dout)}", N)


def _dropout_case(rng, opts, seed) -> _Case:
    x_shape = opts.get("x_shape", (40, 50))
    p = opts.get("p", 0.7)
    x = rng.normal(size=x_shape)
    x = np.where(x < 0, x - 0.5, x + 0.5)  # |x| ≥ 0.5: the mask is out / x
    dout = rng.normal(size=x_shape)
    param = {"p": p, "mode": "train", "seed": seed}
    return _Case((x, param), dout, {}, {"x": x, "p": p, "dout": dout},
                 f"x {_sh(x)}, dropout_param {param}; dout {_sh(dout)}", x_shape[0])


def _case(kind, conv, seed, opts) -> _Case:
    rng = np.random.default_rng(seed)
    if kind == "affine":
        return _affine_case(conv, rng, opts)
    if kind in _ELEMENTWISE:
        return _elementwise_case(kind, rng, opts)
    if kind in _LOSS_KINDS:
        return _loss_case(kind, rng, opts)
    if kind in _NORMS:
        return _norm_case(kind, rng, opts)
    return _dropout_case(rng, opts, seed)


# --------------------------------------------------------------------------- calling you

class _UserError(Exception):
    """Your function raised or returned the wrong structure (the message says which)."""


def _copy(v):
    if isinstance(v, np.ndarray):
        return v.copy()
    if isinstance(v, dict):
        return dict(v)
    return v


def _call(fn, what: str, args: tuple):
    try:
        with np.errstate(all="ignore"):
            return fn(*[_copy(a) for a in args])
    except Exception as e:  # noqa: BLE001 - any failure of user code is reported
        raise _UserError(f"{what} raised {type(e).__name__}: {e}") from None


def _as_array(v, what: str) -> np.ndarray:
    try:
        a = np.asarray(v)
    except Exception as e:  # noqa: BLE001
        raise _UserError(f"{what} is not an array: {e}") from None
    if a.dtype.kind not in "biuf" or a.dtype == object:
        raise _UserError(f"{what} must be a real numeric array, got "
                         f"{type(v).__name__} of dtype {a.dtype}")
    return a


def _pair(result, what: str, names: str):
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        got = (f"a {type(result).__name__} of {len(result)}"
               if isinstance(result, (tuple, list)) else type(result).__name__)
        raise _UserError(f"{what} must return {names}, got {got}")
    return result


def _grads(result, names: tuple, what: str) -> list:
    if len(names) == 1:
        if isinstance(result, (tuple, list)) and len(result) == 1:
            result = result[0]
        elif isinstance(result, (tuple, list)):
            raise _UserError(f"{what} must return {names[0]} (one array), got a "
                             f"{type(result).__name__} of {len(result)}")
        return [result]
    if not isinstance(result, (tuple, list)) or len(result) != len(names):
        got = (f"a {type(result).__name__} of {len(result)}"
               if isinstance(result, (tuple, list)) else type(result).__name__)
        raise _UserError(f"{what} must return ({', '.join(names)}), got {got}")
    return list(result)


def _find_mask(cache, shape, depth=0):
    """An array shaped like x inside the cache (tuples, lists, dicts), or None."""
    if isinstance(cache, np.ndarray) and cache.shape == shape and cache.dtype.kind in "biuf":
        return cache.astype(np.float64)
    if depth > 3:
        return None
    items = cache.values() if isinstance(cache, dict) else (
        cache if isinstance(cache, (tuple, list)) else ())
    for v in items:
        m = _find_mask(v, shape, depth + 1)
        if m is not None:
            return m
    return None


# --------------------------------------------------------------------------- the rules

class _Ctx(NamedTuple):
    kind: str
    conv: Convention
    case: _Case
    ref: dict
    measures: dict
    rtol: float
    atol: float

    @property
    def tol(self) -> float:
        return max(100 * self.rtol, 1e-4)

    def close(self, c, r) -> bool:
        if r is None or c.shape != np.shape(r) or not np.all(np.isfinite(c)):
            return False
        r = np.asarray(r, np.float64)
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        return float(np.max(np.abs(c - r), initial=0.0)) <= self.atol + self.tol * scale


def _transpose_hint(ctx, q, r) -> str:
    if ctx.kind != "affine" or q != "dw":
        return ""
    if ctx.conv.weights == "out_in":
        return (f" (your W is (D, M) = (n_in, n_out)? then pass convention='cs231n' or a "
                f"Convention with weights='in_out'; convention {ctx.conv.name!r} wants dw "
                f"{r.shape}, shaped like W)")
    return (f" (your w is (M, D) = (n_out, n_in)? then pass convention='jaxmlp'; "
            f"convention {ctx.conv.name!r} wants dw {r.shape}, shaped like w)")


def _shape_rules(ctx, q, c, r):
    if c.ndim == 2 and r.ndim == 2 and c.shape == r.shape[::-1] and c.shape != r.shape:
        yield "shape_transposed", r.T, (f"transposed: expected {r.shape}, got {c.shape}; "
                                        f"{q}.T matches" + _transpose_hint(ctx, q, r))
    if r.ndim > 2 and c.ndim == 2:
        r2 = r.reshape(r.shape[0], -1)
        if c.shape == r2.shape[::-1]:
            yield "shape_transposed", r2.T, (
                f"transposed and not reshaped: expected {r.shape} (x's shape), got "
                f"{c.shape}, the transpose of the flattened (N, D) = {r2.shape}: "
                f"dx = (dout @ w.T).reshape(x.shape)")
    if c.size == r.size and c.shape != r.shape:
        if r.ndim > c.ndim and c.shape == (r.shape[0], r.size // r.shape[0]):
            text = (f"not reshaped back: expected x's shape {r.shape}, got the flattened "
                    f"{c.shape}: {q}.reshape(x.shape)")
        elif c.shape == (1,) + r.shape or c.shape == r.shape + (1,):
            text = (f"expected {r.shape}, got {c.shape}: the same numbers with an extra "
                    f"axis (np.sum(..., keepdims=True) where the result should be "
                    f"{r.shape}?)")
        elif r.shape == (1,) + c.shape or r.shape == c.shape + (1,):
            text = (f"expected {r.shape}, got {c.shape}: the same numbers without the "
                    f"axis of length 1 (np.sum(..., keepdims=True) keeps it)")
        else:
            text = f"the same numbers in another shape: expected {r.shape}, got {c.shape}"
        yield "reshape", r.reshape(c.shape), text
    if q in ("db", "dgamma", "dbeta"):
        per, other = _per_example(ctx, q)
        axis = "axis=1, keepdims=True" if ctx.conv.features_first and ctx.kind == "affine" \
            else "axis=0"
        if per is not None:
            yield "db_not_summed", per, (
                f"{q} not summed over the batch: expected {r.shape}, got {c.shape}, one "
                f"entry per example; {q} = np.sum(…, {axis})")
        if other is not None:
            yield "wrong_axis", other, (
                f"{q} summed over the wrong axis: over the units, one number per example "
                f"{other.shape}; sum over the batch ({axis}) to get {r.shape}")


def _per_example(ctx, q):
    """(the per-example terms of q, those summed over the units) or (None, None)."""
    e = ctx.case.extra
    if ctx.kind == "affine" and q == "db":
        return e["per_example"]["db"], e["other_axis"]["db"]
    if ctx.kind in _NORMS:
        term = e["dout"] * (e["xh"] if q == "dgamma" else 1.0)
        return term, term.sum(axis=1)
    return None, None


def _affine_rules(ctx, q, c, r):
    if q == "dw":
        for pred in ctx.case.extra["from_out"]:
            yield "dw_from_out", pred, (
                f"dw computed from the layer's output instead of its input: got "
                f"{c.shape} = outᵀ·dout; dw = x.reshape(N, D)ᵀ · dout (the cache should "
                f"hold x)" if ctx.conv.weights == "in_out" else
                f"dW computed from the layer's output instead of its input: got "
                f"{c.shape}; dW = doutᵀ · x (the input, not out)")


def _elementwise_rules(ctx, q, c, r):
    if q != "dx":
        return
    e, d = ctx.case.extra, ctx.case.dout
    x, a = e["x"], e["a"]
    if ctx.kind == "sigmoid":
        sa = 1 / (1 + np.exp(-a))
        yield "df_at_out", d * sa * (1 - sa), (
            "σ′ evaluated at the output: σ(out)(1 − σ(out)) where the cache already holds "
            "out = σ(x); σ′(x) = out(1 − out)")
        yield "df_at_out", d * x * (1 - x), (
            "σ′'s formula in terms of the output, out(1 − out), applied to the input x; "
            "use the cached out")
    elif ctx.kind == "tanh":
        yield "df_at_out", d * (1 - np.tanh(a) ** 2), (
            "tanh′ evaluated at the output: 1 − tanh(out)²; tanh′(x) = 1 − out²")
        yield "df_at_out", d * (1 - x ** 2), (
            "1 − x²: tanh′'s formula in terms of the output, 1 − out², applied to the "
            "input x; use out = tanh(x)")
    if ctx.kind in ("relu", "leaky_relu"):
        yield "times_out", d * a, (f"dout ⊙ out: multiplied by the output {ctx.kind}(x) "
                                   f"instead of the mask (x > 0)")
    if ctx.kind == "leaky_relu":
        yield "no_slope", d * (x > 0), (
            f"dx = dout ⊙ (x > 0): ReLU's mask; leaky ReLU's derivative is α = "
            f"{e['alpha']:g} for x ≤ 0: dx = dout ⊙ where(x > 0, 1, α)")
    elif ctx.kind == "sigmoid":
        yield "partial_fprime", d * a, ("dout ⊙ out: the factor (1 − out) of "
                                        "σ′ = out(1 − out) is missing")
        yield "partial_fprime", d * (1 - a), ("dout ⊙ (1 − out): the factor out of "
                                              "σ′ = out(1 − out) is missing")
    else:
        yield "partial_fprime", d * (1 - a), ("dout ⊙ (1 − out): the square is missing; "
                                              "tanh′ = 1 − out²")
        yield "partial_fprime", d * a ** 2, ("dout ⊙ out²: the '1 −' is missing; "
                                             "tanh′ = 1 − out²")
    if ctx.kind in ("relu", "leaky_relu"):
        slope = e["alpha"] if ctx.kind == "leaky_relu" else 0.0
        yield "mask_from_dout", d * np.where(d > 0, 1.0, slope), (
            "the mask comes from dout (dout > 0); it must come from the input: "
            "dx = dout ⊙ (x > 0)" + (" (α where x ≤ 0)" if slope else ""))
    what = ("the mask (x > 0) is" if ctx.kind in ("relu", "leaky_relu")
            else "the local derivative f′ is")
    yield "missing_fprime", d, (f"dx = dout: {what} never applied")


def _norm_rules(ctx, q, c, r):
    e = ctx.case.extra
    name = "batch norm" if ctx.kind == "batchnorm" else "layer norm"
    right, wrong = (("each feature over the batch (axis 0)", "per example (axis 1), as "
                     "layer norm does") if ctx.kind == "batchnorm" else
                    ("each example over its features (axis 1)", "over the batch (axis 0), "
                     "as batch norm does"))
    if q in e["other_norm"]:
        yield "wrong_axis", e["other_norm"][q], (
            f"statistics over the wrong axis: {name} normalises {right}; yours match "
            f"statistics {wrong}" + (" (in the forward, then carried into the backward "
                                      "by the cache)" if q != "out" else ""))
    if q == "dx":
        yield "wrong_axis", e["other_sums"], (
            f"the backward's sums (and n) run over the wrong axis: the statistics are "
            f"{name}'s ({right}), so the sums in dx must run over that axis too")
        for rule, pred in e["paths"].items():
            what = {"no_mean_path": "the mean's path (dμ) is dropped",
                    "no_var_path": "the variance's path (dσ²) is dropped",
                    "no_paths": "both the mean's (dμ) and the variance's (dσ²) paths are "
                                "dropped: dx = γ ⊙ dout / σ"}[rule]
            yield rule, pred, (f"{what}; x reaches the output through x̂ = (x − μ)/σ and "
                               f"through μ and σ², and dx sums all three")
    if q == "dgamma":
        yield "dgamma_from_x", (e["dout"] * e["x"]).sum(axis=0), (
            "dgamma = Σ dout ⊙ x: it is Σ dout ⊙ x̂, the normalised input")
    if q in e["unbiased"]:
        yield "unbiased_var", e["unbiased"][q], (
            "the variance is the unbiased one (ddof=1, divides by N − 1): the forward "
            "normalises with the biased variance, np.var(x, axis=…) (divides by N)")


def _dropout_rules(ctx, q, c, r):
    e = ctx.case.extra
    p, x = e["p"], e["x"]
    if q == "out":
        kept = e["support"]
        yield "drop_rate", x * kept / (1 - p), (
            f"scaled by 1/(1 − p) = {1 / (1 - p):.4g}: p read as the drop rate; CS231n's "
            f"p is the keep probability: mask = (np.random.rand(*x.shape) < p) / p")
        yield "not_inverted", x * kept, (
            f"the kept units are not divided by p = {p:g}: inverted dropout scales them "
            f"by 1/p in training (mask = (rand < p) / p) so test mode needs no scaling")
    elif q == "out_test":
        nz = np.abs(c) > 0
        ratio = np.divide(c, x, out=np.zeros_like(c, dtype=np.float64), where=nz)
        if nz.any() and not nz.all():
            k = float(np.median(ratio[nz]))
            yield "train_at_test", x * nz * k, (
                "test mode drops units too: in test mode dropout returns x unchanged "
                "(check dropout_param['mode'])")
        yield "test_scaled", x * p, (f"test mode scales by p = {p:g}: with inverted "
                                     f"dropout the scaling is done in training and test "
                                     f"mode returns x")
        yield "test_scaled", x / p, (f"test mode scales by 1/p: with inverted dropout test "
                                     f"mode returns x unchanged")
    elif q == "dx":
        d, mask = e["dout"], e["mask"]
        yield "mask_not_applied", d, ("dx = dout: the mask is not applied in the backward; "
                                      "dx = dout * mask, the mask the forward used (cache "
                                      "it)")
        yield "not_rescaled", d * (mask != 0), (
            f"dx = dout ⊙ (mask ≠ 0): off by 1/p = {1 / p:.4g}; the backward multiplies by "
            f"the same mask as the forward, 1/p included")
        yield "drop_rate", d * (mask != 0) / (1 - p), (
            f"dx scaled by 1/(1 − p): p read as the drop rate in the backward; use the "
            f"forward's mask")


def _loss_rules(ctx, q, c, r):
    e, N = ctx.case.extra, ctx.case.n
    if ctx.kind == "softmax_loss" and q in ("dx", "dx_shifted"):
        yield "no_subtract", e["aux"] / N, ("dx = probs/N: the 1 at the correct class is "
                                            "not subtracted; dx = (probs − onehot(y))/N")
    if ctx.kind == "svm_loss" and q == "dx":
        yield "no_correct_count", e["aux"] / N, (
            "no −count at the correct class: each positive margin adds −1 to "
            "dx[i, y_i] as well as +1 to dx[i, j]; dx[i, y_i] = −(number of positive "
            "margins)/N")
    if ctx.kind == "svm_loss" and q == "loss":
        yield "correct_class_margin", r + _DELTA, (
            f"loss + Δ (Δ = {_DELTA:g}): the correct class's margin max(0, s_y − s_y + Δ) "
            f"= Δ is not zeroed; set margins[np.arange(N), y] = 0")


def _factor_of(ctx, c, r) -> Optional[float]:
    c, r = c.ravel().astype(np.float64), r.ravel()
    rr = float(r @ r)
    if rr == 0:
        return None
    f = float(c @ r) / rr
    if f == 0 or not math.isfinite(f) or abs(f - 1) <= 1e-2:
        return None
    resid = float(np.linalg.norm(c - f * r)) / (abs(f) * math.sqrt(rr))
    return f if resid <= ctx.tol else None


def _factor_rules(ctx, q, c, r):
    if c.shape != r.shape:
        return
    f = _factor_of(ctx, c, r)
    if f is None:
        return
    N = ctx.case.n
    loss_kind = ctx.kind in _LOSS_KINDS
    m_dw = ctx.kind == "affine" and ctx.conv.one_over_m == "dW" and q in ("dw", "db")
    named = [("N", N), ("1/N", 1 / N), ("2", 2.0), ("½", 0.5), ("−1", -1.0),
             ("−N", -N), ("−1/N", -1 / N), ("−2", -2.0), ("−½", -0.5)]
    label = next((n for n, v in named if abs(f - v) <= 1e-3 * abs(v)), None)
    if label == "1/N" and q == "db" and ctx.kind == "affine" and not m_dw:
        rule, text = "db_averaged", (
            f"db is the mean over the batch (N = {N}), not the sum: db = np.sum(dout, "
            f"axis=0); the 1/N lives in the loss's gradient (dscores /= N)")
    elif label == "N" and (loss_kind or m_dw):
        rule = "not_divided"
        text = (f"N× the reference (N = {N}): summed over the batch, not divided by N"
                if loss_kind else
                f"m× the reference (m = {N}): the 1/m is missing; with one_over_m='dW' "
                f"(deeplearning.ai) dW = (1/m) dZ A_prevᵀ and db = (1/m) Σ dZ")
    elif label == "−1":
        rule, text = "wrong_sign", "−1× the reference: the wrong sign"
    elif label is not None:
        rule = "factor"
        why = {"N": f"summed where it should not be, or an extra ×N (N = {N})",
               "1/N": (f"divided by N = {N}: a layer's backward does not average; the 1/N "
                       f"lives in the loss's gradient" + (
                           " (if your layer averages over the batch as deeplearning.ai "
                           "does, pass a Convention with one_over_m='dW')"
                           if ctx.kind == "affine" and not m_dw else "")),
               "2": "an extra factor 2", "½": "a missing factor 2",
               }.get(label.lstrip("−"), "")
        text = f"{label}× the reference" + (f": {why}" if why else "") + (
            "; and the wrong sign" if label.startswith("−") else "")
    elif c.size >= 2:
        rule, text = "factor", f"{f:.6g}× the reference (a constant factor)"
    else:
        return
    yield rule, f * r, text


def _predictions(ctx, q, c, r):
    yield from _shape_rules(ctx, q, c, r)
    if ctx.kind == "affine":
        yield from _affine_rules(ctx, q, c, r)
    elif ctx.kind in _ELEMENTWISE:
        yield from _elementwise_rules(ctx, q, c, r)
    elif ctx.kind in _NORMS:
        yield from _norm_rules(ctx, q, c, r)
    elif ctx.kind == "dropout":
        yield from _dropout_rules(ctx, q, c, r)
    else:
        yield from _loss_rules(ctx, q, c, r)
    yield from _factor_rules(ctx, q, c, r)


def _diagnose(ctx: _Ctx, q: str, c: np.ndarray) -> tuple:
    """(rule, message) for the mismatching candidate c of quantity q."""
    r = np.asarray(ctx.ref[q], np.float64)
    mm = ctx.measures[q]
    if q.endswith("_shifted") and ctx.measures.get(q[:-len("_shifted")]) is not None and \
            ctx.measures[q[:-len("_shifted")]].ok:
        return "no_max_shift", (
            f"right at x but not at x + {_SHIFT:g} (softmax is shift-invariant, so the "
            f"same numbers are expected): exp overflows; subtract the row max first, "
            f"x - np.max(x, axis=1, keepdims=True)")
    if not np.all(np.isfinite(c)):
        return "nonfinite", "contains NaN or Inf: an overflow (exp of a large number?) or a 0/0"
    for rule, pred, text in _predictions(ctx, q, c, r):
        pred = np.asarray(pred, np.float64)
        if pred.shape == r.shape and ctx.close(pred, r):
            continue  # indistinguishable from the reference here: not evidence
        if ctx.close(c, pred):
            return rule, text
    out = ctx.measures.get("out")
    if q != "out" and out is not None and not out.ok and c.shape == r.shape:
        return "forward", (f"does not match (max rel err {mm.rel_err:.2e}); out is wrong "
                           f"too: fix the forward first (its cache feeds the backward)")
    if c.shape != r.shape:
        return "shape", f"shape mismatch: expected {r.shape}, got {c.shape}"
    if mm.rel_err < 1e-3:
        return "roundoff", (f"does not match (max rel err {mm.rel_err:.2e}), but only "
                            f"slightly: float32 arithmetic (compare with rtol=1e-4, "
                            f"atol=1e-6) or an ε somewhere?")
    return "mismatch", (f"does not match: max abs err {mm.abs_err:.3e}, max rel err "
                        f"{mm.rel_err:.3e}; no known mistake predicts it")


# --------------------------------------------------------------------------- check_layer

def _error_entry(q, expected_shape, text) -> Entry:
    return Entry(q, None, tuple(expected_shape), (), math.nan, math.nan, "error", text,
                 "raised")


def _hint(kind, conv, case) -> str:
    text = f" (called with {case.inputs}"
    if kind == "affine":
        text += f"; convention={conv.call()}: {_LAYOUT_TEXT[(conv.weights, conv.features_first)]}"
    return text + ")"


_LAYOUT_TEXT = {
    ("in_out", False): "w is (D, M), out = x.reshape(N, D) @ w + b; is your w (M, D)? then "
                       "pass convention='jaxmlp'",
    ("out_in", False): "W is (M, D), out = x @ W.T + b; is your w (D, M)? then pass "
                       "convention='cs231n'",
    ("out_in", True): "A_prev is (D, m), W (M, D), Z = W A_prev + b; are your examples "
                      "rows? then pass convention='jaxmlp' or 'cs231n'",
    ("in_out", True): "x is (D, m), w (D, M), out = w.T @ x + b",
}


def _run_user(kind, forward, backward, case, cand, ref, grads) -> None:
    """Calls your functions on the case, filling `cand` (and dropout's `ref`); _UserError
    when one raises or returns the wrong structure."""
    if kind in _LOSS_KINDS:
        x, y = case.args
        loss, dx = _pair(_call(forward, "forward", (x, y)), "forward", "(loss, dx)")
        cand["loss"], cand["dx"] = _as_array(loss, "loss"), _as_array(dx, "dx")
        if kind == "softmax_loss":
            loss, dx = _pair(_call(forward, "forward at x + 1000", (x + _SHIFT, y)),
                             "forward", "(loss, dx)")
            cand["loss_shifted"] = _as_array(loss, "loss at x + 1000")
            cand["dx_shifted"] = _as_array(dx, "dx at x + 1000")
    else:
        out, cache = _pair(_call(forward, "forward", case.args), "forward",
                           "(out, cache)")
        cand["out"] = _as_array(out, "out")
        if kind == "dropout":
            _dropout_reference(case, cand["out"], cache, ref)
            test = dict(case.args[1], mode="test")
            out_t, _ = _pair(_call(forward, "forward in test mode", (case.args[0], test)),
                             "forward", "(out, cache)")
            cand["out_test"] = _as_array(out_t, "out in test mode")
        result = _call(backward, "backward", (case.dout, cache))
        for q, v in zip(grads, _grads(result, grads, "backward")):
            cand[q] = _as_array(v, q)


def check_layer(kind: str, forward: Callable, backward: Optional[Callable] = None, *,
                convention="jaxmlp", rtol: float = 1e-6, atol: float = 1e-9, seed: int = 0,
                timeout: Optional[float] = None, **options) -> LayerReport:
    """Checks one CS231n-style layer's forward and backward and names the likely mistake.

    Args:
      kind: "affine", "relu", "leaky_relu", "sigmoid", "tanh", "softmax_loss", "svm_loss",
        "batchnorm", "layernorm" or "dropout".
      forward: your forward, `forward(x, w, b) -> (out, cache)` etc. (module docstring);
        for the loss kinds `forward(x, y) -> (loss, dx)`.
      backward: your backward, `backward(dout, cache)`; None for the loss kinds.
      convention: a preset name or `Convention`; decides the affine layer's layout
        ("cs231n": w (D, M), x (N, d1, d2); "jaxmlp": W (M, D), x (N, D);
        "deeplearning_ai": A_prev (D, m), W (M, D), b (M, 1), 1/m in dW and db).
      rtol, atol: an array matches iff the shapes are equal and every element has
        |c − r| ≤ atol + rtol·|r|; float32 code needs about rtol=1e-4, atol=1e-6.
      seed: seeds the generated inputs (and dropout_param["seed"]).
      timeout: seconds your functions may run in all (None: no limit); past it the report
        has status "error" and says so (see `jaxmlp.oracle.limits`: main thread, POSIX).
      **options: x_shape (the input's shape, in your layout), n_out (affine), eps
        (batchnorm, layernorm), momentum (batchnorm), p (dropout's keep probability),
        alpha (leaky_relu's negative slope).

    Returns:
      A `LayerReport` (`.ok`, `.status`, `.entries`, `.diagnosis`, `str()` a table).
      Your function raising, or returning the wrong structure, is status "error" with
      the exception's message, never an exception here.

    Raises:
      ValueError: an unknown kind or option, a bad option value, a negative tolerance.
      TypeError: forward or backward not callable (backward given for a loss kind).
    """
    _v.one_of(kind, "kind", KINDS, where="check_layer")
    if not callable(forward):
        raise TypeError(f"forward must be callable, got {type(forward).__name__}")
    if kind in _LOSS_KINDS:
        if backward is not None:
            raise TypeError(f"backward must be None for kind {kind!r}: the one function "
                            f"forward(x, y) returns (loss, dx)")
    elif not callable(backward):
        raise TypeError(f"backward must be callable for kind {kind!r}, got "
                        f"{type(backward).__name__}")
    conv = resolve(convention)
    rtol = _v.nonneg_real(rtol, "rtol", where="check_layer")
    atol = _v.nonneg_real(atol, "atol", where="check_layer")
    seed = _v.integer(seed, "seed", where="check_layer", low=0)
    if timeout is not None:
        timeout = _v.positive_real(timeout, "timeout", where="check_layer")
    opts = _options(kind, conv, options)
    case = _case(kind, conv, int(seed), opts)
    cand, ref = {}, dict(case.ref)
    grads = _GRADS.get(kind, ("dx",))
    error = None
    try:
        with time_limit(timeout, f"the {kind} layer's functions"):
            _run_user(kind, forward, backward, case, cand, ref, grads)
    except TimeLimitExceeded as e:
        error = str(e)
    except _UserError as e:
        error = str(e) + _hint(kind, conv, case)

    measures = {q: measure(cand[q], np.asarray(ref[q], np.float64), rtol, atol)
                for q in cand if q in ref}
    ctx = _Ctx(kind, conv, case, ref, measures, rtol, atol)
    entries = []
    for k, q in enumerate(_order(kind)):
        if q == "keep":
            if "keep" in case.extra:
                entries.append(case.extra["keep"])
            continue
        if q not in cand or q not in ref:
            if error is not None:
                entries.append(_error_entry(q, np.shape(ref.get(q, ())), error))
                if k == 0:
                    break  # the forward failed: nothing else ran
            continue
        c, mm = cand[q], measures[q]
        r = np.asarray(ref[q])
        status = "ok" if mm.ok else ("mismatch" if mm.shape_ok else "shape")
        rule, text = ("", "") if mm.ok else _diagnose(ctx, q, c)
        entries.append(Entry(q, None, r.shape, c.shape, mm.abs_err, mm.rel_err, status,
                             text, rule))
    entries = tuple(entries)
    status = ("error" if any(e.status == "error" for e in entries) else
              "ok" if all(e.ok for e in entries) else "mismatch")
    return LayerReport(ok=status == "ok", kind=kind, status=status, entries=entries,
                       diagnosis=_summary(kind, status, entries), convention=conv.call(),
                       rtol=rtol, atol=atol, inputs=case.inputs)


def _order(kind) -> tuple:
    if kind in _LOSS_KINDS:
        return ("loss", "dx") + (("loss_shifted", "dx_shifted") if kind == "softmax_loss"
                                 else ())
    if kind == "dropout":
        return ("out", "keep", "out_test", "dx")
    return ("out",) + _GRADS.get(kind, ("dx",))


def _dropout_reference(case: _Case, out: np.ndarray, cache, ref: dict) -> None:
    """Your mask (out / x, or an x-shaped array in the cache) → the references."""
    e = case.extra
    x, p, dout = e["x"], e["p"], e["dout"]
    if out.shape == x.shape and np.all(np.isfinite(out)):
        mask = out.astype(np.float64) / x
    else:
        mask = _find_mask(cache, x.shape)
        if mask is None:
            raise _UserError(f"cannot recover the dropout mask: out is {out.shape} (x is "
                             f"{x.shape}) and the cache holds no array shaped like x")
    support = np.abs(mask) > 1e-12
    e.update(mask=mask, support=support)
    ref["out"] = x * support / p
    ref["out_test"] = x
    ref["dx"] = dout * mask
    n = support.size
    f = float(support.mean())
    sd = math.sqrt(p * (1 - p) / n)
    limit = 6 * sd + 1 / n
    ok = abs(f - p) <= limit
    rule, text = "", ""
    if not ok:
        if abs(f - (1 - p)) <= limit:
            rule, text = "keep_fraction", (
                f"keeps a fraction {f:.3f} ≈ 1 − p of the units, not p = {p:g}: CS231n's p "
                f"is the keep probability, mask = (np.random.rand(*x.shape) < p) / p "
                f"(rand > p keeps 1 − p)")
        else:
            rule, text = "mismatch", (f"keeps a fraction {f:.3f} of the units; expected "
                                      f"p = {p:g} (± {limit:.3f})")
    e["keep"] = Entry("keep", None, (), (), abs(f - p), abs(f - p) / p,
                      "ok" if ok else "mismatch", text, rule)


def _summary(kind, status, entries) -> str:
    if status == "ok":
        return ("the loss and dx match the reference" if kind in _LOSS_KINDS else
                "the forward output and every gradient match the reference")
    lines = []
    for e in entries:
        if e.status == "error":
            lines.append(f"{e.quantity}: {e.diagnosis}")
            break
    bad = [e for e in entries if not e.ok and e.status != "error"]
    out = next((e for e in bad if e.quantity == "out"), None)
    if out is not None and any(e.quantity in ("dx", "dw", "db", "dgamma", "dbeta")
                               for e in bad):
        lines.append("the forward is wrong (out): fix it first; the gradients below may "
                     "follow from it")
    lines += [f"{e.quantity}: {e.diagnosis}" for e in bad]
    return "\n".join(lines)
