"""jaxmlp.oracle: reference gradients for other people's backprop, and the referee.

The candidates are a plain NumPy MLP backprop written here in both layouts (the course's
features-first column form and batch-first rows), with mistakes planted on request; the
referee must pass the correct one, and locate and name each planted mistake.
"""
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import zipfile
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp as jm
from jaxmlp import oracle
from tests.test_checkpoint import (NOT_REGULAR, bounded, deflated_zeros, not_regular, npy_header,
                                   write_zip)

M = 7  # batch size: not 2 or 3, so m, K and 2 are distinguishable factors

# --------------------------------------------------------------------------- NumPy nets

ACT = {
    "identity": (lambda z: z, lambda z, a: np.ones_like(z)),
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda z, a: a * (1 - a)),
    "tanh": (np.tanh, lambda z, a: 1 - a * a),
    "relu": (lambda z: np.maximum(z, 0), lambda z, a: (z > 0).astype(z.dtype)),
}


def softmax(z, axis):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def output_delta(yhat, y, z, output, loss, m, K):
    """δ of the output layer, elementwise (layout-independent)."""
    if loss == "bce" or loss == "cce":
        return (yhat - y) / (m * K if loss == "bce" else m)
    g = (2 * (yhat - y) / (m * K)) if loss == "mse" else (yhat - y) / m
    return g * ACT[output][1](z, yhat)


def np_loss(yhat, y, loss, m, K):
    if loss == "mse":
        return np.sum((yhat - y) ** 2) / (m * K)
    if loss == "sse":
        return 0.5 * np.sum((yhat - y) ** 2) / m
    if loss == "bce":
        return -np.sum(y * np.log(yhat) + (1 - y) * np.log(1 - yhat)) / (m * K)
    return -np.sum(y * np.log(yhat)) / m


def fprime(name, z, a, mistake, here):
    """f′(z) of a hidden layer, or a planted mistake in it when `here`."""
    if here and mistake == "no_fprime":
        return 1.0
    if here and mistake == "wrong_fprime":  # tanh′ written for a sigmoid layer
        return 1 - a * a
    if here and mistake == "odd_fprime":    # a derivative of no known slip
        return 1 - a ** 3
    if here and mistake == "fprime_at_a":   # σ′(A) where σ′(Z) was meant
        s = ACT[name][0](a)
        return ACT[name][1](a, s)
    return ACT[name][1](z, a)


def backprop_features_first(Ws, bs, X, Y, acts, output, loss, mistake=None, at=None):
    """Course style: X (n_x, m), Y (n_y, m), b (n, 1); Z = W A + b, dW = dZ A_prevᵀ."""
    m, L = X.shape[1], len(Ws)
    A, Z = [X], []
    for l in range(L):
        Z.append(Ws[l] @ A[-1] + bs[l])
        A.append(softmax(Z[-1], 0) if l == L - 1 and output == "softmax"
                 else ACT[output if l == L - 1 else acts[l]][0](Z[-1]))
    K = A[-1].shape[0]
    dZ = output_delta(A[-1], Y, Z[-1], output, loss, m, K)
    dZ = dZ * {"times_m": m, "half": 0.5, "double": 2.0, "sign": -1.0}.get(mistake, 1.0)
    dW, db, delta = [None] * L, [None] * L, [None] * L
    for l in reversed(range(L)):
        delta[l] = dZ
        dW[l] = A[l] @ dZ.T if (mistake, at) == ("transpose", l) else dZ @ A[l].T
        db[l] = dZ if (mistake, at) == ("db_not_summed", l) else dZ.sum(axis=1, keepdims=True)
        if l:
            dA = Ws[l].T @ dZ
            dZ = dA * fprime(acts[l - 1], Z[l - 1], A[l], mistake, at == l - 1)
    return {"loss": np_loss(A[-1], Y, loss, m, K), "dW": dW, "db": db, "delta": delta}


def backprop_batch_first(Ws, bs, X, Y, acts, output, loss, mistake=None, at=None):
    """Rows are examples: X (m, n_x), Y (m, n_y), b (n,); Z = A Wᵀ + b, dW = dZᵀ A_prev."""
    m, L = X.shape[0], len(Ws)
    A, Z = [X], []
    for l in range(L):
        Z.append(A[-1] @ Ws[l].T + bs[l])
        A.append(softmax(Z[-1], 1) if l == L - 1 and output == "softmax"
                 else ACT[output if l == L - 1 else acts[l]][0](Z[-1]))
    K = A[-1].shape[1]
    dZ = output_delta(A[-1], Y, Z[-1], output, loss, m, K)
    dZ = dZ * {"times_m": m, "half": 0.5, "double": 2.0, "sign": -1.0}.get(mistake, 1.0)
    dW, db, delta = [None] * L, [None] * L, [None] * L
    for l in reversed(range(L)):
        delta[l] = dZ
        dW[l] = A[l].T @ dZ if (mistake, at) == ("transpose", l) else dZ.T @ A[l]
        db[l] = dZ.T if (mistake, at) == ("db_not_summed", l) else dZ.sum(axis=0)
        if l:
            dA = dZ @ Ws[l]
            dZ = dA * fprime(acts[l - 1], Z[l - 1], A[l], mistake, at == l - 1)
    return {"loss": np_loss(A[-1], Y, loss, m, K), "dW": dW, "db": db, "delta": delta}


