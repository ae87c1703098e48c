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
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.scipy.special import erfc

Array = jax.Array

LEAKY_SLOPE = 0.01
ELU_ALPHA = 1.0

__all__ = ["Activation", "ACTIVATIONS", "HIDDEN_ACTIVATIONS", "RELU_FAMILY", "get"]


class Activation(NamedTuple):
    """An activation and its hand-written derivative.

    Attributes:
      name: the activation's name.
      f: z (batch, n) -> a (batch, n).
      df: (z, a) -> f′(z), elementwise, shape (batch, n); None for softmax, whose
        derivative is a Jacobian rather than a vector.
      vjp: (z, a, g) -> g·∂a/∂z, i.e. ∂L/∂z from g = ∂L/∂a, shape (batch, n).
    """

    name: str
    f: Callable[[Array], Array]
    df: Optional[Callable[[Array, Array], Array]]
    vjp: Callable[[Array, Array, Array], Array]


def _elementwise(name, f, df) -> Activation:
    return Activation(name, f, df, lambda z, a, g: g * df(z, a))


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

#: Activations for which `init="auto"` picks He initialisation.
RELU_FAMILY = frozenset({"relu", "leaky_relu", "elu", "gelu"})


def get(name: str) -> Activation:
    """Returns the `Activation` called `name`; ValueError naming the choices otherwise."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}"
        ) from None
