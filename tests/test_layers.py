"""Dropout, batch norm and layer norm: hand-written backward ≡ jax.grad, forward ≡ NumPy."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp as jm
from jaxmlp.backprop import backprop_pass

from tests import reference as ref
from tests.test_backprop import RTOL, autodiff_reference, make_data, prepared_y, rel_err

NORMS = ("batch", "layer")
ACTS = ("relu", "tanh", "gelu")
# The output layer is never normalised nor dropped, so two output pairs exercise every path
# into the hidden layers; every pair is covered without norm in test_backprop's matrix.
PAIRS = (("identity", "mse"), ("softmax", "cce"))
NORM_DROPOUT = [("batch", 0.0), ("layer", 0.0), ("batch", 0.3), ("layer", 0.3), (None, 0.3)]


@pytest.mark.parametrize("depth", [1, 2], ids=lambda d: f"depth{d}")
@pytest.mark.parametrize("norm,dropout", NORM_DROPOUT,
                         ids=[f"{n}-drop{p}" for n, p in NORM_DROPOUT])
def test_manual_equals_autodiff_with_norm_and_dropout(norm, dropout, depth):
    key = jax.random.key(42)
    with jax.disable_jit():
        for act in ACTS:
            for output, loss in PAIRS:
                model = jm.MLP((3,) + (4,) * depth + (3,), activation=act, output=output,
                               loss=loss, norm=norm, dropout=dropout, l2=0.01)
                params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
                # non-trivial γ, β so their gradients are exercised
                params = [dict(p, gamma=p["gamma"] * 1.3, beta=p["beta"] + 0.1)
                          if "gamma" in p else p for p in params]
                x, y = make_data(model, n=6)
                state = jm.init_state(model, dtype=jnp.float64)
                out = backprop_pass(model, params, x, prepared_y(model, y), key=key, state=state)
                L, g, d = autodiff_reference(model, params, x, y, key=key, state=state)
                assert abs(float(out.loss - L)) <= 1e-12 * max(1, abs(float(L)))
                assert rel_err(out.grads, g) <= RTOL, (model, rel_err(out.grads, g))
                for dm, da in zip(out.deltas, d):
                    assert rel_err(dm, da) <= RTOL
                chex.assert_trees_all_equal_structs(out.grads, params)


def test_check_gradients_with_norm_dropout_and_finite_differences():
    model = jm.MLP((3, 5, 4, 2), activation="tanh", output="softmax", loss="cce",
                   norm="batch", dropout=0.2, l1=0.01)
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    x, y = make_data(model, n=8)
    report = jm.check_gradients(model, params, x, y, key=jax.random.key(1),
                                state=jm.init_state(model, dtype=jnp.float64),
                                finite_differences=True)
    assert report.ok, str(report)
    assert len(report.finite_differences) == len(jax.tree_util.tree_leaves(params))


@pytest.mark.parametrize("norm", NORMS)
def test_normalised_forward_equals_numpy(norm):
    model = jm.MLP((3, 6, 5, 2), activation="elu", norm=norm)
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    params = [dict(p, gamma=p["gamma"] * 0.7, beta=p["beta"] - 0.2) if "gamma" in p else p
              for p in params]
    x, y = make_data(model, n=7)
    state = jm.init_state(model, dtype=jnp.float64)
    yhat, _ = ref.forward(model, params, np.asarray(x), train=True)
    np.testing.assert_allclose(jm.forward(model, params, x, train=True, state=state), yhat,
                               rtol=1e-12)
    np.testing.assert_allclose(float(jm.loss(model, params, x, y, state=state)),
                               ref.loss(model, params, np.asarray(x), np.asarray(y)), rtol=1e-12)
    if norm == "batch":  # inference: the running statistics
        state = [{"mean": jnp.full((n,), 0.3), "var": jnp.full((n,), 2.0)} for n in (6, 5)]
        yhat, _ = ref.forward(model, params, np.asarray(x), state=state, train=False)
        np.testing.assert_allclose(jm.forward(model, params, x, state=state), yhat, rtol=1e-12)


def test_layer_norm_statistics_per_example():
    u, cache = jm.layers.layer_norm_forward(jnp.array([[1.0, 2.0, 3.0], [10.0, 10.0, 40.0]]),
                                            jnp.ones(3), jnp.zeros(3))
    np.testing.assert_allclose(u.mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(u.var(axis=1), 1.0, rtol=1e-4)  # ε = 1e-5 shrinks it a little


# ----------------------------------------------------------------- dropout
@pytest.fixture(scope="module")
def drop_model():
    model = jm.MLP((4, 32, 2), activation="relu", dropout=0.4)
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(1), (3, 4), jnp.float64)
    return model, params, x


def test_dropout_inference_is_unaffected(drop_model):
    model, params, x = drop_model
    plain = jm.MLP((4, 32, 2), activation="relu")
    np.testing.assert_array_equal(jm.forward(model, params, x), jm.forward(plain, params, x))


def test_dropout_preserves_expected_activation_and_masks_differ(drop_model):
    model, params, x = drop_model
    # a linear output layer, so E[ŷ] = ŷ without dropout when E[mask/(1−p)] = 1
    f = jax.jit(jax.vmap(lambda k: jm.forward(model, params, x, train=True, key=k)))
    outs = f(jax.random.split(jax.random.key(5), 4000))
    mean = outs.mean(axis=0)
    stderr = outs.std(axis=0) / np.sqrt(outs.shape[0])
    expected = jm.forward(model, params, x)
    assert bool(jnp.all(jnp.abs(mean - expected) < 5 * stderr + 1e-12))
    assert not np.allclose(outs[0], outs[1])  # different keys, different masks
    np.testing.assert_array_equal(f(jnp.stack([jax.random.key(9)] * 2))[0],
                                  f(jnp.stack([jax.random.key(9)] * 2))[1])
    h = jnp.ones((2000, 50))
    a, mask = jm.layers.dropout_forward(h, jax.random.key(0), 0.4)
    assert abs(float((mask == 0).mean()) - 0.4) < 0.01  # the drop fraction is `dropout`
    np.testing.assert_allclose(np.unique(np.asarray(mask)), [0.0, 1 / 0.6])


# ----------------------------------------------------------------- batch norm
def test_batch_norm_running_statistics_converge_and_inference_is_per_example():
    model = jm.MLP((2, 3, 1), activation="tanh", norm="batch")
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    shift = jnp.array([2.0, -1.0])
    data = 3.0 * jax.random.normal(jax.random.key(1), (200 * 64, 2), jnp.float64) + shift[None, :]
    y = jnp.zeros((64, 1))

    @jax.jit
    def run(state):
        def body(s, xb):
            return backprop_pass(model, params, xb, y, state=s).state, None
        return jax.lax.scan(body, state, data.reshape(200, 64, 2))[0]

    state = run(jm.init_state(model, dtype=jnp.float64))
    z = data @ params[0]["W"].T + params[0]["b"][None, :]
    np.testing.assert_allclose(state[0]["mean"], z.mean(axis=0), rtol=0.05, atol=0.05)
    np.testing.assert_allclose(state[0]["var"], z.var(axis=0), rtol=0.1)
    # inference: deterministic, and an example's output ignores the rest of the batch
    x = data[:10]
    full = jm.forward(model, params, x, state=state)
    np.testing.assert_array_equal(full, jm.forward(model, params, x, state=state))
    np.testing.assert_allclose(jm.forward(model, params, x[3:5], state=state), full[3:5],
                               rtol=1e-12)
    np.testing.assert_allclose(jm.forward(model, params, x[::-1], state=state), full[::-1],
                               rtol=1e-12)


def test_backprop_returns_state_and_leaves_params_alone():
    model = jm.MLP((2, 3, 1), norm="batch", norm_momentum=0.5)
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    x = jnp.array([[1.0, 2.0], [3.0, -1.0], [0.0, 0.5]])
    state = jm.init_state(model, dtype=jnp.float64)
    out = jm.backprop(model, params, x, jnp.zeros(3), state=state)
    z = x @ params[0]["W"].T
    np.testing.assert_allclose(out.state[0]["mean"], 0.5 * z.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(out.state[0]["var"], 0.5 + 0.5 * z.var(axis=0), rtol=1e-12)
    assert jm.backprop(model, params, x, jnp.zeros(3)).state is None
    assert jm.init_state(jm.MLP((2, 3, 1), norm="layer")) is None
