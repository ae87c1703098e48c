"""The referee: `compare`, and the rule table that names each mismatch.

A rule is one known mistake: when it applies (which quantity, which layer, what shape),
the wrong value it predicts (from the reference's own z, a, δ and W), and the message.
For a mismatching entry the rules are tried in the order of `RULES`; the first whose
prediction matches the candidate (same shape and normwise within max(100·rtol, 1e-4), so
that a float32 implementation of a known mistake is still recognised) gives the
diagnosis and `Entry.rule`.  A rule without a prediction fires on its condition alone.

The order, most specific first:

1. `nonfinite`: NaN/Inf in the candidate.
2. Shapes: `shape_transposed` (dW or δ transposed, e.g. W (in, out) under an (out, in)
   convention), `db_not_summed` (one db per example), `wrong_layer_input` (dW of layer l
   from a⁽ˡ⁾ or a⁽ˡ⁻²⁾ instead of a⁽ˡ⁻¹⁾: off-by-one layer indexing), `reused_delta` (the
   output layer's or the next layer's δ used at layer l without backpropagating it),
   `reshape` (the same numbers in another shape), `shape`.
3. Whole-gradient conventions: `convention`, every array matches exactly under another
   convention (summed loss, no ½, another L2 form, δ without the 1/m): correct code,
   declared wrongly; tried before any per-layer rule.  When the candidate gives its loss,
   that loss must be the other convention's too (gradients ×m next to a mean loss are a
   bug: the gradient of no loss the code computes).  The convention named is the
   smallest change: fields that make no difference here (bce_outputs for mse, l2 when
   λ = 0) stay as declared.
4. Values: `transposed_square`, `l2_missing`, `l2_halved` (reg·W where reg·ΣW² needs
   2·reg·W), `l2_doubled`, `l2_on_biases`, `l2_scale_n` (λ/(2n)ΣW² differentiated with the
   batch's m for the training set's n, or another count), `missing_fprime`,
   `fprime_at_a` (at the layer where the error enters, the output layer's included:
   sigmoid_backward(dA, A) where the cache holds Z), `wrong_fprime_formula` (σ′ = σ,
   tanh′ = 1 − tanh, a sigmoid's formula for a tanh layer, relu′ = relu, leaky ReLU
   without its slope), `mask_from_grad` (ReLU's mask from dA > 0 instead of Z > 0),
   `output_extra_fprime` (sigmoid + bce or softmax + cce times f′ once more),
   `output_missing_fprime`, `dW_from_z`, `db_one_example` (at ∂L/∂z's scale or at the
   m× scale of a dZ without the 1/m), `factor` (a constant factor m, 1/m, m/n_x (m read
   from the wrong axis of X), 2, ½, K, 1/K, −1 or a product), `factor_unnamed`.
5. Where the error sits, when nothing predicts it: `roundoff`, `propagated` (a wrong δ
   above spreads here), `separate` (the layer above is right: a second mistake),
   `enters_here`.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Callable, Iterator, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import _validate as _v
from jaxmlp import activations as _act
from jaxmlp.oracle.containers import check_numbered
from jaxmlp.oracle.reference import _named
from jaxmlp.oracle.conventions import CONVENTIONS, FIELDS, Convention
from jaxmlp.oracle.report import Entry, OracleReport, measure, real_array, summary, sup

__all__ = ["compare", "gradients_from", "Rule", "RULES", "Context"]

_OUTPUT_DELTA = {("identity", "mse"): "2(ŷ − y)/(m·K)", ("identity", "sse"): "(ŷ − y)/m",
                 ("sigmoid", "bce"): "(ŷ − y)/(m·K)", ("softmax", "cce"): "(ŷ − y)/m"}


# --------------------------------------------------------------------------- inputs

def _array_list(d: Mapping, key: str, owner: str, n: Optional[int]) -> list:
    value = d[key]
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{owner}[{key!r}] must be a list with one array per layer, "
                        f"got {type(value).__name__}")
    if n is not None and len(value) != n:
        raise ValueError(f"{owner}[{key!r}] has {len(value)} entries but the reference has "
                         f"{n} layers")
    return [real_array(v, f"{owner}[{key!r}][{l}]") for l, v in enumerate(value)]


def _numbered(d: Mapping, prefix: str) -> Optional[list]:
    """d[prefix + "1"], d[prefix + "2"], … while present; None if there is no "…1"."""
    out, l = [], 1
    while f"{prefix}{l}" in d:
        out.append(d[f"{prefix}{l}"])
        l += 1
    return out or None


def _check_layer_keys(candidate: Mapping, L: int) -> None:
    """A 1-based gradient dict has exactly the reference's L layers: ValueError naming the
    first extra or missing key."""
    prefix = "d" if _numbered(candidate, "dW") else ""
    w, b = prefix + "W", prefix + "b"
    if _numbered(candidate, w) is None and _numbered(candidate, b) is None:
        return  # not numbered: gradients_from says what it expected
    check_numbered(candidate, w, b)
    names = ", ".join(f"{w}{l}" for l in range(1, L + 1))
    if f"{w}{L + 1}" in candidate:
        raise ValueError(f"your gradient dict has {w + str(L + 1)!r} but the network has "
                         f"{L} layer{'s' * (L > 1)} ({names})")
    if f"{w}{L}" not in candidate:
        have = len(_numbered(candidate, w) or [])
        raise ValueError(f"your gradient dict has no {w + str(L)!r}: the network has {L} "
                         f"layers ({names}), your dict {have}")


def _article(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def gradients_from(result, weights=None, biases=None) -> dict:
    """Your function's gradients as the dict `compare` takes: {"dW", "db"[, "loss", "delta"]}.

    Accepted forms (lists have one array per layer, 1-based names are layer l − 1):
      - {"dW": [...], "db": [...]} (optionally "loss", "delta") — returned as is;
      - {"dW1": …, "db1": …, …} (deeplearning.ai's grads) or {"W1": …, "b1": …, …}
        (CS231n's grads dict), optionally with "loss"/"cost";
      - a pair of lists (dW, db) or (db, dW) — Nielsen's backprop returns
        (nabla_b, nabla_w) — told apart by `weights`' shapes (or, without weights, by
        which list holds the 2-D arrays of more than one column);
      - (loss, one of the above), or (loss, dW_list, db_list) (scikit-learn's
        `_backprop` returns loss, coef_grads, intercept_grads).

    Raises:
      TypeError: anything else, saying what was received.
    """
    def lists(a, b):
        a, b = list(a), list(b)
        if weights is not None and len(a) == len(weights):
            shapes = [np.shape(W) for W in weights]
            if [np.shape(v) for v in a] == shapes:
                return a, b
            if [np.shape(v) for v in b] == shapes:
                return b, a
        two_d = lambda xs: all(np.ndim(v) == 2 and min(np.shape(v)) > 1 for v in xs)  # noqa: E731
        if two_d(b) and not two_d(a):
            return b, a
        return a, b

    loss = None
    if isinstance(result, tuple) and len(result) in (2, 3) and not isinstance(
            result[0], (list, tuple, Mapping)) and np.ndim(result[0]) == 0:
        loss, rest = result[0], result[1:]
        result = rest[0] if len(rest) == 1 else tuple(rest)
    if isinstance(result, Mapping):
        if "dW" in result and "db" in result:
            out = dict(result)
        else:
            prefix = "d" if _numbered(result, "dW") else ""
            check_numbered(result, prefix + "W", prefix + "b")
            dW = _numbered(result, "dW") or _numbered(result, "W")
            db = _numbered(result, "db") or _numbered(result, "b")
            if dW is None or db is None:
                raise TypeError(f"a gradient dict must have 'dW' and 'db' lists, or 1-based "
                                f"keys dW1, db1, … (deeplearning.ai) or W1, b1, … (CS231n); "
                                f"got keys {sorted(map(str, result))}")
            out = {"dW": dW, "db": db}
            for key in ("loss", "cost"):
                if key in result and "loss" not in out:
                    out["loss"] = result[key]
    elif isinstance(result, (list, tuple)) and len(result) == 2 and all(
            isinstance(v, (list, tuple)) for v in result):
        dW, db = lists(*result)
        out = {"dW": dW, "db": db}
    else:
        raise TypeError(
            f"cannot read gradients from {_article(type(result).__name__)}: return {{'dW': [...], "
            f"'db': [...]}}, a dict with dW1, db1, … or W1, b1, …, a pair of lists (dW, db), "
            f"or any of these after the loss")
    if loss is not None and out.get("loss") is None:
        out["loss"] = loss
    return out


# --------------------------------------------------------------------------- context

class _Ref:
    """The reference, and what the rules need in jaxmlp's terms (None where absent)."""

    def __init__(self, reference):
        if not isinstance(reference, Mapping):
            raise TypeError(f"reference must be the dict from reference_gradients, "
                            f"got {type(reference).__name__}")
        for key in ("dW", "db"):
            if key not in reference:
                raise ValueError(f"reference has no {key!r}; pass the dict returned by "
                                 f"reference_gradients")
        f64 = lambda xs: [a.astype(np.float64) for a in xs]  # noqa: E731
        self.dW = f64(_array_list(reference, "dW", "reference", None))
        self.L = len(self.dW)
        self.db = f64(_array_list(reference, "db", "reference", self.L))
        self.delta = (f64(_array_list(reference, "delta", "reference", self.L))
                      if "delta" in reference else None)
        conv = reference.get("convention")
        if conv is None:
            layout = reference.get("layout", "batch_first")
            if layout not in ("batch_first", "features_first"):
                raise ValueError(f"reference['layout'] must be 'batch_first' or "
                                 f"'features_first', got {layout!r}")
            conv = CONVENTIONS["jaxmlp"] if layout == "batch_first" else Convention(
                data="features_first")
        if not isinstance(conv, Convention):
            raise TypeError(f"reference['convention'] must be a Convention, "
                            f"got {type(conv).__name__}")
        self.conv = conv
        self.model = reference.get("model")
        self.i = reference.get("internals")
        loss = reference.get("loss")
        self.loss = float(loss) if isinstance(loss, (int, float)) else math.nan
        if self.i is not None:
            self.m, self.K = self.i.m, self.i.K
        elif self.delta is not None:
            self.m = self.delta[0].shape[1 if conv.features_first else 0]
            self.K = self.dW[-1].shape[1 if conv.weights == "in_out" else 0]
        else:
            self.m, self.K = None, None

    def get(self, q):
        return getattr(self, q)

    # conversions from jaxmlp's terms (batch-first, W (n_out, n_in)) to the user's
    def user(self, q: str, l: int, arr: np.ndarray) -> np.ndarray:
        if q == "dW":
            return arr.T if self.conv.weights == "in_out" else arr
        if q == "db":
            return arr.reshape(self.db[l].shape) if arr.size == self.db[l].size else arr
        d = arr * self.conv.delta_scale(self.m)
        return d.T if self.conv.features_first else d

    def from_delta(self, q: str, l: int, delta: np.ndarray, a_in=None, penalty=True):
        """dW, db or δ of layer l in the user's shapes, made from a batch-first δ."""
        i = self.i
        if q == "dW":
            a_in = (i.x if l == 0 else i.a[l - 1]) if a_in is None else a_in
            dW = delta.T @ a_in
            if penalty and dW.shape == i.W[l].shape:
                dW = dW + 2 * i.c * i.W[l]
            return self.user("dW", l, dW)
        if q == "db":
            return self.user("db", l, delta.sum(axis=0))
        return self.user("delta", l, delta)


@dataclasses.dataclass
class Context:
    """What a rule sees: the reference, the candidate (q → list of arrays in the user's
    shapes), the verdict per entry, the layer where the error enters, tolerances, and
    `alternative`, a convention under which the whole candidate matches (or None)."""

    ref: _Ref
    cand: dict
    measures: dict
    first_bad: Optional[int]
    rtol: float
    atol: float
    alternative: Optional[tuple] = None  # (Convention, {q: [arrays]}, factor)

    @property
    def tol(self) -> float:
        return max(100 * self.rtol, 1e-4)

    def close(self, c, r) -> bool:
        if r is None or c.shape != r.shape or not np.all(np.isfinite(c)):
            return False
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        return float(np.max(np.abs(c - r), initial=0.0)) <= self.atol + self.tol * scale

    def ok(self, q: str, l: int) -> bool:
        return self.measures[q][l].ok

    def layer_ok(self, l: int) -> bool:
        return all(self.measures[q][l].ok for q in self.measures)

    def delta_ok(self, l: int) -> bool:
        """Layer l's δ is right: its db (and delta, if given) match."""
        return all(self.measures[q][l].ok for q in ("db", "delta") if q in self.measures)

    @property
    def full(self) -> bool:
        """The reference carries z, a, δ and W (it came from reference_gradients)."""
        return self.ref.i is not None


class Rule(NamedTuple):
    """One diagnosis: `applies(ctx, q, l, c)` → bool; `predict(ctx, q, l, c)` yields
    (predicted candidate or None, message); the rule fires on the first prediction that
    matches c (a None prediction fires on `applies` alone)."""

    name: str
    applies: Callable
    predict: Callable


# --------------------------------------------------------------------------- rules

def _finite(ctx, q, l, c):
    return bool(np.all(np.isfinite(c)))


def _same_shape(ctx, q, l, c):
    return c.shape == ctx.ref.get(q)[l].shape and _finite(ctx, q, l, c)


def _other_shape(ctx, q, l, c):
    return c.shape != ctx.ref.get(q)[l].shape and _finite(ctx, q, l, c)


def _nonfinite(ctx, q, l, c):
    yield None, ("contains NaN or Inf: an overflow (exp of a large z?) or log(0) in the "
                 "loss? (jaxmlp computes bce/cce from the logits z)")


def _value_text(ctx, q, l, c) -> str:
    """The first value rule explaining same-shaped c, as text ("" if none)."""
    name, text = _diagnose(ctx, q, l, c, _VALUE_RULES)
    return text if name not in _FALLBACK_NAMES else ""


def _transposed(ctx, q, l, c):
    r = ctx.ref.get(q)[l]
    text = f"transposed: shape mismatch: expected {r.shape}, got {c.shape}"
    if ctx.close(c.T, r):
        text += "; candidate.T matches the reference"
    else:
        inner = _value_text(ctx, q, l, c.T)
        text += f"; after .T: {inner}" if inner else ""
    conv = ctx.ref.conv
    if q == "dW":
        text += (" (W is (n_in, n_out) in your code? then pass convention='cs231n' or "
                 "'sklearn', or a Convention with weights='in_out'"
                 if conv.weights == "out_in" else
                 " (your W is (n_out, n_in)? then pass a convention with weights='out_in', "
                 "e.g. 'jaxmlp', 'deeplearning_ai', 'nielsen'") + \
            f"; convention {conv.name!r} wants dW {r.shape})"
    elif q == "delta":
        text += f" (convention {conv.name!r} wants δ as {r.shape}: data={conv.data!r})"
    yield None, text


def _is_transposed(ctx, q, l, c):
    r = ctx.ref.get(q)[l]
    return c.ndim == 2 and r.ndim == 2 and c.shape == r.shape[::-1] and c.shape != r.shape


def _db_not_summed_applies(ctx, q, l, c):
    m, r = ctx.ref.m, ctx.ref.db[l]
    return (q == "db" and m is not None and c.ndim == 2 and c.shape != r.shape
            and c.shape in ((r.size, m), (m, r.size)))


def _db_not_summed(ctx, q, l, c):
    m, r = ctx.ref.m, ctx.ref.db[l]
    n = r.size
    axis = 1 if c.shape == (n, m) and (n != m or ctx.ref.conv.features_first) else 0
    text = (f"db not summed over the batch: expected {r.shape}, got {c.shape} (one entry "
            f"per example); db = Σ δ over the m = {m} examples")
    if ctx.close(c.sum(axis=axis).reshape(r.shape), r):
        text += ", and then it matches"
    yield None, text


def _all_summed_applies(ctx, q, l, c):
    r = ctx.ref.db[l]
    return q == "db" and c.size == 1 and r.size != 1


def _all_summed(ctx, q, l, c):
    r = ctx.ref.db[l]
    text = (f"db is one number, expected {r.shape}: summed over the units as well as over "
            f"the examples (np.sum(dZ) with no axis); db = Σ δ over the batch only, one "
            f"entry per unit")
    if ctx.close(np.reshape(c, ()), np.sum(r)):
        text += " (your number is the sum of the reference's entries)"
    yield None, text


def _per_unit_applies(ctx, q, l, c):
    m, r = ctx.ref.m, ctx.ref.db[l]
    return (q == "db" and m is not None and c.size == m and r.size != m
            and not _all_summed_applies(ctx, q, l, c))


def _per_unit(ctx, q, l, c):
    r = ctx.ref.db[l]
    yield None, (f"shape mismatch: expected {r.shape}, got {c.shape}: one value per example "
                 f"— summed over the units instead of over the batch?")


def _wrong_layer_input(ctx, q, l, c):
    i = ctx.ref.i
    d = i.delta[l]
    own = "x" if l == 0 else f"a{sup(l - 1)}"
    yield (ctx.ref.from_delta("dW", l, d, a_in=i.a[l], penalty=False),
           f"dW of layer {l} uses a{sup(l)} (this layer's own output) instead of its input "
           f"{own}: off-by-one layer index (dW{sup(l)} = δ{sup(l)}ᵀ·{own})")
    if l >= 1:
        a_in = i.x if l == 1 else i.a[l - 2]
        yield (ctx.ref.from_delta("dW", l, d, a_in=a_in, penalty=False),
               f"dW of layer {l} uses {'x' if l == 1 else 'a' + sup(l - 2)} (the input of "
               f"layer {l - 1}) instead of {own}: off-by-one layer index")


def _reused_delta(ctx, q, l, c):
    i, L = ctx.ref.i, ctx.ref.L
    if l >= L - 1:
        return
    for k in sorted({L - 1, l + 1}, reverse=True):
        what = "the output layer's δ" if k == L - 1 else f"layer {k}'s δ"
        yield (ctx.ref.from_delta(q, l, i.delta[k]),
               f"layer {l} uses {what} as its own, without backpropagating it through "
               f"W{sup(l + 1)}ᵀ and f′(z{sup(l)}): δ{sup(l)} = (W{sup(l + 1)}ᵀδ{sup(l + 1)}) "
               f"⊙ f′(z{sup(l)}) must be computed for each layer")


def _reshape_applies(ctx, q, l, c):
    return c.size == ctx.ref.get(q)[l].size and c.shape != ctx.ref.get(q)[l].shape


def _reshape(ctx, q, l, c):
    r = ctx.ref.get(q)[l]
    head = f"shape mismatch: expected {r.shape}, got {c.shape}"
    v = c.reshape(r.shape)
    if ctx.close(v, r):
        yield None, (f"{head}: same values, only the shape differs (reshape to {r.shape}"
                     + (", e.g. keepdims=True" if len(r.shape) == 2 and r.shape[1] == 1 else "")
                     + ")")
        return
    inner = _value_text(ctx, q, l, v)
    yield None, f"{head}; after reshaping: {inner}" if inner else head


def _shape(ctx, q, l, c):
    yield None, f"shape mismatch: expected {ctx.ref.get(q)[l].shape}, got {c.shape}"


def _transposed_square_applies(ctx, q, l, c):
    return c.ndim == 2 and c.shape[0] == c.shape[1] and c.shape[0] > 1 and _same_shape(
        ctx, q, l, c)


def _transposed_square(ctx, q, l, c):
    yield (ctx.ref.get(q)[l].T,
           "transposed: candidate.T matches the reference (a square matrix hides the "
           "transpose; dW is (n_out, n_in): δᵀ·a_prev batch-first, δ·a_prevᵀ features-first"
           + (", as (n_in, n_out) in your convention" if ctx.ref.conv.weights == "in_out"
              else "") + ")")


def _convention(ctx, q, l, c):
    conv, preds, factor = ctx.alternative
    yield (preds[q][l] if q in preds else None), _convention_text(ctx, conv, factor)


def _convention_text(ctx, alt: Convention, factor) -> str:
    decl = ctx.ref.conv
    loss = ctx.ref.i.loss
    unused = {"labels"} | ({"squared"} if loss not in ("mse", "sse") else set()) | (
        {"bce_outputs"} if loss != "bce" else set())
    diffs = [f"{f}={getattr(alt, f)!r} (declared {getattr(decl, f)!r})" for f in FIELDS
             if getattr(alt, f) != getattr(decl, f) and f not in unused]
    how = f": {_factor_words(factor, ctx)}" if factor is not None else ""
    return (f"every gradient matches exactly under another convention, {', '.join(diffs)}"
            f"{how}; that is {alt.describe(loss, _n_given(ctx.ref.i))}. "
            f"Your code is consistent: if that is your "
            f"convention, pass convention={alt.call()}")


def _factor_words(f: float, ctx) -> str:
    m, K = ctx.ref.m, ctx.ref.K
    for value, words in ((m, f"×m (m = {m}): the loss summed over the batch, not averaged"),
                         (1 / m if m else None, f"×1/m (m = {m}): averaged where the "
                                                f"declared loss sums"),
                         (2.0, "×2: no ½ in the squared error"),
                         (0.5, "×½: a ½ in the squared error"),
                         (K, f"×K (K = {K}): summed over the outputs, not averaged"),
                         (1 / K if K else None, f"×1/K (K = {K}): averaged over the outputs")):
        if value and abs(f - value) <= 1e-9 * abs(value):
            return f"your data gradients are {words}"
    return f"your data gradients are {f:.6g}× the declared ones"


def _l2_applies(ctx, q, l, c):
    return ctx.full and ctx.ref.i.c > 0 and _same_shape(ctx, q, l, c)


def _n_given(i) -> Optional[int]:
    """n_train when it is not the batch's m (for `Convention.describe`), else None."""
    n = getattr(i, "n_train", None)
    return None if n is None or n == i.m else n


def _n_train(i) -> int:
    """The n of a λ/(2n)ΣW² penalty: n_train, or m when none was passed."""
    return getattr(i, "n_train", None) or i.m


#: How each preset spells the L2 strength.
_L2_SYMBOL = {"cs231n": "reg", "deeplearning_ai": "lambd", "nielsen": "lmbda",
              "sklearn": "alpha"}


def _l2_forms(ctx) -> tuple:
    """(penalty, its gradient, half that gradient, "λ = …[, n = …]") in the convention's
    words, e.g. ("reg·ΣW²", "2·reg·W", "reg·W", "reg = 0.3")."""
    i, conv = ctx.ref.i, ctx.ref.conv
    s = _L2_SYMBOL.get(conv.name, "λ")
    value = f"{s} = {i.l2:g}"
    if conv.l2 == "half":
        return f"({s}/2)·ΣW²", f"{s}·W", f"{s}·W/2", value
    if conv.l2 == "full":
        return f"{s}·ΣW²", f"2·{s}·W", f"{s}·W", value
    n = _n_train(i)
    v = "m" if n == i.m else "n"
    value += f", m = {n}, the batch" if v == "m" else f", n = n_train = {n}"
    return f"{s}/(2{v})·ΣW²", f"({s}/{v})·W", f"{s}/(2{v})·W", value


def _l2_grad(ctx) -> str:
    _, grad, _, value = _l2_forms(ctx)
    return f"{grad} ({value})"


def _l2_missing(ctx, q, l, c):
    if q == "dW":
        i = ctx.ref.i
        yield (ctx.ref.user("dW", l, i.data_dW[l]),
               f"the L2 term is missing from dW of layer {l}: add {_l2_grad(ctx)} (the "
               f"penalty's gradient; weights only)")


def _l2_halved(ctx, q, l, c):
    if q == "dW":
        i = ctx.ref.i
        penalty, grad, half, value = _l2_forms(ctx)
        why = (": the 2 from the derivative of W² is missing" if ctx.ref.conv.l2 == "full"
               else ": the ½ of the penalty kept in its derivative?")
        yield (ctx.ref.user("dW", l, i.data_dW[l] + i.c * i.W[l]),
               f"the L2 gradient in dW of layer {l} is half your convention's: {penalty} "
               f"has gradient {grad}, yours is {half}{why} ({value})")


def _l2_doubled(ctx, q, l, c):
    if q == "dW":
        i = ctx.ref.i
        penalty, grad, _, value = _l2_forms(ctx)
        yield (ctx.ref.user("dW", l, i.data_dW[l] + 4 * i.c * i.W[l]),
               f"the L2 gradient is counted twice in dW of layer {l}: {penalty} has "
               f"gradient {grad}, to be added once ({value})")


def _l2_on_biases(ctx, q, l, c):
    if q == "db":
        i = ctx.ref.i
        r = ctx.ref.db[l]
        yield (r + (2 * i.c * i.b[l]).reshape(r.shape),
               f"the L2 penalty is applied to the biases of layer {l}: db has "
               f"{_l2_grad(ctx).replace('W', 'b')} added; L2 regularises weights only")


def _l2_scale_n_applies(ctx, q, l, c):
    return q == "dW" and _l2_applies(ctx, q, l, c) and ctx.ref.conv.l2 == "half_m"


def _l2_scale_n(ctx, q, l, c):
    """A λ/(2n)ΣW² penalty whose gradient divides by another count d: (λ/d)·W where the
    convention wants (λ/n)·W, n = n_train (default m).  d is read off the candidate: its
    dW minus the data part, over W; it must be a whole number ≥ 2 other than n."""
    i = ctx.ref.i
    m, n = i.m, _n_train(i)
    s = _L2_SYMBOL.get(ctx.ref.conv.name, "λ")
    W = i.W[l]
    mine = c.T if ctx.ref.conv.weights == "in_out" else c
    ww = float(np.sum(W * W))
    if ww == 0:
        return
    k = float(np.sum((mine - i.data_dW[l]) * W)) / ww  # the candidate's penalty gradient / W
    if not (k > 0 and math.isfinite(k)):
        return
    d = i.l2 / k
    if not math.isfinite(d) or d > 1e12:
        return
    d_int = round(d)
    if d_int < 2 or d_int == n or abs(d - d_int) > 1e-3 * d:
        return
    if d_int == m:
        text = (f"the L2 gradient in dW of layer {l} is divided by m = {m} (the batch) where "
                f"your convention divides by n = {n} (the training set, n_train): "
                f"{s}/(2n)·ΣW² has gradient ({s}/n)·W, not ({s}/m)·W ({s} = {i.l2:g})")
    elif n == m:
        text = (f"the L2 gradient in dW of layer {l} is divided by {d_int} where your "
                f"convention divides by m = {m} (the batch): ({s}/{d_int})·W, not "
                f"({s}/m)·W ({s} = {i.l2:g}); if {d_int} is your training-set size n (a "
                f"penalty {s}/(2n)·ΣW²), pass n_train={d_int} (jaxmlp check: --n-train "
                f"{d_int})")
    else:
        text = (f"the L2 gradient in dW of layer {l} is divided by {d_int} where your "
                f"convention divides by n = {n} (the training set, n_train): "
                f"({s}/{d_int})·W, not ({s}/n)·W ({s} = {i.l2:g})")
    yield ctx.ref.user("dW", l, i.data_dW[l] + (i.l2 / d_int) * W), text


def _entering(ctx, q, l, c):
    return ctx.full and l == ctx.first_bad and _same_shape(ctx, q, l, c)


def _act_df(name: str, z: np.ndarray, a: np.ndarray) -> np.ndarray:
    act = _act.get(name)
    with jax.enable_x64(True):
        return np.asarray(act.df(jnp.asarray(z), jnp.asarray(a)), np.float64)


def _missing_fprime(ctx, q, l, c):
    i, L = ctx.ref.i, ctx.ref.L
    if l < L - 1:
        g = i.delta[l + 1] @ i.W[l + 1]  # ∂L/∂a⁽ˡ⁾
        yield (ctx.ref.from_delta(q, l, g),
               f"δ of layer {l} is missing the activation derivative f′(z): it matches "
               f"W{sup(l + 1)}ᵀδ{sup(l + 1)} without the ⊙ f′(z{sup(l)})")


def _fprime_at_a(ctx, q, l, c):
    i, L, model = ctx.ref.i, ctx.ref.L, ctx.ref.model
    if model is None:
        return
    if l < L - 1:
        name = model.hidden_activations[l]
        act = _act.resolve(name)
        g = i.delta[l + 1] @ i.W[l + 1]
        with jax.enable_x64(True):
            a = jnp.asarray(i.a[l])
            d_at_a = np.asarray(act.df(a, act.f(a)), np.float64)
        yield (ctx.ref.from_delta(q, l, g * d_at_a),
               f"δ of layer {l} has f′ evaluated at a = f(z) instead of at z (e.g. "
               f"{name}′(A) where {name}′(Z), or a(1 − a) written as σ(a)(1 − σ(a)))")
    elif model.output != "softmax":
        # the output layer: δ = ∂L/∂ŷ ⊙ f′(z), written with f′ at ŷ instead
        act = _act.resolve(model.output)
        name = getattr(model.output, "name", model.output)
        with jax.enable_x64(True):
            z, a = jnp.asarray(i.z[l]), jnp.asarray(i.a[l])
            d_at_z = np.asarray(act.df(z, a), np.float64)
            d_at_a = np.asarray(act.df(a, act.f(a)), np.float64)
        if np.any(np.abs(d_at_z) < 1e-300) or np.allclose(d_at_z, d_at_a):
            return
        yield (ctx.ref.from_delta(q, l, i.delta[l] * (d_at_a / d_at_z)),
               f"the output δ has f′ = {name}′ evaluated at a = ŷ = f(z) instead of at z (e.g. "
               f"sigmoid_backward(dA, A) where the cache holds Z, or σ(ŷ)(1 − σ(ŷ)) "
               f"for ŷ(1 − ŷ))")


#: Wrong derivative formulas students write for a hidden activation, as functions of
#: (z, a): (the wrong f′, what it is).
_WRONG_FPRIME = {
    "sigmoid": ((lambda z, a: a, "σ′ written as σ(z) = a; σ′(z) = a(1 − a)"),
                (lambda z, a: 1 - a * a, "σ′ written as tanh′'s 1 − a²; σ′(z) = a(1 − a)"),
                (lambda z, a: 1 - a, "σ′ written as 1 − a: the factor a of a(1 − a) is "
                                     "missing")),
    "tanh": ((lambda z, a: 1 - a, "tanh′ written as 1 − a (1 − tanh): the square is missing; "
                                  "tanh′(z) = 1 − a²"),
             (lambda z, a: a * (1 - a), "tanh′ written as σ′'s a(1 − a); tanh′(z) = 1 − a²"),
             (lambda z, a: 1 - z * z, "tanh′ written as 1 − z²: the formula in terms of "
                                      "the output applied to z; tanh′(z) = 1 − a²")),
    "relu": ((lambda z, a: a, "relu′ written as relu(z) = a: multiplied by the activation "
                              "instead of the mask (z > 0)"),),
    "leaky_relu": ((lambda z, a: (z > 0).astype(np.float64), "leaky_relu′ written as "
                    "relu′'s mask (z > 0): the slope 0.01 for z ≤ 0 is missing"),),
}


def _wrong_fprime_formula(ctx, q, l, c):
    i, L, model = ctx.ref.i, ctx.ref.L, ctx.ref.model
    if model is None or l >= L - 1:
        return
    name = model.hidden_activations[l]
    name = getattr(name, "name", name)
    g = i.delta[l + 1] @ i.W[l + 1]
    for wrong, words in _WRONG_FPRIME.get(name, ()):
        yield (ctx.ref.from_delta(q, l, g * wrong(i.z[l], i.a[l])),
               f"δ of layer {l} uses the wrong derivative: {words}")


def _mask_from_grad(ctx, q, l, c):
    """ReLU's mask taken from the incoming gradient (dA > 0) instead of from z."""
    i, L, model = ctx.ref.i, ctx.ref.L, ctx.ref.model
    if model is None or l >= L - 1:
        return
    name = model.hidden_activations[l]
    if getattr(name, "name", name) not in ("relu", "leaky_relu"):
        return
    g = i.delta[l + 1] @ i.W[l + 1]
    slope = 0.01 if getattr(name, "name", name) == "leaky_relu" else 0.0
    yield (ctx.ref.from_delta(q, l, g * np.where(g > 0, 1.0, slope)),
           f"δ of layer {l}: the ReLU mask is taken from the incoming gradient (dA > 0, "
           f"dA = W{sup(l + 1)}ᵀδ{sup(l + 1)}) instead of from z: dZ = dA ⊙ (Z > 0)")


def _output_extra_fprime(ctx, q, l, c):
    i, L, model = ctx.ref.i, ctx.ref.L, ctx.ref.model
    if l != L - 1 or model is None:
        return
    if model.loss == "bce":
        d_out = _act_df("sigmoid", i.z[l], i.a[l])
        yield (ctx.ref.from_delta(q, l, i.delta[l] * d_out),
               f"output layer: δ multiplied by f′(z) once more; for sigmoid + bce, "
               f"δ = {_OUTPUT_DELTA[('sigmoid', 'bce')]} already includes it")
    elif model.loss == "cce":
        a = i.a[l]
        yield (ctx.ref.from_delta(q, l, i.delta[l] * a * (1 - a)),
               "output layer: δ multiplied by an extra softmax ‘derivative’ a(1 − a); for "
               "softmax + cce, δ = (ŷ − y)/m already includes the softmax's Jacobian")


def _output_missing_fprime(ctx, q, l, c):
    i, L, model = ctx.ref.i, ctx.ref.L, ctx.ref.model
    if l != L - 1 or model is None or model.output in ("identity", "softmax") or \
            model.loss in ("bce", "cce"):
        return
    d_out = _act_df(model.output, i.z[l], i.a[l])
    yield (ctx.ref.from_delta(q, l, i.delta[l] / d_out) if np.all(d_out != 0) else None,
           f"output layer: δ is missing the output activation's derivative f′(z): "
           f"δ = ∂L/∂ŷ ⊙ {model.output}′(z)")


def _dW_from_z(ctx, q, l, c):
    if q == "dW" and l >= 1:
        i = ctx.ref.i
        yield (ctx.ref.from_delta("dW", l, i.delta[l], a_in=i.z[l - 1]),
               f"dW uses layer {l - 1}'s z (before the activation) instead of its output "
               f"a = f(z) as this layer's input")


def _db_one_example(ctx, q, l, c):
    i = ctx.ref.i
    if q == "db" and i.m > 1 and c.size == i.delta[l].shape[1]:
        # δ of one example, at ∂L/∂z's scale or at the m× scale of code that divides by m
        # only in dW (deeplearning.ai's dZ, scikit-learn's deltas)
        for scale in (1.0, float(i.m)):
            d = scale * i.delta[l]
            k = int(np.argmin(np.max(np.abs(d - c.reshape(1, -1)), axis=1)))
            yield (ctx.ref.user("db", l, d[k]),
                   f"db is the δ of one example (#{k}) instead of the "
                   f"sum (or mean) of δ over the "
                   f"batch (e.g. dZ[:, 0:1] or delta[0] where np.sum(…, axis=…) belongs)")


def _factor_of(ctx, c, r) -> Optional[float]:
    c, r = c.ravel(), r.ravel()
    rr = float(r @ r)
    if rr == 0:
        return None
    f = float(c @ r) / rr
    if f == 0 or not math.isfinite(f):
        return None
    resid = float(np.linalg.norm(c - f * r)) / (abs(f) * math.sqrt(rr))
    if resid > ctx.tol or abs(f - 1) <= 1e-2:  # near 1: a small error, not a factor
        return None
    return f


def _factor(ctx, q, l, c):
    r = ctx.ref.get(q)[l] if q != "loss" else np.array([ctx.ref.loss])
    f = _factor_of(ctx, c, r)
    if f is not None:
        text = _named_factor(ctx, f, q)
        if text:
            yield f * r, text


def _factor_unnamed(ctx, q, l, c):
    r = ctx.ref.get(q)[l]
    f = _factor_of(ctx, c, r)
    if f is not None and c.size >= 2:  # any single number is a multiple of another
        yield (f * r, f"{f:.6g}× the reference (a constant factor, none of the usual m, 2, "
                      f"½, K, −1): a scaling mistake, e.g. a learning rate or normalisation "
                      f"folded into the gradient?")


def _named_factor(ctx, f, q) -> str:
    m, K = ctx.ref.m, ctx.ref.K
    half = ("the ½ in the loss (sse vs mse convention) / the factor 2 of the square's "
            "derivative: sse = ½(ŷ − y)² has derivative ŷ − y, mse = (ŷ − y)² has 2(ŷ − y)")
    base = []
    if m is not None and m > 1:
        base.append(("m", m, f"summed over the batch of m = {m} instead of averaging?" + (
            " (or your δ leaves out the 1/m and you divide by m in dW and db instead: "
            "then the gradients can still be right, but δ = ∂L/∂z includes the 1/m; "
            "deeplearning.ai's convention, one_over_m='dW')" if q == "delta" else "")))
        base.append(("1/m", 1 / m, "divided by m twice?" + (
            " (db is the sum of δ over the batch, not its mean: the 1/m already lives in "
            "the output δ)" if q == "db" else "")))
    n_x = None if ctx.ref.i is None else ctx.ref.i.x.shape[1]
    if m is not None and n_x is not None and n_x != m:
        axis = "X.shape[0]" if ctx.ref.conv.features_first else "X.shape[1]"
        base.append(("m/n_x", m / n_x, f"divided by n_x = {n_x} instead of m = {m}: m read "
                                       f"from the wrong axis of X ({axis} is n_x in this "
                                       f"layout)"))
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
    combos += [[a, b] for k, a in enumerate(base) for b in base[k + 1:]
               if (a[0], b[0]) not in inverse]
    combos += [[sign, a, b] for k, a in enumerate(base) for b in base[k + 1:]
               if (a[0], b[0]) not in inverse]
    matches = [combo for combo in combos
               if abs(f - math.prod(v for _, v, _ in combo)) <= 1e-3 * abs(
                   math.prod(v for _, v, _ in combo))]
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


def _rel(ctx, q, l) -> str:
    return f"max rel err {ctx.measures[q][l].rel_err:.2e}"


def _roundoff_applies(ctx, q, l, c):
    return ctx.measures[q][l].rel_err < 1e-3


def _roundoff(ctx, q, l, c):
    low = sorted({str(a.dtype) for a in ctx.cand[q] if a.dtype.kind == "f"
                  and a.dtype.itemsize < 8})
    if low:
        yield None, (f"does not match ({_rel(ctx, q, l)}), but only by round-off: your "
                     f"{low[0]} arithmetic; compare with rtol=1e-4, atol=1e-6 for float32")
    else:
        yield None, (f"does not match ({_rel(ctx, q, l)}), but only slightly: round-off of a "
                     f"lower precision somewhere, an ε (clipped log, ε in a denominator), or "
                     f"a finite-difference gradient?")


def _propagated_applies(ctx, q, l, c):
    fb = ctx.first_bad
    return fb is not None and l < fb and not ctx.delta_ok(fb)


def _propagated(ctx, q, l, c):
    fb = ctx.first_bad
    yield None, (f"does not match: follows from layer {fb} — a wrong δ there propagates to "
                 f"every earlier layer; fix layer {fb} first")


def _separate_applies(ctx, q, l, c):
    fb = ctx.first_bad
    return fb is not None and l < fb


def _separate(ctx, q, l, c):
    fb = ctx.first_bad
    yield None, (f"does not match ({_rel(ctx, q, l)}); layer {fb}'s δ is right (its db "
                 f"matches), so this is a separate mistake, not one propagated from there")


def _enters_here(ctx, q, l, c):
    ref, L, rel = ctx.ref, ctx.ref.L, _rel(ctx, q, l)
    if ctx.first_bad is None or l != ctx.first_bad:
        yield None, f"does not match ({rel})"
    elif q == "dW" and ctx.delta_ok(l):
        yield None, (f"does not match ({rel}): layer {l}'s δ is right (db matches) but dW "
                     f"is not: check dW = δᵀ·a_prev (batch_first) / δ·a_prevᵀ "
                     f"(features_first), with a_prev the previous layer's activation (x for "
                     f"layer 0)")
    elif q == "db" and ctx.measures["dW"][l].ok:
        yield None, (f"does not match ({rel}): dW is right but db is not: db = Σ δ over the "
                     f"batch (features_first: np.sum(dZ, axis=1, keepdims=True))")
    elif l == L - 1:
        model, formula = ref.model, ""
        if model is not None and ref.i is not None:
            pair = (model.output, ref.i.loss)
            formula = _OUTPUT_DELTA.get(pair) or (
                "2(ŷ − y) ⊙ f′(z)/(m·K)" if ref.i.loss == "mse" else "(ŷ − y) ⊙ f′(z)/m")
            formula = (f"; for output={model.output!r}, loss={ref.i.loss!r} in jaxmlp's "
                       f"convention it is {formula} (m = {ref.m}, K = {ref.K})")
            f = ref.i.s * ref.conv.delta_scale(ref.i.m)
            if abs(f - 1.0) > 1e-12:
                formula += (f"; under convention={ref.conv.call()} your δ (dZ, delta) is "
                            f"that ×{f:.6g}")
        yield None, (f"does not match ({rel}): the error enters at the output layer: check "
                     f"its δ = ∂L/∂z{formula}")
    elif any(not ctx.layer_ok(k) for k in range(l)) or l == 0:
        yield None, (f"does not match ({rel}): the error enters at layer {l}, likely in its "
                     f"δ (the activation derivative f′(z{sup(l)}) or the W{sup(l + 1)}ᵀ"
                     f"δ{sup(l + 1)} product)")
    else:
        yield None, (f"does not match ({rel}): the error enters at layer {l}, but the "
                     f"earlier layers are right, so its δ is probably fine (a wrong δ would "
                     f"spread to them): check how dW and db are formed from δ")


def _full_other_shape(ctx, q, l, c):
    return ctx.full and _other_shape(ctx, q, l, c)


def _full_same(ctx, q, l, c):
    return ctx.full and _same_shape(ctx, q, l, c)


def _alt(ctx, q, l, c):
    return ctx.alternative is not None and _finite(ctx, q, l, c)


def _always(ctx, q, l, c):
    return True


_SHAPE_RULES = (
    Rule("shape_transposed", _is_transposed, _transposed),
    Rule("db_not_summed", _db_not_summed_applies, _db_not_summed),
    Rule("db_all_summed", _all_summed_applies, _all_summed),
    Rule("db_per_unit", _per_unit_applies, _per_unit),
    Rule("wrong_layer_input", lambda ctx, q, l, c: q == "dW" and _full_other_shape(
        ctx, q, l, c), _wrong_layer_input),
    Rule("reused_delta", _full_other_shape, _reused_delta),
    Rule("reshape", _reshape_applies, _reshape),
    Rule("shape", _other_shape, _shape),
)

_VALUE_RULES = (
    Rule("transposed_square", _transposed_square_applies, _transposed_square),
    Rule("l2_missing", _l2_applies, _l2_missing),
    Rule("l2_halved", _l2_applies, _l2_halved),
    Rule("l2_doubled", _l2_applies, _l2_doubled),
    Rule("l2_on_biases", _l2_applies, _l2_on_biases),
    Rule("l2_scale_n", _l2_scale_n_applies, _l2_scale_n),
    Rule("missing_fprime", _entering, _missing_fprime),
    Rule("fprime_at_a", _entering, _fprime_at_a),
    Rule("wrong_fprime_formula", _entering, _wrong_fprime_formula),
    Rule("mask_from_grad", _entering, _mask_from_grad),
    Rule("output_extra_fprime", _entering, _output_extra_fprime),
    Rule("output_missing_fprime", _entering, _output_missing_fprime),
    Rule("reused_delta", _full_same, _reused_delta),
    Rule("wrong_layer_input", lambda ctx, q, l, c: q == "dW" and _full_same(ctx, q, l, c),
         _wrong_layer_input),
    Rule("dW_from_z", _full_same, _dW_from_z),
    Rule("db_one_example", _full_same, _db_one_example),
    Rule("factor", _same_shape, _factor),
    Rule("factor_unnamed", _same_shape, _factor_unnamed),
    Rule("roundoff", lambda ctx, q, l, c: _same_shape(ctx, q, l, c) and _roundoff_applies(
        ctx, q, l, c), _roundoff),
    Rule("propagated", _propagated_applies, _propagated),
    Rule("separate", _separate_applies, _separate),
    Rule("enters_here", _always, _enters_here),
)

_FALLBACK_NAMES = frozenset({"roundoff", "propagated", "separate", "enters_here"})

#: Every rule, in the order they are tried.
RULES = ((Rule("nonfinite", lambda ctx, q, l, c: not _finite(ctx, q, l, c), _nonfinite),)
         + _SHAPE_RULES + (Rule("convention", _alt, _convention),) + _VALUE_RULES)


def _diagnose(ctx: Context, q: str, l: int, c: np.ndarray, rules=RULES) -> tuple:
    """(rule name, message) of the first rule explaining candidate c for entry (q, l)."""
    for rule in rules:
        if not rule.applies(ctx, q, l, c):
            continue
        for pred, text in rule.predict(ctx, q, l, c):
            if pred is None or ctx.close(c, pred):
                return rule.name, text
    return "enters_here", f"does not match ({_rel(ctx, q, l)})"


# --------------------------------------------------------------------------- conventions

def _alternatives(ref: _Ref) -> Iterator[Convention]:
    """Conventions that differ from the declared one only in how the loss is scaled and
    penalised (so they give arrays of the same shapes): each preset's scale fields, then
    each single-field change."""
    decl = ref.conv
    layout = {f: getattr(decl, f) for f in ("weights", "data", "labels")}
    seen = {decl}
    for name, preset in CONVENTIONS.items():
        alt = dataclasses.replace(preset, **layout)
        alt = preset if alt == preset else dataclasses.replace(alt, name="custom")
        if alt not in seen:
            seen.add(alt)
            yield alt
    for field in ("reduction", "squared", "bce_outputs", "l2", "one_over_m"):
        for value in FIELDS[field]:
            alt = dataclasses.replace(decl, name="custom", **{field: value})
            if alt not in seen and dataclasses.replace(alt, name=decl.name) != decl:
                seen.add(alt)
                yield alt


def _predict_under(ref: _Ref, alt: Convention, quantities) -> dict:
    """The reference arrays (user's shapes) under `alt`, from the declared reference."""
    i = ref.i
    r = alt.scale(i.loss, i.m, i.K) / i.s if i.s else 1.0
    c = alt.l2_coef(i.l2, i.m, _n_train(i))
    out = {}
    for q in quantities:
        arrays = []
        for l in range(ref.L):
            if q == "dW":
                a = r * i.data_dW[l] + 2 * c * i.W[l]
                arrays.append(a.T if alt.weights == "in_out" else a)
            elif q == "db":
                arrays.append(r * ref.db[l])
            else:
                d = r * i.delta[l] * alt.delta_scale(i.m)
                arrays.append(d.T if alt.features_first else d)
        out[q] = arrays
    return out


def _minimal(ref: _Ref, alt: Convention, quantities, preds, rtol, atol) -> Convention:
    """`alt` with every field that makes no difference here (bce_outputs for a squared
    loss, l2 when λ = 0, …) put back to the declared value, so the report names only the
    fields that matter."""
    decl = ref.conv
    for field in ("reduction", "squared", "bce_outputs", "l2", "one_over_m"):
        if getattr(alt, field) == getattr(decl, field):
            continue
        back = dataclasses.replace(alt, **{field: getattr(decl, field)})
        again = _predict_under(ref, back, quantities)
        if all(measure(a, p, rtol, atol).ok for q in quantities
               for a, p in zip(again[q], preds[q])):
            alt = back
    plain = dataclasses.replace(alt, name="custom")
    for name, preset in CONVENTIONS.items():
        if dataclasses.replace(preset, name="custom") == plain:
            return preset
    # A preset of the same layout that gives the same arrays here (fields this loss does
    # not use may differ: bce_outputs for cce, labels…) is the one to name.
    for name, preset in CONVENTIONS.items():
        if preset == decl or (preset.weights, preset.data) != (decl.weights, decl.data):
            continue
        again = _predict_under(ref, preset, quantities)
        if all(measure(a, p, rtol, atol).ok for q in quantities
               for a, p in zip(again[q], preds[q])) and _same_loss(ref, preset, plain):
            return preset
    return plain


def _same_loss(ref: _Ref, a: Convention, b: Convention) -> bool:
    """a and b give the same loss here (or there is no loss to tell them apart)."""
    if math.isnan(ref.loss):
        return True
    la, lb = _loss_under(ref, a), _loss_under(ref, b)
    return abs(la - lb) <= 1e-12 * max(1.0, abs(la))


def _loss_under(ref: _Ref, alt: Convention) -> float:
    """The reference loss under `alt` (data part rescaled, penalty in alt's form)."""
    i = ref.i
    squares = sum(float(np.sum(W * W)) for W in i.W)
    r = alt.scale(i.loss, i.m, i.K) / i.s if i.s else 1.0
    return r * (ref.loss - i.c * squares) + alt.l2_coef(i.l2, i.m, _n_train(i)) * squares


def _matching_alternative(ref: _Ref, cand: dict, rtol, atol,
                          c_loss: Optional[float] = None) -> Optional[tuple]:
    """(alt, predictions, data factor) for the first convention under which every array of
    the candidate matches (and the declared reference does not), else None.  When the
    candidate reports its loss, that must be alt's loss too: gradients of one convention
    with the loss of another are not a consistent convention but a bug."""
    if ref.i is None:
        return None
    quantities = list(cand)
    for alt in _alternatives(ref):
        preds = _predict_under(ref, alt, quantities)
        if c_loss is not None and not math.isnan(ref.loss) and not measure(
                np.array(c_loss), np.array(_loss_under(ref, alt)), rtol, atol).ok:
            continue
        if all(measure(c, p, rtol, atol).ok for q in quantities
               for c, p in zip(cand[q], preds[q])):
            if all(measure(p, r, rtol, atol).ok for q in quantities
                   for p, r in zip(preds[q], ref.get(q))):
                continue  # indistinguishable here (K = 1, λ = 0, …)
            alt = _minimal(ref, alt, quantities, preds, rtol, atol)
            r = alt.scale(ref.i.loss, ref.i.m, ref.i.K) / ref.i.s
            return alt, preds, (None if r == 1 else r)
    return None


# --------------------------------------------------------------------------- compare

def compare(candidate, reference, *, rtol: float = 1e-6, atol: float = 1e-9) -> OracleReport:
    """Checks your gradients against `reference_gradients` and names the likely mistake.

    Args:
      candidate: your gradients, in any form `gradients_from` reads: {"dW": [...],
        "db": [...]} (one array per layer, shaped like the reference's), optionally
        "delta" (δ per layer) and "loss" (a number); or dW1/db1, W1/b1 dicts, pairs…
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
      diagnosis, rule) and `.loss`; `.diagnosis`; `.convention_match`, set when every
      array matches under another convention (your code is right, the declaration is
      not); `str(report)` is a table plus the diagnosis.  The rules are those of `RULES`,
      in that order (see the module docstring).

    Raises:
      TypeError, ValueError: a candidate or reference of the wrong structure (not a
        dict, missing keys, list lengths that differ from the number of layers,
        non-numeric arrays), or a negative tolerance.
    """
    try:
        rtol = _v.nonneg_real(rtol, "rtol", where="compare")
        atol = _v.nonneg_real(atol, "atol", where="compare")
        ref = _Ref(reference)
        if isinstance(candidate, Mapping) and ("dW" in candidate) != ("db" in candidate):
            missing = "db" if "dW" in candidate else "dW"
            raise ValueError(f"candidate has no {missing!r}: it must be a dict with 'dW' and "
                             f"'db' lists (one array per layer), got keys {sorted(candidate)}")
        if isinstance(candidate, Mapping) and "dW" not in candidate:
            _check_layer_keys(candidate, ref.L)
        if not isinstance(candidate, Mapping) or "dW" not in candidate:
            try:
                candidate = gradients_from(candidate, [ref.user("dW", l, W) for l, W in
                                                       enumerate(ref.i.W)] if ref.i else None)
            except TypeError as e:
                raise TypeError(f"candidate: {e}") from None
        quantities = ["dW", "db"]
        if candidate.get("delta") is not None:
            if ref.delta is None:
                raise ValueError("candidate has 'delta' but the reference has none")
            quantities.append("delta")
        cand = {q: _array_list(candidate, q, "candidate", ref.L) for q in quantities}
    except (TypeError, ValueError) as e:
        raise _named(e, "compare") from None

    measures = {q: [measure(c, r, rtol, atol) for c, r in zip(cand[q], ref.get(q))]
                for q in quantities}
    bad = [l for l in range(ref.L) if not all(measures[q][l].ok for q in quantities)]
    first_bad = max(bad) if bad else None
    c_loss = None
    if candidate.get("loss") is not None:
        try:
            c_loss = float(np.asarray(candidate["loss"], np.float64).reshape(()))
        except (TypeError, ValueError):
            raise TypeError(f"candidate['loss'] must be a number, "
                            f"got {candidate['loss']!r}") from None
        if math.isnan(ref.loss):
            raise ValueError("candidate has 'loss' but the reference has none")
    alt = _matching_alternative(ref, cand, rtol, atol, c_loss) if bad else None
    ctx = Context(ref, cand, measures, first_bad, rtol, atol, alt)

    entries = {}
    for q in quantities:
        rows = []
        for l, (c, r, mm) in enumerate(zip(cand[q], ref.get(q), measures[q])):
            status = "ok" if mm.ok else ("mismatch" if c.shape == r.shape else "shape")
            rule, text = ("", "") if mm.ok else _diagnose(ctx, q, l, c)
            rows.append(Entry(q, l, r.shape, c.shape, mm.abs_err, mm.rel_err, status, text,
                              rule))
        entries[q] = tuple(rows)

    loss_entry = None
    if c_loss is not None:
        mm = measure(np.array(c_loss), np.array(ref.loss), rtol, atol)
        rule, text = ("", "") if mm.ok else _loss_diagnosis(ctx, c_loss)
        loss_entry = Entry("loss", None, (), (), mm.abs_err, mm.rel_err,
                           "ok" if mm.ok else "mismatch", text, rule)

    ok = first_bad is None and (loss_entry is None or loss_entry.ok)
    text = summary(ok, first_bad, entries, loss_entry, ref.L)
    if alt is not None:
        text = (f"no mistake found: your gradients are right for another convention "
                f"({alt[0].call()}); see below\n" + text)
    return OracleReport(
        ok=ok, first_bad_layer=first_bad, dW=entries["dW"], db=entries["db"],
        delta=entries.get("delta", ()), loss=loss_entry, diagnosis=text,
        reference_loss=ref.loss, rtol=rtol, atol=atol, convention=ref.conv.call(),
        convention_match=None if alt is None else alt[0].call())


def _loss_diagnosis(ctx: Context, c: float) -> tuple:
    r = ctx.ref.loss
    if not math.isfinite(c):
        return "nonfinite", "the loss is NaN or Inf: log(0)? compute bce/cce from the logits z"
    i = ctx.ref.i
    alt = ctx.alternative[0] if ctx.alternative is not None else None
    if alt is not None and measure(np.array(c), np.array(_loss_under(ctx.ref, alt)),
                                   ctx.rtol, ctx.atol).ok:
        return "convention", (f"matches the loss under convention={alt.call()}, like your "
                              f"gradients: {_loss_under(ctx.ref, alt):.10g}")
    if i is not None and i.c > 0:
        penalty = i.c * sum(float(np.sum(W * W)) for W in i.W)
        if abs(c - (r - penalty)) <= ctx.atol + ctx.tol * abs(r):
            return "l2_missing", (f"the loss is missing the L2 penalty {penalty:.6g} "
                                  f"({ctx.ref.conv.describe(n_train=_n_given(i)).split('L2 ')[-1]})")
    f = _factor_of(ctx, np.array([c]), np.array([r]))
    if f is not None:
        text = _named_factor(ctx, f, "loss")
        if text:
            return "factor", text
    return "enters_here", f"does not match: {c:.10g} vs the reference {r:.10g}"
