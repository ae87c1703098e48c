"""jaxmlp.oracle.layers.check_layer against the CS231n-style ports in tests/students/.

Each correct layer passes in its layout (CS231n's affine with w (D, M) and a 3-D x,
jaxmlp's W (M, D), deeplearning.ai's features-first linear_forward/backward); every
planted mistake of cs231n_layers.py is named by the rule the MISTAKES table says (or,
for the correct-but-different ones, passes); the hand-written NumPy references are
checked against jax.vjp / jax.grad in float64 and finite differences; bad arguments are
refused before the user's code runs.
"""
import ast
import functools
import inspect
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp.oracle import layers
from jaxmlp.oracle.conventions import Convention, resolve
from jaxmlp.oracle.junit import cases_from_layer
from jaxmlp.oracle.layers import KINDS, RULES, LayerReport, check_layer
from tests.students import cs231n_layers as S

P = functools.partial

# (kind, forward, backward, convention) of each correct implementation
CORRECT = {
    "affine_cs231n": ("affine", S.affine_forward, S.affine_backward, "cs231n"),
    "affine_jaxmlp": ("affine", S.affine_forward_jaxmlp, S.affine_backward_jaxmlp, "jaxmlp"),
    "linear_dlai": ("affine", S.linear_forward, S.linear_backward, "deeplearning_ai"),
    "relu": ("relu", S.relu_forward, S.relu_backward, "jaxmlp"),
    "leaky_relu": ("leaky_relu", S.leaky_relu_forward, S.leaky_relu_backward, "jaxmlp"),
    "sigmoid": ("sigmoid", S.sigmoid_forward, S.sigmoid_backward, "jaxmlp"),
    "tanh": ("tanh", S.tanh_forward, S.tanh_backward, "jaxmlp"),
    "softmax_loss": ("softmax_loss", S.softmax_loss, None, "cs231n"),
    "svm_loss": ("svm_loss", S.svm_loss, None, "cs231n"),
    "batchnorm": ("batchnorm", S.batchnorm_forward, S.batchnorm_backward, "cs231n"),
    "batchnorm_alt": ("batchnorm", S.batchnorm_forward, S.batchnorm_backward_alt, "cs231n"),
    "layernorm": ("layernorm", S.layernorm_forward, S.layernorm_backward, "cs231n"),
    "dropout": ("dropout", S.dropout_forward, S.dropout_backward, "cs231n"),
}

