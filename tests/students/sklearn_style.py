"""A port of scikit-learn's BaseMultilayerPerceptron._backprop (MLPRegressor /
MLPClassifier), written for the oracle's tests.

scikit-learn's conventions: coefs_[l] of shape (n_in, n_out), intercepts_[l] (n_out,),
X (n_samples, n_in) with rows as examples, y (n_samples, n_outputs) (a 1-D y is one
output; classification targets are binarised: one column per class, one-hot).  Hidden
activation relu, tanh, logistic or identity, with sklearn's in-place derivatives written
in terms of the activation's output Z; output identity (loss="squared_error") or logistic
/ softmax (loss="log_loss").  Losses:

    squared_error   ((y − ŷ)²).mean() / 2          (the mean is over n_samples · n_outputs)
    log_loss        −Σ xlogy(y, ŷ) / n_samples      (softmax output)
    binary          −Σ [xlogy(y, ŷ) + xlogy(1 − y, 1 − ŷ)] / n_samples   (logistic output)

plus (alpha/2)·Σ‖W‖² / n_samples.  The backward pass: deltas[last] = ŷ − y (no 1/n),
deltas[i−1] = deltas[i]·coefs_[i]ᵀ ⊙ f′, coef_grads = (aᵀ·δ + alpha·W) / n_samples,
intercept_grads = mean(δ, axis=0).  This is the oracle's `convention="sklearn"`.

As in scikit-learn (its issue #8349), for squared_error with more than one output the
gradient is that of ½·Σ_outputs(ŷ − y)² / n_samples, n_outputs times the gradient of the
loss value returned; with one output they agree.

`mistake=` plants one of the bugs in `MISTAKES` (see tests/students/nielsen.py for the
meaning of MISTAKES, CONFIGS and HIDDEN_IN).
"""
import numpy as np

MISTAKES = {
    # coef_grads = δᵀ·a instead of aᵀ·δ
    "coef_grad_transposed": (3, ["transpos"], "shape_transposed"),
    # n_samples = X.shape[1] (n_features): coef_grads ×n/n_features (intercepts use np.mean)
    "n_samples_from_columns": (3, ["wrong axis of X"], "factor"),
    # intercept_grads = np.sum(δ, 0): the /n forgotten
    "intercept_sum": (3, ["m×"], "factor"),
    # intercept_grads = np.mean(δ, 1): averaged over the units
    "intercept_wrong_axis": (3, ["units"], None),
    # intercept_grads = deltas[layer][0]: the first sample's δ (per sample, no 1/n)
    "intercept_one_example": (3, ["one example"], "db_one_example"),
    # deltas[last] = y − ŷ
    "wrong_sign": (3, ["sign"], "factor"),
    # deltas[last] = (ŷ − y) / n_samples, and then /n_samples again in the gradients
    "one_over_n_twice": (3, ["1/m×"], "factor"),
    # no inplace_derivative in the hidden layers
    "relu_derivative_missing": (2, ["f′"], "missing_fprime"),
    # tanh: delta *= 1 − tanh(Z)² with Z already the activation tanh(z)
    "tanh_derivative_at_a": (2, ["f′", "a"], "fprime_at_a"),
    # logistic output: deltas[last] *= ŷ(1 − ŷ), although ŷ − y already includes it
    "logistic_output_extra_fprime": (3, ["f′"], "output_extra_fprime"),
    # the aᵀ·δ before the activation: the previous layer's z instead of its output
    "coef_from_z": (3, ["z"], "dW_from_z"),
    # square net: every layer's gradients use deltas[last]
    "reused_delta": (2, ["δ"], "reused_delta"),
    # coef_grads of layer 1 (a middle layer) not divided by n_samples
    "middle_layer_not_divided": (1, ["m×"], "factor"),
    # squared_error: deltas[last] = 2(ŷ − y), the derivative of (ŷ − y)² without the ½,
    # while the loss returned keeps the ½: a factor 2, not a convention
    "squared_extra_2": (3, [("2×", "×2")], "factor"),
    # alpha·W left out of coef_grads
    "alpha_missing": (3, [("L2", "alpha", "λ", "regulari")], "l2_missing"),
    # ... added twice
    "alpha_doubled": (3, [("L2", "alpha", "λ", "regulari")], "l2_doubled"),
    # ... and added to the intercepts as well
    "alpha_on_intercepts": (3, [("bias", "db")], "l2_on_biases"),
}

