"""`oracle.probe` on a small hand-written backprop, and `jaxmlp check` on Python targets.

The student function here is written in jaxmlp's convention (W (n_out, n_in), rows are
examples, mse averaged over the batch and the outputs); `BUGS` plants one mistake at a
time into its source, so the same text is a file target for the CLI tests too.
"""
import json
import math
import textwrap
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from jaxmlp import oracle

STUDENT = textwrap.dedent('''
    import numpy as np

    F = {"relu": lambda z: np.maximum(z, 0.0), "tanh": np.tanh}
    DF = {"relu": lambda z: (z > 0).astype(float), "tanh": lambda z: 1.0 - np.tanh(z) ** 2}


    def forward_backward(weights, biases, x, y, activation="relu", l2=0.0):
        f, df = F[activation], DF[activation]
        a, zs, acts = x, [], [x]
        for l, (W, b) in enumerate(zip(weights, biases)):
            z = a @ W.T + b
            zs.append(z)
            a = z if l == len(weights) - 1 else f(z)
            acts.append(a)
        m, K = y.shape
        delta = 2.0 * (a - y) / (m * K)
        dW, db = [None] * len(weights), [None] * len(weights)
        for l in reversed(range(len(weights))):
            dW[l] = DW_LINE + (l2 * weights[l] if l2 else 0.0)
            db[l] = DB_LINE
            if l:
                delta = (delta @ weights[l]) * df(zs[l - 1])
        return {"dW": dW, "db": db}
''')

GOOD = {"DW_LINE": "delta.T @ acts[l]", "DB_LINE": "delta.sum(axis=0)"}
BUGS = {
    # right for one example only: a batch > 1 shows it
    "db_first_example": {"DB_LINE": "delta[0] * m"},
    # right shape only when the matrix is square (acts[l].T @ delta is (n_in, n_out))
    "dW_transposed": {"DW_LINE": "(acts[l].T @ delta)"},
    # the L2 gradient left out: the probe passes l2 as `l2=`
    "l2_missing": {"DW_LINE": "delta.T @ acts[l] - l2 * weights[l]"},
}


def source(bug=None):
    lines = dict(GOOD, **BUGS.get(bug, {}))
    text = STUDENT
    for k, v in lines.items():
        text = text.replace(k, v)
    return text


def student(bug=None):
    namespace = {}
    exec(compile(source(bug), f"<student {bug}>", "exec"), namespace)
    return namespace["forward_backward"]


PROBE = dict(output="identity", loss="mse", activations=("relu", "tanh"))


# --------------------------------------------------------------------------- probe

def test_probe_passes_correct_code_in_every_configuration():
    rep = oracle.probe(student(), **PROBE, l2=0.3)
    assert rep.ok and rep.failing is None, str(rep)
    # depths 1, 2, 3 × batch sizes 1, 7, 64 (both activations past depth 1) + saturating
    assert len(rep.results) == 3 + 2 * 3 * 2 + 1 + 2 * 2
    for r in rep.results:
        sizes = r.sizes
        assert len(set(sizes)) == len(sizes), sizes          # every dimension distinct
        assert not set(sizes) & {1, 7, 64}, sizes            # and none equal to m
    assert [r.depth for r in rep.results] == sorted(r.depth for r in rep.results)
    assert "OK" in str(rep)
    json.dumps(rep.to_dict())


def test_probe_finds_a_bug_that_only_shows_with_batch_size_above_one():
    fn = student("db_first_example")
    one = oracle.probe(fn, **PROBE, batch_sizes=(1,), saturate=False)
    assert one.ok, str(one)  # batch size 1 hides it
    rep = oracle.probe(fn, **PROBE)
    assert not rep.ok
    f = rep.failing
    assert f.batch_size == 7 and f.depth == 1  # the smallest failing configuration
    assert f.report.first_bad_layer == 0
    assert any(e.rule == "db_one_example" for e in f.report.db), str(rep)
    text = str(rep)
    assert "batch size 7" in text and "one example" in text
    assert "it passes" in text  # the passing configurations are mentioned