#: (student function, mistake) → (which correct setup, quantity, rule, keyword of the
#: diagnosis), or None where the mistake is correct code written differently (passes).
MISTAKES = {
    ("affine_forward", "no_reshape"): ("affine_cs231n", "out", "raised", "not aligned"),
    ("affine_backward", "dw_transposed"): ("affine_cs231n", "dw", "shape_transposed",
                                           "transposed"),
    ("affine_backward", "db_not_summed"): ("affine_cs231n", "db", "db_not_summed",
                                           "not summed"),
    ("affine_backward", "db_averaged"): ("affine_cs231n", "db", "db_averaged", "mean"),
    ("affine_backward", "dx_not_reshaped"): ("affine_cs231n", "dx", "reshape",
                                             "reshape(x.shape)"),
    ("affine_backward", "dx_no_transpose"): ("affine_cs231n", "dx", "raised",
                                             "backward raised"),
    ("affine_backward", "dx_transposed"): ("affine_cs231n", "dx", "shape_transposed",
                                           "transpose"),
    ("affine_backward", "dw_from_out"): ("affine_cs231n", "dw", "dw_from_out", "output"),
    ("affine_backward", "db_keepdims"): ("affine_cs231n", "db", "reshape", "keepdims"),
    ("affine_backward", "db_wrong_axis"): ("affine_cs231n", "db", "wrong_axis",
                                           "wrong axis"),
    ("affine_backward", "dw_times_2"): ("affine_cs231n", "dw", "factor", "factor 2"),
    ("affine_backward_jaxmlp", "dW_transposed"): ("affine_jaxmlp", "dw", "shape_transposed",
                                                  "convention='cs231n'"),
    ("affine_backward_jaxmlp", "dx_wrong_transpose"): ("affine_jaxmlp", "dx", "raised",
                                                       "backward raised"),
    ("linear_backward", "no_one_over_m"): ("linear_dlai", "dw", "not_divided", "1/m"),
    ("linear_backward", "db_no_keepdims"): ("linear_dlai", "db", "reshape", "keepdims"),
    ("relu_backward", "mask_from_out"): None,
    ("relu_backward", "mask_from_dout"): ("relu", "dx", "mask_from_dout", "dout > 0"),
    ("relu_backward", "no_mask"): ("relu", "dx", "missing_fprime", "mask"),
    ("relu_backward", "times_out"): ("relu", "dx", "times_out", "output"),
    ("leaky_relu_backward", "no_slope"): ("leaky_relu", "dx", "no_slope", "α = 0.01"),
    ("leaky_relu_backward", "mask_from_dout"): ("leaky_relu", "dx", "mask_from_dout",
                                                "dout > 0"),
    ("leaky_relu_backward", "times_out"): ("leaky_relu", "dx", "times_out", "output"),
    ("sigmoid_backward", "df_at_out"): ("sigmoid", "dx", "df_at_out", "σ(out)"),
    ("sigmoid_backward", "missing_one_minus"): ("sigmoid", "dx", "partial_fprime",
                                                "(1 − out)"),
    ("tanh_backward", "one_minus_x_squared"): ("tanh", "dx", "df_at_out", "1 − x²"),
    ("tanh_backward", "one_minus_out"): ("tanh", "dx", "partial_fprime", "square"),
    ("softmax_loss", "not_divided"): ("softmax_loss", "loss", "not_divided", "divided by N"),
    ("softmax_loss", "no_subtract"): ("softmax_loss", "dx", "no_subtract", "subtracted"),
    ("softmax_loss", "wrong_sign"): ("softmax_loss", "dx", "wrong_sign", "sign"),
    ("softmax_loss", "no_max_shift"): ("softmax_loss", "loss_shifted", "no_max_shift",
                                       "row max"),
    ("svm_loss", "not_divided"): ("svm_loss", "loss", "not_divided", "divided by N"),
    ("svm_loss", "no_correct_count"): ("svm_loss", "dx", "no_correct_count", "count"),
    ("svm_loss", "correct_class_margin"): ("svm_loss", "loss", "correct_class_margin",
                                           "not zeroed"),
    ("batchnorm_forward", "unbiased_var"): ("batchnorm", "out", "unbiased_var", "ddof=1"),
    ("batchnorm_forward", "layer_axis"): ("batchnorm", "out", "wrong_axis", "axis 1"),
    ("batchnorm_backward", "no_mean_path"): ("batchnorm", "dx", "no_mean_path", "dμ"),
    ("batchnorm_backward", "no_var_path"): ("batchnorm", "dx", "no_var_path", "dσ²"),
    ("batchnorm_backward", "no_paths"): ("batchnorm", "dx", "no_paths", "both"),
    ("batchnorm_backward", "dgamma_from_x"): ("batchnorm", "dgamma", "dgamma_from_x", "x̂"),
    ("batchnorm_backward", "dgamma_not_summed"): ("batchnorm", "dgamma", "db_not_summed",
                                                  "not summed"),
    ("batchnorm_backward", "dbeta_wrong_axis"): ("batchnorm", "dbeta", "wrong_axis",
                                                 "wrong axis"),
    ("batchnorm_backward_alt", "layer_axis"): ("batchnorm_alt", "dx", "wrong_axis",
                                               "sums"),
    ("layernorm_forward", "batch_axis"): ("layernorm", "out", "wrong_axis", "axis 0"),
    ("layernorm_backward", "batch_axis"): ("layernorm", "dx", "wrong_axis", "sums"),
    ("dropout_forward", "drop_rate"): ("dropout", "out", "drop_rate", "drop rate"),
    ("dropout_forward", "not_inverted"): ("dropout", "out", "not_inverted", "1/p"),
    ("dropout_forward", "keep_fraction"): ("dropout", "keep", "keep_fraction", "1 − p"),
    ("dropout_forward", "train_at_test"): ("dropout", "out_test", "train_at_test",
                                           "test mode"),
    ("dropout_backward", "no_mask"): ("dropout", "dx", "mask_not_applied", "not applied"),
    ("dropout_backward", "not_rescaled"): ("dropout", "dx", "not_rescaled", "1/p"),
}


