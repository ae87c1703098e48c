"""The oracle against faithful ports of the backprop students write (tests/students/).

Four whole-network styles, each with its own conventions and at least 12 planted
mistakes (their MISTAKES tables say what a correct oracle reports for each):

- nielsen.py: Nielsen's network.py / network2.py, per example, (nabla_b, nabla_w);
- dlai.py: deeplearning.ai course 1-2, features-first, caches, λ/(2m)ΣW²;
- cs231n_net.py: CS231n's TwoLayerNet.loss generalised to L layers, W (in, out), reg·ΣW²;
- sklearn_style.py: scikit-learn's MLP _backprop, coefs_ (in, out), alpha/(2n)ΣW².

First each port is checked against finite differences of its own loss, with no jaxmlp
involved, so the ports are known right.  Then: each correct port passes `probe` under its
preset with no conversion; each planted mistake is located at its layer and named; the
mistakes that give the right gradients in one configuration (a square X, batch size 1)
are right there and found by `probe`; correct code compared under another preset is
reported as that other convention, not as a bug.
"""
import functools
import re

import numpy as np
import pytest

from jaxmlp import oracle
from tests.students import cs231n_net, dlai, nielsen, sklearn_style

# --------------------------------------------------------------------------- configurations

#: Layer sizes (n_x, h1, h2, h3, K) and batch size m of each configuration: "distinct" has
#: every dimension different (and no ratio of a layer width to m that is 2, ½ or K);
#: "square" has every weight matrix square and m equal to the widths; "batch1" is
#: "distinct" with one example.
NETS = {"distinct": ((5, 7, 6, 8, 3), 9), "square": ((4, 4, 4, 4, 4), 4),
        "batch1": ((5, 7, 6, 8, 3), 1)}


class Case:
    """One style's function called on one configuration, with the reference to compare."""

    def __init__(self, style, net="distinct", kw=None, l2=0.0, n_outputs=None, seed=0):
        self.style, self.l2 = style, float(l2)
        sizes, m = NETS[net]
        if n_outputs is not None:
            sizes = sizes[:-1] + (n_outputs,)
        rng = np.random.default_rng(seed)
        # jaxmlp's layout: W (n_out, n_in), b (n_out,), x (m, n_x)
        self.W = [rng.normal(size=(o, i)) * 1.2 / np.sqrt(i) for i, o in zip(sizes, sizes[1:])]
        self.b = [rng.normal(size=o) * 0.5 for o in sizes[1:]]
        self.x = rng.normal(size=(m, sizes[0]))
        self.K, self.m = sizes[-1], m
        self.kw = dict(STYLES[style]["kw"], **(kw or {}))
        self.activation, self.output, self.loss = STYLES[style]["names"](self.kw)
        if self.loss == "cce":
            self.labels = rng.integers(0, self.K, size=m)
            self.y = np.eye(self.K)[self.labels]
        elif self.loss == "bce":
            self.y = rng.integers(0, 2, size=(m, self.K)).astype(float)
        elif self.output == "sigmoid":
            self.y = rng.uniform(0.05, 0.95, size=(m, self.K))
        else:
            self.y = rng.normal(size=(m, self.K))
        STYLES[style]["setup"](self)

    def run(self, mistake=None):
        return STYLES[self.style]["run"](self, mistake)

    def reference(self, convention=None):
        return oracle.reference_gradients(
            self.weights, self.biases, self.X, self.Y, activation=self.activation,
            output=self.output, loss=self.loss,
            convention=convention or STYLES[self.style]["preset"], l2=self.l2)

    def report(self, mistake=None, convention=None):
        result = self.run(mistake)
        return oracle.compare(oracle.gradients_from(result, self.weights, self.biases),
                              self.reference(convention))


# -- per style: the native arrays, the call, the jaxmlp names of its loss

def _nielsen_setup(c):
    c.weights, c.biases = c.W, [b.reshape(-1, 1) for b in c.b]
    c.X, c.Y = c.x.T, c.y.T


def _nielsen_run(c, mistake):
    batch = [(c.X[:, i:i + 1], c.Y[:, i:i + 1]) for i in range(c.m)]
    return nielsen.mini_batch_gradients(c.weights, c.biases, batch, mistake=mistake, **c.kw)


def _dlai_setup(c):
    c.weights, c.biases = c.W, [b.reshape(-1, 1) for b in c.b]
    c.X, c.Y = c.x.T, c.y.T