def loss_features_first(Ws, bs, X, Y, acts, output, loss):
    return backprop_features_first(Ws, bs, X, Y, acts, output, loss)["loss"]


# --------------------------------------------------------------------------- problems

class Problem:
    """A network and data, stored features-first; `.args(layout)` gives the call's arrays."""

    def __init__(self, seed, sizes, acts, output, loss):
        rng = np.random.default_rng(seed)
        self.sizes, self.acts, self.output, self.loss = sizes, tuple(acts), output, loss
        self.Ws = [rng.standard_normal((o, i)) / np.sqrt(i) for i, o in zip(sizes, sizes[1:])]
        self.bs = [0.5 * rng.standard_normal((o, 1)) for o in sizes[1:]]
        self.X = rng.standard_normal((sizes[0], M))
        K = sizes[-1]
        if loss == "bce":
            self.Y = (rng.random((K, M)) < 0.5).astype(float)
        elif loss == "cce":
            self.labels = rng.integers(0, K, M)
            self.Y = np.eye(K)[self.labels].T
        else:
            self.Y = rng.standard_normal((K, M))

    def args(self, layout):
        if layout == "features_first":
            return self.Ws, self.bs, self.X, self.Y
        return self.Ws, [b.ravel() for b in self.bs], self.X.T, self.Y.T

    def names(self):
        return dict(activation=self.acts, output=self.output, loss=self.loss)

    def candidate(self, layout, mistake=None, at=None):
        f = backprop_features_first if layout == "features_first" else backprop_batch_first
        return f(*self.args(layout), self.acts, self.output, self.loss, mistake, at)


# Three layers, K = 3 outputs (so K, m = 7, 2 differ), per-layer activation tuple.
DEEP = Problem(0, (4, 5, 6, 3), ("tanh", "sigmoid"), "identity", "mse")
# The course's two-layer binary classifier.
COURSE = Problem(1, (3, 4, 1), ("sigmoid",), "sigmoid", "bce")
# Square hidden weight (transposes keep the shape), softmax + cce with integer labels.
SQUARE = Problem(2, (3, 3, 3), ("relu",), "softmax", "cce")
LAYOUTS = ("batch_first", "features_first")

_CACHE = {}


def reference(problem, layout):
    """Shared across tests: one reference per (problem, layout)."""
    key = (id(problem), layout)
    if key not in _CACHE:
        _CACHE[key] = oracle.reference_gradients(*problem.args(layout), **problem.names(),
                                                 layout=layout)
    return _CACHE[key]


def check(problem, layout, mistake=None, at=None):
    return oracle.compare(problem.candidate(layout, mistake, at), reference(problem, layout))


# --------------------------------------------------------------------------- reference

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("problem", [DEEP, COURSE, SQUARE], ids=["deep", "course", "square"])
def test_correct_numpy_backprop_passes(problem, layout):
    report = check(problem, layout)
    assert report.ok, str(report)
    assert report.first_bad_layer is None
    assert len(report.delta) == len(problem.Ws)  # the candidate's δ are compared too
    assert report.loss is not None and report.loss.ok
    assert all(e.status == "ok" and e.diagnosis == "" for e in report.entries)
    assert "all gradients match" in str(report)