def test_probe_finds_a_transpose_that_square_matrices_would_hide():
    rep = oracle.probe(student("dW_transposed"), **PROBE, depths=(2,), batch_sizes=(7,))
    assert not rep.ok
    bad = [e for e in rep.failing.report.dW if not e.ok]
    assert bad and all(e.status == "shape" and e.rule == "shape_transposed" for e in bad)


def test_probe_passes_l2_under_the_functions_own_name_and_finds_it_missing():
    rep = oracle.probe(student("l2_missing"), **PROBE, l2=0.5, depths=(1,),
                       batch_sizes=(7,), saturate=False)
    assert not rep.ok
    assert {e.rule for e in rep.failing.report.dW} == {"l2_missing"}, str(rep)

    seen = {}

    def spy(weights, biases, x, y, *, lambd=0.0):
        seen["lambd"] = lambd
        return student()(weights, biases, x, y, l2=lambd)

    assert oracle.probe(spy, output="identity", loss="mse", l2=0.25, depths=(1,),
                        batch_sizes=(3,), saturate=False).ok
    assert seen["lambd"] == 0.25


def test_probe_sends_the_users_activation_names():
    names = []

    def fn(weights, biases, x, y, activation):
        names.append(activation)
        return student()(weights, biases, x, y, activation={"rectifier": "relu"}[activation])

    rep = oracle.probe(fn, output="identity", loss="mse", activations={"relu": "rectifier"},
                       depths=(2,), batch_sizes=(3,), saturate=False)
    assert rep.ok, str(rep)
    assert names == ["rectifier"]


def test_probe_reports_a_function_that_raises_instead_of_crashing():
    def fn(weights, biases, x, y):
        if x.shape[0] == 1:
            raise IndexError("index 1 is out of bounds")
        return student()(weights, biases, x, y)

    rep = oracle.probe(fn, output="identity", loss="mse", depths=(1,), batch_sizes=(1, 3),
                       saturate=False)
    assert not rep.ok
    assert rep.failing.batch_size == 1 and rep.failing.report is None
    assert "IndexError: index 1 is out of bounds" in rep.failing.error
    assert rep.results[1].ok
    assert "raised" in str(rep)


def test_probe_sums_per_example_calls_for_nielsen_style_code():
    calls = []

    def per_example(weights, biases, x, y):
        calls.append(x.shape)
        # Nielsen: column vectors, quadratic cost ½‖a − y‖², sigmoid output
        a, zs, acts = x, [], [x]
        for W, b in zip(weights, biases):
            z = W @ a + b
            zs.append(z)
            a = 1 / (1 + np.exp(-z))
            acts.append(a)
        delta = (a - y) * a * (1 - a)
        nb, nw = [None] * len(weights), [None] * len(weights)
        for l in reversed(range(len(weights))):
            nb[l], nw[l] = delta, delta @ acts[l].T
            if l:
                s = acts[l]
                delta = (weights[l].T @ delta) * s * (1 - s)
        return nb, nw

    rep = oracle.probe(per_example, output="sigmoid", loss="sse", activations="sigmoid",
                       convention="nielsen", depths=(2,), batch_sizes=(4,), saturate=False)
    assert rep.ok, str(rep)
    assert calls and all(s[1] == 1 for s in calls) and len(calls) == 4


