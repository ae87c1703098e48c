"""Layer functions as students write them, for `jaxmlp.oracle.check_layer`'s tests.

Faithful ports of the layer API of CS231n's assignments (`cs231n/layers.py`, assignment 2:
`affine_forward(x, w, b) -> (out, cache)`, `affine_backward(dout, cache) -> (dx, dw, db)`,
`relu_*`, `softmax_loss(x, y) -> (loss, dx)`, `svm_loss`, `batchnorm_*` with a `bn_param`
dict, `layernorm_*`, `dropout_*` with `dropout_param = {"p": keep probability, "mode",
"seed"}`): w is (D, M) = (in, out), x is (N, d1, ..., dk) and is flattened to (N, D).
Sigmoid and tanh layers in the same style (the assignments have none).  Two other layouts
of the affine layer: jaxmlp's (W (M, D) = (out, in), `x @ W.T`) and deeplearning.ai's
course 1 `linear_forward(A_prev, W, b)` / `linear_backward(dZ, cache)` (A_prev (D, m),
b (M, 1), dW = (1/m) dZ A_prevᵀ).

Every function is the correct one unless `mistake` names one of the planted mistakes its
docstring lists; the tests select them with `functools.partial`.
"""
import numpy as np


def _no_mistake(mistake, allowed):
    if mistake is not None and mistake not in allowed:
        raise AssertionError(f"unknown planted mistake {mistake!r}; expected one of {allowed}")


# --------------------------------------------------------------------------- affine

def affine_forward(x, w, b, mistake=None):
    """out = x.reshape(N, D) @ w + b.  Mistakes: "no_reshape" (x @ w: fails on (N, d1, d2))."""
    _no_mistake(mistake, ("no_reshape",))
    if mistake == "no_reshape":
        out = x.dot(w) + b
    else:
        out = x.reshape(x.shape[0], -1).dot(w) + b
    cache = (x, w, b)
    return out, cache


def affine_backward(dout, cache, mistake=None):
    """dx = dout @ w.T (reshaped to x's shape), dw = x2.T @ dout, db = Σ_N dout.

    Mistakes: "dw_transposed" (dout.T @ x2), "db_not_summed" (db = dout), "db_averaged"
    (mean over N), "dx_not_reshaped" ((N, D) for an (N, d1, d2) x), "dx_no_transpose"
    (dout @ w: raises), "dx_transposed" (w @ dout.T), "dw_from_out" (outᵀ @ dout),
    "db_keepdims" (db (1, M)), "db_wrong_axis" (Σ over the units: (N,)), "dw_times_2".
    """
    _no_mistake(mistake, ("dw_transposed", "db_not_summed", "db_averaged", "dx_not_reshaped",
                          "dx_no_transpose", "dx_transposed", "dw_from_out", "db_keepdims",
                          "db_wrong_axis", "dw_times_2"))
    x, w, b = cache
    x2 = x.reshape(x.shape[0], -1)
    dx = dout.dot(w.T).reshape(x.shape)
    dw = x2.T.dot(dout)
    db = np.sum(dout, axis=0)
    if mistake == "dw_transposed":
        dw = dout.T.dot(x2)
    elif mistake == "db_not_summed":
        db = dout
    elif mistake == "db_averaged":
        db = np.mean(dout, axis=0)
    elif mistake == "dx_not_reshaped":
        dx = dout.dot(w.T)
    elif mistake == "dx_no_transpose":
        dx = dout.dot(w).reshape(x.shape)
    elif mistake == "dx_transposed":
        dx = w.dot(dout.T)
    elif mistake == "dw_from_out":
        out = x2.dot(w) + b
        dw = out.T.dot(dout)
    elif mistake == "db_keepdims":
        db = np.sum(dout, axis=0, keepdims=True)
    elif mistake == "db_wrong_axis":
        db = np.sum(dout, axis=1)
    elif mistake == "dw_times_2":
        dw = 2 * dw
    return dx, dw, db


def affine_forward_jaxmlp(x, W, b):
    """jaxmlp's layout: W (M, D) = (out, in), out = x @ W.T + b, x (N, D)."""
    return x @ W.T + b, (x, W)


def affine_backward_jaxmlp(dout, cache, mistake=None):
    """dx = dout @ W, dW = doutᵀ @ x (M, D), db = Σ_N dout.  Mistakes: "dW_transposed"
    (x.T @ dout, CS231n's shape), "dx_wrong_transpose" (dout @ W.T: raises)."""
    _no_mistake(mistake, ("dW_transposed", "dx_wrong_transpose"))
    x, W = cache
    dx = dout @ W if mistake != "dx_wrong_transpose" else dout @ W.T
    dW = dout.T @ x if mistake != "dW_transposed" else x.T @ dout
    return dx, dW, dout.sum(axis=0)