def test_reference_matches_jm_backprop():
    ref = reference(DEEP, "batch_first")
    model = jm.MLP(DEEP.sizes, activation=DEEP.acts, output="identity", loss="mse")
    Ws, bs, x, y = DEEP.args("batch_first")
    params = [{"W": jnp.asarray(W), "b": jnp.asarray(b)} for W, b in zip(Ws, bs)]
    out = jm.backprop(model, params, jnp.asarray(x), jnp.asarray(y))
    np.testing.assert_allclose(ref["loss"], float(out.loss), rtol=1e-13)
    for l in range(3):
        np.testing.assert_allclose(ref["dW"][l], out.grads[l]["W"], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(ref["db"][l], out.grads[l]["b"], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(ref["delta"][l], out.deltas[l], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ref["a"][-1], jm.forward(model, params, jnp.asarray(x)),
                               rtol=1e-13)


@pytest.mark.parametrize("problem", [DEEP, COURSE, SQUARE], ids=["deep", "course", "square"])
def test_reference_matches_finite_differences(problem):
    """Central differences of the NumPy net's loss, entry by entry."""
    ref = reference(problem, "features_first")
    Ws, bs, X, Y = problem.args("features_first")
    h = 1e-6

    def loss(Ws_, bs_):
        return loss_features_first(Ws_, bs_, X, Y, problem.acts, problem.output, problem.loss)

    assert ref["loss"] == pytest.approx(loss(Ws, bs), rel=1e-12)
    for l in range(len(Ws)):
        for which, arrays, grad in (("W", Ws, ref["dW"][l]), ("b", bs, ref["db"][l])):
            fd = np.zeros_like(arrays[l])
            for idx in np.ndindex(arrays[l].shape):
                def at(s):
                    moved = [a.copy() for a in arrays]
                    moved[l][idx] += s * h
                    return loss(moved, bs) if which == "W" else loss(Ws, moved)
                fd[idx] = (at(1) - at(-1)) / (2 * h)
            np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_layouts_are_transposes_of_each_other():
    bf, ff = reference(DEEP, "batch_first"), reference(DEEP, "features_first")
    assert bf["loss"] == pytest.approx(ff["loss"], rel=1e-14)
    for l in range(3):
        np.testing.assert_allclose(ff["dW"][l], bf["dW"][l], rtol=1e-13)
        assert bf["db"][l].shape == (DEEP.sizes[l + 1],)
        assert ff["db"][l].shape == (DEEP.sizes[l + 1], 1)
        np.testing.assert_allclose(ff["db"][l], bf["db"][l][:, None], rtol=1e-13)
        for key in ("delta", "z", "a"):
            assert ff[key][l].shape == (DEEP.sizes[l + 1], M)
            np.testing.assert_allclose(ff[key][l], bf[key][l].T, rtol=1e-13)


def test_float32_in_float64_out():
    Ws, bs, x, y = DEEP.args("batch_first")
    f32 = lambda arrays: [a.astype(np.float32) for a in arrays]  # noqa: E731
    ref32 = oracle.reference_gradients(f32(Ws), f32(bs), x.astype(np.float32),
                                       y.astype(np.float32), **DEEP.names())
    ref64 = oracle.reference_gradients(
        [a.astype(np.float32).astype(np.float64) for a in Ws],
        [a.astype(np.float32).astype(np.float64) for a in bs],
        x.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64),
        **DEEP.names())
    assert isinstance(ref32["loss"], float)
    for key in ("dW", "db", "delta", "z", "a"):
        for a32, a64 in zip(ref32[key], ref64[key]):
            assert a32.dtype == np.float64
            np.testing.assert_allclose(a32, a64, rtol=1e-14)


def test_float64_even_with_x64_disabled():
    with jax.enable_x64(False):
        ref = oracle.reference_gradients(*COURSE.args("features_first"), **COURSE.names(),
                                         layout="features_first")
    good = reference(COURSE, "features_first")
    for key in ("dW", "db", "delta"):
        for a, b in zip(ref[key], good[key]):
            assert a.dtype == np.float64
            np.testing.assert_allclose(a, b, rtol=1e-13)


def test_int_labels_equal_one_hot():
    Ws, bs, x, _ = SQUARE.args("batch_first")
    by_labels = oracle.reference_gradients(Ws, bs, x, SQUARE.labels, **SQUARE.names())
    by_onehot = reference(SQUARE, "batch_first")
    for a, b in zip(by_labels["dW"], by_onehot["dW"]):
        np.testing.assert_allclose(a, b, rtol=1e-14)


# --------------------------------------------------------------------------- planted mistakes

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mistake, field, factor", [
    ("times_m", "reduction='sum'", "×m (m = 7): the loss summed over the batch"),
    ("half", "squared='half_mean'", "×½: a ½ in the squared error"),
])
def test_whole_gradient_factor_of_another_convention(layout, mistake, field, factor):
    # Every gradient m× (or ½×) ours under mse, with no loss to contradict it, is not a
    # bug but another convention (the loss summed over the batch; ½·mse): the report says
    # so, names the factor and only the fields that matter here, and how to declare it.
    cand = DEEP.candidate(layout, mistake, None)
    cand.pop("loss")
    report = oracle.compare(cand, reference(DEEP, layout))
    assert not report.ok
    assert report.convention_match is not None and field in report.convention_match
    assert "bce_outputs" not in report.convention_match  # irrelevant to mse: not named
    assert "l2=" not in report.convention_match          # λ = 0: not named
    for q in (report.dW, report.db, report.delta):
        for e in q:
            assert e.status == "mismatch" and e.rule == "convention", e.diagnosis
            assert factor in e.diagnosis and field in e.diagnosis, e.diagnosis
    assert "pass convention=Convention(" in str(report)
    assert "right for another convention" in report.diagnosis


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mistake, expected", [
    ("times_m", "m× the reference: summed over the batch of m = 7"),
    ("half", "½× the reference: a missing factor 2"),
    ("double", "2× the reference: an extra factor 2"),
    ("sign", "wrong sign"),
])
def test_constant_factor_mistakes(layout, mistake, expected):
    # The candidate's loss is the declared (mean) one, so gradients m× or ½× of it are a
    # bug, not another convention: the gradient is not the gradient of its own loss.
    report = check(DEEP, layout, mistake)
    assert report.convention_match is None
    assert not report.ok
    assert report.first_bad_layer == 2  # planted in the output δ, which spreads everywhere
    for q in (report.dW, report.db, report.delta):
        for e in q:
            assert e.status == "mismatch" and expected in e.diagnosis, e.diagnosis
    assert "sse vs mse" in report.dW[0].diagnosis or mistake in ("times_m", "sign")
    assert expected in str(report)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_missing_activation_derivative_located_at_middle_layer(layout):
    report = check(DEEP, layout, "no_fprime", at=1)
    assert report.first_bad_layer == 1
    assert all(e.ok for e in (report.dW[2], report.db[2], report.delta[2]))
    for e in (report.dW[1], report.db[1], report.delta[1]):
        assert "δ of layer 1 is missing the activation derivative f′(z)" in e.diagnosis
    assert "follows from layer 1" in report.dW[0].diagnosis
    assert "the error enters at layer 1" in report.diagnosis


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fprime_evaluated_at_a(layout):
    report = check(DEEP, layout, "fprime_at_a", at=1)
    assert report.first_bad_layer == 1
    assert "δ of layer 1 has f′ evaluated at a = f(z) instead of at z" in report.dW[1].diagnosis


