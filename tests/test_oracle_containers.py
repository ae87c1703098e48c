"""The oracle takes a student's objects as their course holds them: `reference_gradients`
reads the parameter container (CS231n's `params` dict or net object, deeplearning.ai's
`parameters`, Nielsen's `Network`, scikit-learn's `coefs_`/`intercepts_`), gives the
reference back in the same form (`ref["grads"]`), and `compare` takes the student's own
gradients (dicts with extra keys, Nielsen's (nabla_b, nabla_w), scikit-learn's
(loss, coef_grads, intercept_grads)); nothing is converted by the test.

The four small programs below are written for these tests in each course's style.
"""
import numpy as np
import pytest

from jaxmlp import oracle

D, H1, H2, C, N = 5, 7, 6, 3, 9   # every dimension distinct


# --------------------------------------------------------------------------- CS231n

class TwoLayerNet:
    """CS231n style: self.params, X (N, D) @ W (D, H), integer labels, softmax loss averaged
    over N, reg·ΣW², grads with the same keys as params."""

    def __init__(self, input_size, hidden_size, output_size, std=0.5, seed=0):
        rng = np.random.default_rng(seed)
        self.params = {"W1": std * rng.standard_normal((input_size, hidden_size)),
                       "b1": 0.1 * rng.standard_normal(hidden_size),
                       "W2": std * rng.standard_normal((hidden_size, output_size)),
                       "b2": 0.1 * rng.standard_normal(output_size)}

    def loss(self, X, y, reg=0.0, bug=None):
        W1, b1, W2, b2 = (self.params[k] for k in ("W1", "b1", "W2", "b2"))
        n = X.shape[0]
        hidden = np.maximum(0, X @ W1 + b1)
        scores = hidden @ W2 + b2
        shifted = scores - scores.max(axis=1, keepdims=True)
        probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        loss = -np.mean(np.log(probs[np.arange(n), y])) + reg * (np.sum(W1 ** 2) + np.sum(W2 ** 2))
        dscores = probs.copy()
        dscores[np.arange(n), y] -= 1
        dscores /= n
        grads = {"W2": hidden.T @ dscores + 2 * reg * W2, "b2": dscores.sum(axis=0)}
        dhidden = dscores @ W2.T
        dhidden[hidden <= 0] = 0
        grads["W1"] = X.T @ dhidden + 2 * reg * W1
        grads["b1"] = dhidden.sum(axis=0)
        if bug == "transposed_W2":
            grads["W2"] = (dscores.T @ hidden).T.T
        if bug == "reg_not_doubled":
            grads["W1"] -= reg * W1
            grads["W2"] -= reg * W2
        return loss, grads


# --------------------------------------------------------------------------- deeplearning.ai

def initialize_parameters_deep(layer_dims, seed=1):
    rng = np.random.default_rng(seed)
    parameters = {}
    for l in range(1, len(layer_dims)):
        parameters["W" + str(l)] = rng.standard_normal((layer_dims[l], layer_dims[l - 1])) * 0.6
        parameters["b" + str(l)] = rng.standard_normal((layer_dims[l], 1)) * 0.1
    return parameters


def L_model_forward(X, parameters):
    caches, A = [], X
    L = len(parameters) // 2
    for l in range(1, L + 1):
        W, b = parameters["W" + str(l)], parameters["b" + str(l)]
        Z = W @ A + b
        A_prev, A = A, (1 / (1 + np.exp(-Z)) if l == L else np.maximum(0, Z))
        caches.append((A_prev, W, b, Z))
    return A, caches


def L_model_backward(AL, Y, caches, lambd=0.0, bug=None):
    grads, L, m = {}, len(caches), AL.shape[1]
    dA = -(np.divide(Y, AL) - np.divide(1 - Y, 1 - AL))
    for l in reversed(range(1, L + 1)):
        A_prev, W, b, Z = caches[l - 1]
        if l == L:
            s = 1 / (1 + np.exp(-Z))
            dZ = dA * s * (1 - s)
        else:
            dZ = dA * (Z > 0) if bug != "no_relu_mask" else dA
        grads["dW" + str(l)] = dZ @ A_prev.T / m + lambd / m * W
        grads["db" + str(l)] = np.sum(dZ, axis=1, keepdims=True) / m
        dA = W.T @ dZ
        grads["dA" + str(l - 1)] = dA       # the course keeps these too
    return grads


# --------------------------------------------------------------------------- Nielsen

