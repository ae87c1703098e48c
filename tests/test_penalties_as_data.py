"""Penalties as data (issue 31, item 4): `l1=` and `l2=` on loss, backprop,
value_and_grad, check_gradients, the train step and fit override the model's weights for
one call, reach the compiled code as arrays (no recompile per value) and can be vmapped."""
import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp as jm
from jaxmlp import losses as _losses
from jaxmlp import optim
from jaxmlp.train import _run_epoch

_backprop = importlib.import_module("jaxmlp.backprop")  # the module, not the function

L2S = (0.0, 1e-3, 3e-2, 0.5)


def data(n=24, n_in=3, n_out=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, n_in)), rng.standard_normal((n, n_out))


def setup(sizes=(3, 7, 2), **kw):
    model = jm.MLP(sizes, activation="tanh", **kw)
    params = jm.init_params(jax.random.key(1), model, dtype=jnp.float64)
    x, y = data(n_in=sizes[0], n_out=sizes[-1])
    return model, params, x, y


def close(a, b, tol):
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=tol, atol=tol)


@pytest.fixture
def penalty_traces(monkeypatch):
    """Counts traces: every traced loss or gradient computes `penalty` exactly once."""
    n = {"n": 0}
    real = _losses.penalty

    def counting(*args, **kw):
        n["n"] += 1
        return real(*args, **kw)

    monkeypatch.setattr(_losses, "penalty", counting)
    monkeypatch.setattr(_backprop, "penalty", counting)
    return n


# ------------------------------------------------------------------ values

@pytest.mark.parametrize("which", ["l1", "l2"])
def test_manual_grads_with_override_equal_autodiff_of_loss(which):
    model, params, x, y = setup()
    for v in (1e-3, 0.2):
        L, g = jm.value_and_grad(model, params, x, y, **{which: v})
        La, ga = jax.value_and_grad(
            lambda p: jm.loss(model, p, x, y, **{which: v}))(params)
        np.testing.assert_allclose(L, La, rtol=1e-9)
        close(g, ga, 1e-9)
        assert jm.check_gradients(model, params, x, y, **{which: v}).ok


@pytest.mark.parametrize("which", ["l1", "l2"])
def test_override_equals_a_model_built_with_that_value(which):
    model, params, x, y = setup(l1=0.01, l2=0.02)  # the override replaces the model's
    built = jm.MLP(model.sizes, activation="tanh", **{"l1": 0.01, "l2": 0.02, which: 0.3})
    np.testing.assert_allclose(jm.loss(model, params, x, y, **{which: 0.3}),
                               jm.loss(built, params, x, y), rtol=1e-12)
    out, ref = jm.backprop(model, params, x, y, **{which: 0.3}), jm.backprop(built, params, x, y)
    np.testing.assert_allclose(out.loss, ref.loss, rtol=1e-12)
    close(out.grads, ref.grads, 1e-12)
    # and a zero override switches the model's penalty off
    plain = jm.MLP(model.sizes, activation="tanh", **{"l1": 0.01, "l2": 0.02, which: 0.0})
    np.testing.assert_allclose(jm.loss(model, params, x, y, **{which: 0.0}),
                               jm.loss(plain, params, x, y), rtol=1e-12)
    # train step and fit
    opt = optim.sgd(0.1)
    s1 = jm.make_train_step(model, opt, donate=False)(params, opt.init(params), x, y,
                                                      **{which: 0.3})
    s2 = jm.make_train_step(built, opt, donate=False)(params, opt.init(params), x, y)
    close(s1, s2, 1e-12)
    kw = dict(epochs=2, batch_size=8, key=jax.random.key(0))
    p1, h1 = jm.fit(model, params, opt, x, y, **kw, **{which: 0.3})
    p2, h2 = jm.fit(built, params, opt, x, y, **kw)
    close(p1, p2, 1e-12)
    np.testing.assert_allclose(h1["train_loss"], h2["train_loss"], rtol=1e-12)


def test_none_is_the_models_value():
    model, params, x, y = setup(l2=0.05)
    np.testing.assert_array_equal(jm.loss(model, params, x, y),
                                  jm.loss(model, params, x, y, l1=None, l2=None))
    np.testing.assert_allclose(jm.loss(model, params, x, y),
                               jm.loss(model, params, x, y, l2=jnp.float64(0.05)), rtol=1e-12)


# ------------------------------------------------------------------ one compile

def test_loss_and_value_and_grad_compile_once_across_values(penalty_traces):
    model, params, x, y = setup(sizes=(3, 11, 2))  # shapes of this test only
    losses = [jm.loss(model, params, x, y, l2=v) for v in L2S]
    assert penalty_traces["n"] == 1
    assert len(set(float(v) for v in losses)) == len(L2S)  # the values did change
    for v in L2S:
        jm.value_and_grad(model, params, x, y, l2=v)
    assert penalty_traces["n"] == 2
    for v in L2S:
        jm.value_and_grad(model, params, x, y, l2=jnp.asarray(v))  # arrays too
    assert penalty_traces["n"] == 2