def test_wrong_delta_pattern_enters_at_layer():
    """No exact explanation: the pattern alone (l wrong, later right, earlier wrong)."""
    report = check(DEEP, "features_first", "odd_fprime", at=1)
    assert report.first_bad_layer == 1
    assert "the error enters at layer 1, likely in its δ" in report.dW[1].diagnosis
    assert "follows from layer 1" in report.dW[0].diagnosis


def test_tanh_derivative_on_a_sigmoid_layer_is_named():
    report = check(DEEP, "features_first", "wrong_fprime", at=1)
    assert report.first_bad_layer == 1
    assert report.dW[1].rule == "wrong_fprime_formula"
    assert "σ′ written as tanh′'s 1 − a²" in report.dW[1].diagnosis
    assert "follows from layer 1" in report.dW[0].diagnosis


def test_dw_from_z_instead_of_a_and_local_dw_error():
    ref = reference(DEEP, "batch_first")
    dW = list(ref["dW"])
    dW[2] = ref["delta"][2].T @ ref["z"][1]         # z⁽¹⁾ where a⁽¹⁾ = σ(z⁽¹⁾) belongs
    report = oracle.compare({"dW": dW, "db": ref["db"]}, ref)
    assert report.first_bad_layer == 2
    assert "dW uses layer 1's z (before the activation)" in report.dW[2].diagnosis
    dW[2] = ref["dW"][2] + 0.3 * np.sign(ref["dW"][2])
    report = oracle.compare({"dW": dW, "db": ref["db"]}, ref)
    assert "δ is right (db matches) but dW is not" in report.dW[2].diagnosis


def test_output_delta_hint():
    ref = reference(DEEP, "batch_first")
    rng = np.random.default_rng(3)
    bad = {"dW": [d + 0.1 * rng.standard_normal(d.shape) for d in ref["dW"]],
           "db": [d + 0.1 * rng.standard_normal(d.shape) for d in ref["db"]]}
    report = oracle.compare(bad, ref)
    assert report.first_bad_layer == 2
    assert "the error enters at the output layer" in report.dW[2].diagnosis
    assert "2(ŷ − y)/(m·K)" in report.dW[2].diagnosis


@pytest.mark.parametrize("layout", LAYOUTS)
def test_transposed_dw_nonsquare(layout):
    report = check(DEEP, layout, "transpose", at=1)
    assert report.first_bad_layer == 1
    e = report.dW[1]
    assert e.status == "shape"
    assert "transposed" in e.diagnosis and "expected (6, 5), got (5, 6)" in e.diagnosis
    assert "candidate.T matches" in e.diagnosis
    assert report.dW[0].ok and report.db[1].ok  # only that array is wrong