def _planted():
    """(function name, mistake) of every planted mistake in cs231n_layers.py, read from
    the `_no_mistake(mistake, (...))` call that opens each function."""
    found = set()
    for name, fn in vars(S).items():
        if not inspect.isfunction(fn) or name.startswith("_"):
            continue
        if "mistake" not in inspect.signature(fn).parameters:
            continue
        m = re.search(r"_no_mistake\(mistake, (\([^)]*\))\)", inspect.getsource(fn))
        assert m, name
        found |= {(name, mistake) for mistake in ast.literal_eval(m.group(1))}
    return found


def _run(setup, fn_name=None, mistake=None, **kw):
    kind, fwd, bwd, conv = CORRECT[setup]
    if fn_name is not None:
        wrong = P(getattr(S, fn_name), mistake=mistake)
        if fn_name == getattr(fwd, "__name__", None):
            fwd = wrong
        else:
            assert fn_name == bwd.__name__, (fn_name, setup)
            bwd = wrong
    return check_layer(kind, fwd, bwd, convention=conv, **kw)


# --------------------------------------------------------------------------- correct code

@pytest.mark.parametrize("setup", sorted(CORRECT))
def test_correct_layer_passes(setup):
    report = _run(setup)
    assert isinstance(report, LayerReport)
    assert report.ok and report.status == "ok", str(report)
    assert all(e.ok and e.rule == "" and e.layer is None for e in report.entries)
    assert "match" in report.diagnosis
    json.dumps(report.to_dict())


def test_entries_per_kind():
    q = {s: [e.quantity for e in _run(s).entries] for s in CORRECT}
    assert q["affine_cs231n"] == q["linear_dlai"] == ["out", "dx", "dw", "db"]
    assert q["batchnorm"] == ["out", "dx", "dgamma", "dbeta"]
    assert q["relu"] == ["out", "dx"]
    assert q["softmax_loss"] == ["loss", "dx", "loss_shifted", "dx_shifted"]
    assert q["svm_loss"] == ["loss", "dx"]
    assert q["dropout"] == ["out", "keep", "out_test", "dx"]


def test_layouts_and_shapes():
    """Every dimension distinct, in each convention's own layout."""
    shapes = {s: {e.quantity: e.expected_shape for e in _run(s).entries}
              for s in ("affine_cs231n", "affine_jaxmlp", "linear_dlai")}
    assert shapes["affine_cs231n"] == {"out": (7, 4), "dx": (7, 3, 5), "dw": (15, 4),
                                       "db": (4,)}
    assert shapes["affine_jaxmlp"] == {"out": (7, 4), "dx": (7, 5), "dw": (4, 5), "db": (4,)}
    assert shapes["linear_dlai"] == {"out": (4, 7), "dx": (5, 7), "dw": (4, 5), "db": (4, 1)}


# --------------------------------------------------------------------------- mistakes

def test_every_planted_mistake_is_in_the_table():
    assert _planted() == set(MISTAKES)