class Network:
    """network.py style: weights/biases lists, b (n, 1), one column example per backprop,
    quadratic cost ½‖a − y‖², (nabla_b, nabla_w) biases first."""

    def __init__(self, sizes, seed=2):
        rng = np.random.default_rng(seed)
        self.sizes = sizes
        self.biases = [rng.standard_normal((n, 1)) for n in sizes[1:]]
        self.weights = [rng.standard_normal((o, i)) / np.sqrt(i) for i, o in zip(sizes[:-1], sizes[1:])]

    def backprop(self, x, y):
        sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        activation, activations, zs = x, [x], []
        for b, w in zip(self.biases, self.weights):
            z = np.dot(w, activation) + b
            zs.append(z)
            activation = sig(z)
            activations.append(activation)
        delta = (activations[-1] - y) * sig(zs[-1]) * (1 - sig(zs[-1]))
        nabla_b[-1], nabla_w[-1] = delta, np.dot(delta, activations[-2].T)
        for l in range(2, len(self.sizes)):
            sp = sig(zs[-l]) * (1 - sig(zs[-l]))
            delta = np.dot(self.weights[-l + 1].T, delta) * sp
            nabla_b[-l], nabla_w[-l] = delta, np.dot(delta, activations[-l - 1].T)
        return nabla_b, nabla_w

    def mini_batch_gradients(self, mini_batch):
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        for x, y in mini_batch:
            db, dw = self.backprop(x, y)
            nabla_b = [nb + d for nb, d in zip(nabla_b, db)]
            nabla_w = [nw + d for nw, d in zip(nabla_w, dw)]
        return nabla_b, nabla_w


# --------------------------------------------------------------------------- scikit-learn

class TinyMLPRegressor:
    """scikit-learn's MLP style: coefs_ (n_in, n_out), intercepts_ (n_out,), tanh hidden,
    identity output, squared error ½·mean over n and outputs, alpha/(2n)·ΣW², and
    `_backprop` returning (loss, coef_grads, intercept_grads)."""

    def __init__(self, sizes, alpha=0.0, seed=3):
        rng = np.random.default_rng(seed)
        self.alpha = alpha
        self.coefs_ = [rng.uniform(-0.8, 0.8, (i, o)) for i, o in zip(sizes[:-1], sizes[1:])]
        self.intercepts_ = [rng.uniform(-0.2, 0.2, o) for o in sizes[1:]]

    def _backprop(self, X, y):
        n = X.shape[0]
        activations = [X]
        for i, (W, b) in enumerate(zip(self.coefs_, self.intercepts_)):
            z = activations[-1] @ W + b
            activations.append(np.tanh(z) if i < len(self.coefs_) - 1 else z)
        loss = ((activations[-1] - y) ** 2).mean() / 2
        loss += 0.5 * self.alpha * sum(np.dot(W.ravel(), W.ravel()) for W in self.coefs_) / n
        coef_grads, intercept_grads = [None] * len(self.coefs_), [None] * len(self.coefs_)
        delta = activations[-1] - y
        for i in reversed(range(len(self.coefs_))):
            coef_grads[i] = (activations[i].T @ delta + self.alpha * self.coefs_[i]) / n
            intercept_grads[i] = delta.mean(axis=0)
            if i:
                delta = (delta @ self.coefs_[i].T) * (1 - activations[i] ** 2)
        return loss, coef_grads, intercept_grads


# --------------------------------------------------------------------------- data

@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    return {"X": rng.standard_normal((N, D)), "labels": rng.integers(0, C, N),
            "Y01": (rng.random((C, N)) > 0.5).astype(float),
            "Yreg": rng.standard_normal((N, C))}


def _cs231n_ref(net, data, reg, convention="cs231n"):
    return oracle.reference_gradients(net, data["X"], data["labels"], activation="relu",
                                      output="softmax", loss="cce", convention=convention,
                                      l2=reg)


# --------------------------------------------------------------------------- correct programs

def test_cs231n_net_object_and_params_dict(data):
    net = TwoLayerNet(D, H1, C)
    loss, grads = net.loss(data["X"], data["labels"], reg=0.05)
    for container in (net, net.params):
        ref = _cs231n_ref(container, data, 0.05)
        assert set(ref["grads"]) == {"W1", "b1", "W2", "b2"}
        assert all(ref["grads"][k].shape == net.params[k].shape for k in net.params)
        report = oracle.compare((loss, grads), ref)
        assert report.ok, report
        assert oracle.compare(grads, ref).ok
        assert abs(ref["loss"] - loss) < 1e-12