def test_transposed_dw_square():
    report = check(SQUARE, "batch_first", "transpose", at=1)
    assert report.first_bad_layer == 1
    assert report.dW[1].status == "mismatch"
    assert "transposed: candidate.T matches" in report.dW[1].diagnosis


@pytest.mark.parametrize("layout, shape", [("features_first", (4, M)),
                                           ("batch_first", (4, M))])
def test_db_not_summed(layout, shape):
    report = check(COURSE, layout, "db_not_summed", at=0)
    assert report.first_bad_layer == 0
    e = report.db[0]
    assert e.status == "shape" and e.shape == shape
    assert "db not summed over the batch" in e.diagnosis
    assert "and then it matches" in e.diagnosis


def test_db_of_one_example():
    ref = reference(COURSE, "batch_first")
    cand = {"dW": ref["dW"], "db": [ref["db"][0], ref["delta"][1][-1]]}
    report = oracle.compare(cand, ref)
    assert report.first_bad_layer == 1
    assert f"δ of one example (#{M - 1})" in report.db[1].diagnosis


def test_db_as_mean():
    ref = reference(DEEP, "features_first")
    cand = {"dW": ref["dW"], "db": ref["db"][:2] + [ref["db"][2] / M]}
    report = oracle.compare(cand, ref)
    assert report.first_bad_layer == 2
    assert "1/m× the reference: divided by m twice" in report.db[2].diagnosis
    assert "not its mean" in report.db[2].diagnosis


def test_wrong_shapes():
    ref = reference(DEEP, "batch_first")
    cand = {"dW": [ref["dW"][0], np.zeros((6, 6)), ref["dW"][2]],
            "db": [ref["db"][0], ref["db"][1], ref["db"][2][:, None]]}
    report = oracle.compare(cand, ref)
    assert report.first_bad_layer == 2
    assert report.dW[1].status == "shape"
    assert "shape mismatch: expected (6, 5), got (6, 6)" in report.dW[1].diagnosis
    assert np.isnan(report.dW[1].max_abs_err)
    assert "same values, only the shape differs" in report.db[2].diagnosis


def test_other_factor_and_k_factor_and_fallback():
    ref = reference(DEEP, "batch_first")
    rng = np.random.default_rng(5)
    cand = {"dW": [ref["dW"][0] + rng.standard_normal(ref["dW"][0].shape),
                   0.37 * ref["dW"][1], 3 * ref["dW"][2]], "db": ref["db"]}
    report = oracle.compare(cand, ref)
    assert report.first_bad_layer == 2
    assert "K× the reference: K = 3 outputs" in report.dW[2].diagnosis
    assert "0.37× the reference" in report.dW[1].diagnosis
    assert "does not match (max rel err" in report.dW[0].diagnosis


def test_float32_roundoff_hint_and_loose_tolerance():
    ref = reference(DEEP, "batch_first")
    cand = DEEP.candidate("batch_first")
    cand32 = {k: [a.astype(np.float32) for a in cand[k]] for k in ("dW", "db")}
    strict = oracle.compare(cand32, ref, rtol=1e-9, atol=1e-12)
    assert not strict.ok and "float32" in strict.diagnosis
    assert oracle.compare(cand32, ref, rtol=1e-4, atol=1e-6).ok


def test_output_layer_extra_fprime_and_wrong_loss():
    ref = reference(COURSE, "features_first")
    good = COURSE.candidate("features_first")
    yhat = ref["a"][-1]
    cand = COURSE.candidate("features_first")
    d = good["delta"][1] * yhat * (1 - yhat)  # bce's δ times σ′ once more
    cand["dW"][1] = d @ ref["a"][0].T
    cand["loss"] = 2 * good["loss"]
    report = oracle.compare({"dW": cand["dW"], "db": cand["db"], "loss": cand["loss"]}, ref)
    assert report.first_bad_layer == 1
    assert "δ multiplied by f′(z) once more" in report.dW[1].diagnosis
    assert report.db[1].ok
    assert not report.loss.ok and "2× the reference" in report.loss.diagnosis


def test_report_json_and_entries():
    report = check(DEEP, "batch_first", "no_fprime", at=1)
    d = json.loads(json.dumps(report.to_dict()))
    assert d["ok"] is False and d["first_bad_layer"] == 1
    assert [e["layer"] for e in d["entries"][:3]] == [2, 2, 2]
    assert d["entries"][-1]["quantity"] == "loss"
    assert report.entries[0].quantity == "dW" and report.entries[0].layer == 2


# --------------------------------------------------------------------------- validation

def _args():
    Ws, bs, x, y = DEEP.args("batch_first")
    return dict(weights=list(Ws), biases=list(bs), x=x, y=y, **DEEP.names())


def _with(**changes):
    a = _args()
    a.update(changes)
    return a