def linear_forward(A_prev, W, b):
    """deeplearning.ai course 1: Z = W A_prev + b; A_prev (D, m), W (M, D), b (M, 1)."""
    Z = np.dot(W, A_prev) + b
    cache = (A_prev, W, b)
    return Z, cache


def linear_backward(dZ, cache, mistake=None):
    """dW = (1/m) dZ A_prevᵀ, db = (1/m) Σ dZ (keepdims), dA_prev = Wᵀ dZ.

    Mistakes: "no_one_over_m" (dW = dZ A_prevᵀ, db = Σ dZ), "db_no_keepdims" (db (M,))."""
    _no_mistake(mistake, ("no_one_over_m", "db_no_keepdims"))
    A_prev, W, b = cache
    m = A_prev.shape[1]
    scale = 1.0 if mistake == "no_one_over_m" else 1.0 / m
    dW = scale * np.dot(dZ, A_prev.T)
    db = scale * np.sum(dZ, axis=1, keepdims=mistake != "db_no_keepdims")
    dA_prev = np.dot(W.T, dZ)
    return dA_prev, dW, db


# --------------------------------------------------------------------------- elementwise

def relu_forward(x):
    out = np.maximum(0, x)
    cache = x
    return out, cache


def relu_backward(dout, cache, mistake=None):
    """dx = dout ⊙ (x > 0).  Mistakes: "mask_from_out" ((out > 0): the same mask, correct),
    "mask_from_dout" (dout > 0), "no_mask" (dx = dout), "times_out" (dout ⊙ relu(x))."""
    _no_mistake(mistake, ("mask_from_out", "mask_from_dout", "no_mask", "times_out"))
    x = cache
    if mistake == "mask_from_out":
        return dout * (np.maximum(0, x) > 0)
    if mistake == "mask_from_dout":
        return dout * (dout > 0)
    if mistake == "no_mask":
        return dout.copy()
    if mistake == "times_out":
        return dout * np.maximum(0, x)
    dx = dout.copy()
    dx[x <= 0] = 0
    return dx


def leaky_relu_forward(x, alpha=0.01):
    out = np.where(x > 0, x, alpha * x)
    cache = (x, alpha)
    return out, cache


def leaky_relu_backward(dout, cache, mistake=None):
    """dx = dout ⊙ (1 if x > 0 else α).  Mistakes: "no_slope" (ReLU's mask: 0 for x ≤ 0),
    "mask_from_dout" (the slope chosen by dout > 0), "times_out" (dout ⊙ out)."""
    _no_mistake(mistake, ("no_slope", "mask_from_dout", "times_out"))
    x, alpha = cache
    if mistake == "no_slope":
        return dout * (x > 0)
    if mistake == "mask_from_dout":
        return dout * np.where(dout > 0, 1.0, alpha)
    if mistake == "times_out":
        return dout * np.where(x > 0, x, alpha * x)
    dx = dout.copy()
    dx[x <= 0] *= alpha
    return dx


def sigmoid_forward(x):
    out = 1 / (1 + np.exp(-x))
    cache = out
    return out, cache


def sigmoid_backward(dout, cache, mistake=None):
    """dx = dout ⊙ out(1 − out).  Mistakes: "df_at_out" (σ(out)(1 − σ(out))),
    "missing_one_minus" (dout ⊙ out)."""
    _no_mistake(mistake, ("df_at_out", "missing_one_minus"))
    out = cache
    if mistake == "df_at_out":
        s = 1 / (1 + np.exp(-out))
        return dout * s * (1 - s)
    if mistake == "missing_one_minus":
        return dout * out
    return dout * out * (1 - out)


def tanh_forward(x):
    out = np.tanh(x)
    return out, (x, out)


def tanh_backward(dout, cache, mistake=None):
    """dx = dout ⊙ (1 − out²).  Mistakes: "one_minus_x_squared" (1 − x²),
    "one_minus_out" (1 − out)."""
    _no_mistake(mistake, ("one_minus_x_squared", "one_minus_out"))
    x, out = cache
    if mistake == "one_minus_x_squared":
        return dout * (1 - x ** 2)
    if mistake == "one_minus_out":
        return dout * (1 - out)
    return dout * (1 - out ** 2)


# --------------------------------------------------------------------------- losses