@pytest.mark.parametrize("fn_name,mistake", sorted(MISTAKES))
def test_planted_mistake(fn_name, mistake):
    expected = MISTAKES[(fn_name, mistake)]
    setup = expected[0] if expected else {"relu_backward": "relu"}[fn_name]
    report = _run(setup, fn_name, mistake)
    if expected is None:
        assert report.ok, str(report)
        return
    _, quantity, rule, keyword = expected
    assert not report.ok
    e = report.entry(quantity)
    assert e is not None and not e.ok, str(report)
    assert e.rule == rule, str(report)
    assert keyword in e.diagnosis, e.diagnosis
    assert rule == "raised" or rule in RULES
    assert report.status == ("error" if rule == "raised" else "mismatch")
    if rule == "raised":
        assert e.status == "error" and "raised" in report.diagnosis
    if fn_name.endswith("backward") or fn_name.endswith("backward_alt") or \
            fn_name.endswith("backward_jaxmlp"):
        assert report.entry("out").ok  # a backward mistake leaves the forward right
    # every mismatching entry is named by a rule, never by a guess at the wrong shape
    for other in report.entries:
        if not other.ok and other.status != "error":
            assert other.rule in RULES and other.diagnosis, other
    json.dumps(report.to_dict())


def test_dropout_drop_rate_also_keeps_the_wrong_fraction():
    report = _run("dropout", "dropout_forward", "drop_rate")
    assert report.entry("keep").rule == "keep_fraction"
    assert report.entry("dx").ok  # the backward replays the same (wrong) mask: consistent


def test_dlai_missing_one_over_m_names_both():
    report = _run("linear_dlai", "linear_backward", "no_one_over_m")
    assert [(e.quantity, e.rule) for e in report.entries if not e.ok] == [
        ("dw", "not_divided"), ("db", "not_divided")]


def test_forward_mistake_is_reported_first():
    report = _run("batchnorm", "batchnorm_forward", "unbiased_var")
    assert report.diagnosis.splitlines()[0].startswith("the forward is wrong")
    assert report.entry("dx").rule == report.entry("dgamma").rule == "unbiased_var"
    assert report.entry("dbeta").ok


def test_softmax_without_shift_overflows_only_when_shifted():
    report = _run("softmax_loss", "softmax_loss", "no_max_shift")
    assert report.entry("loss").ok and report.entry("dx").ok
    assert report.entry("dx_shifted").rule == "no_max_shift"


def test_convention_hint_when_layout_is_wrong():
    """CS231n's affine declared as jaxmlp: the forward raises, and the message says which
    layout was passed and what to declare."""
    report = check_layer("affine", S.affine_forward, S.affine_backward)
    assert report.status == "error"
    assert "W (4, 5)" in report.diagnosis and "convention='cs231n'" in report.diagnosis
    cases = cases_from_layer(report)
    assert cases[0].error is not None


# --------------------------------------------------------------------------- your code fails

def _bad_backward(result):
    return lambda dout, cache: result


@pytest.mark.parametrize("result,message", [
    ((1, 2), "must return (dx, dw, db), got a tuple of 2"),
    (None, "must return (dx, dw, db), got NoneType"),
    ((np.zeros((7, 3, 5)), "dw", np.zeros(4)), "dw must be a real numeric array"),
])
def test_backward_wrong_structure_is_an_error(result, message):
    report = check_layer("affine", S.affine_forward, _bad_backward(result),
                         convention="cs231n")
    assert report.status == "error" and not report.ok
    assert report.entry("out").ok
    assert message in report.diagnosis
    assert "raised" in {e.rule for e in report.entries}
    assert "ERROR" in str(report)
    json.dumps(report.to_dict())


def test_forward_wrong_structure_is_an_error():
    report = check_layer("relu", lambda x: np.maximum(x, 0), S.relu_backward)
    assert report.status == "error"
    assert "forward must return (out, cache)" in report.diagnosis
    assert [e.quantity for e in report.entries] == ["out"]
    assert cases_from_layer(report)[0].error


def test_backward_that_raises_in_a_loss_free_kind():
    def boom(dout, cache):
        raise RuntimeError("not implemented yet")
    report = check_layer("tanh", S.tanh_forward, boom)
    assert report.status == "error"
    assert report.entry("dx").status == "error"
    assert "RuntimeError: not implemented yet" in report.entry("dx").diagnosis


def test_nonfinite_and_unknown_mistake():
    report = check_layer("relu", S.relu_forward, lambda d, c: d * np.nan)
    assert report.entry("dx").rule == "nonfinite"
    rng = np.random.default_rng(1)
    report = check_layer("relu", S.relu_forward,
                         lambda d, c: d * (c > 0) + rng.normal(size=d.shape))
    assert report.entry("dx").rule == "mismatch"
    assert "max abs err" in report.entry("dx").diagnosis