def test_train_step_compiles_once_across_values(penalty_traces):
    model, params, x, y = setup(sizes=(3, 12, 2))
    opt = optim.adam(1e-2)
    step = jm.make_train_step(model, opt, donate=False)
    out = [step(params, opt.init(params), x, y, l2=v) for v in L2S]
    assert penalty_traces["n"] == 1 and step._cache_size() == 1
    assert len(set(float(o[0][0]["W"][0, 0]) for o in out)) == len(L2S)


def test_fit_compiles_its_epoch_once_across_values():
    model, params, x, y = setup(sizes=(3, 13, 2))
    kw = dict(epochs=1, batch_size=8, key=jax.random.key(0))
    jm.fit(model, params, optim.sgd(0.1), x, y, l2=L2S[0], **kw)
    before = _run_epoch._cache_size()
    for v in L2S[1:]:
        jm.fit(model, params, optim.sgd(0.1), x, y, l2=v, **kw)
    assert _run_epoch._cache_size() == before


# ------------------------------------------------------------------ vmap

def test_vmap_over_l2_equals_each_value():
    model, params, x, y = setup(l1=0.01)
    vec = jnp.asarray(L2S)
    Ls = jax.vmap(lambda v: jm.loss(model, params, x, y, l2=v))(vec)
    Lv, gv = jax.vmap(lambda v: jm.value_and_grad(model, params, x, y, l2=v))(vec)
    opt = optim.adam(1e-2)
    step = jm.make_train_step(model, opt, donate=False)
    st = opt.init(params)
    pv, _, lv = jax.vmap(lambda v: step(params, st, x, y, l2=v))(vec)
    for i, v in enumerate(L2S):
        np.testing.assert_allclose(Ls[i], jm.loss(model, params, x, y, l2=v), rtol=1e-12)
        L, g = jm.value_and_grad(model, params, x, y, l2=v)
        np.testing.assert_allclose(Lv[i], L, rtol=1e-12, atol=1e-12)
        close(jax.tree_util.tree_map(lambda a: a[i], gv), g, 1e-12)
        p, _, l = step(params, st, x, y, l2=v)
        np.testing.assert_allclose(lv[i], l, rtol=1e-12, atol=1e-12)
        close(jax.tree_util.tree_map(lambda a: a[i], pv), p, 1e-12)


def test_grad_with_respect_to_l2():
    # the weight is data: d loss / d l2 = ½ Σ ‖W‖²
    model, params, x, y = setup()
    d = jax.grad(lambda v: jm.loss(model, params, x, y, l2=v))(0.1)
    want = 0.5 * sum(float(jnp.sum(p["W"] ** 2)) for p in params)
    np.testing.assert_allclose(d, want, rtol=1e-12)


# ------------------------------------------------------------------ bad values

STEP = "make_train_step's step"


def calls(model, params, x, y):
    opt = optim.sgd(0.1)
    step = jm.make_train_step(model, opt, donate=False)
    kw = dict(epochs=1, batch_size=8, key=jax.random.key(0))
    return {
        "loss": functools.partial(jm.loss, model, params, x, y),
        "backprop": functools.partial(jm.backprop, model, params, x, y),
        "value_and_grad": functools.partial(jm.value_and_grad, model, params, x, y),
        "check_gradients": functools.partial(jm.check_gradients, model, params, x, y),
        STEP: functools.partial(step, params, opt.init(params), x, y),
        "fit": functools.partial(jm.fit, model, params, opt, x, y, **kw),
    }


@pytest.mark.parametrize("value, error, match", [
    (-1.0, ValueError, r"{w}: {n} must be a finite number >= 0, got -1\.0"),
    (float("nan"), ValueError, r"{w}: {n} must be a finite number >= 0, got nan"),
    (np.inf, ValueError, r"{w}: {n} must be a finite number >= 0"),
    (jnp.asarray(-0.5), ValueError, r"{w}: {n} must be a finite number >= 0, got -0\.5"),
    ("0.1", TypeError, r"{w}: {n} must be a finite number >= 0, got '0\.1'"),
    (True, TypeError, r"{w}: {n} must be a finite number >= 0"),
    (jnp.ones(2), ValueError, r"{w}: {n} must be a scalar, got an array of shape \(2,\) "
                              r"\(for one value per model, jm.sweep takes a list\)"),
    (jnp.asarray(True), TypeError, r"{w}: {n} must be a finite number >= 0 or a scalar float"),
])
def test_bad_values_name_the_function_and_argument(value, error, match):
    model, params, x, y = setup()
    for where, call in calls(model, params, x, y).items():
        for name in ("l1", "l2"):
            with pytest.raises(error, match=match.format(w=where, n=name)):
                call(**{name: value})


def test_traced_values_are_not_checked():
    model, params, x, y = setup()
    L = jax.jit(lambda v: jm.loss(model, params, x, y, l2=v))(-1.0)
    assert np.isfinite(L)  # a negative traced weight runs (it is not caught)


def test_fit_refuses_to_resume_with_another_penalty(tmp_path):
    model, params, x, y = setup()
    kw = dict(epochs=1, batch_size=8, key=jax.random.key(0), checkpoint_dir=tmp_path)
    jm.fit(model, params, optim.sgd(0.1), x, y, l2=0.1, **kw)
    with pytest.raises(ValueError, match="penalties"):
        jm.fit(model, params, optim.sgd(0.1), x, y, l2=0.2, **dict(kw, epochs=2))