@pytest.mark.parametrize("kw, error, match", [
    (dict(fn=3), TypeError, "fn must be a function"),
    (dict(depths=(0,)), ValueError, r"probe: depths must be a positive int or a non-empty tuple of positive ints, got \(0,\)"),
    (dict(batch_sizes=()), TypeError, "probe: batch_sizes must be a positive int or a non-empty tuple"),
    (dict(activations="swish"), ValueError, "unknown activation 'swish'"),
    (dict(loss="hinge"), ValueError, "unknown loss 'hinge'"),
    (dict(convention="torch"), ValueError, "unknown convention 'torch'"),
    (dict(l2=-1.0), ValueError, "l2 must be a finite number >= 0"),
    (dict(rtol=-1.0), ValueError, "rtol must be a finite number >= 0"),
    (dict(fn=lambda weights, biases, x, y: None, l2=0.1), TypeError,
     "no parameter for the L2 strength"),
    (dict(fn=lambda x, y: None), TypeError, r"fn must take \(weights, biases, x, y"),
])
def test_probe_validation_before_calling_anything(kw, error, match):
    called = []

    def fn(weights, biases, x, y):
        called.append(1)

    args = dict(fn=fn, output="identity", loss="mse")
    args.update(kw)
    with pytest.raises(error, match=match):
        oracle.probe(args.pop("fn"), **args)
    assert not called


# --------------------------------------------------------------------------- CLI targets

def _run(capsys, *argv):
    code = oracle.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


FAST = ["--depths", "1,2", "--batch-sizes", "1,5"]


def test_cli_file_target_passes_and_fails_with_exit_codes(tmp_path, capsys):
    good = _write(tmp_path, "good.py", source())
    code, out, err = _run(capsys, f"{good}:forward_backward", "--output", "identity",
                          "--loss", "mse", "--activation", "relu,tanh", "--l2", "0.2", *FAST)
    assert code == 0, out + err
    assert "jaxmlp probe: OK" in out

    bad = _write(tmp_path, "bad.py", source("db_first_example"))
    junit = tmp_path / "report.xml"
    code, out, err = _run(capsys, f"{bad}:forward_backward", "--output", "identity",
                          "--loss", "mse", "--junit", junit, *FAST)
    assert code == 1, out + err
    assert "batch size 5" in out and "one example" in out
    root = ET.parse(junit).getroot()
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    # one test case per configuration and layer: depth 1 (1 layer) and depth 2 (2 layers)
    # at m = 1 and 5, and the saturating run of each depth
    assert len(cases) == (1 + 2) * 3
    failed = [c for c in cases if c.find("failure") is not None]
    assert failed and int(suite.get("failures")) == len(failed)
    assert all("m = 1" not in c.get("name") for c in failed)  # batch size 1 passes
    assert "one example" in failed[0].find("failure").text


def test_cli_module_target_with_a_preset_and_json(capsys):
    code, out, err = _run(capsys, "tests.students.cs231n_net:loss", "--output", "softmax",
                          "--loss", "cce", "--convention", "cs231n", "--l2", "0.1", "--json",
                          *FAST)
    assert code == 0, out + err
    d = json.loads(out)
    assert d["ok"] and d["convention"] == "'cs231n'" and d["failed"] == 0


@pytest.mark.parametrize("text, target, match", [
    ("def forward_backward(:\n", "broken.py:forward_backward",
     r"cannot import .*broken.py: SyntaxError"),
    ("import no_such_module_anywhere\n", "imports.py:forward_backward",
     r"cannot import .*imports.py: ModuleNotFoundError"),
    ("raise RuntimeError('boom')\n", "raises.py:forward_backward",
     r"cannot import .*raises.py: RuntimeError: boom"),
    ("def other(w, b, x, y):\n    pass\n", "missing.py:forward_backward",
     r"has no function 'forward_backward'; it defines \['other'\]"),
    ("def forward_backward(x, y):\n    pass\n", "signature.py:forward_backward",
     r"fn must take \(weights, biases, x, y"),
    ("def forward_backward(w, b, x):\n    pass\n", "calls.py:forward_backward",
     r"cannot be called as forward_backward\(weights, biases, x, y"),
])
def test_cli_target_that_cannot_be_used_exits_2(tmp_path, capsys, text, target, match):
    import re
    name, func = target.split(":")
    path = _write(tmp_path, name, text) if "calls" not in name else _write(
        tmp_path, name, "def forward_backward(w, b, x, *args):\n    return w(1)\n")
    code, out, err = _run(capsys, f"{path}:{func}", "--output", "identity", "--loss", "mse",
                          *FAST)
    assert code == 2, out + err
    assert re.search(match, err), err
    assert out == ""


