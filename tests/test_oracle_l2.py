"""The L2 family of diagnoses (issue 29): each rule named on its own planted bug, under
every preset, at the right layers, and never on correct gradients.

The bugs are planted in the reference itself: the penalty's gradient part of dW is
dW(l2) − dW(l2 = 0), in the preset's own shapes, so the candidate differs from the
reference only in its L2 term.  Every dimension differs (sizes (5, 7, 3), m = 9,
n_train = 40), so no two of the predicted factors (1, ½, 2, 9/40, …) can coincide.
The candidate reports the reference's loss, as CS231n's (loss, grads) does: a loss of
the declared convention rules out "correct code of another convention" (reg·W is right
for (reg/2)ΣW²), which is the diagnosis when only the gradients are given.
"""
import numpy as np
import pytest

from jaxmlp import oracle
from jaxmlp.oracle import rules as _rules
from jaxmlp.oracle.conventions import resolve

PRESETS = ("jaxmlp", "cs231n", "deeplearning_ai", "nielsen", "sklearn")
HALF_M = ("deeplearning_ai", "nielsen", "sklearn")  # λ/(2n)ΣW²
SIZES, M, N_TRAIN, L2 = (5, 7, 3), 9, 40, 0.3
NAMES = {"activation": "tanh", "output": "sigmoid", "loss": "bce"}


def _arrays(preset):
    """Weights, biases, x, y in the preset's layout."""
    conv = resolve(preset)
    rng = np.random.default_rng(29)
    W = [rng.normal(size=(o, i)) / np.sqrt(i) for i, o in zip(SIZES, SIZES[1:])]
    b = [rng.normal(size=o) * 0.5 for o in SIZES[1:]]
    x = rng.normal(size=(M, SIZES[0]))
    y = rng.integers(0, 2, size=(M, SIZES[-1])).astype(float)
    if conv.weights == "in_out":
        W = [w.T for w in W]
    if conv.features_first:
        b, x, y = [v.reshape(-1, 1) for v in b], x.T, y.T
    return W, b, x, y


def _reference(preset, l2=L2, n_train=None):
    W, b, x, y = _arrays(preset)
    return oracle.reference_gradients(W, b, x, y, **NAMES, convention=preset, l2=l2,
                                      n_train=n_train)


def _penalty(preset, n_train=None):
    """(reference, the penalty's gradient per layer in the preset's dW shapes, biases)."""
    ref = _reference(preset, n_train=n_train)
    data = _reference(preset, l2=0.0)
    return ref, [g - g0 for g, g0 in zip(ref["dW"], data["dW"])], _arrays(preset)[1]


def _candidate(ref, dW=None, db=None):
    return {"dW": dW if dW is not None else [g.copy() for g in ref["dW"]],
            "db": db if db is not None else [g.copy() for g in ref["db"]],
            "loss": ref["loss"]}


def _assert_named(report, quantity, rule, phrase, layers=(0, 1)):
    entries = getattr(report, quantity)
    assert not report.ok, str(report)
    for l in layers:
        e = entries[l]
        assert e.rule == rule, (l, e.rule, e.diagnosis)
        assert phrase in e.diagnosis, e.diagnosis
        assert f"layer {l}" in e.diagnosis, e.diagnosis
    other = "db" if quantity == "dW" else "dW"
    assert all(e.status == "ok" for e in getattr(report, other)), str(report)
    assert report.loss is not None and report.loss.status == "ok"


# --------------------------------------------------------------------------- each rule


@pytest.mark.parametrize("preset", PRESETS)
def test_l2_missing(preset):
    ref, pen, _ = _penalty(preset)
    rep = oracle.compare(_candidate(ref, dW=[g - p for g, p in zip(ref["dW"], pen)]), ref)
    _assert_named(rep, "dW", "l2_missing", "the L2 term is missing")


