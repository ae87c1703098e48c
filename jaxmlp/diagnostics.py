"""Per-layer diagnostics of a network's gradients: vanishing/exploding gradients, dead units.

Notation (DESIGN.md; batch-first, N examples, dense layer l = 0 … L−1, hidden layers
l = 0 … L−2 with pre-activation u⁽ˡ⁾ and activation f)::

    ‖∂L/∂W⁽ˡ⁾‖_F = √(Σⱼₖ (∂L/∂W⁽ˡ⁾ⱼₖ)²)          weight_grad_norm[l]   (penalty gradient included)
    ‖∂L/∂b⁽ˡ⁾‖₂  = √(Σⱼ (∂L/∂b⁽ˡ⁾ⱼ)²)             bias_grad_norm[l]
    ‖δ⁽ˡ⁾‖       = (1/N) Σᵢ ‖∂ℓᵢ/∂z⁽ˡ⁾ᵢ‖₂ = Σᵢ ‖δ⁽ˡ⁾ᵢ‖₂   delta_norm[l]

δ⁽ˡ⁾ = ∂L/∂z⁽ˡ⁾ of the batch-mean loss L = (1/N) Σᵢ ℓᵢ (`jaxmlp.backprop`), so its row i is
(1/N)·∂ℓᵢ/∂zᵢ; `delta_norm` is therefore the mean over examples of the per-example error
signal's norm, independent of the batch size.  Vanishing gradients show as
`weight_grad_norm[0] ≪ weight_grad_norm[L−1]` (and the same for δ): every layer multiplies
the backward signal by W⁽ˡ⁺¹⁾ᵀ and by f′(u⁽ˡ⁾), and sigmoid's f′ ≤ ¼.

Per hidden layer, from the derivatives d = f′(u⁽ˡ⁾) of shape (N, n_l) in training mode
(the same forward pass as the gradients: dropout masks from `key`, batch statistics)::

    dead_fraction[l]       = (1/n_l) Σⱼ [dᵢⱼ = 0 for every example i]
    saturated_fraction[l]  = (1/(N·n_l)) Σᵢⱼ [|dᵢⱼ| < threshold]      (threshold 1e-3)
    mean_abs_derivative[l] = (1/(N·n_l)) Σᵢⱼ |dᵢⱼ|

A *dead* unit passes no gradient for any example of the batch, so its incoming weights
and bias get no update from it: for ReLU that is z ≤ 0 (activation 0) on the whole batch.
Leaky ReLU never has f′ = 0; sigmoid/tanh/ELU/GELU only by underflow, so the count is
meaningful for the ReLU family.  *Saturation* is the entry-wise fraction of small
derivatives: for sigmoid (f′ = a(1 − a) < 1e-3 ⇔ |u| ≳ 6.9) and tanh (f′ = 1 − a² < 1e-3
⇔ |u| ≳ 4.1) the units sit on a flat tail; for ReLU it is simply the fraction of
inactive entries (z ≤ 0).

    report = jaxmlp.diagnostics.gradient_report(model, params, x, y)
    print(report)                # a per-layer table
    report.weight_grad_norm      # (L,) NumPy array
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import _validate as _v
from jaxmlp.backprop import backprop_pass
from jaxmlp.losses import check_inputs
from jaxmlp.model import MLP, check_mode, forward_pass

Array = jax.Array

__all__ = [
    "GradientStats",
    "gradient_report",
    "grad_norms",
    "delta_norms",
    "activation_derivatives",
    "dead_fraction",
    "saturated_fraction",
    "SATURATION_THRESHOLD",
]

#: |f′(u)| below this counts as saturated (sigmoid: |u| ≳ 6.9, tanh: |u| ≳ 4.1).
SATURATION_THRESHOLD = 1e-3


class GradientStats(NamedTuple):
    """Per-layer gradient statistics of one batch (see the module docstring for the math).

    All arrays are NumPy float64 on the host.

    Attributes:
      loss: the loss L (penalties included), a float.
      activations: (L − 1,) names of the hidden activations.
      weight_grad_norm: (L,) ‖∂L/∂W⁽ˡ⁾‖_F per dense layer.
      bias_grad_norm: (L,) ‖∂L/∂b⁽ˡ⁾‖₂ per dense layer.
      delta_norm: (L,) (1/N) Σᵢ ‖∂ℓᵢ/∂z⁽ˡ⁾ᵢ‖₂ per dense layer.
      dead_fraction: (L − 1,) fraction of hidden units with f′ = 0 on the whole batch.
      saturated_fraction: (L − 1,) fraction of (example, unit) entries with |f′| < threshold.
      mean_abs_derivative: (L − 1,) mean of |f′(u)| over the batch and the units.
      threshold: the saturation threshold used.
    """

    loss: float
    activations: tuple
    weight_grad_norm: np.ndarray
    bias_grad_norm: np.ndarray
    delta_norm: np.ndarray
    dead_fraction: np.ndarray
    saturated_fraction: np.ndarray
    mean_abs_derivative: np.ndarray
    threshold: float

    @property
    def first_to_last(self) -> float:
        """‖∂L/∂W⁽⁰⁾‖_F / ‖∂L/∂W⁽ᴸ⁻¹⁾‖_F: ≪ 1 when gradients vanish, ≫ 1 when they explode
        (NaN when both are 0, e.g. a network whose ReLUs all died)."""
        first, last = float(self.weight_grad_norm[0]), float(self.weight_grad_norm[-1])
        if last == 0:
            return math.nan if first == 0 else math.inf
        return first / last

    def rows(self) -> list:
        """One dict per dense layer (hidden-layer fields are None for the output layer)."""
        n = len(self.weight_grad_norm)
        out = []
        for l in range(n):
            hidden = l < n - 1
            out.append({
                "layer": l,
                "activation": self.activations[l] if hidden else "output",
                "weight_grad_norm": float(self.weight_grad_norm[l]),
                "bias_grad_norm": float(self.bias_grad_norm[l]),
                "delta_norm": float(self.delta_norm[l]),
                "dead_fraction": float(self.dead_fraction[l]) if hidden else None,
                "saturated_fraction": float(self.saturated_fraction[l]) if hidden else None,
                "mean_abs_derivative": float(self.mean_abs_derivative[l]) if hidden else None,
            })
        return out

    def __str__(self) -> str:
        head = (f"{'layer':>5} {'act':>10} {'|dL/dW|_F':>10} {'|dL/db|':>10} {'|delta|':>10} "
                f"{'dead':>6} {'sat':>6} {'mean|f_p|':>9}")
        lines = [head]
        for r in self.rows():
            hid = r["dead_fraction"] is not None
            lines.append(
                f"{r['layer']:>5} {r['activation']:>10} {r['weight_grad_norm']:>10.3e} "
                f"{r['bias_grad_norm']:>10.3e} {r['delta_norm']:>10.3e} "
                + (f"{r['dead_fraction']:>6.3f} {r['saturated_fraction']:>6.3f} "
                   f"{r['mean_abs_derivative']:>9.3e}" if hid else f"{'-':>6} {'-':>6} {'-':>9}"))
        lines.append(f"loss {self.loss:.6g}; |dL/dW0| / |dL/dW_last| = {self.first_to_last:.3e}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- pure pieces

def grad_norms(grads) -> tuple:
    """(‖∂L/∂W⁽ˡ⁾‖_F, ‖∂L/∂b⁽ˡ⁾‖₂) per dense layer.

    Args:
      grads: the gradient pytree (list of dicts with "W" (n_l, n_{l−1}) and "b" (n_l,)).

    Returns:
      (w_norms, b_norms), each a (L,) array.
    """
    w = jnp.stack([jnp.sqrt(jnp.sum(jnp.square(g["W"]))) for g in grads])
    b = jnp.stack([jnp.sqrt(jnp.sum(jnp.square(g["b"]))) for g in grads])
    return w, b


def delta_norms(deltas) -> Array:
    """Σᵢ ‖δ⁽ˡ⁾ᵢ‖₂ = (1/N) Σᵢ ‖∂ℓᵢ/∂z⁽ˡ⁾ᵢ‖₂ per dense layer.

    Args:
      deltas: one (N, n_l) array per dense layer, δ⁽ˡ⁾ = ∂L/∂z⁽ˡ⁾ of the batch-mean loss
        (`jaxmlp.backprop(...).deltas`), whose 1/N makes the sum a mean over examples.

    Returns:
      (L,) array.
    """
    return jnp.stack([jnp.sum(jnp.sqrt(jnp.sum(jnp.square(d), axis=1))) for d in deltas])


def _derivatives(model: MLP, params, x, key, state) -> tuple:
    _, cache, _ = forward_pass(model, params, x, train=True, key=key, state=state)
    return tuple(act.df(c.u, c.h) for act, c in zip(model.activation_fns, cache.hidden))


_derivatives_jit = jax.jit(_derivatives, static_argnums=0)


def activation_derivatives(model: MLP, params, x, *, key: Optional[Array] = None,
                           state=None) -> tuple:
    """f′(u⁽ˡ⁾) of every hidden layer in training mode, with no argument checks.

    Args:
      model: the `MLP`; params: its parameters; x: (N, n_in) inputs, already checked
        (e.g. by `jaxmlp.backprop`).
      key, state: as for `jaxmlp.backprop` (dropout key, batch-norm statistics).

    Returns:
      A tuple with one (N, n_l) array per hidden layer (empty without hidden layers).
      f′ is evaluated at u, the input of the activation (after the norm, before dropout).
    """
    key = check_mode(model, train=True, key=key, state=state, where="activation_derivatives")
    return _derivatives_jit(model, params, jnp.asarray(x), key, state)


def dead_fraction(derivatives) -> Array:
    """Per hidden layer, the fraction of units j with f′(u)ᵢⱼ = 0 for every example i.

    Args:
      derivatives: one (N, n_l) array per hidden layer (`activation_derivatives`).

    Returns:
      (L − 1,) array in [0, 1].
    """
    if not derivatives:
        return jnp.zeros((0,))
    return jnp.stack([jnp.mean(jnp.all(d == 0, axis=0).astype(d.dtype)) for d in derivatives])


def saturated_fraction(derivatives, threshold: float = SATURATION_THRESHOLD) -> Array:
    """Per hidden layer, the fraction of entries (i, j) with |f′(u)ᵢⱼ| < threshold.

    Args:
      derivatives: one (N, n_l) array per hidden layer.
      threshold: a number > 0.

    Returns:
      (L − 1,) array in [0, 1].
    """
    if not isinstance(threshold, jax.Array):
        threshold = _v.positive_real(threshold, "threshold", where="saturated_fraction")
    if not derivatives:
        return jnp.zeros((0,))
    return jnp.stack([jnp.mean((jnp.abs(d) < threshold).astype(d.dtype)) for d in derivatives])


# --------------------------------------------------------------------------- the report

def _stats(model: MLP, params, x, y, key, state, threshold):
    out = backprop_pass(model, params, x, y, key=key, state=state)
    derivs = _derivatives(model, params, x, key, state)
    w, b = grad_norms(out.grads)
    mean_abs = (jnp.stack([jnp.mean(jnp.abs(d)) for d in derivs]) if derivs
                else jnp.zeros((0,), w.dtype))
    return (out.loss, w, b, delta_norms(out.deltas), dead_fraction(derivs),
            saturated_fraction(derivs, threshold), mean_abs)


_stats_jit = jax.jit(_stats, static_argnums=0)


def gradient_report(model: MLP, params, x, y, *, key: Optional[Array] = None, state=None,
                    threshold: float = SATURATION_THRESHOLD) -> GradientStats:
    """Per-layer gradient norms, dead units and saturation on one batch.

    The gradients are those of `jaxmlp.backprop` (the δ recursion, training mode), after
    the same argument checks, which raise `ValueError` naming expected and actual shapes.
    Everything is computed in one compiled program per model.

    Args:
      model: the `MLP`.
      params: parameters matching `model`.
      x: (N, n_in) float inputs.
      y: (N, n_out) targets; (N,) when n_out == 1; (N,) integer labels for cce.
      key: dropout PRNG key, needed when `model.dropout > 0`.
      state: batch-norm running statistics (`jaxmlp.init_state`), if any.
      threshold: |f′| below it counts as saturated (default 1e-3).

    Returns:
      `GradientStats` with (L,) arrays for the dense layers and (L − 1,) for the hidden
      layers; `str(report)` is a per-layer table.
    """
    threshold = _v.positive_real(threshold, "threshold", where="gradient_report")
    x, y, key = check_inputs(model, params, x, y, train=True, key=key, state=state,
                             where="gradient_report")
    loss, w, b, delta, dead, sat, mean_abs = jax.device_get(
        _stats_jit(model, params, x, y, key, state, threshold))
    to_np = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    return GradientStats(
        loss=float(loss),
        activations=tuple(model.hidden_activations),
        weight_grad_norm=to_np(w),
        bias_grad_norm=to_np(b),
        delta_norm=to_np(delta),
        dead_fraction=to_np(dead),
        saturated_fraction=to_np(sat),
        mean_abs_derivative=to_np(mean_abs),
        threshold=threshold,
    )