_W, _B, _X, _Y = DEEP.args("batch_first")
_NAN_X = _X.copy()
_NAN_X[0, 0] = np.nan


@pytest.mark.parametrize("changes, error, match", [
    (dict(weights=np.zeros((5, 4))), TypeError, "weights must be a list"),
    (dict(weights=[]), ValueError, "weights must hold at least one layer"),
    (dict(biases=list(_B[:2])), ValueError, "weights has 3 layers but biases has 2"),
    (dict(weights=[_W[0], _W[1].T, _W[2]]), ValueError,
     r"weights\[1\] must have shape \(n_out, 5\).*got \(5, 6\).*transposed"),
    (dict(weights=[_W[0], _W[1], _W[2][None]]), ValueError,
     r"weights\[2\] must be a non-empty 2-D"),
    (dict(biases=[_B[0], np.zeros(5), _B[2]]), ValueError,
     r"biases\[1\] must have shape \(6,\) or \(6, 1\).*got \(5,\)"),
    (dict(x=_X.T), ValueError,
     r"x must have shape \(m, 4\).*got \(4, 7\).*looks features_first.*data='features_first'"),
    (dict(x=_X[:, :3]), ValueError, r"x must have shape \(m, 4\)"),
    (dict(x=_X[0]), ValueError, "x must be 2-D"),
    (dict(x=_NAN_X), ValueError, "x contains NaN or Inf"),
    (dict(x=_X.astype(complex)), TypeError, "x must be a real numeric array"),
    (dict(weights=[_W[0], _W[1], np.full((3, 6), np.inf)]), ValueError,
     r"weights\[2\] contains NaN or Inf"),
    (dict(y=_Y[:5]), ValueError, r"y must have shape \(7, 3\)"),
    (dict(y=_Y.T), ValueError, "it looks features_first"),
    (dict(y=np.full_like(_Y, np.nan)), ValueError, "y contains NaN or Inf"),
    (dict(y=np.array(["a"] * M)), TypeError, "y must be a real numeric array"),
    (dict(activation="swish"), ValueError, "unknown activation 'swish'"),
    (dict(activation=("tanh",)), ValueError, "one name per hidden layer"),
    (dict(activation=3), TypeError, "activation must be a name or a tuple"),
    (dict(output="softplus"), ValueError, "unknown output 'softplus'"),
    (dict(loss="hinge"), ValueError, "unknown loss 'hinge'"),
    (dict(loss=None), TypeError, "loss must be a string"),
    (dict(loss="bce"), ValueError, "loss='bce' needs output='sigmoid'"),
    (dict(layout="rows"), ValueError, "layout must be one of"),
])
def test_reference_validation(changes, error, match):
    with pytest.raises(error, match=match):
        oracle.reference_gradients(**_with(**changes))


def test_label_and_target_range_validation():
    Ws, bs, x, _ = SQUARE.args("batch_first")
    with pytest.raises(ValueError, match=r"class labels outside \[0, 3\)"):
        oracle.reference_gradients(Ws, bs, x, np.arange(M), **SQUARE.names())
    with pytest.raises(ValueError, match="1-D y for cce must hold integer class labels"):
        oracle.reference_gradients(Ws, bs, x, np.zeros(M), **SQUARE.names())
    Ws, bs, x, y = COURSE.args("batch_first")
    with pytest.raises(ValueError, match=r"y must lie in \[0, 1\]"):
        oracle.reference_gradients(Ws, bs, x, 2 * y, **COURSE.names())


def test_compare_validation():
    ref = reference(DEEP, "batch_first")
    good = {"dW": ref["dW"], "db": ref["db"]}
    with pytest.raises(TypeError, match="candidate: cannot read gradients from a str"):
        oracle.compare("dW", ref)
    with pytest.raises(TypeError, match="candidate: cannot read gradients from an int"):
        oracle.compare(3, ref)
    assert oracle.compare([ref["dW"], ref["db"]], ref).ok  # a (dW, db) pair is read too
    with pytest.raises(ValueError, match="candidate has no 'db'"):
        oracle.compare({"dW": ref["dW"]}, ref)
    with pytest.raises(ValueError, match=r"candidate\['dW'\] has 2 entries but the ref"):
        oracle.compare({"dW": ref["dW"][:2], "db": ref["db"]}, ref)
    with pytest.raises(TypeError, match=r"candidate\['db'\] must be a list"):
        oracle.compare({"dW": ref["dW"], "db": np.zeros(3)}, ref)
    with pytest.raises(TypeError, match="reference must be the dict"):
        oracle.compare(good, None)
    with pytest.raises(ValueError, match="rtol must be a finite number >= 0"):
        oracle.compare(good, ref, rtol=-1.0)
    with pytest.raises(ValueError, match="atol must be a finite number >= 0"):
        oracle.compare(good, ref, atol=float("nan"))
    assert oracle.compare(good, ref).ok