def softmax_loss(x, y, mistake=None):
    """CS231n: loss = −(1/N) Σᵢ log softmax(xᵢ)[yᵢ], dx = (probs − onehot(y))/N.

    Mistakes: "not_divided" (sums over N), "no_subtract" (dx = probs/N), "wrong_sign",
    "no_max_shift" (exp(x) without subtracting the row max: overflows for large logits).
    """
    _no_mistake(mistake, ("not_divided", "no_subtract", "wrong_sign", "no_max_shift"))
    shifted_logits = x if mistake == "no_max_shift" else x - np.max(x, axis=1, keepdims=True)
    if mistake == "no_max_shift":
        e = np.exp(shifted_logits)
        probs = e / np.sum(e, axis=1, keepdims=True)
        log_probs = np.log(probs)
    else:
        Z = np.sum(np.exp(shifted_logits), axis=1, keepdims=True)
        log_probs = shifted_logits - np.log(Z)
        probs = np.exp(log_probs)
    N = x.shape[0]
    div = 1 if mistake == "not_divided" else N
    loss = -np.sum(log_probs[np.arange(N), y]) / div
    dx = probs.copy()
    if mistake != "no_subtract":
        dx[np.arange(N), y] -= 1
    dx /= div
    if mistake == "wrong_sign":
        dx = -dx
    return loss, dx


def svm_loss(x, y, mistake=None):
    """CS231n: loss = (1/N) Σᵢ Σ_{j≠yᵢ} max(0, x_ij − x_iyᵢ + 1); dx: 1 where the margin is
    positive, minus their count at yᵢ, over N.

    Mistakes: "not_divided", "no_correct_count" (no −count at yᵢ), "correct_class_margin"
    (margins[yᵢ] not zeroed: each example adds Δ = 1 to the loss).
    """
    _no_mistake(mistake, ("not_divided", "no_correct_count", "correct_class_margin"))
    N = x.shape[0]
    correct_class_scores = x[np.arange(N), y]
    margins = np.maximum(0, x - correct_class_scores[:, np.newaxis] + 1.0)
    if mistake != "correct_class_margin":
        margins[np.arange(N), y] = 0
    div = 1 if mistake == "not_divided" else N
    loss = np.sum(margins) / div
    num_pos = np.sum(margins > 0, axis=1)
    dx = np.zeros_like(x)
    dx[margins > 0] = 1
    if mistake != "no_correct_count":
        dx[np.arange(N), y] -= num_pos
    dx /= div
    return loss, dx


# --------------------------------------------------------------------------- normalisation

def batchnorm_forward(x, gamma, beta, bn_param, mistake=None):
    """CS231n batchnorm_forward, train mode: batch statistics, biased variance, running
    averages updated in bn_param.  Mistakes: "unbiased_var" (x.var(ddof=1)), "layer_axis"
    (statistics per example, over axis 1)."""
    _no_mistake(mistake, ("unbiased_var", "layer_axis"))
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    N, D = x.shape
    running_mean = bn_param.get("running_mean", np.zeros(D, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(D, dtype=x.dtype))
    if mode == "train":
        axis = 1 if mistake == "layer_axis" else 0
        sample_mean = x.mean(axis=axis, keepdims=True)
        sample_var = x.var(axis=axis, ddof=1 if mistake == "unbiased_var" else 0, keepdims=True)
        x_hat = (x - sample_mean) / np.sqrt(sample_var + eps)
        out = gamma * x_hat + beta
        cache = (x, x_hat, sample_mean, sample_var, gamma, beta, eps, axis)
        if axis == 0:
            running_mean = momentum * running_mean + (1 - momentum) * sample_mean[0]
            running_var = momentum * running_var + (1 - momentum) * sample_var[0]
    elif mode == "test":
        x_hat = (x - running_mean) / np.sqrt(running_var + eps)
        out = gamma * x_hat + beta
        cache = None
    else:
        raise ValueError('Invalid forward batchnorm mode "%s"' % mode)
    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var
    return out, cache


def batchnorm_backward(dout, cache, mistake=None):
    """The staged computational graph of CS231n's batchnorm_backward.

    Mistakes: "no_mean_path" (dμ dropped), "no_var_path" (dσ² dropped), "no_paths" (both:
    dx = γ·s·dout), "dgamma_from_x" (Σ dout ⊙ x), "dgamma_not_summed" (dout ⊙ x̂, (N, D)),
    "dbeta_wrong_axis" (Σ over the units, (N,))."""
    _no_mistake(mistake, ("no_mean_path", "no_var_path", "no_paths", "dgamma_from_x",
                          "dgamma_not_summed", "dbeta_wrong_axis"))
    x, x_hat, mu, var, gamma, beta, eps, axis = cache
    n = x.shape[axis]
    dbeta = np.sum(dout, axis=0) if mistake != "dbeta_wrong_axis" else np.sum(dout, axis=1)
    dgamma = np.sum(dout * x_hat, axis=0)
    if mistake == "dgamma_from_x":
        dgamma = np.sum(dout * x, axis=0)
    elif mistake == "dgamma_not_summed":
        dgamma = dout * x_hat
    dx_hat = dout * gamma
    std = np.sqrt(var + eps)
    dvar = np.sum(dx_hat * (x - mu) * -0.5 * std ** -3, axis=axis, keepdims=True)
    dmu = (np.sum(-dx_hat / std, axis=axis, keepdims=True)
           + dvar * np.mean(-2 * (x - mu), axis=axis, keepdims=True))
    if mistake in ("no_var_path", "no_paths"):
        dvar = 0 * dvar
    if mistake in ("no_mean_path", "no_paths"):
        dmu = 0 * dmu
    dx = dx_hat / std + dvar * 2 * (x - mu) / n + dmu / n
    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache, mistake=None):
    """CS231n's simplified batchnorm_backward_alt (one line for dx).  Mistakes:
    "layer_axis" (the means over the units, axis 1: layernorm's formula)."""
    _no_mistake(mistake, ("layer_axis",))
    x, x_hat, mu, var, gamma, beta, eps, axis = cache
    if mistake == "layer_axis":
        axis = 1
    n = x.shape[axis]
    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * x_hat, axis=0)
    dx_hat = dout * gamma
    dx = (1.0 / n) / np.sqrt(var + eps) * (
        n * dx_hat - np.sum(dx_hat, axis=axis, keepdims=True)
        - x_hat * np.sum(dx_hat * x_hat, axis=axis, keepdims=True))
    return dx, dgamma, dbeta


