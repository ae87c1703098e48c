"""A port of CS231n assignment 1's TwoLayerNet.loss, generalised to L affine layers
(affine - relu - … - affine - softmax), written for the oracle's tests.

CS231n's conventions: W1 of shape (D, H) (in, out), b1 of shape (H,), X (N, D) with rows
as examples, y (N,) integer labels; scores = relu(X·W1 + b1)·W2 + b2; the softmax loss
averaged over N plus reg·(ΣW1² + ΣW2² + …), so grads["W"] += 2·reg·W; dscores = (probs −
1[y])/N.  Grads are 1-based: "W1", "b1", ….  This is the oracle's `convention="cs231n"`.

`mistake=` plants one of the bugs in `MISTAKES` (see tests/students/nielsen.py for the
meaning of MISTAKES, CONFIGS and HIDDEN_IN).
"""
import numpy as np

MISTAKES = {
    # dW = dout.T·h instead of h.T·dout
    "dW_transposed": (3, ["transpos"], "shape_transposed"),
    # N = X.shape[1] (D) instead of X.shape[0]: loss and gradients ×N/D; right when D == N
    "N_from_columns": (3, ["wrong axis of X"], "factor"),
    # probs = exp / np.sum(exp, axis=1) without keepdims: right for N = 1, an error for
    # N ≠ C, wrong values when N == C (the square configuration)
    "softmax_sum_no_keepdims": (3, ["output"], "enters_here"),
    # db = np.sum(dout, axis=1): summed over the units
    "db_wrong_axis": (3, ["units"], None),
    # db = dout[0]: the first example's δ
    "db_one_example": (3, ["one example"], "db_one_example"),
    # dscores not divided by N: the gradients of the summed loss, while the loss returned
    # is the mean: not a convention (the loss says mean), a factor m
    "missing_1_over_N": (3, [("×m", "m×")], "factor"),
    # dscores /= N twice
    "one_over_N_twice": (3, ["1/m×"], "factor"),
    # dscores = 1[y] − probs
    "wrong_sign": (3, ["sign"], "factor"),
    # the relu backward forgotten: dh = dscores·Wᵀ without the mask
    "relu_backward_skipped": (2, ["f′"], "missing_fprime"),
    # dscores *= probs·(1 − probs): softmax + cross-entropy's δ with an extra "f′"
    "softmax_extra_fprime": (3, [("f′", "derivative", "a(1 − a)")], "output_extra_fprime"),
    # the affine cache keeps the pre-relu z of the layer below instead of h = relu(z)
    "dW_from_z": (3, ["z"], "dW_from_z"),
    # square net: every layer's affine backward gets dscores
    "reused_dscores": (2, ["δ"], "reused_delta"),
    # the 2·reg·W term forgotten only for W2 (layer 1, a middle layer)
    "middle_layer_reg_missing": (1, [("L2", "reg", "λ", "regulari")], "l2_missing"),
    # the 2·reg·W term forgotten everywhere
    "reg_missing": (3, [("L2", "reg", "λ", "regulari")], "l2_missing"),
    # ... added twice (in the layer loop and again at the end)
    "reg_doubled": (3, [("L2", "reg", "λ", "regulari")], "l2_doubled"),
    # ... added to the biases as well
    "reg_on_biases": (3, [("bias", "db")], "l2_on_biases"),
}

CONFIGS = {
    "softmax_sum_no_keepdims": {"net": "square"},
    "reused_dscores": {"net": "square"},
    "middle_layer_reg_missing": {"l2": 0.3},
    "reg_missing": {"l2": 0.3},
    "reg_doubled": {"l2": 0.3},
    "reg_on_biases": {"l2": 0.3},
}

HIDDEN_IN = {
    "N_from_columns": "square",       # D == N
    "softmax_sum_no_keepdims": "batch1",
    "db_one_example": "batch1",
    "missing_1_over_N": "batch1",
}


def _params(weights, biases):
    params = {}
    for l, (W, b) in enumerate(zip(weights, biases), start=1):
        params["W%d" % l] = np.asarray(W, dtype=float)
        params["b%d" % l] = np.asarray(b, dtype=float).reshape(-1)
    return params


def loss(weights, biases, X, y=None, *, reg=0.0, mistake=None):
    """Scores if y is None, else (loss, grads) with grads["W1"], grads["b1"], …"""
    if mistake is not None and mistake not in MISTAKES:
        raise ValueError(f"unknown mistake {mistake!r}")
    params = _params(weights, biases)
    L = len(weights)
    N, D = X.shape
    if mistake == "N_from_columns":
        N = X.shape[1]

    # forward pass: affine - relu for the hidden layers, affine for the scores
    hs = [X]    # the input of each affine layer
    zs = []     # the pre-activations of the hidden layers
    h = X
    for l in range(1, L):
        z = h.dot(params["W%d" % l]) + params["b%d" % l]
        zs.append(z)
        h = np.maximum(0, z)
        hs.append(z if mistake == "dW_from_z" else h)
    scores = h.dot(params["W%d" % L]) + params["b%d" % L]
    if y is None:
        return scores

    # softmax loss
    shifted = scores - np.max(scores, axis=1, keepdims=True)
    exp_scores = np.exp(shifted)
    if mistake == "softmax_sum_no_keepdims":
        probs = exp_scores / np.sum(exp_scores, axis=1)
    else:
        probs = exp_scores / np.sum(exp_scores, axis=1, keepdims=True)
    n = X.shape[0]
    data_loss = -np.sum(np.log(probs[np.arange(n), y])) / N
    reg_loss = reg * sum(np.sum(params["W%d" % l] ** 2) for l in range(1, L + 1))
    loss = data_loss + reg_loss

    # backward pass
    grads = {}
    dscores = probs.copy()
    dscores[np.arange(n), y] -= 1
    if mistake == "wrong_sign":
        dscores = -dscores
    if mistake != "missing_1_over_N":
        dscores /= N
    if mistake == "one_over_N_twice":
        dscores /= N
    if mistake == "softmax_extra_fprime":
        dscores *= probs * (1 - probs)

    dout = dscores
    for l in range(L, 0, -1):
        W, h_in = params["W%d" % l], hs[l - 1]
        if mistake == "dW_transposed":
            grads["W%d" % l] = dout.T.dot(h_in)
        else:
            grads["W%d" % l] = h_in.T.dot(dout)
        if mistake == "db_wrong_axis":
            grads["b%d" % l] = np.sum(dout, axis=1)
        elif mistake == "db_one_example":
            grads["b%d" % l] = dout[0]
        else:
            grads["b%d" % l] = np.sum(dout, axis=0)
        # (a student with transposed dWs transposes W too, to make the sum broadcast)
        W_term = W.T if mistake == "dW_transposed" else W
        if mistake != "reg_missing" and not (mistake == "middle_layer_reg_missing"
                                             and l == 2):
            grads["W%d" % l] += 2 * reg * W_term
        if mistake == "reg_on_biases":
            grads["b%d" % l] += 2 * reg * params["b%d" % l]
        if l > 1:
            if mistake == "reused_dscores":
                dh = dscores
            else:
                dh = dout.dot(W.T)
                if mistake != "relu_backward_skipped":
                    dh[zs[l - 2] <= 0] = 0
            dout = dh
    if mistake == "reg_doubled":
        for l in range(1, L + 1):
            grads["W%d" % l] += 2 * reg * params["W%d" % l]
    return loss, grads