# --------------------------------------------------------------------------- CLI

def _save(path, problem, layout, mistake=None, at=None, **overrides):
    Ws, bs, X, Y = problem.args(layout)
    cand = problem.candidate(layout, mistake, at)
    arrays = {"X": X, "Y": Y}
    for l in range(len(Ws)):
        arrays.update({f"W{l + 1}": Ws[l], f"b{l + 1}": bs[l], f"dW{l + 1}": cand["dW"][l],
                       f"db{l + 1}": cand["db"][l]})
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return str(path)


COURSE_FLAGS = ["--activation", "sigmoid", "--output", "sigmoid", "--loss", "bce",
                "--layout", "features_first"]


def test_cli_ok_and_mismatch(tmp_path, capsys):
    good = _save(tmp_path / "good.npz", COURSE, "features_first")
    assert oracle.main([good] + COURSE_FLAGS) == 0
    assert "jaxmlp oracle: OK" in capsys.readouterr().out

    bad = _save(tmp_path / "bad.npz", COURSE, "features_first", "db_not_summed", at=1)
    assert oracle.main([bad] + COURSE_FLAGS) == 1
    out = capsys.readouterr().out
    assert "db not summed over the batch" in out
    assert re.search(r"1  db     db2 +\(1, 7\) .* SHAPE", out), out

    assert oracle.main([bad, "--json"] + COURSE_FLAGS) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["ok"] is False and d["first_bad_layer"] == 1
    assert {e["key"] for e in d["entries"] if e["status"] != "ok"} == {"db2"}


