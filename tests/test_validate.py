"""One rule for argument checks (jaxmlp/_validate.py): a wrong TYPE is a TypeError, a bad
VALUE of the right type a ValueError, and both messages start "<function>: <argument>"."""
import re

import jax
import numpy as np
import pytest

import jaxmlp as jm
from jaxmlp import data, optim, oracle
from jaxmlp.diagnostics import gradient_report, saturated_fraction

REG = jm.MLP((3, 4, 1))
PR = jm.init_params(jax.random.key(0), REG)
XR, YR = np.ones((8, 3), np.float32), np.ones((8, 1), np.float32)


def _fit(**kw):
    args = dict(epochs=1, batch_size=4, key=jax.random.key(0))
    args.update(kw)
    return jm.fit(REG, PR, optim.sgd(0.1), XR, YR, **args)


def _layer(**kw):
    from tests.students import cs231n_layers as S
    return oracle.check_layer("dropout", S.dropout_forward, S.dropout_backward, **kw)


def _probe(**kw):
    return oracle.probe(lambda weights, biases, x, y: None, output="identity", loss="mse", **kw)


def _reference(**kw):
    return oracle.reference_gradients([np.ones((2, 3))], [np.ones(2)], np.ones((4, 3)),
                                      np.ones((4, 2)), activation="relu", output="identity",
                                      loss="mse", **kw)


# (function, argument, call with a value) → the value of the wrong type, and a bad value
CASES = [
    ("sgd", "learning_rate", lambda v: optim.sgd(v), "0.1", -0.1),
    ("sgd", "momentum", lambda v: optim.sgd(0.1, momentum=v), "0.9", 1.0),
    ("adam", "b1", lambda v: optim.adam(1e-3, b1=v), "0.9", 1.0),
    ("adam", "b2", lambda v: optim.adam(1e-3, b2=v), None, float("nan")),
    ("adam", "eps", lambda v: optim.adam(1e-3, eps=v), "1e-8", -1.0),
    ("adamw", "weight_decay", lambda v: optim.adamw(1e-3, weight_decay=v), "0", -1e-4),
    ("rmsprop", "decay", lambda v: optim.rmsprop(1e-3, decay=v), [0.9], 1.5),
    ("adagrad", "eps", lambda v: optim.adagrad(1e-3, eps=v), True, -1.0),
    ("clip_by_global_norm", "max_norm", lambda v: optim.clip_by_global_norm(v), "1", 0.0),
    ("exponential_decay", "transition_steps", lambda v: optim.exponential_decay(1.0, v, 0.5),
     2.5, 0),
    ("cosine_decay", "alpha", lambda v: optim.cosine_decay(1.0, 10, alpha=v), "0", 1.5),
    ("MLP", "l1", lambda v: jm.MLP((3, 4, 1), l1=v), "0.1", -0.1),
    ("MLP", "l2", lambda v: jm.MLP((3, 4, 1), l2=v), None, float("inf")),
    ("MLP", "dropout", lambda v: jm.MLP((3, 4, 1), dropout=v), "0.5", 1.0),
    ("MLP", r"sizes\[1\]", lambda v: jm.MLP((3, v, 1)), "4", 0),
    ("MLP", "norm", lambda v: jm.MLP((3, 4, 1), norm=v), 1, "group"),
    ("fit", "epochs", lambda v: _fit(epochs=v), "1", 0),
    ("fit", "batch_size", lambda v: _fit(batch_size=v), 2.0, -1),
    ("fit", "patience", lambda v: _fit(patience=v, validation=(XR, YR)), "3", 0),
    ("fit", "min_delta", lambda v: _fit(min_delta=v), "0", -1.0),
    ("fit", "on_divergence", lambda v: _fit(on_divergence=v), None, "ignore"),
    ("spirals", "n", lambda v: data.spirals(n=v), "100", 0),
    ("moons", "noise", lambda v: data.moons(noise=v), "0.1", -0.1),
    ("xor", "seed", lambda v: data.xor(seed=v), "0", -1),
    ("sine", "n", lambda v: data.sine(n=v), None, -5),
    ("train_val_test_split", "val",
     lambda v: data.train_val_test_split(np.zeros((10, 2)), np.zeros(10), val=v), "0.1", -0.1),
    ("one_hot", "num_classes", lambda v: data.one_hot([0, 1], v), "2", 0),
    ("load_csv", "max_bytes", lambda v: data.load_csv("unused.csv", max_bytes=v), 1.5, 0),
    ("gradient_report", "threshold",
     lambda v: gradient_report(REG, PR, XR, YR, threshold=v), "1e-3", 0.0),
    ("saturated_fraction", "threshold", lambda v: saturated_fraction([], v), None, -1.0),
    ("check_layer", "rtol", lambda v: _layer(rtol=v), "1e-6", -1.0),
    ("check_layer", "seed", lambda v: _layer(seed=v), 1.5, -1),
    (r"check_layer", r"p \(the keep probability\)", lambda v: _layer(p=v), "0.5", 1.0),
    ("probe", "batch_sizes", lambda v: _probe(batch_sizes=v), "8", (8, 0)),
    ("probe", "atol", lambda v: _probe(atol=v), "0", float("nan")),
    ("probe", "l2", lambda v: _probe(l2=v), "0.1", -0.1),
    ("reference_gradients", "n_train", lambda v: _reference(l2=0.1, n_train=v), 4.0, 0),
    ("compare", "rtol", lambda v: oracle.compare({}, {}, rtol=v), "0", -1.0),
    ("check_gradients", "rtol", lambda v: jm.check_gradients(REG, PR, XR, YR, rtol=v), "1e-4", -1.0),
    ("check_gradients", "atol", lambda v: jm.check_gradients(REG, PR, XR, YR, atol=v), "1e-6",
     float("nan")),
    ("check_gradients", "fd_rtol", lambda v: jm.check_gradients(REG, PR, XR, YR, fd_rtol=v),
     [0.1], -0.1),
    ("check_gradients", "seed", lambda v: jm.check_gradients(REG, PR, XR, YR, seed=v), 1.5, -1),
    ("spirals", "classes", lambda v: data.spirals(classes=v), "3", 1),
    ("save", "step", lambda v: jm.checkpoint.save("unused.npz", params=PR, step=v), 1.5, -1),
    ("checkpoint_path", "step", lambda v: jm.checkpoint.checkpoint_path(".", v), "3", -1),
    ("prune", "keep", lambda v: jm.checkpoint.prune("unused", keep=v), 2.0, 0),
    ("register", "name", lambda v: jm.activations.register(v, np.tanh, lambda z, a: 1 - a * a),
     3, "my act"),
    ("custom", "name", lambda v: jm.activations.custom(v, np.tanh, lambda z, a: 1 - a * a),
     None, ""),
    ("unregister", "name", lambda v: jm.activations.unregister(v), 3, "relu"),
    ("get", "name", lambda v: jm.activations.get(v), 3, "swish"),
]
IDS = [f"{c[0]}-{c[1]}".replace("\\", "") for c in CASES]


