"""A port of the backprop in Michael Nielsen's network.py / network2.py (Neural Networks and
Deep Learning, chapters 1-3), written for the oracle's tests.

Nielsen's conventions: weights[l] of shape (n_out, n_in), biases[l] of shape (n_out, 1),
one example at a time as column vectors x (n_x, 1), y (n_y, 1); z = w·a + b; every layer a
sigmoid (here the hidden layers may also be tanh or relu, the output is always a sigmoid);
`backprop` returns (nabla_b, nabla_w), biases first, for ONE example of the cost

    quadratic      C = ½‖a − y‖²                       (QuadraticCost)
    cross_entropy  C = −Σ [y ln a + (1 − y) ln(1 − a)]  (CrossEntropyCost)

with no 1/n: the mini-batch gradient is the sum over its examples (`mini_batch_gradients`,
as in update_mini_batch), L2 (network2's lmbda) lives in the update, not in backprop.
This is the oracle's `convention="nielsen"`.

`mistake=` plants one of the bugs in `MISTAKES`; each entry is (the layer a correct oracle
reports as where the error enters (0-based), keywords its diagnosis should contain (a tuple
means any one of them), the rule name(s) it should use, or None for "any").  `CONFIGS`
names the configuration in which that expectation holds when it is not the default, and
`HIDDEN_IN` the configurations in which a mistake gives the right gradients, so only a
probe over several configurations finds it.
"""
import numpy as np

MISTAKES = {
    # every layer: nabla_w = a_prev·δᵀ instead of δ·a_prevᵀ
    "transposed_dW": (3, ["transpos"], "shape_transposed"),
    # the hidden-layer loop only, in a net whose weight matrices are all square
    "transposed_dW_square": (2, ["transpos"], "transposed_square"),
    # nabla_b = δᵀ, a row instead of a column
    "db_transposed": (3, [("transpos", "reshape", "shape")], ("shape_transposed", "reshape")),
    # nabla_w[-l] = δ·activations[-l]ᵀ: this layer's own output instead of its input
    "off_by_one_activation": (3, [("input", "a⁽", "off-by-one", "layer")], "wrong_layer_input"),
    # nabla_w[-l] = δ·zs[-l-1]ᵀ: the previous layer's z instead of its activation
    "dW_from_z": (3, ["z"], "dW_from_z"),
    # hidden δ = wᵀδ without ⊙ σ′(z)
    "missing_fprime": (2, ["f′"], "missing_fprime"),
    # hidden sp = sigmoid_prime(activations[-l]), σ′ at a = σ(z)
    "fprime_at_a": (2, ["f′", "a"], "fprime_at_a"),
    # cross-entropy cost with the quadratic cost's δ = (a − y)·σ′(z)
    "ce_extra_fprime": (3, ["f′"], "output_extra_fprime"),
    # quadratic cost with the cross-entropy δ = a − y
    "quadratic_missing_fprime": (3, ["f′"], "output_missing_fprime"),
    # square net: the output δ is stored for every layer (the recursion's result is dropped)
    "reused_delta": (2, ["δ"], "reused_delta"),
    # cost_derivative = y − a
    "wrong_sign": (3, ["sign"], "factor"),
    # cost_derivative = 2(a − y): the derivative of ‖a − y‖², not of ½‖a − y‖² (backprop
    # returns no cost, so "the convention without the ½" is as good an answer)
    "extra_2": (3, [("2×", "×2")], ("factor", "convention")),
    # the missing σ′ only at the middle layer 1
    "middle_layer_missing_fprime": (1, ["f′"], "missing_fprime"),
    # for l in range(2, num_layers - 1): the first layer's nabla stays zero
    "loop_misses_first_layer": (0, ["layer 0"], None),
}

#: The configuration (see tests/test_oracle_students.py) in which MISTAKES[name] holds.
CONFIGS = {
    "transposed_dW_square": {"net": "square"},
    "reused_delta": {"net": "square"},
    "ce_extra_fprime": {"kw": {"cost": "cross_entropy"}},
}

#: Configurations in which the mistake gives the right gradients.
HIDDEN_IN = {}