def test_deeplearning_ai_parameters_and_grads_with_extra_keys(data):
    parameters = initialize_parameters_deep([D, H1, H2, C])
    X, Y = data["X"].T, data["Y01"]
    AL, caches = L_model_forward(X, parameters)
    grads = L_model_backward(AL, Y, caches, lambd=0.7)
    assert "dA0" in grads and "dA2" in grads
    ref = oracle.reference_gradients(parameters, X, Y, activation="relu", output="sigmoid",
                                     loss="bce", convention="deeplearning_ai", l2=0.7)
    assert set(ref["grads"]) == {"dW1", "db1", "dW2", "db2", "dW3", "db3"}
    assert ref["grads"]["db2"].shape == (H2, 1)
    report = oracle.compare(grads, ref)
    assert report.ok, report


def test_nielsen_network_object(data):
    net = Network([D, H1, C])
    X, Y = data["X"].T, data["Y01"]
    mini_batch = [(X[:, [i]], Y[:, [i]]) for i in range(N)]
    nabla_b, nabla_w = net.mini_batch_gradients(mini_batch)
    ref = oracle.reference_gradients(net, X, Y, activation="sigmoid", output="sigmoid",
                                     loss="sse", convention="nielsen")
    rb, rw = ref["grads"]                      # Nielsen's order: biases first
    assert [b.shape for b in rb] == [(H1, 1), (C, 1)]
    assert [w.shape for w in rw] == [(H1, D), (C, H1)]
    report = oracle.compare((nabla_b, nabla_w), ref)
    assert report.ok, report


def test_sklearn_style_estimator(data):
    """One output: with several, scikit-learn's squared-error gradient is K× its own loss's
    (tests/test_oracle_students.py flags that)."""
    est = TinyMLPRegressor([D, H1, 1], alpha=0.3)
    y = data["Yreg"][:, :1]
    loss, coef_grads, intercept_grads = est._backprop(data["X"], y)
    ref = oracle.reference_gradients(est, data["X"], y, activation="tanh",
                                     output="identity", loss="mse", convention="sklearn",
                                     l2=0.3)
    cg, ig = ref["grads"]
    assert [w.shape for w in cg] == [(D, H1), (H1, 1)]
    report = oracle.compare((loss, coef_grads, intercept_grads), ref)
    assert report.ok, report
    assert abs(ref["loss"] - loss) < 1e-12


def test_pair_of_lists_gives_back_the_courses_form(data):
    net = Network([D, H1, C])
    X, Y = data["X"].T, data["Y01"]
    ref = oracle.reference_gradients((net.weights, net.biases), X, Y, activation="sigmoid",
                                     output="sigmoid", loss="sse", convention="nielsen")
    assert isinstance(ref["grads"], tuple) and ref["grads"][0][0].shape == (H1, 1)
    ref = oracle.reference_gradients((net.weights, [b.ravel() for b in net.biases]),
                                     data["X"], Y.T, activation="sigmoid", output="sigmoid",
                                     loss="sse")
    assert set(ref["grads"]) == {"dW", "db"}


# --------------------------------------------------------------------------- bugs in containers

def test_cs231n_bugs_are_located_and_named(data):
    net = TwoLayerNet(D, H1, C)
    _, grads = net.loss(data["X"], data["labels"], reg=0.05, bug="transposed_W2")
    report = oracle.compare(grads, _cs231n_ref(net, data, 0.05))
    assert not report.ok and report.first_bad_layer == 1
    assert report.dW[1].rule == "shape_transposed", report.dW[1].diagnosis
    assert report.dW[0].status == "ok"


def test_deeplearning_ai_bug_is_located(data):
    parameters = initialize_parameters_deep([D, H1, H2, C])
    X, Y = data["X"].T, data["Y01"]
    AL, caches = L_model_forward(X, parameters)
    grads = L_model_backward(AL, Y, caches, bug="no_relu_mask")
    report = oracle.compare(grads, oracle.reference_gradients(
        parameters, X, Y, activation="relu", output="sigmoid", loss="bce",
        convention="deeplearning_ai"))
    assert not report.ok and report.first_bad_layer == 1
    assert report.dW[2].status == "ok" and report.db[2].status == "ok"
    assert report.dW[1].rule == "missing_fprime", report.dW[1].diagnosis


# --------------------------------------------------------------------------- bad containers

@pytest.mark.parametrize("keys, message", [
    (("W1", "b1", "W2"), "has no 'b2': it has 'W2'"),
    (("W1", "b1", "W3", "b3"), "has no 'W2'"),
    (("W1", "b1", "W2", "b2", "gamma1", "beta1"), "check_layer('batchnorm'"),
    (("W1", "b1", "W2", "b2", "theta"), "keys the oracle does not know: ['theta']"),
])
def test_container_with_missing_or_extra_keys_names_the_key(data, keys, message):
    params = dict(TwoLayerNet(D, H1, C).params, W3=np.zeros((C, 2)), b3=np.zeros(2),
                  gamma1=np.ones(H1), beta1=np.zeros(H1), theta=0.0)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        _cs231n_ref({k: params[k] for k in keys}, data, 0.0)