@pytest.mark.parametrize("where, name, call, wrong_type, bad_value", CASES, ids=IDS)
def test_a_wrong_type_is_a_type_error(where, name, call, wrong_type, bad_value):
    got = re.escape(repr(wrong_type))
    with pytest.raises(TypeError, match=rf"^{where}: {name} must be .*, got {got}"):
        call(wrong_type)


@pytest.mark.parametrize("where, name, call, wrong_type, bad_value", CASES, ids=IDS)
def test_a_bad_value_is_a_value_error(where, name, call, wrong_type, bad_value):
    with pytest.raises(ValueError, match=rf"^{where}: {name} must be "):
        call(bad_value)


# The checks shared by every (model, params, x, y) entry point name the function called.
DROP = jm.MLP((3, 4, 1), dropout=0.5)
BN = jm.MLP((3, 4, 1), norm="batch")
X_WIDE = np.ones((8, 4), np.float32)


def _step(y):
    step = jm.make_train_step(REG, optim.sgd(0.1), donate=False)
    return step(PR, optim.sgd(0.1).init(PR), XR, y)


SHARED = [
    (lambda: jm.forward(REG, PR, X_WIDE), ValueError, r"forward: x must have shape \(batch, 3\)"),
    (lambda: jm.forward(REG, PR, XR.astype(np.int32)), TypeError, "forward: x must be a float array"),
    (lambda: jm.forward(REG, PR, "x"), TypeError, "forward: x must be an array, got str"),
    (lambda: jm.forward(REG, tuple(PR), XR), TypeError, "forward: params must be a list"),
    (lambda: jm.forward(BN, jm.init_params(jax.random.key(0), BN), XR), ValueError,
     "forward: the model has batch norm"),
    (lambda: jm.loss(REG, PR, XR, YR[:5]), ValueError, "loss: y has batch 5 but x has batch 8"),
    (lambda: jm.loss("REG", PR, XR, YR), TypeError, "loss: model must be a jaxmlp.MLP, got str"),
    (lambda: jm.backprop(REG, PR[:1], XR, YR), ValueError, "backprop: params has 1 layers"),
    (lambda: jm.value_and_grad(DROP, PR, XR, YR), ValueError,
     "value_and_grad: the model has dropout=0.5, so training mode needs a PRNG key"),
    (lambda: jm.value_and_grad(DROP, PR, XR, YR, key=0), TypeError,
     "value_and_grad: key must be a jax.random.key"),
    (lambda: jm.check_gradients(REG, PR, X_WIDE, YR), ValueError, "check_gradients: x must have shape"),
    (lambda: gradient_report(REG, PR, XR, YR.astype(np.complex64)), TypeError,
     "gradient_report: y must be a real array"),
    (lambda: jm.diagnostics.activation_derivatives(DROP, PR, XR), ValueError,
     "activation_derivatives: the model has dropout"),
    (lambda: jm.init_params(0, REG), TypeError, "init_params: key must be a jax.random.key"),
    (lambda: jm.init_params(jax.random.key(0), REG, dtype=np.int32), TypeError,
     "init_params: dtype must be a float dtype, got int32"),
    (lambda: jm.init_params(jax.random.key(0), "REG"), TypeError, "init_params: model must be"),
    (lambda: jm.init_state(BN, dtype=np.int32), TypeError, "init_state: dtype must be a float dtype"),
    (lambda: _step(np.ones((8, 2), np.float32)), ValueError,
     r"make_train_step's step: y must have shape \(8, 1\)"),
    (lambda: jm.make_train_step(REG, "sgd"), TypeError, "make_train_step: optimizer must be"),
    (lambda: _fit(validation=(X_WIDE, YR)), ValueError, "fit: validation x must have shape"),
    (lambda: _fit(key=None), TypeError, "fit: key must be a jax.random.key, got None"),
    (lambda: jm.fit(REG, PR, "sgd", XR, YR, epochs=1, batch_size=4, key=jax.random.key(0)),
     TypeError, "fit: optimizer must be"),
    (lambda: _fit(validation=(XR, np.full((8, 1), np.nan, np.float32))), ValueError,
     "fit: validation y contains NaN or Inf"),
]