def _dlai_run(c, mistake):
    return dlai.forward_backward(c.weights, c.biases, c.X, c.Y, lambd=c.l2, mistake=mistake,
                                 **c.kw)


def _cs231n_setup(c):
    c.weights, c.biases = [W.T for W in c.W], c.b
    c.X, c.Y = c.x, c.labels


def _cs231n_run(c, mistake):
    return cs231n_net.loss(c.weights, c.biases, c.X, c.Y, reg=c.l2, mistake=mistake, **c.kw)


def _sklearn_setup(c):
    c.weights, c.biases = [W.T for W in c.W], c.b
    c.X, c.Y = c.x, c.y


def _sklearn_run(c, mistake):
    return sklearn_style.backprop(c.weights, c.biases, c.X, c.Y, alpha=c.l2, mistake=mistake,
                                  **c.kw)


def _sklearn_names(kw):
    out = kw.get("out_activation") or ("identity" if kw["loss"] == "squared_error"
                                       else "logistic")
    if kw["loss"] == "squared_error":
        return kw["activation"], "identity", "mse"
    return (kw["activation"],) + (("softmax", "cce") if out == "softmax" else ("sigmoid", "bce"))


_SKLEARN_HIDDEN = {"logistic": "sigmoid"}

STYLES = {
    "nielsen": dict(module=nielsen, preset="nielsen", setup=_nielsen_setup, run=_nielsen_run,
                    kw={"activation": "sigmoid", "cost": "quadratic"},
                    names=lambda kw: (kw["activation"], "sigmoid",
                                      "sse" if kw["cost"] == "quadratic" else "bce")),
    "dlai": dict(module=dlai, preset="deeplearning_ai", setup=_dlai_setup, run=_dlai_run,
                 kw={"activation": "relu"}, names=lambda kw: (kw["activation"], "sigmoid", "bce")),
    "cs231n": dict(module=cs231n_net, preset="cs231n", setup=_cs231n_setup, run=_cs231n_run,
                   kw={}, names=lambda kw: ("relu", "softmax", "cce")),
    "sklearn": dict(module=sklearn_style, preset="sklearn", setup=_sklearn_setup,
                    run=_sklearn_run, kw={"activation": "relu", "loss": "log_loss"},
                    names=lambda kw: (lambda a, o, l: (_SKLEARN_HIDDEN.get(a, a), o, l))(
                        *_sklearn_names(kw))),
}


def _case(style, mistake=None, net=None, **extra):
    cfg = dict(STYLES[style]["module"].CONFIGS.get(mistake, {})) if mistake else {}
    if net is not None:
        cfg["net"] = net
    cfg.update(extra)
    return Case(style, **cfg)


MISTAKE_CASES = [(style, name) for style, s in STYLES.items() for name in s["module"].MISTAKES]
HIDDEN_CASES = [(style, name) for style, s in STYLES.items()
                for name in s["module"].HIDDEN_IN]


# --------------------------------------------------------------------------- the ports themselves

def _flat_grads(case, result):
    """The port's gradients as (dW list, db list) in its own shapes, from its own format."""
    if case.style == "nielsen":
        nabla_b, nabla_w = result
        return nabla_w, nabla_b
    if case.style == "dlai":
        grads = result[1]
        L = len(case.weights)
        return ([grads["dW%d" % l] for l in range(1, L + 1)],
                [grads["db%d" % l] for l in range(1, L + 1)])
    if case.style == "cs231n":
        grads = result[1]
        L = len(case.weights)
        return ([grads["W%d" % l] for l in range(1, L + 1)],
                [grads["b%d" % l] for l in range(1, L + 1)])
    return result[1], result[2]


def _loss_of(case, weights, biases):
    if case.style == "nielsen":
        return sum(nielsen.cost_value(weights, biases, case.X[:, i:i + 1], case.Y[:, i:i + 1],
                                      **case.kw) for i in range(case.m))
    if case.style == "dlai":
        return dlai.cost_value(weights, biases, case.X, case.Y, lambd=case.l2, **case.kw)
    if case.style == "cs231n":
        return cs231n_net.loss(weights, biases, case.X, case.Y, reg=case.l2, **case.kw)[0]
    return sklearn_style.loss_value(weights, biases, case.X, case.Y, alpha=case.l2, **case.kw)


