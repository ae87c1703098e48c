"""jaxmlp: multi-layer perceptron training in JAX from first principles.

    z⁽ˡ⁾ = W⁽ˡ⁾a⁽ˡ⁻¹⁾ + b⁽ˡ⁾,   a⁽ˡ⁾ = f(z⁽ˡ⁾),   δ⁽ᴸ⁾ = ∂L/∂z⁽ᴸ⁾,
    δ⁽ˡ⁾ = (W⁽ˡ⁺¹⁾ᵀδ⁽ˡ⁺¹⁾) ⊙ f′(z⁽ˡ⁾),   ∂L/∂W⁽ˡ⁾ = δ⁽ˡ⁾a⁽ˡ⁻¹⁾ᵀ,   ∂L/∂b⁽ˡ⁾ = δ⁽ˡ⁾

W⁽ˡ⁾ has shape (n_out, n_in); data is batch-first, so in code z = x @ W.T + b and the
batch mean's 1/N lives in δ⁽ᴸ⁾ only (see `jaxmlp.backprop`).

    import jax, jaxmlp as jm
    model = jm.MLP(sizes=(11, 64, 64, 1), activation="relu", output="identity", loss="mse")
    params = jm.init_params(jax.random.key(0), model)
    L, grads = jm.value_and_grad(model, params, x, y)
"""
from jaxmlp import (activations, checkpoint, data, diagnostics, init, layers, losses, optim,
                    oracle, parallel, sweeps)
from jaxmlp.backprop import Backprop, backprop, value_and_grad
from jaxmlp.check import GradientReport, check_gradients
from jaxmlp.train import DivergenceError, fit, make_train_step
from jaxmlp.sweeps import sweep
from jaxmlp.losses import loss
from jaxmlp.model import MLP, forward, init_params, init_state

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "init_params",
    "init_state",
    "forward",
    "loss",
    "backprop",
    "value_and_grad",
    "Backprop",
    "check_gradients",
    "GradientReport",
    "fit",
    "make_train_step",
    "sweep",
    "DivergenceError",
    "activations",
    "checkpoint",
    "data",
    "diagnostics",
    "init",
    "layers",
    "losses",
    "optim",
    "oracle",
    "parallel",
    "sweeps",
]