@pytest.mark.parametrize("call, error, match", SHARED, ids=[m for _, _, m in SHARED])
def test_shared_model_checks_name_the_function(call, error, match):
    with pytest.raises(error, match="^" + match):
        call()


# Array and other checks of data, checkpoint and activations.
OTHERS = [
    (lambda: data.standardize(np.ones((4, 3)), np.ones((4, 2))), ValueError,
     r"standardize: others\[0\] must have shape \(n, 3\)"),
    (lambda: data.fit_standardizer(np.ones((4, 3))).apply(np.ones((4, 2))), ValueError,
     r"Standardizer.apply: x must have shape \(n, 3\)"),
    (lambda: data.fit_standardizer(np.ones((4, 3))).inverse(np.array(["a"])), TypeError,
     "Standardizer.inverse: x must be a real numeric array, got dtype <U1"),
    (lambda: data.fit_standardizer(np.array([["a"]])), TypeError,
     "fit_standardizer: x_train must be a real numeric array"),
    (lambda: data.fit_standardizer(np.array([[np.inf]])), ValueError,
     "fit_standardizer: x_train must be finite, got an array with Inf values"),
    (lambda: data.train_val_test_split(np.float32(1.0), np.zeros(10)), ValueError,
     "train_val_test_split: x must have a leading batch axis"),
    (lambda: data.train_val_test_split(np.zeros((10, 2)), np.zeros(10), stratify=1), TypeError,
     r"train_val_test_split: stratify must be a bool \(True or False\), got 1"),
    (lambda: data.train_val_test_split(np.zeros((10, 2)), np.zeros((10, 1, 1)), stratify=True),
     ValueError, r"train_val_test_split: y must be labels \(n,\) or one-hot \(n, K\)"),
    (lambda: data.encode_labels(np.zeros((2, 2))), ValueError, r"encode_labels: y must have shape \(n,\)"),
    (lambda: data.labels_to_int(np.array(["a"])), TypeError, "labels_to_int: y must be integers"),
    (lambda: data.labels_to_int(np.array([2**40])), ValueError, "labels_to_int: y must fit in int32"),
    (lambda: data.one_hot([], None), ValueError, "one_hot: num_classes must be given"),
    (lambda: jm.checkpoint.save("unused.npz", params=None), TypeError,
     "save: params must be a params pytree, got None"),
    (lambda: jm.checkpoint.save("unused.npz", params=PR, extra=[1]), TypeError,
     r"save: extra must be a dict \(a JSON object\), got list"),
    (lambda: jm.checkpoint.save("unused.npz", params=PR, extra={"a": float("inf")}), ValueError,
     r"save: extra must be JSON-serialisable: extra\['a'\] is inf"),
    (lambda: jm.checkpoint.save("unused.npz", params=PR, model="REG"), TypeError,
     "save: model must be a jaxmlp.MLP or None, got str"),
    (lambda: jm.checkpoint.load("unused.npz", model="REG"), TypeError,
     "load: model must be a jaxmlp.MLP or None, got str"),
    (lambda: jm.activations.register("t_v", np.tanh, lambda z, a: 1 - a * a, overwrite="yes"),
     TypeError, "register: overwrite must be a bool"),
    (lambda: jm.activations.register("t_v", "tanh", lambda z, a: 1 - a * a), TypeError,
     "register: f must be callable"),
    (lambda: jm.activations.custom("t_v", np.tanh, 0.5), TypeError, "custom: df must be callable"),
    (lambda: jm.activations.unregister("t_not_registered"), ValueError,
     "unregister: name must be a registered name"),
]