def test_cli_optional_delta_and_loss(tmp_path, capsys):
    cand = DEEP.candidate("batch_first")
    extra = {f"delta{l + 1}": d for l, d in enumerate(cand["delta"])}
    path = _save(tmp_path / "d.npz", DEEP, "batch_first", loss=np.float64(cand["loss"]), **extra)
    flags = ["--activation", "tanh,sigmoid", "--output", "identity", "--loss", "mse"]
    assert oracle.main([path] + flags + ["--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {e["quantity"] for e in d["entries"]} == {"dW", "db", "delta", "loss"}


def test_cli_extra_keys_and_nan_gradients(tmp_path, capsys):
    dW1 = COURSE.candidate("features_first")["dW"][0].copy()
    dW1[0, 0] = np.nan
    path = _save(tmp_path / "n.npz", COURSE, "features_first", A1=np.zeros(3), dW1=dW1)
    assert oracle.main([path] + COURSE_FLAGS) == 1  # NaN in *your* gradients: a mismatch
    captured = capsys.readouterr()
    assert "ignoring keys ['A1']" in captured.err
    assert "contains NaN or Inf" in captured.out


@pytest.mark.parametrize("case, match", [
    ("missing_key", r"missing keys \['dW2'\]"),
    ("nan", "X contains NaN or Inf"),
    ("shapes", r"W2 must have shape \(n_out, 4\).*got \(1, 5\)"),
    ("nofile", "no such file"),
    ("not_npz", "cannot read"),
    ("bad_rtol", "--rtol must be a finite number >= 0"),
    ("no_activation", "--activation is required"),
    ("bad_activation", "unknown activation 'swish'"),
    ("bad_layout", "invalid choice"),
    ("missing_flag", "--loss is required for this target"),
])
def test_cli_unusable_input(tmp_path, capsys, case, match):
    path = str(tmp_path / "in.npz")
    flags = list(COURSE_FLAGS)
    if case == "missing_key":
        _save(path, COURSE, "features_first", dW2=None)
    elif case == "nan":
        X = COURSE.X.copy()
        X[1, 2] = np.nan
        _save(path, COURSE, "features_first", X=X)
    elif case == "shapes":
        _save(path, COURSE, "features_first", W2=np.zeros((1, 5)))
    elif case == "nofile":
        path = str(tmp_path / "absent.npz")
    elif case == "not_npz":
        (tmp_path / "in.npz").write_text("not an archive")
    else:
        _save(path, COURSE, "features_first")
        flags = {
            "bad_rtol": flags + ["--rtol", "-1"],
            "no_activation": flags[2:],
            "bad_activation": ["--activation", "swish"] + flags[2:],
            "bad_layout": flags[:-1] + ["rows"],
            "missing_flag": flags[:4] + flags[6:],
        }[case]
    assert oracle.main([path] + flags) == 2
    err = capsys.readouterr().err
    assert re.search(match, err), err


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs SIGALRM")
@pytest.mark.parametrize("kind", list(NOT_REGULAR))
def test_cli_opens_only_regular_files(tmp_path, capsys, kind):
    path = not_regular(tmp_path, kind)
    with bounded(seconds=2):
        assert oracle.main([path] + COURSE_FLAGS) == 2
    err = capsys.readouterr().err
    assert re.search(re.escape(f"error: {path} is ") + NOT_REGULAR[kind] + ", not a regular file",
                     err), err


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs SIGALRM")
def test_cli_refuses_zip_bombs_before_reading(tmp_path, capsys):
    """A 2 MB .npz whose X.npy inflates to 2 GiB, and three 400 MiB members: refused from the
    sizes the zip declares (at most 512 MiB an array, 1 GiB in all), before inflating."""
    good = _save(tmp_path / "good.npz", COURSE, "features_first")
    with zipfile.ZipFile(good) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}

    def bomb(n_mib):    # a float64 .npy of n_mib MiB of zeros, deflated (CRC left at 0)
        header = npy_header(np.float64, (n_mib * 2**17,))
        return deflated_zeros(header, n_mib), len(header) + n_mib * 2**20, 0

    def check(replaced):
        path = write_zip(tmp_path / "bomb.npz", [(n, *replaced.pop(n)) if n in replaced
                                                 else (n, b) for n, b in members.items()]
                         + [(n, *m) for n, m in replaced.items()])
        with bounded():
            code = oracle.main([path] + COURSE_FLAGS)
        return code, capsys.readouterr()

    code, out = check({"X.npy": bomb(2048)})
    assert code == 2 and re.search(r"cannot read .*bomb.npz: member 'X.npy' declares 2147483776 "
                                   r"bytes uncompressed, more than the 512 MiB", out.err), out.err
    code, out = check({"X.npy": bomb(400), "Y.npy": bomb(400), "W1.npy": bomb(400)})
    assert code == 2 and re.search(r"member '(X|Y|W1).npy' brings the arrays' declared "
                                   r"uncompressed size to \d+ bytes, more than the 1 GiB",
                                   out.err), out.err
    # a lying entry: the size of the real X, a stream that inflates to 2 GiB; reading stops
    # at the declared size and the CRC gives it away
    x = members["X.npy"]
    code, out = check({"X.npy": (deflated_zeros(x[:-8 * COURSE.X.size], 2048), len(x),
                                 zlib.crc32(x))})
    assert code == 2 and "member 'X.npy' is not a readable .npy array (BadZipFile: Bad CRC" \
        in out.err, out.err
    # a member jaxmlp check does not use is never read
    code, out = check({"junk.npy": bomb(2048)})
    assert code == 0 and "ignoring keys ['junk']" in out.err, out.err


def test_cli_refuses_pickles_and_single_arrays(tmp_path, capsys):
    np.savez(tmp_path / "p.npz", X=np.array([{}, None], dtype=object))
    np.save(tmp_path / "a.npy", np.zeros(3))
    for name, match in (("p.npz", "member 'X.npy' holds a pickled object array"),
                        ("a.npy", r"holds a single array \(.npy\)")):
        assert oracle.main([str(tmp_path / name)] + COURSE_FLAGS) == 2
        err = capsys.readouterr().err
        assert re.search(match, err), err


def test_python_m_subprocess(tmp_path):
    bad = _save(tmp_path / "bad.npz", DEEP, "batch_first", "no_fprime", at=1)
    root = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", "jaxmlp", "check", bad, "--activation", "tanh,sigmoid",
         "--output", "identity", "--loss", "mse"],
        capture_output=True, text=True, timeout=120, cwd=root,
        env=dict(os.environ, PYTHONPATH=str(root)))
    assert proc.returncode == 1, proc.stderr
    assert "δ of layer 1 is missing the activation derivative f′(z)" in proc.stdout


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("m", [1, M])
def test_db_summed_over_everything(layout, m):
    """np.sum(dZ) with no axis: one number where one entry per unit belongs, named as
    such at every batch size (with m = 1 it is not 'one value per example')."""
    Ws, bs, X, Y = COURSE.args(layout)
    if layout == "features_first":
        X, Y = X[:, :m], Y[:, :m]
    else:
        X, Y = X[:m], Y[:m]
    ref = oracle.reference_gradients(Ws, bs, X, Y, **COURSE.names(), layout=layout)
    cand = {"dW": ref["dW"], "db": [np.sum(ref["db"][0]), ref["db"][1]]}
    report = oracle.compare(cand, ref)
    e = report.db[0]
    assert e.status == "shape" and e.rule == "db_all_summed", (e.rule, e.diagnosis)
    assert "np.sum(dZ) with no axis" in e.diagnosis
    assert "the sum of the reference's entries" in e.diagnosis
    assert report.dW[0].status == "ok" and report.db[1].status == "ok"