@pytest.mark.parametrize("argv, match", [
    (["nowhere.py:f", "--output", "identity", "--loss", "mse"], "no such file"),
    (["no.such.module:f", "--output", "identity", "--loss", "mse"],
     "cannot import module no.such.module"),
    (["tests.students.cs231n_net:loss", "--loss", "cce"], "--output is required"),
    (["tests.students.cs231n_net:loss", "--output", "softmax", "--loss", "cce",
      "--convention", "torch"], "--convention must be one of"),
    (["tests.students.cs231n_net:loss", "--output", "softmax", "--loss", "cce",
      "--depths", "0"], "--depths must be a comma list of positive integers"),
    (["tests.students.cs231n_net:loss", "--output", "softmax", "--loss", "cce",
      "--junit", "/no/such/folder/r.xml"], "no such folder"),
    (["tests.students.cs231n_net:loss,loss", "--output", "softmax", "--loss", "cce"],
     "one function"),
])
def test_cli_bad_flags_exit_2(capsys, argv, match):
    code, out, err = _run(capsys, *argv)
    assert code == 2, out + err
    assert match in err, err


def test_cli_npz_junit_is_valid_xml(tmp_path, capsys):
    rng = np.random.default_rng(0)
    W = [rng.normal(size=(3, 4)), rng.normal(size=(2, 3))]
    b = [rng.normal(size=3), rng.normal(size=2)]
    x, y = rng.normal(size=(5, 4)), rng.normal(size=(5, 2))
    ref = oracle.reference_gradients(W, b, x, y, activation="tanh", output="identity",
                                     loss="mse")
    arrays = {"W1": W[0], "W2": W[1], "b1": b[0], "b2": b[1], "X": x, "Y": y,
              "dW1": ref["dW"][0], "dW2": ref["dW"][1] * 2, "db1": ref["db"][0],
              "db2": ref["db"][1] * 2, "loss": ref["loss"]}
    np.savez(tmp_path / "g.npz", **arrays)
    junit = tmp_path / "r.xml"
    code, out, err = _run(capsys, tmp_path / "g.npz", "--activation", "tanh", "--output",
                          "identity", "--loss", "mse", "--junit", junit)
    assert code == 1, out + err
    cases = ET.parse(junit).getroot().find("testsuite").findall("testcase")
    assert [c.get("name") for c in cases] == ["layer 1", "layer 0", "loss"]
    assert cases[0].find("failure") is not None and cases[2].find("failure") is None
    assert not math.isnan(float(ET.parse(junit).getroot().get("failures")))


# --------------------------------------------------------------------------- depth, time limits, layers

def test_probe_finds_a_bug_that_only_shows_at_depth_three():
    """f′ applied only in the first step of the recursion: right with one or two layers
    (one hidden layer, one step), wrong from three."""
    text = source().replace("delta = (delta @ weights[l]) * df(zs[l - 1])",
                            "delta = (delta @ weights[l]) * (df(zs[l - 1]) "
                            "if l == len(weights) - 1 else 1.0)")
    assert text != source()
    namespace = {}
    exec(compile(text, "<deep bug>", "exec"), namespace)
    fn = namespace["forward_backward"]
    shallow = oracle.probe(fn, **PROBE, depths=(1, 2))
    assert shallow.ok, str(shallow)
    rep = oracle.probe(fn, **PROBE, depths=(1, 2, 3))
    assert not rep.ok and rep.failing.depth == 3, str(rep)
    assert "missing the activation derivative" in str(rep)


def _endless_when_deep(weights, biases, x, y):
    """Right for one layer; never returns for two or more."""
    while len(weights) > 1:
        pass
    z = x @ weights[0].T + biases[0]
    d = 2 * (z - y) / y.size
    return {"dW": [d.T @ x], "db": [d.sum(axis=0)]}