def layernorm_forward(x, gamma, beta, ln_param, mistake=None):
    """CS231n layernorm_forward: batch norm's code on the transpose, statistics per example.
    Mistakes: "batch_axis" (statistics over the batch: batch norm)."""
    _no_mistake(mistake, ("batch_axis",))
    eps = ln_param.get("eps", 1e-5)
    axis = 0 if mistake == "batch_axis" else 1
    mu = x.mean(axis=axis, keepdims=True)
    var = x.var(axis=axis, keepdims=True)
    x_hat = (x - mu) / np.sqrt(var + eps)
    out = gamma * x_hat + beta
    cache = (x, x_hat, mu, var, gamma, beta, eps, axis)
    return out, cache


def layernorm_backward(dout, cache, mistake=None):
    """dx = (1/D)·s·(D·ĝ − Σ_units ĝ − x̂ Σ_units ĝ ⊙ x̂), ĝ = γ ⊙ dout.
    Mistakes: "batch_axis" (batchnorm's sums over the batch, axis 0)."""
    _no_mistake(mistake, ("batch_axis",))
    return batchnorm_backward_alt(dout, cache, mistake=None) if mistake is None else \
        _norm_backward_axis(dout, cache, 0)


def _norm_backward_axis(dout, cache, axis):
    x, x_hat, mu, var, gamma, beta, eps, _ = cache
    n = x.shape[axis]
    dx_hat = dout * gamma
    dx = (1.0 / n) / np.sqrt(var + eps) * (
        n * dx_hat - np.sum(dx_hat, axis=axis, keepdims=True)
        - x_hat * np.sum(dx_hat * x_hat, axis=axis, keepdims=True))
    return dx, np.sum(dout * x_hat, axis=0), np.sum(dout, axis=0)


# --------------------------------------------------------------------------- dropout

def dropout_forward(x, dropout_param, mistake=None):
    """CS231n (2018 on): inverted dropout, p the KEEP probability: mask = (rand < p)/p.

    Mistakes: "drop_rate" (p read as the drop rate: (rand < 1 − p)/(1 − p)),
    "not_inverted" (mask = rand < p, no 1/p), "keep_fraction" ((rand > p)/p: keeps a
    fraction 1 − p but rescales by 1/p), "train_at_test" (the mask also in test mode)."""
    _no_mistake(mistake, ("drop_rate", "not_inverted", "keep_fraction", "train_at_test"))
    p, mode = dropout_param["p"], dropout_param["mode"]
    if "seed" in dropout_param:
        np.random.seed(dropout_param["seed"])
    mask = None
    out = None
    if mode == "train" or mistake == "train_at_test":
        u = np.random.rand(*x.shape)
        if mistake == "drop_rate":
            mask = (u < 1 - p) / (1 - p)
        elif mistake == "not_inverted":
            mask = (u < p) * 1.0
        elif mistake == "keep_fraction":
            mask = (u > p) / p
        else:
            mask = (u < p) / p
        out = x * mask
    elif mode == "test":
        out = x
    cache = (dropout_param, mask)
    out = out.astype(x.dtype, copy=False)
    return out, cache


def dropout_backward(dout, cache, mistake=None):
    """dx = dout ⊙ mask in train mode, dout in test mode.  Mistakes: "no_mask" (dx = dout),
    "not_rescaled" (dout ⊙ (mask ≠ 0))."""
    _no_mistake(mistake, ("no_mask", "not_rescaled"))
    dropout_param, mask = cache
    mode = dropout_param["mode"]
    if mode == "train" and mistake != "no_mask":
        dx = dout * mask if mistake != "not_rescaled" else dout * (mask != 0)
    else:
        dx = dout
    return dx