@pytest.mark.parametrize("call, error, match", OTHERS, ids=[m for _, _, m in OTHERS])
def test_other_checks_name_the_function(call, error, match):
    with pytest.raises(error, match="^" + match):
        call()


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs must be a positive int, got 0"),
    (["--batch-size", "-1"], "--batch-size must be a positive int, got -1"),
    (["--patience", "-1"], "--patience must be an int >= 0, got -1"),
    (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["--clip", "0"], "--clip must be a finite number > 0, got 0.0"),
])
def test_jaxmlp_train_flags(flags, message, tmp_path, capsys):
    from jaxmlp import cli
    assert cli.main(["train", "--out", str(tmp_path), *flags]) == 2
    assert capsys.readouterr().err == f"jaxmlp train: error: {message}\n"
    args = cli.build_parser().parse_args(["train", *flags])
    with pytest.raises(ValueError, match="^" + re.escape(f"jaxmlp train: {message}") + "$"):
        cli._check_args(args)


def _ref_args(**changes):
    args = dict(weights=[np.ones((3, 2))], biases=[np.zeros(3)], x=np.ones((4, 2)),
                y=np.ones((4, 3)))
    args.update(changes)
    return args


@pytest.mark.parametrize("changes, error, match", [
    (dict(x=np.ones((4, 5))), ValueError, r"reference_gradients: x must have shape \(m, 2\)"),
    (dict(x=np.full((4, 2), np.nan)), ValueError, "reference_gradients: x contains NaN"),
    (dict(weights=np.ones((3, 2))), TypeError, "reference_gradients: weights must be a list"),
    (dict(y=np.ones((4, 2))), ValueError, r"reference_gradients: y must have shape"),
])
def test_oracle_checks_name_the_function(changes, error, match):
    from jaxmlp import oracle
    a = _ref_args(**changes)
    with pytest.raises(error, match="^" + match):
        oracle.reference_gradients(a["weights"], a["biases"], a["x"], a["y"],
                                   activation="relu", output="identity", loss="mse")


def test_compare_checks_name_the_function():
    from jaxmlp import oracle
    a = _ref_args()
    ref = oracle.reference_gradients(a["weights"], a["biases"], a["x"], a["y"],
                                     activation="relu", output="identity", loss="mse")
    with pytest.raises(ValueError, match="^compare: candidate has no 'db'"):
        oracle.compare({"dW": ref["dW"]}, ref)
    with pytest.raises(ValueError, match=r"^compare: candidate\['dW'\] has 2 entries"):
        oracle.compare({"dW": ref["dW"] * 2, "db": ref["db"]}, ref)