def sigmoid(z):
    """The sigmoid function, without an overflow warning for large negative z."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


def sigmoid_prime(z):
    return sigmoid(z) * (1 - sigmoid(z))


def _relu(z):
    return np.maximum(z, 0.0)


def _relu_prime(z):
    return (z > 0).astype(float)


def _tanh_prime(z):
    return 1.0 - np.tanh(z) ** 2


HIDDEN = {"sigmoid": (sigmoid, sigmoid_prime), "tanh": (np.tanh, _tanh_prime),
          "relu": (_relu, _relu_prime)}


class QuadraticCost:
    @staticmethod
    def fn(a, y):
        return 0.5 * np.linalg.norm(a - y) ** 2

    @staticmethod
    def delta(z, a, y):
        return (a - y) * sigmoid_prime(z)


class CrossEntropyCost:
    @staticmethod
    def fn(a, y):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sum(np.nan_to_num(-y * np.log(a) - (1 - y) * np.log(1 - a)))

    @staticmethod
    def delta(z, a, y):
        return a - y


COSTS = {"quadratic": QuadraticCost, "cross_entropy": CrossEntropyCost}


def feedforward(weights, biases, a, activation="sigmoid"):
    f = HIDDEN[activation][0]
    for i, (b, w) in enumerate(zip(biases, weights)):
        z = np.dot(w, a) + b
        a = sigmoid(z) if i == len(weights) - 1 else f(z)
    return a


def cost_value(weights, biases, x, y, *, activation="sigmoid", cost="quadratic"):
    """C for one example (for finite differences)."""
    return float(COSTS[cost].fn(feedforward(weights, biases, x, activation), y))


def backprop(weights, biases, x, y, *, activation="sigmoid", cost="quadratic", mistake=None):
    """(nabla_b, nabla_w) of one example's cost C_x, layer by layer like weights/biases."""
    if mistake is not None and mistake not in MISTAKES:
        raise ValueError(f"unknown mistake {mistake!r}")
    f, f_prime = HIDDEN[activation]
    num_layers = len(weights) + 1
    L = len(weights)
    nabla_b = [np.zeros(b.shape) for b in biases]
    nabla_w = [np.zeros(w.shape) for w in weights]

    # feedforward, keeping every z and activation
    a = x
    activations = [x]
    zs = []
    for i, (b, w) in enumerate(zip(biases, weights)):
        z = np.dot(w, a) + b
        zs.append(z)
        a = sigmoid(z) if i == L - 1 else f(z)
        activations.append(a)

    def weight_gradient(delta, l):
        """nabla_w[-l] from this layer's δ (l = 1 is the output layer, as in Nielsen)."""
        a_in = activations[-l - 1]
        if mistake == "transposed_dW" or (mistake == "transposed_dW_square" and l > 1):
            return np.dot(a_in, delta.transpose())
        if mistake == "off_by_one_activation":
            return np.dot(delta, activations[-l].transpose())
        if mistake == "dW_from_z" and L - l >= 1:
            return np.dot(delta, zs[-l - 1].transpose())
        return np.dot(delta, a_in.transpose())

    def bias_gradient(delta):
        return delta.transpose() if mistake == "db_transposed" else delta

    # backward pass: the output layer
    z_out, a_out = zs[-1], activations[-1]
    cost_derivative = a_out - y
    if mistake == "wrong_sign":
        cost_derivative = y - a_out
    elif mistake == "extra_2":
        cost_derivative = 2 * (a_out - y)
    if cost == "quadratic":
        delta = cost_derivative * sigmoid_prime(z_out)
        if mistake == "quadratic_missing_fprime":
            delta = cost_derivative
    elif cost == "cross_entropy":
        delta = cost_derivative
        if mistake == "ce_extra_fprime":
            delta = cost_derivative * sigmoid_prime(z_out)
    else:
        raise ValueError(f"unknown cost {cost!r}")
    nabla_b[-1] = bias_gradient(delta)
    nabla_w[-1] = weight_gradient(delta, 1)

    # l = 2 is the last hidden layer, l = num_layers - 1 the first layer
    stop = num_layers - 1 if mistake == "loop_misses_first_layer" else num_layers
    for l in range(2, stop):
        layer = L - l
        z = zs[-l]
        sp = f_prime(activations[-l]) if mistake == "fprime_at_a" else f_prime(z)
        back = np.dot(weights[-l + 1].transpose(), delta)
        if mistake == "missing_fprime" or (mistake == "middle_layer_missing_fprime"
                                           and layer == 1):
            new_delta = back
        else:
            new_delta = back * sp
        if mistake != "reused_delta":
            delta = new_delta
        nabla_b[-l] = bias_gradient(delta)
        nabla_w[-l] = weight_gradient(delta, l)
    return (nabla_b, nabla_w)


def mini_batch_gradients(weights, biases, mini_batch, **kw):
    """Σ over the mini-batch's (x, y) pairs of backprop, as in update_mini_batch (summed
    from the first example's result, so a wrongly shaped nabla is not broadcast)."""
    nabla_b = nabla_w = None
    for x, y in mini_batch:
        delta_nabla_b, delta_nabla_w = backprop(weights, biases, x, y, **kw)
        if nabla_b is None:
            nabla_b, nabla_w = list(delta_nabla_b), list(delta_nabla_w)
            continue
        nabla_b = [nb + dnb for nb, dnb in zip(nabla_b, delta_nabla_b)]
        nabla_w = [nw + dnw for nw, dnw in zip(nabla_w, delta_nabla_w)]
    return (nabla_b, nabla_w)
