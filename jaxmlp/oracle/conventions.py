"""Conventions: the ways people write the same MLP gradient, declared once.

jaxmlp's own convention (DESIGN.md): W⁽ˡ⁾ is (n_out, n_in), rows of x are examples, the
data loss is a mean over the m examples and that 1/m lives in the output δ, L2 adds
(λ/2)ΣW².  Students write others, all legitimate:

| preset | W | data | loss over the batch | squared error of one example | L2 | 1/m in |
| --- | --- | --- | --- | --- | --- | --- |
| `jaxmlp` | (out, in) | x (m, n_x) | mean | as named: mse (1/K)Σ(ŷ−y)², sse ½Σ(ŷ−y)² | (λ/2)ΣW² | δ |
| `cs231n` | (in, out), z = x W + b | x (m, n_x) | mean | as named | λΣW² (`reg`) | δ (dscores /= N) |
| `deeplearning_ai` | (out, in) | X (n_x, m), b (n_out, 1) | mean | as named | λ/(2m)ΣW² (`lambd`) | dW, db |
| `nielsen` | (out, in) | one column x (n_x, 1) per call | sum | ½Σ(ŷ−y)² | λ/(2m)ΣW² (`lmbda/n`) | δ |
| `sklearn` | (in, out) (`coefs_`) | X (m, n_x) | mean | ½·(1/K)Σ(ŷ−y)² | α/(2m)ΣW² (`alpha`) | δ |

Binary cross-entropy averages over the K outputs in `jaxmlp` and `cs231n`, and sums
over them in the others (the same thing when K = 1).  Categorical cross-entropy always
sums over the classes.

In formulas, with m examples, K outputs, and λ the L2 strength passed as `l2`:

    L = r · Σᵢ ℓᵢ + c · Σ_l ‖W⁽ˡ⁾‖²,   r = 1/m (`reduction="mean"`) or 1 (`"sum"`)
    ℓᵢ (squared) = h · Σₖ (ŷᵢₖ − yᵢₖ)² · (1/K if averaged over outputs)
    c = λ/2 (`l2="half"`), λ (`"full"`), λ/(2m) (`"half_m"`);   ∂/∂W of the penalty = 2c·W

Each convention is therefore a positive factor s on the gradient of one of jaxmlp's
losses plus 2c·W: the oracle computes jaxmlp's manual backprop once and rescales it.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

__all__ = ["Convention", "CONVENTIONS", "resolve", "FIELDS", "base_loss"]

#: Each field and its choices (the first is jaxmlp's).
FIELDS = {
    "weights": ("out_in", "in_out"),
    "data": ("batch_first", "features_first", "per_example"),
    "reduction": ("mean", "sum"),
    "squared": ("as_named", "mean", "half_mean", "sum", "half_sum"),
    "bce_outputs": ("mean", "sum"),
    "l2": ("half", "full", "half_m"),
    "one_over_m": ("delta", "dW"),
    "labels": ("index", "one_hot"),
}

_SQUARED_FACTOR = {"half_sum": 1.0, "sum": 2.0}  # relative to sse's ½Σₖ; /K for the means
_SQUARED_TEXT = {"mean": "(1/K)Σ(ŷ−y)²", "half_mean": "½·(1/K)Σ(ŷ−y)²", "sum": "Σ(ŷ−y)²",
                 "half_sum": "½Σ(ŷ−y)²"}
_L2_TEXT = {"half": "(λ/2)ΣW², gradient λW", "full": "λΣW², gradient 2λW",
            "half_m": "λ/(2m)ΣW², gradient (λ/m)W"}


def base_loss(loss: str) -> str:
    """The jaxmlp loss whose gradient the oracle rescales: sse for squared errors."""
    return "sse" if loss in ("mse", "sse") else loss


@dataclasses.dataclass(frozen=True, init=False)
class Convention:
    """How a user writes weights, data, the loss and its L2 penalty.

    Attributes:
      name: a label for messages ("custom" unless a preset).
      weights: "out_in", W⁽ˡ⁾ of shape (n_out, n_in) (jaxmlp, Nielsen, deeplearning.ai),
        or "in_out", (n_in, n_out) with z = x @ W + b (CS231n, scikit-learn's coefs_).
      data: "batch_first", x (m, n_x), b (n_out,), δ (m, n_out); "features_first",
        x (n_x, m), b (n_out, 1), δ (n_out, m); "per_example", like features_first with
        one column (n_x, 1) per call and the calls' gradients summed (Nielsen).
      reduction: the data loss over the batch: "mean" (1/m) or "sum".
      squared: one example's squared error over its K outputs: "as_named" (loss="mse" is
        (1/K)Σ(ŷ−y)², loss="sse" is ½Σ(ŷ−y)², as in jaxmlp), or, for either name, "mean"
        (1/K)Σ, "half_mean" ½(1/K)Σ, "sum" Σ, "half_sum" ½Σ.
      bce_outputs: one example's binary cross-entropy over its K outputs: "mean" or "sum".
      l2: the penalty on weights (never biases) for strength λ: "half" (λ/2)ΣW², "full"
        λΣW², "half_m" λ/(2m)ΣW² with m the examples in the gradient (or λ/(2n)ΣW² with
        n the training-set size, `reference_gradients(..., n_train=n)`).
      one_over_m: where the batch mean's 1/m lives: "delta" (δ = ∂L/∂z holds it) or "dW"
        (your δ, often called dZ, is per example and dW = (1/m)·dZ·Aᵀ, db = (1/m)ΣdZ).
        Only what you call δ differs; dW and db are the same.
      labels: how generated cce targets look: "index" (m,) integers or "one_hot".
    """

    name: str = "custom"
    weights: str = "out_in"
    data: str = "batch_first"
    reduction: str = "mean"
    squared: str = "as_named"
    bce_outputs: str = "mean"
    l2: str = "half"
    one_over_m: str = "delta"
    labels: str = "index"

    def __init__(self, name: str = "custom", *, weights: str = "out_in",
                 data: str = "batch_first", reduction: str = "mean", squared: str = "as_named",
                 bce_outputs: str = "mean", l2: str = "half", one_over_m: str = "delta",
                 labels: str = "index", **unknown):
        if unknown:
            raise ValueError(f"unknown Convention field(s) {sorted(unknown)}; the fields are "
                             f"{['name'] + list(FIELDS)}")
        values = dict(name=name, weights=weights, data=data, reduction=reduction,
                      squared=squared, bce_outputs=bce_outputs, l2=l2, one_over_m=one_over_m,
                      labels=labels)
        for field, value in values.items():
            object.__setattr__(self, field, value)
        self.__post_init__()

    def replace(self, **changes) -> "Convention":
        """This convention with a few fields changed, e.g.
        ``CONVENTIONS["cs231n"].replace(reduction="sum")``; named "custom" unless `name`
        is given.  ValueError for an unknown field or value."""
        fields = {f: getattr(self, f) for f in FIELDS}
        fields.update(changes)
        fields.setdefault("name", "custom")
        return Convention(**fields)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Convention name must be a non-empty string, got {self.name!r}")
        for field, choices in FIELDS.items():
            value = getattr(self, field)
            if not isinstance(value, str) or value not in choices:
                raise ValueError(f"Convention {field} must be one of {list(choices)}, "
                                 f"got {value!r}")

    # -- the arithmetic

    @property
    def features_first(self) -> bool:
        """Columns are examples (features_first or per_example)."""
        return self.data != "batch_first"

    def squared_form(self, loss: str) -> str:
        """One example's squared error: mean, half_mean, sum or half_sum."""
        if self.squared != "as_named":
            return self.squared
        return "mean" if loss == "mse" else "half_sum"

    def scale(self, loss: str, m: int, K: int) -> float:
        """s with L_this = s · L_jaxmlp(base_loss(loss)) for the data part (no penalty)."""
        s = float(m) if self.reduction == "sum" else 1.0
        if loss in ("mse", "sse"):
            form = self.squared_form(loss)
            s *= _SQUARED_FACTOR[form.replace("mean", "sum")] / (K if "mean" in form else 1)
        elif loss == "bce" and self.bce_outputs == "sum":
            s *= K
        return s

    def l2_coef(self, l2: float, m: int, n: Optional[int] = None) -> float:
        """c in the penalty c·ΣW² for strength `l2` (gradient 2c·W); "half_m" divides by
        n (the training-set size) when given, else by the m examples in the gradient."""
        return {"half": l2 / 2, "full": float(l2),
                "half_m": l2 / (2 * (m if n is None else n))}[self.l2]

    def delta_scale(self, m: int) -> float:
        """What this convention calls δ, over ∂L/∂z: m when the 1/m is in dW."""
        return float(m) if self.one_over_m == "dW" else 1.0

    # -- words

    def describe(self, loss: Optional[str] = None, n_train: Optional[int] = None) -> str:
        """One line for messages, e.g. "W (in, out), batch-first, mean over the batch".
        With `n_train` (the training-set size an l2="half_m" penalty divides by, see
        `reference_gradients`), that penalty reads λ/(2n)ΣW² with n = n_train."""
        parts = ["W (n_in, n_out)" if self.weights == "in_out" else "W (n_out, n_in)",
                 {"batch_first": "x (m, n_x)", "features_first": "x (n_x, m)",
                  "per_example": "one column x (n_x, 1) per call, summed"}[self.data],
                 f"loss {'summed' if self.reduction == 'sum' else 'averaged'} over the batch"]
        if loss in ("mse", "sse"):
            parts.append(f"squared error {_SQUARED_TEXT[self.squared_form(loss)]} per example")
        if loss == "bce":
            parts.append(f"bce {'summed' if self.bce_outputs == 'sum' else 'averaged'} "
                         f"over the outputs")
        if self.l2 == "half_m" and n_train is not None:
            parts.append(f"L2 λ/(2n)ΣW², gradient (λ/n)W, n = n_train = {n_train}")
        else:
            parts.append(f"L2 {_L2_TEXT[self.l2]}")
        if self.one_over_m == "dW":
            parts.append("δ per example, 1/m in dW and db")
        return ", ".join(parts)

    def call(self) -> str:
        """How to pass this convention: a preset's name, or the Convention(...) call."""
        if CONVENTIONS.get(self.name) == self:
            return repr(self.name)
        for name, preset in CONVENTIONS.items():
            if dataclasses.replace(preset, name=self.name) == self:
                return repr(name)
        base = CONVENTIONS["jaxmlp"]
        args = [f"{f}={getattr(self, f)!r}" for f in FIELDS if getattr(self, f) != getattr(base, f)]
        return f"Convention({', '.join(args)})"


CONVENTIONS = {
    "jaxmlp": Convention("jaxmlp"),
    "cs231n": Convention("cs231n", weights="in_out", l2="full"),
    "deeplearning_ai": Convention("deeplearning_ai", data="features_first", bce_outputs="sum",
                                  l2="half_m", one_over_m="dW", labels="one_hot"),
    "nielsen": Convention("nielsen", data="per_example", reduction="sum", squared="half_sum",
                          bce_outputs="sum", l2="half_m", labels="one_hot"),
    "sklearn": Convention("sklearn", weights="in_out", squared="half_mean", bce_outputs="sum",
                          l2="half_m", labels="one_hot"),
}


def resolve(convention) -> Convention:
    """A preset's name or a `Convention` → the `Convention`."""
    if isinstance(convention, Convention):
        return convention
    if isinstance(convention, str):
        try:
            return CONVENTIONS[convention]
        except KeyError:
            raise ValueError(f"unknown convention {convention!r}; expected one of "
                             f"{list(CONVENTIONS)} or a jaxmlp.oracle.Convention") from None
    raise TypeError(f"convention must be a preset name ({', '.join(CONVENTIONS)}) or a "
                    f"jaxmlp.oracle.Convention, got {type(convention).__name__}")
