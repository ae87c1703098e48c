"""Backpropagation by hand: the δ recursion over the cached forward pass.

Notation (batch-first; rows are examples; layer l = 0 … L−1 is the l-th dense layer):

| symbol     | shape           | meaning                                                   |
| ---------- | --------------- | --------------------------------------------------------- |
| a⁽ˡ⁻¹⁾     | (N, n_{l−1})    | input of layer l (a⁽⁻¹⁾ = x)                              |
| W⁽ˡ⁾, b⁽ˡ⁾ | (n_l, n_{l−1}), (n_l,) | weights, bias: z⁽ˡ⁾ = a⁽ˡ⁻¹⁾ W⁽ˡ⁾ᵀ + b⁽ˡ⁾       |
| δ⁽ˡ⁾       | (N, n_l)        | ∂L/∂z⁽ˡ⁾, the error signal of layer l                    |

    δ⁽ᴸ⁻¹⁾ = ∂L/∂z⁽ᴸ⁻¹⁾                       from the loss (`losses.output_delta`); it holds
                                              the batch mean's 1/N, the only place it lives
    δ⁽ˡ⁾  = (δ⁽ˡ⁺¹⁾ W⁽ˡ⁺¹⁾) ⊙ f′(z⁽ˡ⁾)         the recursion (textbook: (Wᵀδ) ⊙ f′(z), column form)
    ∂L/∂W⁽ˡ⁾ = δ⁽ˡ⁾ᵀ a⁽ˡ⁻¹⁾ + l2·W⁽ˡ⁾ + l1·sign W⁽ˡ⁾        (n_l, n_{l−1}), summed over the batch
    ∂L/∂b⁽ˡ⁾ = Σ_batch δ⁽ˡ⁾                                (n_l,)

With norm or dropout on hidden layer l (z → u = γ·norm(z) + β → h = f(u) → a = m ⊙ h) the
recursion walks the same chain backwards: ∂L/∂h = ∂L/∂a ⊙ m, ∂L/∂u = ∂L/∂h ⊙ f′(u),
δ⁽ˡ⁾ = ∂L/∂z by the norm's backward (`layers.norm_backward`), which also yields ∂L/∂γ, ∂L/∂β.
No gradient is computed for the input x.  Nothing here calls jax.grad or jax.vjp.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxmlp import layers as _layers
from jaxmlp.losses import (check_inputs, check_penalties, data_loss, output_delta, penalty,
                           penalty_grad)
from jaxmlp.model import MLP, forward_pass

Array = jax.Array

__all__ = ["Backprop", "backprop", "value_and_grad", "backprop_pass"]


class Backprop(NamedTuple):
    """The result of `backprop`.

    loss: the scalar loss L (penalties included).
    grads: ∂L/∂params, the same pytree as params.
    deltas: δ⁽ˡ⁾ = ∂L/∂z⁽ˡ⁾ per dense layer (0-based), each (N, n_l); z is the affine
      output W a + b, before any norm.
    state: the updated batch-norm running statistics (None without batch norm / state).
    """

    loss: Array
    grads: list
    deltas: tuple
    state: Any


def backprop_pass(model: MLP, params, x: Array, y: Array, *, key=None, state=None,
                  pen=None) -> Backprop:
    """The δ recursion in training mode, no argument checks: x (N, n_in), y (N, n_out)
    already prepared (see `losses.prepare_targets`); `pen` the (l1, l2) overrides (see
    `losses.check_penalties`), None for the model's."""
    yhat, cache, new_state = forward_pass(model, params, x, train=True, key=key, state=state)
    L = data_loss(model, cache.z, yhat, y) + penalty(model, params, pen)
    acts = model.activation_fns

    grads = [dict() for _ in params]
    deltas = [None] * model.n_layers
    delta = output_delta(model, cache.z, yhat, y)  # δ⁽ᴸ⁻¹⁾
    a_in = cache.a_in
    for l in reversed(range(model.n_layers)):
        W = params[l]["W"]
        deltas[l] = delta
        dW = delta.T @ a_in
        pen_g = penalty_grad(model, W, pen)
        grads[l]["W"] = dW if pen_g is None else dW + pen_g
        grads[l]["b"] = jnp.sum(delta, axis=0)
        if l == 0:
            break  # no gradient for the input x
        c = cache.hidden[l - 1]
        g = delta @ W                                         # ∂L/∂a⁽ˡ⁻¹⁾
        if c.mask is not None:
            g = _layers.dropout_backward(g, c.mask)           # ∂L/∂h
        g = acts[l - 1].vjp(c.u, c.h, g)                      # ∂L/∂u = ∂L/∂h ⊙ f′(u)
        if c.norm is not None:
            g, grads[l - 1]["gamma"], grads[l - 1]["beta"] = _layers.norm_backward(g, c.norm)
        delta = g                                             # δ⁽ˡ⁻¹⁾ = ∂L/∂z⁽ˡ⁻¹⁾
        a_in = c.a_in
    return Backprop(L, grads, tuple(deltas), new_state)


def _backprop_impl(model, params, x, y, key, state, pen=None):
    return backprop_pass(model, params, x, y, key=key, state=state, pen=pen)


def _value_and_grad_impl(model, params, x, y, key, state, pen=None):
    out = backprop_pass(model, params, x, y, key=key, state=state, pen=pen)
    return out.loss, out.grads


_backprop_jit = jax.jit(_backprop_impl, static_argnums=0)
_value_and_grad_jit = jax.jit(_value_and_grad_impl, static_argnums=0)


def backprop(model: MLP, params, x, y, *, key: Optional[Array] = None, state=None,
             l1=None, l2=None) -> Backprop:
    """Loss, gradients and the δ of every layer, by the hand-written recursion.

    Runs in training mode (dropout with `key`, batch norm with batch statistics).

    Args:
      model: the `MLP`.
      params: parameters matching `model`.
      x: (N, n_in) float inputs.
      y: (N, n_out) targets; (N,) when n_out == 1; (N,) integer labels for cce.
      key: dropout PRNG key, needed when `model.dropout > 0`.
      state: batch-norm running statistics; when given, `out.state` is their update.
      l1, l2: penalty weights for this call, overriding the model's (None: the model's);
        passed to the compiled code as data, see `jaxmlp.loss`.

    Returns:
      `Backprop(loss, grads, deltas, state)`.
    """
    x, y, key = check_inputs(model, params, x, y, train=True, key=key, state=state,
                             where="backprop")
    pen = check_penalties(l1, l2, where="backprop")
    return _backprop_jit(model, params, x, y, key, state, pen)


def value_and_grad(model: MLP, params, x, y, *, key: Optional[Array] = None, state=None,
                   l1=None, l2=None):
    """(L, ∂L/∂params) by manual backprop; a drop-in for
    `jax.value_and_grad(functools.partial(jaxmlp.loss, model))(params, x, y, key=…, state=…)`.

    Shapes as in `backprop`; grads has the pytree structure of params.  `l1`, `l2`
    override the model's penalty weights for this call, as in `jaxmlp.loss`."""
    x, y, key = check_inputs(model, params, x, y, train=True, key=key, state=state,
                             where="value_and_grad")
    pen = check_penalties(l1, l2, where="value_and_grad")
    return _value_and_grad_jit(model, params, x, y, key, state, pen)