@pytest.mark.parametrize("preset", PRESETS)
def test_l2_halved(preset):
    ref, pen, _ = _penalty(preset)
    rep = oracle.compare(_candidate(ref, dW=[g - p / 2 for g, p in zip(ref["dW"], pen)]), ref)
    _assert_named(rep, "dW", "l2_halved", "is half your convention's")
    want = {"jaxmlp": "(λ/2)·ΣW² has gradient λ·W",
            "cs231n": "reg·ΣW² has gradient 2·reg·W",
            "deeplearning_ai": "lambd/(2m)·ΣW² has gradient (lambd/m)·W",
            "nielsen": "lmbda/(2m)·ΣW² has gradient (lmbda/m)·W",
            "sklearn": "alpha/(2m)·ΣW² has gradient (alpha/m)·W"}[preset]
    assert want in rep.dW[0].diagnosis, rep.dW[0].diagnosis


def test_l2_halved_only_one_layer():
    ref, pen, _ = _penalty("cs231n")
    dW = [g.copy() for g in ref["dW"]]
    dW[1] = dW[1] - pen[1] / 2
    rep = oracle.compare(_candidate(ref, dW=dW), ref)
    _assert_named(rep, "dW", "l2_halved", "the 2 from the derivative of W² is missing",
                  layers=(1,))
    assert rep.dW[0].status == "ok" and rep.first_bad_layer == 1


def test_cs231n_net_with_reg_times_W_is_named():
    """CS231n's TwoLayerNet with grads["W"] += reg·W (its loss reg·ΣW² needs 2·reg·W)."""
    from tests.students import cs231n_net
    rng = np.random.default_rng(4)
    W = [rng.normal(size=(i, o)) / np.sqrt(i) for i, o in zip(SIZES, SIZES[1:])]
    b = [rng.normal(size=o) * 0.5 for o in SIZES[1:]]
    X, y = rng.normal(size=(M, SIZES[0])), rng.integers(0, SIZES[-1], size=M)
    loss, grads = cs231n_net.loss(W, b, X, y, reg=L2)
    for l in range(1, len(W) + 1):
        grads["W%d" % l] -= L2 * W[l - 1]
    ref = oracle.reference_gradients(W, b, X, y, activation="relu", output="softmax",
                                     loss="cce", convention="cs231n", l2=L2)
    rep = oracle.compare((loss, grads), ref)
    _assert_named(rep, "dW", "l2_halved", "reg·ΣW² has gradient 2·reg·W, yours is reg·W")


@pytest.mark.parametrize("preset", PRESETS)
def test_l2_doubled(preset):
    ref, pen, _ = _penalty(preset)
    rep = oracle.compare(_candidate(ref, dW=[g + p for g, p in zip(ref["dW"], pen)]), ref)
    _assert_named(rep, "dW", "l2_doubled", "counted twice")


@pytest.mark.parametrize("preset", PRESETS)
def test_l2_on_biases(preset):
    ref, pen, b = _penalty(preset)
    i = ref["internals"]
    db = [g + 2 * i.c * bb for g, bb in zip(ref["db"], b)]
    rep = oracle.compare(_candidate(ref, db=db), ref)
    _assert_named(rep, "db", "l2_on_biases", "applied to the biases")


@pytest.mark.parametrize("preset", HALF_M)
def test_l2_scale_n_batch_for_training_set(preset):
    """λ/(2n)ΣW² with n = n_train differentiated as (λ/m)·W."""
    ref, pen, _ = _penalty(preset, n_train=N_TRAIN)
    assert ref["internals"].n_train == N_TRAIN
    dW = [g - p + p * N_TRAIN / M for g, p in zip(ref["dW"], pen)]
    rep = oracle.compare(_candidate(ref, dW=dW), ref)
    _assert_named(rep, "dW", "l2_scale_n",
                  f"divided by m = {M} (the batch) where your convention divides by "
                  f"n = {N_TRAIN} (the training set")