def test_float32_is_roundoff():
    def bwd32(dout, cache):
        dx, dw, db = S.affine_backward(dout.astype(np.float32),
                                       tuple(a.astype(np.float32) for a in cache))
        return dx, dw, db
    report = check_layer("affine", S.affine_forward, bwd32, convention="cs231n")
    assert {e.rule for e in report.entries if not e.ok} <= {"roundoff"}
    assert check_layer("affine", S.affine_forward, bwd32, convention="cs231n",
                       rtol=1e-4, atol=1e-6).ok


# --------------------------------------------------------------------------- options

def test_options():
    assert check_layer("affine", S.affine_forward, S.affine_backward, convention="cs231n",
                       x_shape=(6, 2, 4), n_out=3).ok
    r = check_layer("affine", S.linear_forward, S.linear_backward, convention="deeplearning_ai",
                    x_shape=(3, 9), n_out=2)
    assert r.ok and r.entry("dw").expected_shape == (2, 3)
    assert check_layer("batchnorm", S.batchnorm_forward, S.batchnorm_backward, eps=1e-3,
                       momentum=0.5, x_shape=(9, 4)).ok
    assert check_layer("dropout", S.dropout_forward, S.dropout_backward, p=0.3, seed=5).ok
    r = check_layer("dropout", S.dropout_forward, S.dropout_backward, p=0.3, seed=5)
    assert "'p': 0.3" in r.inputs
    assert check_layer("softmax_loss", S.softmax_loss, x_shape=(11, 3), seed=2).ok
    # a custom Convention: jaxmlp's W (M, D) with the 1/m in dW (a per-example dZ)
    conv = Convention(one_over_m="dW")

    def bwd(dout, cache):
        x, W = cache
        n = x.shape[0]
        return dout @ W, dout.T @ x / n, dout.sum(axis=0) / n
    assert check_layer("affine", S.affine_forward_jaxmlp, bwd, convention=conv).ok


