"""A port of the deeplearning.ai course 1 ("Building your Deep Neural Network: Step by
Step") and course 2 (regularisation) backprop, written for the oracle's tests.

The course's conventions: parameters W_l of shape (n_out, n_in), b_l of shape (n_out, 1),
columns are examples: X (n_x, m), Y (n_y, m); Z = W·A_prev + b; relu hidden layers (tanh
and sigmoid are accepted too) and a sigmoid output; caches per layer; the cost

    J = −(1/m) Σ [Y log AL + (1 − Y) log(1 − AL)] + λ/(2m) Σ_l ‖W_l‖²_F

(summed over the output units, averaged over the batch); dAL = −(Y/AL − (1 − Y)/(1 − AL)),
dZ per example (no 1/m), and linear_backward's dW = (1/m) dZ A_prevᵀ + (λ/m) W,
db = (1/m) Σ dZ (keepdims).  Grads are 1-based: "dW1", "db1", … (and "dA0", … as in the
course).  This is the oracle's `convention="deeplearning_ai"`.

`mistake=` plants one of the bugs in `MISTAKES` (see tests/students/nielsen.py for the
meaning of MISTAKES, CONFIGS and HIDDEN_IN).
"""
import numpy as np

MISTAKES = {
    # dW = (1/m) A_prev·dZᵀ
    "dW_transposed": (3, ["transpos"], "shape_transposed"),
    # m = A_prev.shape[0] (n_in) instead of A_prev.shape[1]: right only when n_in == m
    "m_from_rows": (3, ["×"], "factor_unnamed"),
    # db = (1/m) dZ: one column per example
    "db_not_summed": (3, ["sum"], "db_not_summed"),
    # db = (1/m) np.sum(dZ, axis=0, keepdims=True): summed over the units
    "db_wrong_axis": (3, ["units"], None),
    # db = dZ[:, 0:1]: the first example's dZ
    "db_one_example": (3, ["one example"], "db_one_example"),
    # dW = dZ·A_prevᵀ (+ λ/m W) without the 1/m (db keeps it)
    "dW_missing_1_over_m": (3, ["m×"], "factor"),
    # db = np.sum(dZ, axis=1, keepdims=True) without the 1/m
    "db_missing_1_over_m": (3, ["m×"], "factor"),
    # dAL divided by m, then the 1/m of linear_backward once more
    "one_over_m_twice": (3, ["1/m×"], "factor"),
    # dAL = Y/AL − (1 − Y)/(1 − AL)
    "wrong_sign": (3, ["sign"], "factor"),
    # relu_backward forgotten: dZ = dA in the hidden layers
    "relu_backward_skipped": (2, ["f′"], "missing_fprime"),
    # sigmoid_backward given the activation cache A instead of Z
    "sigmoid_backward_at_A": (3, ["f′", "a"], "fprime_at_a"),
    # dZL = AL − Y computed, then passed through sigmoid_backward again
    "output_extra_fprime": (3, ["f′"], "output_extra_fprime"),
    # the linear cache's A_prev swapped for the previous layer's Z (activation cache)
    "dW_from_Z": (3, ["z"], "dW_from_z"),
    # layer 1 (a middle layer) is backpropagated with "sigmoid" instead of "relu"
    "middle_layer_sigmoid_backward": (1, ["layer 1"], "enters_here"),
    # square net: every layer's linear_backward gets the output layer's dZ
    "reused_dZ": (2, ["δ"], "reused_delta"),
    # course 2: the (λ/m) W term left out of dW
    "l2_missing": (3, [("L2", "λ", "regulari")], "l2_missing"),
    # ... added twice
    "l2_doubled": (3, [("L2", "λ", "regulari")], "l2_doubled"),
    # ... and added to db as well: db += (λ/m) b
    "l2_on_biases": (3, [("bias", "db")], "l2_on_biases"),
}

CONFIGS = {
    "reused_dZ": {"net": "square"},
    "l2_missing": {"l2": 0.7},
    "l2_doubled": {"l2": 0.7},
    "l2_on_biases": {"l2": 0.7},
}