@pytest.mark.parametrize("preset", HALF_M)
def test_l2_scale_n_training_set_for_batch(preset):
    """The reverse: the code divides by its training-set size, the reference by m."""
    ref, pen, _ = _penalty(preset)
    dW = [g - p + p * M / N_TRAIN for g, p in zip(ref["dW"], pen)]
    rep = oracle.compare(_candidate(ref, dW=dW), ref)
    _assert_named(rep, "dW", "l2_scale_n",
                  f"divided by {N_TRAIN} where your convention divides by m = {M} (the batch)")
    assert f"pass n_train={N_TRAIN}" in rep.dW[0].diagnosis
    # ... and with that n_train, the same gradients are right
    assert oracle.compare(_candidate(_reference(preset, n_train=N_TRAIN), dW=dW),
                          _reference(preset, n_train=N_TRAIN)).ok


@pytest.mark.parametrize("preset", ("jaxmlp", "cs231n"))
def test_l2_scale_n_only_for_half_m(preset):
    """n_train means nothing to (λ/2)ΣW² and λΣW²: ignored, and the rule stays silent."""
    ref, pen, _ = _penalty(preset)
    for g, g_n in zip(ref["dW"], _reference(preset, n_train=N_TRAIN)["dW"]):
        np.testing.assert_array_equal(g, g_n)
    dW = [g - p + p / M for g, p in zip(ref["dW"], pen)]
    rep = oracle.compare(_candidate(ref, dW=dW), ref)
    assert not rep.ok and all(e.rule != "l2_scale_n" for e in rep.dW), str(rep)


# --------------------------------------------------------------------------- no false alarms


@pytest.mark.parametrize("n_train", (None, N_TRAIN))
@pytest.mark.parametrize("preset", PRESETS)
def test_correct_gradients_with_l2_are_ok(preset, n_train):
    ref = _reference(preset, n_train=n_train)
    rep = oracle.compare(_candidate(ref), ref)
    assert rep.ok, str(rep)
    assert not any(e.rule.startswith("l2_") for e in rep.dW + rep.db)


def test_n_train_scales_the_half_m_penalty():
    ref = _reference("nielsen", n_train=N_TRAIN)
    i = ref["internals"]
    assert i.c == pytest.approx(L2 / (2 * N_TRAIN))
    assert _reference("nielsen")["internals"].c == pytest.approx(L2 / (2 * M))
    squares = sum(float(np.sum(W * W)) for W in i.W)
    assert ref["loss"] - _reference("nielsen", l2=0.0)["loss"] == pytest.approx(
        L2 / (2 * N_TRAIN) * squares)


def test_halved_without_the_loss_is_another_convention():
    """Gradients only: reg·W is right for (reg/2)ΣW², so that convention is named."""
    ref, pen, _ = _penalty("cs231n")
    cand = _candidate(ref, dW=[g - p / 2 for g, p in zip(ref["dW"], pen)])
    del cand["loss"]
    rep = oracle.compare(cand, ref)
    assert {e.rule for e in rep.dW} == {"convention"}, str(rep)
    assert "l2='half' (declared 'full')" in rep.dW[0].diagnosis


def test_rule_order():
    names = [r.name for r in _rules.RULES]
    l2 = [n for n in names if n.startswith("l2_")]
    assert l2 == ["l2_missing", "l2_halved", "l2_doubled", "l2_on_biases", "l2_scale_n"]
    assert names.index("convention") < names.index("l2_missing")
    assert names.index("l2_scale_n") < names.index("missing_fprime")


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-3, ValueError), (2.5, TypeError),
                                        (40.0, TypeError), (True, TypeError), ("40", TypeError),
                                        ([40], TypeError)])
def test_n_train_must_be_a_positive_integer(bad, error):
    with pytest.raises(error, match="reference_gradients: n_train must be a positive int"):
        _reference("nielsen", n_train=bad)


def test_n_train_numpy_integer_accepted():
    assert _reference("nielsen", n_train=np.int64(N_TRAIN))["internals"].n_train == N_TRAIN