@pytest.mark.parametrize("call,exc,match", [
    (lambda: check_layer("conv", S.relu_forward, S.relu_backward), ValueError,
     r"check_layer: kind must be one of \['affine'.*got 'conv'"),
    (lambda: check_layer("relu", None, S.relu_backward), TypeError,
     "forward must be callable"),
    (lambda: check_layer("relu", S.relu_forward), TypeError, "backward must be callable"),
    (lambda: check_layer("relu", S.relu_forward, 3), TypeError, "backward must be callable"),
    (lambda: check_layer("svm_loss", S.svm_loss, S.relu_backward), TypeError,
     "backward must be None for kind 'svm_loss'"),
    (lambda: check_layer("relu", S.relu_forward, S.relu_backward, rtol=-1), ValueError,
     "check_layer: rtol must be a finite number >= 0"),
    (lambda: check_layer("relu", S.relu_forward, S.relu_backward, atol=float("nan")),
     ValueError, "atol must be"),
    (lambda: check_layer("relu", S.relu_forward, S.relu_backward, seed=-1), ValueError,
     "check_layer: seed must be an int >= 0, got -1"),
    (lambda: check_layer("relu", S.relu_forward, S.relu_backward, n_out=3), ValueError,
     r"unknown option\(s\) \['n_out'\] for kind 'relu'; it takes \['x_shape'\]"),
    (lambda: check_layer("affine", S.affine_forward, S.affine_backward, x_shape=(7,)),
     ValueError, "x_shape for 'affine'"),
    (lambda: check_layer("batchnorm", S.batchnorm_forward, S.batchnorm_backward,
                         x_shape=(7, 3, 2)), ValueError, "must have 2 dimensions"),
    (lambda: check_layer("relu", S.relu_forward, S.relu_backward, x_shape=(7, 0)),
     ValueError, "check_layer: x_shape must be a non-empty tuple of positive ints"),
    (lambda: check_layer("dropout", S.dropout_forward, S.dropout_backward, p=1.0),
     ValueError, r"p \(the keep probability\) must be a number in \(0, 1\)"),
    (lambda: check_layer("affine", S.affine_forward, S.affine_backward, n_out=0),
     ValueError, "check_layer: n_out must be a positive int, got 0"),
    (lambda: check_layer("batchnorm", S.batchnorm_forward, S.batchnorm_backward, eps=0),
     ValueError, "eps must be"),
    (lambda: check_layer("affine", S.affine_forward, S.affine_backward, convention="x"),
     ValueError, "unknown convention 'x'"),
])
def test_bad_arguments_refused_before_calling(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_bad_arguments_never_call_user_code():
    calls = []

    def fwd(*a):
        calls.append(a)
        return S.relu_forward(*a)
    with pytest.raises(ValueError):
        check_layer("relu", fwd, S.relu_backward, bogus=1)
    assert calls == []


def test_report_text_and_dict():
    report = _run("affine_cs231n", "affine_backward", "db_averaged")
    text = str(report)
    assert text.startswith("jaxmlp check_layer affine: MISMATCH  (convention='cs231n'")
    assert "max abs err" in text and "db: db is the mean" in text
    d = json.loads(json.dumps(report.to_dict()))
    assert d["status"] == "mismatch" and d["kind"] == "affine"
    assert [e["quantity"] for e in d["entries"]] == ["out", "dx", "dw", "db"]
    assert d["entries"][3]["rule"] == "db_averaged"
    shape = json.loads(json.dumps(_run("affine_cs231n", "affine_backward",
                                       "db_not_summed").to_dict()))
    assert shape["entries"][3]["max_abs_err"] is None  # NaN becomes null
    cases = cases_from_layer(report)
    assert [c.name for c in cases] == ["affine: out", "affine: dx", "affine: dw", "affine: db"]
    assert cases[3].failure and cases[0].failure is None


def test_rules_documented_in_order():
    doc = layers.__doc__
    positions = [doc.index(f"`{name}`") for name in RULES]
    assert positions == sorted(positions)
    assert set(KINDS) == set(layers._OPTIONS)


# --------------------------------------------------------------------------- the references

def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _vjp(f, args, dout):
    out, pull = jax.vjp(f, *[jnp.asarray(a) for a in args])
    return np.asarray(out), [np.asarray(g) for g in pull(jnp.asarray(dout))]


@pytest.mark.parametrize("conv", ["cs231n", "jaxmlp", "deeplearning_ai"])
def test_affine_reference_is_the_gradient(conv):
    c = resolve(conv)
    case = layers._case("affine", c, 3, {})
    x, w, b = case.args
    if c.features_first:
        f = lambda x, w, b: w @ x + b  # noqa: E731  (b (M, 1) broadcasts over columns)
    elif c.weights == "in_out":
        f = lambda x, w, b: x.reshape(x.shape[0], -1) @ w + b[None, :]  # noqa: E731
    else:
        f = lambda x, w, b: x @ w.T + b[None, :]  # noqa: E731
    out, (dx, dw, db) = _vjp(f, (x, w, b), case.dout)
    s = 1 / case.n if c.one_over_m == "dW" else 1.0
    ref = case.ref
    assert _rel(ref["out"], out) <= 1e-12
    assert _rel(ref["dx"], dx) <= 1e-9
    assert _rel(ref["dw"], s * dw) <= 1e-9
    assert _rel(ref["db"], s * db) <= 1e-9


@pytest.mark.parametrize("kind,f", [("relu", jax.nn.relu), ("sigmoid", jax.nn.sigmoid),
                                    ("tanh", jnp.tanh)])
def test_elementwise_reference_is_the_gradient(kind, f):
    case = layers._case(kind, resolve("jaxmlp"), 4, {})
    out, (dx,) = _vjp(f, case.args, case.dout)
    assert _rel(case.ref["out"], out) <= 1e-12
    assert _rel(case.ref["dx"], dx) <= 1e-9


def _svm_jax(x, y):
    n = x.shape[0]
    correct = x[jnp.arange(n), y]
    margins = jnp.maximum(0.0, x - correct[:, None] + 1.0)
    margins = margins.at[jnp.arange(n), y].set(0.0)
    return margins.sum() / n


def _softmax_jax(x, y):
    return -jnp.mean(jax.nn.log_softmax(x, axis=1)[jnp.arange(x.shape[0]), y])


@pytest.mark.parametrize("kind,f", [("softmax_loss", _softmax_jax), ("svm_loss", _svm_jax)])
def test_loss_reference_is_the_gradient(kind, f):
    case = layers._case(kind, resolve("cs231n"), 5, {})
    x, y = case.args
    loss, dx = jax.value_and_grad(f)(jnp.asarray(x), jnp.asarray(y))
    assert _rel(case.ref["loss"], loss) <= 1e-12
    assert _rel(case.ref["dx"], dx) <= 1e-9


def _norm_jax(axis, eps):
    def f(x, gamma, beta):
        mu = x.mean(axis=axis, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=axis, keepdims=True)
        return gamma[None, :] * (x - mu) / jnp.sqrt(var + eps) + beta[None, :]
    return f


@pytest.mark.parametrize("kind,axis", [("batchnorm", 0), ("layernorm", 1)])
def test_norm_reference_is_the_gradient(kind, axis):
    case = layers._case(kind, resolve("cs231n"), 6, {})
    x, gamma, beta, param = case.args
    f = _norm_jax(axis, param["eps"])
    out, (dx, dgamma, dbeta) = _vjp(f, (x, gamma, beta), case.dout)
    for q, v in (("out", out), ("dx", dx), ("dgamma", dgamma), ("dbeta", dbeta)):
        assert _rel(case.ref[q], v) <= 1e-9, q
    # and finite differences of  Σ dout ⊙ out  in x (central, float64)
    loss = lambda x: float(np.sum(case.dout * np.asarray(f(x, gamma, beta))))  # noqa: E731
    h, fd = 1e-5, np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        fd[i] = (loss(x + e) - loss(x - e)) / (2 * h)
    assert _rel(case.ref["dx"], fd) <= 1e-6  # finite differences: truncation, not 1e-9


def test_norm_mistake_predictions_are_gradients_of_the_mistaken_forward():
    """The wrong_axis prediction is the other normalisation's exact gradient."""
    case = layers._case("batchnorm", resolve("cs231n"), 7, {})
    x, gamma, beta, param = case.args
    _, (dx, dgamma, _) = _vjp(_norm_jax(1, param["eps"]), (x, gamma, beta), case.dout)
    other = case.extra["other_norm"]
    assert _rel(other["dx"], dx) <= 1e-9 and _rel(other["dgamma"], dgamma) <= 1e-9


def test_dropout_reference_replays_the_mask():
    case = layers._case("dropout", resolve("cs231n"), 8, {})
    x, param = case.args
    out, cache = S.dropout_forward(x, dict(param))
    ref = {}
    layers._dropout_reference(case, out, cache, ref)
    mask = cache[1]
    _, (dx,) = _vjp(lambda x: x * mask, (x,), case.dout)
    assert _rel(ref["dx"], dx) <= 1e-12
    assert _rel(ref["out"], out) <= 1e-12
    # from the cache when out is unusable
    ref2 = {}
    layers._dropout_reference(case, np.zeros(3), cache, ref2)
    assert _rel(ref2["dx"], dx) <= 1e-12


def test_leaky_relu_slope_option():
    fwd = lambda x: S.leaky_relu_forward(x, alpha=0.2)  # noqa: E731
    assert check_layer("leaky_relu", fwd, S.leaky_relu_backward, alpha=0.2).ok
    report = check_layer("leaky_relu", fwd, S.leaky_relu_backward)   # the default α = 0.01
    assert not report.ok and not report.entry("out").ok
    with pytest.raises(ValueError, match=r"alpha \(the negative slope\) must be a number in \(0, 1\)"):
        check_layer("leaky_relu", fwd, S.leaky_relu_backward, alpha=1.5)