HIDDEN_IN = {
    "m_from_rows": "square",          # n_in == m in every layer
    "db_one_example": "batch1",
    "db_missing_1_over_m": "batch1",
}


# ----------------------------------------------------------------------- activations

def sigmoid(Z):
    with np.errstate(over="ignore"):
        A = 1 / (1 + np.exp(-Z))
    cache = Z
    return A, cache


def relu(Z):
    A = np.maximum(0, Z)
    cache = Z
    return A, cache


def tanh(Z):
    return np.tanh(Z), Z


def relu_backward(dA, cache):
    Z = cache
    dZ = np.array(dA, copy=True)
    dZ[Z <= 0] = 0
    return dZ


def sigmoid_backward(dA, cache):
    Z = cache
    with np.errstate(over="ignore"):
        s = 1 / (1 + np.exp(-Z))
    dZ = dA * s * (1 - s)
    return dZ


def tanh_backward(dA, cache):
    Z = cache
    A = np.tanh(Z)
    return dA * (1 - np.power(A, 2))


FORWARD = {"sigmoid": sigmoid, "relu": relu, "tanh": tanh}
BACKWARD = {"sigmoid": sigmoid_backward, "relu": relu_backward, "tanh": tanh_backward}


# ----------------------------------------------------------------------- forward

def linear_forward(A, W, b):
    Z = np.dot(W, A) + b
    cache = (A, W, b)
    return Z, cache


def linear_activation_forward(A_prev, W, b, activation):
    Z, linear_cache = linear_forward(A_prev, W, b)
    A, activation_cache = FORWARD[activation](Z)
    cache = (linear_cache, activation_cache)
    return A, cache


def L_model_forward(X, parameters, activation="relu"):
    caches = []
    A = X
    L = len(parameters) // 2
    for l in range(1, L):
        A_prev = A
        A, cache = linear_activation_forward(A_prev, parameters["W" + str(l)],
                                             parameters["b" + str(l)], activation)
        caches.append(cache)
    AL, cache = linear_activation_forward(A, parameters["W" + str(L)],
                                          parameters["b" + str(L)], "sigmoid")
    caches.append(cache)
    return AL, caches


def compute_cost(AL, Y, parameters=None, lambd=0.0):
    m = Y.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        cross_entropy_cost = -1 / m * np.sum(Y * np.log(AL) + (1 - Y) * np.log(1 - AL))
    cost = np.squeeze(cross_entropy_cost)
    if lambd:
        L = len(parameters) // 2
        L2 = sum(np.sum(np.square(parameters["W" + str(l)])) for l in range(1, L + 1))
        cost = cost + lambd / (2 * m) * L2
    return float(cost)


# ----------------------------------------------------------------------- backward

def linear_backward(dZ, cache, lambd=0.0, mistake=None):
    A_prev, W, b = cache
    m = A_prev.shape[0] if mistake == "m_from_rows" else A_prev.shape[1]

    if mistake == "dW_transposed":
        dW = 1 / m * np.dot(A_prev, dZ.T)
    elif mistake == "dW_missing_1_over_m":
        dW = np.dot(dZ, A_prev.T)
    else:
        dW = 1 / m * np.dot(dZ, A_prev.T)
    if lambd:  # course 2's backward_propagation_with_regularization
        # (a student with transposed dWs transposes W too, to make the sum broadcast)
        W_term = W.T if mistake == "dW_transposed" else W
        if mistake != "l2_missing":
            dW = dW + lambd / m * W_term
        if mistake == "l2_doubled":
            dW = dW + lambd / m * W_term

    if mistake == "db_not_summed":
        db = 1 / m * dZ
    elif mistake == "db_wrong_axis":
        db = 1 / m * np.sum(dZ, axis=0, keepdims=True)
    elif mistake == "db_one_example":
        db = dZ[:, 0:1]
    elif mistake == "db_missing_1_over_m":
        db = np.sum(dZ, axis=1, keepdims=True)
    else:
        db = 1 / m * np.sum(dZ, axis=1, keepdims=True)
    if mistake == "l2_on_biases":
        db = db + lambd / m * b

    dA_prev = np.dot(W.T, dZ)
    return dA_prev, dW, db