def test_probe_passes_n_train():
    """scikit-learn divides alpha by its training-set size, not by the batch's m."""
    def sklearn_l2(weights, biases, x, y, alpha):
        ref = oracle.reference_gradients(weights, biases, x, y, activation="tanh",
                                         output="sigmoid", loss="bce", convention="sklearn",
                                         l2=alpha, n_train=N_TRAIN)
        return ref["loss"], ref["dW"], ref["db"]

    kw = dict(output="sigmoid", loss="bce", activations="tanh", convention="sklearn",
              depths=(2,), batch_sizes=(7,), l2=L2, saturate=False)
    assert oracle.probe(sklearn_l2, **kw, n_train=N_TRAIN).ok
    rep = oracle.probe(sklearn_l2, **kw)
    assert not rep.ok
    assert {e.rule for e in rep.failing.report.dW} == {"l2_scale_n"}, str(rep)
    assert "pass n_train=40" in rep.failing.report.dW[0].diagnosis
    with pytest.raises(ValueError, match="n_train"):
        oracle.probe(sklearn_l2, **kw, n_train=0)


@pytest.mark.parametrize("n_train, words", [(N_TRAIN, "λ/(2n)ΣW², gradient (λ/n)W, n = n_train = 40"),
                                            (None, "λ/(2m)ΣW², gradient (λ/m)W")])
def test_missing_penalty_in_the_loss_names_the_n_it_divides_by(n_train, words):
    """A loss without its λ/(2n)ΣW² says which n: the training set's when n_train is given."""
    ref = _reference("nielsen", n_train=n_train)
    cand = _candidate(ref)
    cand["loss"] = _reference("nielsen", l2=0.0)["loss"]
    rep = oracle.compare(cand, ref)
    assert rep.loss.rule == "l2_missing", str(rep)
    assert words in rep.loss.diagnosis, rep.loss.diagnosis


def test_describe_with_n_train():
    nielsen, cs231n = resolve("nielsen"), resolve("cs231n")
    assert "L2 λ/(2n)ΣW², gradient (λ/n)W, n = n_train = 40" in nielsen.describe(n_train=40)
    assert "L2 λ/(2m)ΣW²" in nielsen.describe()
    assert cs231n.describe(n_train=40) == cs231n.describe()  # λΣW² has no n


def test_cli_n_train(tmp_path, capsys):
    """`jaxmlp check --n-train N`: gradients of λ/(2N)ΣW² match with it and are named
    without it; a bad N is unusable input (exit 2)."""
    W, b, x, y = _arrays("deeplearning_ai")
    ref = _reference("deeplearning_ai", n_train=N_TRAIN)
    arrays = {"X": x, "Y": y, "loss": ref["loss"]}
    for l in range(len(W)):
        arrays.update({f"W{l + 1}": W[l], f"b{l + 1}": b[l], f"dW{l + 1}": ref["dW"][l],
                       f"db{l + 1}": ref["db"][l]})
    path = str(tmp_path / "g.npz")
    np.savez(path, **arrays)
    flags = [path, "--activation", "tanh", "--output", "sigmoid", "--loss", "bce",
             "--convention", "deeplearning_ai", "--l2", str(L2)]
    assert oracle.main(flags + ["--n-train", str(N_TRAIN)]) == 0
    assert "OK" in capsys.readouterr().out
    assert oracle.main(flags) == 1
    out = capsys.readouterr().out
    assert f"pass n_train={N_TRAIN} (jaxmlp check: --n-train {N_TRAIN})" in out
    for bad in ("0", "-3", "2.5", "many"):
        assert oracle.main(flags + ["--n-train", bad]) == 2
        assert "--n-train: expected a positive int" in capsys.readouterr().err


def test_cli_n_train_is_not_for_layers(tmp_path, capsys):
    (tmp_path / "layer.py").write_text("def fwd(x, w, b):\n    return x @ w + b, None\n\n"
                                       "def bwd(dout, cache):\n    return None\n")
    target = f"{tmp_path / 'layer.py'}:fwd,bwd"
    assert oracle.main([target, "--layer", "affine", "--n-train", "5"]) == 2
    assert "--n-train applies to a whole network" in capsys.readouterr().err
