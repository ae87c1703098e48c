"""Dropout, batch norm and layer norm: each a forward and a hand-written backward.

Normalisation (over axis `ax`: the batch for batch norm, the units for layer norm):

    μ = mean_ax z,   σ² = mean_ax (z − μ)²   (biased),   s = 1/√(σ² + ε),  ε = 1e-5
    ẑ = (z − μ)·s,   u = γ ⊙ ẑ + β

Backward, from g = ∂L/∂u (the full derivative through μ and σ², n = size of `ax`):

    ∂L/∂γ = Σ_batch g ⊙ ẑ,   ∂L/∂β = Σ_batch g,   ĝ = g ⊙ γ
    ∂L/∂z = s·(ĝ − mean_ax ĝ − ẑ ⊙ mean_ax(ĝ ⊙ ẑ))

Batch norm in inference mode uses the running statistics instead, an affine map with
∂L/∂z = γ·s_run ⊙ g.  Training updates them as running ← m·running + (1 − m)·batch with
m = `momentum` (0.9 by default) and the biased batch variance.

Inverted dropout with drop rate p: a = h ⊙ mask/(1 − p), mask ~ Bernoulli(1 − p), so
E[a] = h; backward ∂L/∂h = ∂L/∂a ⊙ mask/(1 − p).  Inference mode is the identity.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

Array = jax.Array

NORM_EPS = 1e-5

__all__ = ["NormCache", "batch_norm_forward", "layer_norm_forward", "norm_backward",
           "dropout_forward", "dropout_backward", "NORM_EPS"]


class NormCache(NamedTuple):
    """z_hat: ẑ (N, n); inv_std: s, (1, n) for batch norm, (N, 1) for layer norm;
    gamma: γ (n,); axis: the normalised axis (0 batch, 1 layer), or None in inference
    mode (statistics are constants, so the map is affine)."""

    z_hat: Array
    inv_std: Array
    gamma: Array
    axis: Optional[int]


def _scale_shift(z_hat, gamma, beta):
    return gamma[None, :] * z_hat + beta[None, :]


def _normalise(z, gamma, beta, axis):
    mu = jnp.mean(z, axis=axis, keepdims=True)
    centred = z - mu
    var = jnp.mean(centred * centred, axis=axis, keepdims=True)
    inv_std = jax.lax.rsqrt(var + NORM_EPS)
    z_hat = centred * inv_std
    return _scale_shift(z_hat, gamma, beta), NormCache(z_hat, inv_std, gamma, axis), mu, var


def layer_norm_forward(z: Array, gamma: Array, beta: Array):
    """u = γ ⊙ (z − μ)/√(σ² + ε) + β, statistics per example over its units.

    z: (N, n); gamma, beta: (n,).  Returns (u (N, n), NormCache)."""
    u, cache, _, _ = _normalise(z, gamma, beta, axis=1)
    return u, cache


def batch_norm_forward(z: Array, gamma: Array, beta: Array, *, running=None,
                       train: bool = True, momentum: float = 0.9):
    """Batch norm of z (N, n): batch statistics in training, running ones in inference.

    Args:
      running: {"mean": (n,), "var": (n,)} or None (training only: no update).
    Returns:
      (u (N, n), NormCache, new_running): new_running is the updated statistics in
      training mode with `running`, else `running`.
    """
    if not train:
        inv_std = jax.lax.rsqrt(running["var"] + NORM_EPS)[None, :]
        z_hat = (z - running["mean"][None, :]) * inv_std
        return _scale_shift(z_hat, gamma, beta), NormCache(z_hat, inv_std, gamma, None), running
    u, cache, mu, var = _normalise(z, gamma, beta, axis=0)
    if running is not None:
        mu = jax.lax.stop_gradient(mu[0])
        var = jax.lax.stop_gradient(var[0])
        running = {"mean": momentum * running["mean"] + (1 - momentum) * mu,
                   "var": momentum * running["var"] + (1 - momentum) * var}
    return u, cache, running


def norm_backward(g: Array, cache: NormCache):
    """From g = ∂L/∂u (N, n): returns (∂L/∂z (N, n), ∂L/∂γ (n,), ∂L/∂β (n,))."""
    z_hat, inv_std, gamma, axis = cache
    dgamma = jnp.sum(g * z_hat, axis=0)
    dbeta = jnp.sum(g, axis=0)
    g_hat = g * gamma[None, :]
    if axis is None:
        return g_hat * inv_std, dgamma, dbeta
    dz = inv_std * (g_hat - jnp.mean(g_hat, axis=axis, keepdims=True)
                    - z_hat * jnp.mean(g_hat * z_hat, axis=axis, keepdims=True))
    return dz, dgamma, dbeta


def dropout_forward(h: Array, key: Array, rate: float):
    """Inverted dropout: returns (h ⊙ m, m) with m = Bernoulli(1 − rate)/(1 − rate).

    The uniform draw is float32 whatever h's dtype, so one key gives the same mask in
    float32 and float64."""
    keep = jax.random.uniform(key, h.shape, jnp.float32) < (1.0 - rate)
    mask = keep.astype(h.dtype) / jnp.asarray(1.0 - rate, h.dtype)
    return h * mask, mask


def dropout_backward(g: Array, mask: Array) -> Array:
    """∂L/∂h = ∂L/∂a ⊙ m."""
    return g * mask
