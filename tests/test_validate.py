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
    ("exponential_decay", "transition_steps", lambda v: optim.exponential_decay(1.0, 0.5, v),
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