def _finite_differences(case, h=1e-5):
    """Central differences of the port's own loss, for every weight and bias."""
    params = [np.array(p, dtype=float) for p in case.weights + case.biases]
    L = len(case.weights)
    grads = []
    for p in params:
        g = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + h
            up = _loss_of(case, params[:L], params[L:])
            p[idx] = old - h
            down = _loss_of(case, params[:L], params[L:])
            p[idx] = old
            g[idx] = (up - down) / (2 * h)
        grads.append(g)
    return grads[:L], grads[L:]


def _rel_err(a, b):
    return float(np.max(np.abs(np.asarray(a) - b))) / max(float(np.max(np.abs(b))), 1e-300)


FD_CASES = [
    ("nielsen", {}), ("nielsen", {"kw": {"cost": "cross_entropy"}}),
    ("nielsen", {"kw": {"activation": "tanh"}}),
    ("dlai", {}), ("dlai", {"l2": 0.7}), ("dlai", {"kw": {"activation": "tanh"}}),
    ("cs231n", {}), ("cs231n", {"l2": 0.3}),
    ("sklearn", {}), ("sklearn", {"l2": 0.4, "kw": {"activation": "tanh"}}),
    ("sklearn", {"kw": {"loss": "log_loss", "out_activation": "softmax"}}),
    ("sklearn", {"kw": {"loss": "squared_error", "activation": "logistic"}, "n_outputs": 1}),
]


@pytest.mark.parametrize("style,cfg", FD_CASES, ids=lambda v: str(v))
def test_port_matches_finite_differences_of_its_own_loss(style, cfg):
    """No jaxmlp here: each correct port is the gradient of the loss it computes."""
    case = Case(style, **cfg)
    dW, db = _flat_grads(case, case.run())
    fd_W, fd_b = _finite_differences(case)
    for l in range(len(dW)):
        assert np.shape(dW[l]) == fd_W[l].shape and np.shape(db[l]) == fd_b[l].shape
        assert _rel_err(dW[l], fd_W[l]) <= 1e-7, (style, cfg, "dW", l)
        assert _rel_err(db[l], fd_b[l]) <= 1e-7, (style, cfg, "db", l)


def test_sklearn_squared_error_multioutput_gradient_is_n_outputs_times_its_loss():
    """scikit-learn's own quirk (its issue #8349), kept by the port: for squared_error with
    K outputs the loss is ((y − ŷ)²).mean()/2 over n·K but deltas[last] = ŷ − y, so the
    gradient is K times the gradient of the returned loss."""
    case = Case("sklearn", kw={"loss": "squared_error"})
    dW, db = _flat_grads(case, case.run())
    fd_W, fd_b = _finite_differences(case)
    for l in range(len(dW)):
        assert _rel_err(dW[l], case.K * fd_W[l]) <= 1e-7
        assert _rel_err(db[l], case.K * fd_b[l]) <= 1e-7


@pytest.mark.parametrize("style,name", MISTAKE_CASES)
def test_planted_mistake_changes_the_gradients(style, name):
    """Each planted mistake really is one in its configuration (no jaxmlp)."""
    case = _case(style, name)
    good = _flat_grads(case, case.run())
    try:
        bad = _flat_grads(case, case.run(name))
    except (ValueError, IndexError):
        return  # a shape error is a mistake too
    differs = any(np.shape(g) != np.shape(b) or not np.allclose(g, b, rtol=1e-6, atol=1e-9)
                  for gs, bs in zip(good, bad) for g, b in zip(gs, bs))
    assert differs


@pytest.mark.parametrize("style,name", HIDDEN_CASES)
def test_hidden_mistake_is_right_in_its_configuration(style, name):
    """... and the hidden ones give the right gradients where they hide (no jaxmlp)."""
    case = _case(style, name, net=STYLES[style]["module"].HIDDEN_IN[name])
    for g, b in zip(_flat_grads(case, case.run()), _flat_grads(case, case.run(name))):
        for gl, bl in zip(g, b):
            assert np.shape(gl) == np.shape(bl) and np.allclose(gl, bl, rtol=1e-12, atol=1e-14)


def test_every_style_plants_at_least_twelve_mistakes():
    for style in STYLES.values():
        module = style["module"]
        assert len(module.MISTAKES) >= 12
        assert set(module.CONFIGS) <= set(module.MISTAKES)
        assert set(module.HIDDEN_IN) <= set(module.MISTAKES)


# --------------------------------------------------------------------------- the oracle: correct ports