CONFIGS = {
    "tanh_derivative_at_a": {"kw": {"activation": "tanh"}},
    "reused_delta": {"net": "square"},
    "squared_extra_2": {"kw": {"loss": "squared_error"}, "n_outputs": 1},
    "alpha_missing": {"l2": 0.4},
    "alpha_doubled": {"l2": 0.4},
    "alpha_on_intercepts": {"l2": 0.4},
}

HIDDEN_IN = {
    "n_samples_from_columns": "square",   # n_features == n_samples
    "intercept_sum": "batch1",
}


# ----------------------------------------------------------------------- activations

def inplace_identity(X):
    pass


def inplace_logistic(X):
    with np.errstate(over="ignore"):
        X[...] = 1.0 / (1.0 + np.exp(-X))


def inplace_tanh(X):
    np.tanh(X, out=X)


def inplace_relu(X):
    np.maximum(X, 0, out=X)


def inplace_softmax(X):
    tmp = X - X.max(axis=1)[:, np.newaxis]
    np.exp(tmp, out=X)
    X /= X.sum(axis=1)[:, np.newaxis]


ACTIVATIONS = {"identity": inplace_identity, "tanh": inplace_tanh,
               "logistic": inplace_logistic, "relu": inplace_relu,
               "softmax": inplace_softmax}


def inplace_identity_derivative(Z, delta):
    pass


def inplace_logistic_derivative(Z, delta):
    delta *= Z
    delta *= 1 - Z


def inplace_tanh_derivative(Z, delta):
    delta *= 1 - Z ** 2


def inplace_relu_derivative(Z, delta):
    delta[Z == 0] = 0


DERIVATIVES = {"identity": inplace_identity_derivative, "tanh": inplace_tanh_derivative,
               "logistic": inplace_logistic_derivative, "relu": inplace_relu_derivative}


# ----------------------------------------------------------------------- losses

def _xlogy(x, y):
    return np.where(x == 0, 0.0, x * np.log(np.where(x == 0, 1.0, y)))


def squared_loss(y_true, y_pred):
    return ((y_true - y_pred) ** 2).mean() / 2


def log_loss(y_true, y_prob):
    eps = np.finfo(y_prob.dtype).eps
    y_prob = np.clip(y_prob, eps, 1 - eps)
    if y_prob.shape[1] == 1:
        y_prob = np.append(1 - y_prob, y_prob, axis=1)
    if y_true.shape[1] == 1:
        y_true = np.append(1 - y_true, y_true, axis=1)
    return -_xlogy(y_true, y_prob).sum() / y_prob.shape[0]


def binary_log_loss(y_true, y_prob):
    eps = np.finfo(y_prob.dtype).eps
    y_prob = np.clip(y_prob, eps, 1 - eps)
    return (-_xlogy(y_true, y_prob).sum() - _xlogy(1 - y_true, 1 - y_prob).sum()) \
        / y_prob.shape[0]


LOSS_FUNCTIONS = {"squared_error": squared_loss, "log_loss": log_loss,
                  "binary_log_loss": binary_log_loss}


# ----------------------------------------------------------------------- the network

def _forward_pass(coefs, intercepts, activations, activation, out_activation):
    """sklearn's forward pass, in place; also returns the hidden layers' z (copies)."""
    hidden_activation = ACTIVATIONS[activation]
    n_layers = len(coefs) + 1
    zs = []
    for i in range(n_layers - 1):
        activations[i + 1] = activations[i] @ coefs[i]
        activations[i + 1] += intercepts[i]
        if (i + 1) != (n_layers - 1):
            zs.append(activations[i + 1].copy())
            hidden_activation(activations[i + 1])
    ACTIVATIONS[out_activation](activations[n_layers - 1])
    return activations, zs


def _default_out(loss):
    return "identity" if loss == "squared_error" else "logistic"