def test_gradient_dict_with_missing_or_extra_layer_names_the_key(data):
    net = TwoLayerNet(D, H1, C)
    _, grads = net.loss(data["X"], data["labels"])
    ref = _cs231n_ref(net, data, 0.0)
    with pytest.raises(ValueError, match="no 'b2': it has 'W2'"):
        oracle.compare({k: v for k, v in grads.items() if k != "b2"}, ref)
    with pytest.raises(ValueError, match="has 'W3' but the network has 2 layers"):
        oracle.compare(dict(grads, W3=grads["W2"], b3=grads["b2"]), ref)
    with pytest.raises(ValueError, match="has no 'W2': the network has 2 layers"):
        oracle.compare({"W1": grads["W1"], "b1": grads["b1"]}, ref)


def test_not_a_container_is_a_type_error(data):
    with pytest.raises(TypeError, match="parameter container"):
        oracle.reference_gradients(np.zeros((3, 3)), data["X"], data["labels"],
                                   activation="relu", output="softmax", loss="cce")
    with pytest.raises(TypeError, match="two positional arguments"):
        oracle.reference_gradients(TwoLayerNet(D, H1, C), data["X"], activation="relu",
                                   output="softmax", loss="cce")


def test_cs231n_container_under_an_out_in_convention_names_the_in_out_one(data):
    """(in, out) weights declared as jaxmlp's (out, in): the error names the convention
    whose shapes they fit."""
    with pytest.raises(ValueError, match="cs231n"):
        _cs231n_ref(TwoLayerNet(D, H1, C), data, 0.0, convention="jaxmlp")


@pytest.mark.parametrize("other", ["jaxmlp", "deeplearning_ai", "nielsen", "sklearn"])
def test_correct_cs231n_program_under_another_preset_is_never_called_buggy(data, other):
    """A correct program checked against the wrong preset gets either an input error that
    names a convention, or a report saying which convention it is right under."""
    net = TwoLayerNet(D, H1, C)
    loss, grads = net.loss(data["X"], data["labels"], reg=0.05)
    try:
        ref = _cs231n_ref(net, data, 0.05, convention=other)
    except ValueError as e:
        assert "convention" in str(e) and ("cs231n" in str(e) or "in_out" in str(e)), e
        return
    report = oracle.compare((loss, grads), ref)
    if not report.ok:
        assert report.convention_match is not None, report
        assert all(e.rule == "convention" for e in report.entries if e.status != "ok")


# --------------------------------------------------------------------------- conventions

def test_convention_from_a_preset_with_fields_changed(data):
    """A custom convention is a preset with a few fields changed; a summed-loss CS231n
    program passes under it."""
    summed = oracle.CONVENTIONS["cs231n"].replace(reduction="sum")
    assert summed.weights == "in_out" and summed.l2 == "full" and summed.name == "custom"
    assert oracle.CONVENTIONS["cs231n"].reduction == "mean"      # the preset is unchanged
    net = TwoLayerNet(D, H1, C)
    loss, grads = net.loss(data["X"], data["labels"], reg=0.05)
    n = data["X"].shape[0]
    summed_grads = {k: v * n if k.startswith("b") else v * n - (n - 1) * 2 * 0.05 * net.params[k]
                    for k, v in grads.items()}
    ref = _cs231n_ref(net, data, 0.05, convention=summed)
    assert oracle.compare(summed_grads, ref).ok
    report = oracle.compare(summed_grads, _cs231n_ref(net, data, 0.05))
    assert not report.ok and report.convention_match is not None
    assert "reduction='sum'" in report.convention_match


@pytest.mark.parametrize("make, message", [
    (lambda: oracle.Convention(layout="features_first"), r"unknown Convention field\(s\) \['layout'\]; the fields are \['name', 'weights'"),
    (lambda: oracle.CONVENTIONS["nielsen"].replace(reduce="sum"), r"unknown Convention field\(s\) \['reduce'\]"),
    (lambda: oracle.CONVENTIONS["nielsen"].replace(l2="quarter"), r"l2 must be one of \['half', 'full', 'half_m'\], got 'quarter'"),
    (lambda: oracle.reference_gradients(TwoLayerNet(D, H1, C), np.zeros((N, D)), np.zeros(N, int), activation="relu", output="softmax", loss="cce", convention="CS231n"), r"unknown convention 'CS231n'; expected one of \['jaxmlp', 'cs231n'"),
])
def test_unknown_preset_field_or_value_lists_the_allowed_ones(make, message):
    with pytest.raises(ValueError, match=message):
        make()