def linear_activation_backward(dA, cache, activation, lambd=0.0, mistake=None):
    linear_cache, activation_cache = cache
    dZ = BACKWARD[activation](dA, activation_cache)
    return linear_backward(dZ, linear_cache, lambd, mistake)


def L_model_backward(AL, Y, caches, lambd=0.0, activation="relu", mistake=None):
    grads = {}
    L = len(caches)
    m = AL.shape[1]
    Y = Y.reshape(AL.shape)

    if mistake == "output_extra_fprime":
        dAL = AL - Y                                    # "dZ = A - Y", as in week 3 ...
    elif mistake == "wrong_sign":
        dAL = np.divide(Y, AL) - np.divide(1 - Y, 1 - AL)
    else:
        dAL = -(np.divide(Y, AL) - np.divide(1 - Y, 1 - AL))
    if mistake == "one_over_m_twice":
        dAL = dAL / m

    if mistake == "dW_from_Z":  # the caches' A_prev replaced by the previous layer's Z
        caches = [((caches[l - 1][1] if l else linear_cache[0], *linear_cache[1:]),
                   activation_cache)
                  for l, (linear_cache, activation_cache) in enumerate(caches)]

    current_cache = caches[L - 1]
    linear_cache, activation_cache = current_cache
    if mistake == "sigmoid_backward_at_A":
        A_out = AL
        dZ_out = sigmoid_backward(dAL, A_out)
    else:
        dZ_out = sigmoid_backward(dAL, activation_cache)
    dA_prev_temp, dW_temp, db_temp = linear_backward(dZ_out, linear_cache, lambd, mistake)
    grads["dA" + str(L - 1)] = dA_prev_temp
    grads["dW" + str(L)] = dW_temp
    grads["db" + str(L)] = db_temp

    for l in reversed(range(L - 1)):
        current_cache = caches[l]
        linear_cache, activation_cache = current_cache
        dA = grads["dA" + str(l + 1)]
        if mistake == "relu_backward_skipped":
            dZ = dA
        elif mistake == "middle_layer_sigmoid_backward" and l == 1:
            dZ = sigmoid_backward(dA, activation_cache)
        elif mistake == "reused_dZ":
            dZ = dZ_out
        else:
            dZ = BACKWARD[activation](dA, activation_cache)
        dA_prev_temp, dW_temp, db_temp = linear_backward(dZ, linear_cache, lambd, mistake)
        grads["dA" + str(l)] = dA_prev_temp
        grads["dW" + str(l + 1)] = dW_temp
        grads["db" + str(l + 1)] = db_temp
    return grads


def parameters_from(weights, biases):
    parameters = {}
    for l, (W, b) in enumerate(zip(weights, biases), start=1):
        parameters["W" + str(l)] = np.asarray(W, dtype=float)
        parameters["b" + str(l)] = np.asarray(b, dtype=float).reshape(-1, 1)
    return parameters


def cost_value(weights, biases, X, Y, *, lambd=0.0, activation="relu"):
    parameters = parameters_from(weights, biases)
    AL, _ = L_model_forward(X, parameters, activation)
    return compute_cost(AL, Y, parameters, lambd)


def forward_backward(weights, biases, X, Y, *, lambd=0.0, activation="relu", mistake=None):
    """(cost, grads) of one forward and backward pass, grads 1-based as in the course."""
    if mistake is not None and mistake not in MISTAKES:
        raise ValueError(f"unknown mistake {mistake!r}")
    parameters = parameters_from(weights, biases)
    AL, caches = L_model_forward(X, parameters, activation)
    cost = compute_cost(AL, Y, parameters, lambd)
    with np.errstate(divide="ignore", invalid="ignore"):
        grads = L_model_backward(AL, Y, caches, lambd, activation, mistake)
    return cost, grads