def _rules(expected):
    return (expected,) if isinstance(expected, str) else tuple(expected)


def _keyword_ok(text, keyword):
    options = (keyword,) if isinstance(keyword, str) else keyword
    return any(k.lower() in text.lower() for k in options)


def _bad_entries(report, layer=None):
    rows = list(report.dW) + list(report.db) + list(report.delta)
    return [e for e in rows if e.status != "ok" and (layer is None or e.layer == layer)]


@pytest.mark.parametrize("style", list(STYLES))
def test_correct_port_matches_under_its_preset(style):
    for net in ("distinct", "batch1"):
        rep = Case(style, net=net).report()
        assert rep.ok, str(rep)
    if style != "nielsen":  # Nielsen's L2 is in the update, not in backprop
        rep = Case(style, l2=0.5).report()
        assert rep.ok, str(rep)


def _nielsen_fn(cost):
    return functools.partial(nielsen.backprop, cost=cost)


PROBES = [
    # (id, fn, probe keywords)
    ("nielsen-quadratic", _nielsen_fn("quadratic"),
     dict(output="sigmoid", loss="sse", activations="sigmoid", convention="nielsen")),
    ("nielsen-cross_entropy", _nielsen_fn("cross_entropy"),
     dict(output="sigmoid", loss="bce", activations=("sigmoid", "tanh"),
          convention="nielsen")),
    ("dlai", dlai.forward_backward,
     dict(output="sigmoid", loss="bce", activations=("relu", "tanh"),
          convention="deeplearning_ai", l2=0.7)),
    ("cs231n", cs231n_net.loss,
     dict(output="softmax", loss="cce", activations="relu", convention="cs231n", l2=0.3)),
    ("sklearn-logistic", functools.partial(sklearn_style.backprop, loss="log_loss"),
     dict(output="sigmoid", loss="bce", activations=("relu", "tanh"), convention="sklearn",
          l2=0.4)),
    ("sklearn-softmax", functools.partial(sklearn_style.backprop, loss="log_loss",
                                          out_activation="softmax"),
     dict(output="softmax", loss="cce", activations="relu", convention="sklearn")),
]


@pytest.mark.parametrize("fn,kw", [p[1:] for p in PROBES], ids=[p[0] for p in PROBES])
def test_probe_passes_each_correct_port_with_no_conversion(fn, kw):
    rep = oracle.probe(fn, **kw)
    assert rep.ok, str(rep)
    assert rep.failing is None


def test_probe_flags_sklearn_squared_error_with_several_outputs():
    """scikit-learn's multi-output squared_error gradient is K× its loss's (issue #8349):
    under the sklearn preset (½·mean over the outputs, as its loss value) the probe flags
    it by a factor K.  The loss it returns is the declared convention's, so this is not
    "another convention" (no single convention has this loss and these gradients)."""
    rep = oracle.probe(functools.partial(sklearn_style.backprop, loss="squared_error"),
                       output="identity", loss="mse", activations="relu",
                       convention="sklearn")
    assert not rep.ok
    report = rep.failing.report
    bad = _bad_entries(report, report.first_bad_layer)
    assert bad and all(e.rule == "factor" for e in bad), str(rep)
    assert re.search(r"K×|×K", report.diagnosis), str(rep)


# --------------------------------------------------------------------------- the oracle: planted mistakes

@pytest.mark.parametrize("style,name", MISTAKE_CASES)
def test_planted_mistake_is_located_and_named(style, name):
    layer, keywords, rule = STYLES[style]["module"].MISTAKES[name]
    case = _case(style, name)
    rep = case.report(name)
    assert not rep.ok, str(rep)
    assert rep.first_bad_layer == layer, str(rep)
    entries = _bad_entries(rep, layer)
    assert entries, str(rep)
    if rule is not None:
        assert any(e.rule in _rules(rule) for e in entries), (
            f"rules at layer {layer}: {[(e.quantity, e.rule) for e in entries]}, expected "
            f"{rule}\n{rep}")
    for keyword in keywords:
        assert _keyword_ok(rep.diagnosis, keyword), (keyword, rep.diagnosis)


@pytest.mark.parametrize("style,name", HIDDEN_CASES)
def test_probe_finds_a_mistake_that_hides_in_one_configuration(style, name):
    module = STYLES[style]["module"]
    hiding = module.HIDDEN_IN[name]
    case = _case(style, name, net=hiding)
    assert case.report(name).ok  # right where it hides: one configuration is not enough
    rep = oracle.probe(_probe_fn(case, name), **_probe_kw(case), depths=(3,),
                       batch_sizes=(1, 7))
    assert not rep.ok, str(rep)
    assert rep.failing is not None