def test_probe_time_limit_fails_the_configuration_and_skips_the_rest():
    import time
    start = time.perf_counter()
    rep = oracle.probe(_endless_when_deep, output="identity", loss="mse", depths=(1, 2, 3),
                       batch_sizes=(1, 4), timeout=0.3)
    assert time.perf_counter() - start < 5
    assert not rep.ok
    errors = [r.error for r in rep.results]
    assert all(e is None for r, e in zip(rep.results, errors) if r.depth == 1)
    timed = [e for e in errors if e and e.startswith("TimeLimitExceeded")]
    assert len(timed) == 1 and "time limit of 0.3 s" in timed[0]
    assert all(e.startswith("not run: an earlier configuration") for e in errors
               if e and e not in timed)
    assert rep.failing.depth == 2 and "TimeLimitExceeded" in str(rep)


def test_probe_timeout_is_validated():
    with pytest.raises(ValueError, match="probe: timeout must be"):
        oracle.probe(_endless_when_deep, output="identity", loss="mse", timeout=-1)
    with pytest.raises(TypeError, match="probe: timeout must be"):
        oracle.probe(_endless_when_deep, output="identity", loss="mse", timeout="10")


ENDLESS = textwrap.dedent('''
    def forward_backward(weights, biases, x, y):
        while True:
            pass
''')


def test_cli_target_that_never_returns_is_stopped_by_the_time_limit(tmp_path, capsys):
    import time
    path = _write(tmp_path, "endless.py", ENDLESS)
    junit = tmp_path / "r.xml"
    start = time.perf_counter()
    code, out, err = _run(capsys, f"{path}:forward_backward", "--output", "identity",
                          "--loss", "mse", "--timeout", "0.3", "--junit", junit, *FAST)
    assert time.perf_counter() - start < 10
    assert code == 1, out + err
    assert "time limit of 0.3 s" in out
    # the student's code did not finish: an <error> case per configuration
    errors = [c.find("error") for c in ET.parse(junit).getroot().iter("testcase")]
    assert errors and all(e is not None for e in errors)
    assert "time limit of 0.3 s" in errors[0].get("message")
    assert all("not run: an earlier configuration" in e.get("message") for e in errors[1:])


LAYERS = textwrap.dedent('''
    import numpy as np

    def affine_forward(x, w, b):
        out = x.reshape(x.shape[0], -1) @ w + b
        return out, (x, w, b)

    def affine_backward(dout, cache):
        x, w, b = cache
        dx = (dout @ w.T).reshape(x.shape)
        dw = x.reshape(x.shape[0], -1).T @ dout
        db = DB
        return dx, dw, db

    def relu_forward(x):
        return np.maximum(0, x), x

    def relu_backward(dout, cache):
        while True:
            pass
''')


def test_cli_layer_target_exit_codes_json_and_junit(tmp_path, capsys):
    good = _write(tmp_path, "good_layers.py", LAYERS.replace("DB", "dout.sum(axis=0)"))
    code, out, err = _run(capsys, f"{good}:affine_forward,affine_backward", "--layer",
                          "affine", "--convention", "cs231n", "--json")
    assert code == 0, out + err
    d = json.loads(out)
    assert d["ok"] and d["kind"] == "affine"

    bad = _write(tmp_path, "bad_layers.py", LAYERS.replace("DB", "dout.mean(axis=0)"))
    junit = tmp_path / "layer.xml"
    code, out, err = _run(capsys, f"{bad}:affine_forward,affine_backward", "--layer",
                          "affine", "--convention", "cs231n", "--junit", junit)
    assert code == 1 and "mean over the batch" in out, out
    cases = ET.parse(junit).getroot().find("testsuite").findall("testcase")
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["affine: db"], failed

    code, out, err = _run(capsys, f"{bad}:relu_forward,relu_backward", "--layer", "relu",
                          "--timeout", "0.3")
    assert code == 1 and "time limit of 0.3 s" in out, out + err

    code, out, err = _run(capsys, f"{bad}:affine_forward", "--layer", "affine")
    assert code == 2 and "FORWARD,BACKWARD" in err, out + err
