"""An independent NumPy float64 forward pass and loss, written from DESIGN.md's formulas.

It shares no code with jaxmlp, so `jaxmlp.loss` is checked against the definitions, not
against itself.  Dropout is not modelled here (its tests are statistical).
"""
import math

import numpy as np

_ERF = np.vectorize(math.erf)


def act(name, z):
    if name == "identity":
        return z
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "leaky_relu":
        return np.where(z >= 0, z, 0.01 * z)
    if name == "elu":
        return np.where(z > 0, z, np.exp(np.minimum(z, 0)) - 1.0)
    if name == "gelu":
        return z * 0.5 * (1.0 + _ERF(z / math.sqrt(2.0)))
    if name == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise ValueError(name)


def normalise(z, gamma, beta, axis, mean=None, var=None):
    if mean is None:
        mean = z.mean(axis=axis, keepdims=True)
        var = ((z - mean) ** 2).mean(axis=axis, keepdims=True)
    return gamma * (z - mean) / np.sqrt(var + 1e-5) + beta


def forward(model, params, x, state=None, train=True):
    """Returns (ŷ, z_L) for a model without dropout."""
    a = np.asarray(x, np.float64)
    acts = model.hidden_activations
    for l, layer in enumerate(params):
        W, b = np.asarray(layer["W"], np.float64), np.asarray(layer["b"], np.float64)
        z = a @ W.T + b
        if l == len(params) - 1:
            return act(model.output, z), z
        if model.norm == "layer":
            z = normalise(z, np.asarray(layer["gamma"]), np.asarray(layer["beta"]), axis=1)
        elif model.norm == "batch":
            if train:
                z = normalise(z, np.asarray(layer["gamma"]), np.asarray(layer["beta"]), axis=0)
            else:
                z = normalise(z, np.asarray(layer["gamma"]), np.asarray(layer["beta"]), 0,
                              np.asarray(state[l]["mean"]), np.asarray(state[l]["var"]))
        a = act(acts[l], z)


def loss(model, params, x, y, state=None, train=True):
    yhat, z = forward(model, params, x, state, train)
    y = np.asarray(y, np.float64)
    n, k = yhat.shape
    if model.loss == "mse":
        value = np.sum((yhat - y) ** 2) / (n * k)
    elif model.loss == "sse":
        value = np.sum(0.5 * np.sum((yhat - y) ** 2, axis=1)) / n
    elif model.loss == "bce":
        value = -np.sum(y * np.log(yhat) + (1 - y) * np.log(1 - yhat)) / (n * k)
    elif model.loss == "cce":
        value = -np.sum(y * np.log(yhat)) / n
    for layer in params:
        W = np.asarray(layer["W"], np.float64)
        value += 0.5 * model.l2 * np.sum(W * W) + model.l1 * np.sum(np.abs(W))
    return value
