"""The net-level rules for wrong activation derivatives, each on its own planted bug in two
presets (jaxmlp's batch-first code and deeplearning.ai's features-first code), and never on
correct code.

The two small backprops below are written for this test: a hidden stack of one activation,
a sigmoid output with binary cross-entropy, and a hook `dz(name, dA, Z, A)` that plants the
mistake in the hidden layers' dZ = dA ⊙ f′(Z).
"""
import numpy as np
import pytest

from jaxmlp import oracle

SIZES, M = (5, 7, 6, 3), 9   # every dimension distinct


def _f(name, Z):
    return {"sigmoid": lambda z: 1 / (1 + np.exp(-z)), "tanh": np.tanh,
            "relu": lambda z: np.maximum(z, 0), "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z)}[name](Z)


def right_dz(name, dA, Z, A):
    fp = {"sigmoid": A * (1 - A), "tanh": 1 - A ** 2, "relu": (Z > 0) * 1.0,
          "leaky_relu": np.where(Z > 0, 1.0, 0.01)}[name]
    return dA * fp


#: mistake → (hidden activation, dZ as the student wrote it, the rule the oracle names)
MISTAKES = {
    "sigma_prime_is_sigma": ("sigmoid", lambda dA, Z, A: dA * A, "wrong_fprime_formula"),
    "sigma_prime_is_tanh_prime": ("sigmoid", lambda dA, Z, A: dA * (1 - A ** 2), "wrong_fprime_formula"),
    "tanh_prime_one_minus_tanh": ("tanh", lambda dA, Z, A: dA * (1 - A), "wrong_fprime_formula"),
    "tanh_prime_sigmoid_formula": ("tanh", lambda dA, Z, A: dA * A * (1 - A), "wrong_fprime_formula"),
    "relu_prime_is_relu": ("relu", lambda dA, Z, A: dA * A, "wrong_fprime_formula"),
    "leaky_without_slope": ("leaky_relu", lambda dA, Z, A: dA * (Z > 0), "wrong_fprime_formula"),
    "relu_mask_from_dA": ("relu", lambda dA, Z, A: dA * (dA > 0), "mask_from_grad"),
    "fprime_at_a": ("sigmoid", lambda dA, Z, A: dA * _f("sigmoid", A) * (1 - _f("sigmoid", A)), "fprime_at_a"),
}


def _problem(act, seed=0):
    rng = np.random.default_rng(seed)
    Ws = [rng.standard_normal((o, i)) * 1.3 / np.sqrt(i) for i, o in zip(SIZES, SIZES[1:])]
    bs = [rng.standard_normal(o) * 0.3 for o in SIZES[1:]]
    X = rng.standard_normal((M, SIZES[0]))
    Y = (rng.random((M, SIZES[-1])) > 0.5).astype(float)
    return Ws, bs, X, Y


def jaxmlp_style(Ws, bs, X, Y, act, dz):
    """Batch-first, W (out, in), bce averaged over m·K, δ holds the 1/(m·K)."""
    A, Z = [X], []
    for l, (W, b) in enumerate(zip(Ws, bs)):
        Z.append(A[-1] @ W.T + b)
        A.append(_f("sigmoid" if l == len(Ws) - 1 else act, Z[-1]))
    m, K = Y.shape
    delta = (A[-1] - Y) / (m * K)
    dW, db = [None] * len(Ws), [None] * len(Ws)
    for l in reversed(range(len(Ws))):
        dW[l], db[l] = delta.T @ A[l], delta.sum(axis=0)
        if l:
            delta = dz(act, delta @ Ws[l], Z[l - 1], A[l])
    return {"dW": dW, "db": db}


def dlai_style(Ws, bs, X, Y, act, dz):
    """deeplearning.ai: X (n_x, m), b (n, 1), cost averaged over m (summed over outputs),
    dZ per example and the 1/m in dW, db; grads {"dW1", "db1", …}."""
    L, m = len(Ws), X.shape[1]
    A, Z = [X], []
    for l in range(L):
        Z.append(Ws[l] @ A[-1] + bs[l])
        A.append(_f("sigmoid" if l == L - 1 else act, Z[-1]))
    grads, dZ = {}, A[-1] - Y
    for l in reversed(range(L)):
        grads[f"dW{l + 1}"] = dZ @ A[l].T / m
        grads[f"db{l + 1}"] = np.sum(dZ, axis=1, keepdims=True) / m
        if l:
            dZ = dz(act, Ws[l].T @ dZ, Z[l - 1], A[l])
    return grads


STYLES = {"jaxmlp": jaxmlp_style, "deeplearning_ai": dlai_style}


def _run(preset, act, dz):
    Ws, bs, X, Y = _problem(act)
    if preset == "deeplearning_ai":
        bs, X, Y = [b[:, None] for b in bs], X.T, Y.T
    cand = STYLES[preset](Ws, bs, X, Y, act, dz)
    ref = oracle.reference_gradients(Ws, bs, X, Y, activation=act, output="sigmoid",
                                     loss="bce", convention=preset)
    return oracle.compare(cand, ref)


@pytest.mark.parametrize("preset", list(STYLES))
@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_rule_fires_on_its_planted_bug(preset, mistake):
    act, wrong, rule = MISTAKES[mistake]
    report = _run(preset, act, lambda name, dA, Z, A: wrong(dA, Z, A))
    assert not report.ok
    # the last hidden layer is where the error enters (it is made from the output δ)
    top = len(SIZES) - 3
    assert report.first_bad_layer == top, str(report)
    assert report.dW[top].rule == rule, (report.dW[top].rule, report.dW[top].diagnosis)
    assert f"layer {top}" in report.dW[top].diagnosis
    assert report.dW[top + 1].status == "ok"


@pytest.mark.parametrize("preset", list(STYLES))
@pytest.mark.parametrize("act", ["sigmoid", "tanh", "relu", "leaky_relu"])
def test_correct_code_gets_no_rule(preset, act):
    report = _run(preset, act, right_dz)
    assert report.ok, str(report)
    assert all(e.rule == "" for e in report.entries)