def loss_value(coefs, intercepts, X, y, *, alpha=0.0, loss="squared_error",
               activation="relu", out_activation=None):
    return backprop(coefs, intercepts, X, y, alpha=alpha, loss=loss, activation=activation,
                    out_activation=out_activation)[0]


def backprop(coefs, intercepts, X, y, *, alpha=0.0, loss="squared_error", activation="relu",
             out_activation=None, mistake=None):
    """(loss, coef_grads, intercept_grads), as BaseMultilayerPerceptron._backprop."""
    if mistake is not None and mistake not in MISTAKES:
        raise ValueError(f"unknown mistake {mistake!r}")
    coefs = [np.asarray(c, dtype=float) for c in coefs]
    intercepts = [np.asarray(b, dtype=float).reshape(-1) for b in intercepts]
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    if y.ndim == 1:
        y = y.reshape((-1, 1))
    out_activation = out_activation or _default_out(loss)
    n_layers = len(coefs) + 1
    n_samples = X.shape[1] if mistake == "n_samples_from_columns" else X.shape[0]

    activations = [X] + [None] * (n_layers - 1)
    deltas = [None] * (n_layers - 1)
    coef_grads = [np.empty_like(c) for c in coefs]
    intercept_grads = [np.empty_like(b) for b in intercepts]

    activations, zs = _forward_pass(coefs, intercepts, activations, activation,
                                    out_activation)

    loss_func_name = loss
    if loss_func_name == "log_loss" and out_activation == "logistic":
        loss_func_name = "binary_log_loss"
    loss_value_ = LOSS_FUNCTIONS[loss_func_name](y, activations[-1])
    values = 0
    for s in coefs:
        s = s.ravel()
        values += np.dot(s, s)
    loss_value_ += (0.5 * alpha) * values / n_samples

    last = n_layers - 2
    deltas[last] = activations[-1] - y
    if mistake == "wrong_sign":
        deltas[last] = y - activations[-1]
    elif mistake == "one_over_n_twice":
        deltas[last] = deltas[last] / n_samples
    elif mistake == "logistic_output_extra_fprime":
        deltas[last] *= activations[-1] * (1 - activations[-1])
    elif mistake == "squared_extra_2":
        deltas[last] = 2 * deltas[last]

    def compute_loss_grad(layer):
        a_in = activations[layer]
        if mistake == "coef_from_z" and layer >= 1:
            a_in = zs[layer - 1]
        if mistake == "coef_grad_transposed":
            coef_grads[layer] = deltas[layer].T @ a_in
        else:
            coef_grads[layer] = a_in.T @ deltas[layer]
        # (a student with transposed grads transposes W too, to make the sum broadcast)
        W_term = coefs[layer].T if mistake == "coef_grad_transposed" else coefs[layer]
        if mistake != "alpha_missing":
            coef_grads[layer] += alpha * W_term
        if mistake == "alpha_doubled":
            coef_grads[layer] += alpha * W_term
        if not (mistake == "middle_layer_not_divided" and layer == 1):
            coef_grads[layer] /= n_samples
        if mistake == "intercept_sum":
            intercept_grads[layer] = np.sum(deltas[layer], 0)
        elif mistake == "intercept_wrong_axis":
            intercept_grads[layer] = np.mean(deltas[layer], 1)
        elif mistake == "intercept_one_example":
            intercept_grads[layer] = deltas[layer][0]
        elif mistake == "alpha_on_intercepts":
            intercept_grads[layer] = (np.sum(deltas[layer], 0)
                                      + alpha * intercepts[layer]) / n_samples
        else:
            intercept_grads[layer] = np.mean(deltas[layer], 0)

    compute_loss_grad(last)

    inplace_derivative = DERIVATIVES[activation]
    for i in range(n_layers - 2, 0, -1):
        if mistake == "reused_delta":
            deltas[i - 1] = deltas[last]
        else:
            deltas[i - 1] = deltas[i] @ coefs[i].T
            if mistake == "tanh_derivative_at_a":
                deltas[i - 1] *= 1 - np.tanh(activations[i]) ** 2
            elif mistake != "relu_derivative_missing":
                inplace_derivative(activations[i], deltas[i - 1])
        compute_loss_grad(i - 1)

    return loss_value_, coef_grads, intercept_grads