#: The square-only mistakes (a net with square weight matrices): the probe's distinct
#: dimensions expose them too.
SQUARE_CASES = [(style, name) for style, s in STYLES.items()
                for name, cfg in s["module"].CONFIGS.items() if cfg.get("net") == "square"]


@pytest.mark.parametrize("style,name", SQUARE_CASES)
def test_probe_finds_square_net_mistakes(style, name):
    case = _case(style, name)
    rep = oracle.probe(_probe_fn(case, name), **_probe_kw(case), depths=(3,),
                       batch_sizes=(7,))
    assert not rep.ok, str(rep)


_PROBE_FN = {
    "nielsen": nielsen.backprop,
    "dlai": dlai.forward_backward,
    "cs231n": cs231n_net.loss,
    "sklearn": sklearn_style.backprop,
}


def _probe_fn(case, mistake):
    """The case's function with its fixed keywords (all but the activation, which the
    probe passes) and the mistake."""
    fixed = {k: v for k, v in case.kw.items() if k != "activation"}
    return functools.partial(_PROBE_FN[case.style], mistake=mistake, **fixed)


def _probe_kw(case):
    """probe's keywords for a case: the names of its loss, its preset and L2 strength."""
    return dict(output=case.output, loss=case.loss, convention=STYLES[case.style]["preset"],
                l2=case.l2, activations=case.activation)


# --------------------------------------------------------------------------- the oracle: no false alarm

#: (port, the preset it is compared under, arrays of the same shapes): the correct code of
#: one convention, declared as another.
CROSS = [
    ("dlai", "nielsen", {}),                 # mean over the batch, declared summed
    ("nielsen", "deeplearning_ai", {"kw": {"cost": "cross_entropy"}}),  # summed, declared mean
    ("cs231n", "sklearn", {"l2": 0.3}),      # reg·ΣW², declared alpha/(2n)·ΣW²
    ("sklearn", "cs231n", {}),               # bce summed over outputs, declared averaged
    ("sklearn", "cs231n", {"l2": 0.4, "kw": {"loss": "log_loss", "out_activation": "softmax"}}),
]


@pytest.mark.parametrize("style,other,cfg", CROSS, ids=lambda v: str(v))
def test_correct_port_under_another_preset_is_that_convention_not_a_bug(style, other, cfg):
    case = Case(style, **cfg)
    rep = case.report(convention=other)
    assert not rep.ok
    bad = _bad_entries(rep)
    assert bad and all(e.rule == "convention" for e in bad), (
        [(e.quantity, e.layer, e.rule) for e in bad], str(rep))
    assert re.search(r"convention", rep.diagnosis), rep.diagnosis
    # the convention the report proposes, as a student would copy it, makes this code right
    proposed = re.search(r"pass convention=('[a-z0-9_]+'|Convention\([^)]*\))", rep.diagnosis)
    assert proposed, rep.diagnosis
    conv = eval(proposed.group(1), {"Convention": oracle.Convention})
    assert case.report(convention=conv).ok, (conv, str(case.report(convention=conv)))


#: Every port without and with L2, except Nielsen's with: its backprop has no L2 term
#: (network2 decays the weights in the update).
_STYLE_L2 = [(s, l2) for s in STYLES for l2 in (0.0, 0.3) if not (s == "nielsen" and l2)]


@pytest.mark.parametrize("style,l2", _STYLE_L2)
@pytest.mark.parametrize("other", list(oracle.CONVENTIONS))
def test_correct_port_under_every_other_preset_is_never_called_buggy(style, l2, other):
    """Every correct port under every preset: it passes, or the arrays do not fit the
    preset's shapes and the error names a convention, or the report names the convention
    it is right under; never a bug."""
    case = Case(style, l2=l2)
    try:
        rep = case.report(convention=other)
    except ValueError as e:
        assert re.search(r"convention|data=|weights=", str(e)), str(e)
        return
    if rep.ok:
        return
    bad = _bad_entries(rep)
    assert rep.convention_match is not None, str(rep)
    assert all(e.rule == "convention" for e in bad), [(e.quantity, e.layer, e.rule) for e in bad]
