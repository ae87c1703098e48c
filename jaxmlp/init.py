"""Weight initialisation schemes; biases always start at zero.

For a dense layer W ∈ ℝ^{n_out×n_in}:

| scheme           | distribution of each W entry      | variance            |
| ---------------- | --------------------------------- | ------------------- |
| `xavier_uniform` | U(−r, r), r = √(6/(n_in + n_out)) | 2/(n_in + n_out)    |
| `xavier_normal`  | N(0, 2/(n_in + n_out))            | 2/(n_in + n_out)    |
| `he_normal`      | N(0, 2/n_in)                      | 2/n_in              |
| `he_uniform`     | U(−r, r), r = √(6/n_in)           | 2/n_in              |
| `lecun_normal`   | N(0, 1/n_in)                      | 1/n_in              |

Normal schemes are exact normals (no truncation), so the variances above are exact.
`auto` picks `he_normal` when the activation the layer's input went through (the first
hidden activation for layer 0) is in the ReLU family (relu, leaky_relu, elu, gelu, and
custom activations with `relu_like`: see `jaxmlp.activations.custom`), and
`xavier_uniform` otherwise: He's derivation compensates the variance the nonlinearity
halves, and that nonlinearity acts on the layer's input.
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

__all__ = ["SCHEMES", "variance", "init_weight"]


def _xavier_var(n_in, n_out):
    return 2.0 / (n_in + n_out)


def _he_var(n_in, n_out):
    return 2.0 / n_in


def _lecun_var(n_in, n_out):
    return 1.0 / n_in


def _normal(var_fn: Callable) -> Callable:
    def sample(key, n_out, n_in, dtype):
        std = math.sqrt(var_fn(n_in, n_out))
        return std * jax.random.normal(key, (n_out, n_in), dtype)

    return sample


def _uniform(var_fn: Callable) -> Callable:
    # U(−r, r) has variance r²/3, so r = √(3·var).
    def sample(key, n_out, n_in, dtype):
        r = math.sqrt(3.0 * var_fn(n_in, n_out))
        return jax.random.uniform(key, (n_out, n_in), dtype, minval=-r, maxval=r)

    return sample


_VARIANCE = {
    "xavier_uniform": _xavier_var,
    "xavier_normal": _xavier_var,
    "he_normal": _he_var,
    "he_uniform": _he_var,
    "lecun_normal": _lecun_var,
}

SCHEMES = {
    "xavier_uniform": _uniform(_xavier_var),
    "xavier_normal": _normal(_xavier_var),
    "he_normal": _normal(_he_var),
    "he_uniform": _uniform(_he_var),
    "lecun_normal": _normal(_lecun_var),
}


def variance(scheme: str, n_in: int, n_out: int) -> float:
    """The exact variance of one weight entry under `scheme`."""
    return _VARIANCE[scheme](n_in, n_out)


def init_weight(key: jax.Array, scheme: str, n_out: int, n_in: int, dtype=jnp.float32):
    """Samples W of shape (n_out, n_in) from `scheme`."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; expected one of {sorted(SCHEMES)}")
    return SCHEMES[scheme](key, n_out, n_in, dtype)
