"""Manual δ backprop ≡ jax.grad of jaxmlp.loss: the checks and helpers that the declared
matrix of configurations (tests/test_matrix.py) uses, and what the matrix does not cover.

Small configurations run eagerly (`jax.disable_jit`): XLA compiles each primitive once per
shape and reuses it, where a jit per configuration would compile a program each.  The
jitted path is tested on a representative subset, and must agree with the eager one.
"""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import jaxmlp as jm
from jaxmlp.activations import HIDDEN_ACTIVATIONS
from jaxmlp.backprop import backprop_pass
from jaxmlp.losses import _loss_impl

from tests import reference as ref

# ------------------------------------------ shared with test_matrix.py and test_layers.py
# every valid (output, loss) pair
OUTPUT_LOSS = [(o, l) for l in ("mse", "sse") for o in
               ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "softmax")]
OUTPUT_LOSS += [("sigmoid", "bce"), ("softmax", "cce")]
N, N_IN, K = 5, 3, 3
RTOL = 1e-9


def rel_err(a, b):
    """Normwise relative error max|a − b| / max|b| over a pytree (0/0 counts as 0)."""
    # in NumPy: these run eagerly, where each jnp op would be a dispatch of its own
    a, b = ([np.asarray(x) for x in jax.tree_util.tree_leaves(t)] for t in (a, b))
    num = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
    den = max(float(np.max(np.abs(y))) for y in b)
    return num / den if den else num


def make_data(model, n=N, seed=1, dtype=jnp.float64):
    kx, ky = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (n, model.n_in), dtype)
    if model.loss == "cce":
        y = jax.random.randint(ky, (n,), 0, model.n_out)
    elif model.loss == "bce":
        y = jax.random.bernoulli(ky, 0.5, (n, model.n_out)).astype(dtype)
    else:
        y = jax.random.normal(ky, (n, model.n_out), dtype)
    return x, y


def prepared_y(model, y, dtype=jnp.float64):
    return jm.losses.prepare_targets(model, y, y.shape[0], dtype)


def autodiff_reference(model, params, x, y, key=None, state=None):
    """(L, ∂L/∂params, δ per layer) by autodiff, in one jax.grad call.

    Each bias is replaced by a per-example copy B (N, n_l), so z = a Wᵀ + B and
    ∂L/∂B = ∂L/∂z = δ exactly; ∂L/∂b is then Σ_batch ∂L/∂B."""
    y = prepared_y(model, y, params[0]["W"].dtype)
    wide = [dict(p, b=jnp.broadcast_to(p["b"], (x.shape[0],) + p["b"].shape)) for p in params]
    L, g = jax.value_and_grad(_loss_impl, argnums=1)(model, wide, x, y, True, key, state)
    deltas = [layer["b"] for layer in g]
    grads = [dict(layer, b=jnp.sum(layer["b"], axis=0)) for layer in g]
    return L, grads, deltas


def check_config(model, seed=0):
    """backprop_pass (no argument checks, for speed) against autodiff_reference."""
    params = jm.init_params(jax.random.key(seed), model, dtype=jnp.float64)
    x, y = make_data(model, seed=seed + 1)
    out = backprop_pass(model, params, x, prepared_y(model, y))
    L, g, d = autodiff_reference(model, params, x, y)
    chex.assert_trees_all_equal_structs(out.grads, params)
    assert abs(float(out.loss) - float(L)) <= 1e-12 * max(1.0, abs(float(L)))
    assert rel_err(out.grads, g) <= RTOL, (rel_err(out.grads, g), model)
    assert len(out.deltas) == model.n_layers
    for l, (dm, da) in enumerate(zip(out.deltas, d)):
        assert dm.shape == (x.shape[0], model.sizes[l + 1])
        assert rel_err(dm, da) <= RTOL, (l, rel_err(dm, da), model)
    return params, x, y, out


# The matrix (activation × output/loss × depth × penalty) is declared in test_matrix.py.


@pytest.mark.parametrize("output,loss", OUTPUT_LOSS, ids=[f"{o}-{l}" for o, l in OUTPUT_LOSS])
def test_no_hidden_layer(output, loss):
    with jax.disable_jit():
        check_config(jm.MLP((N_IN, K), output=output, loss=loss, l2=0.1))


def test_per_layer_activation_tuple():
    model = jm.MLP((N_IN, 6, 5, 4, 2), activation=("gelu", "sigmoid", "leaky_relu"),
                   output="softmax", loss="cce", l1=0.01)
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    x, y = make_data(model)
    report = jm.check_gradients(model, params, x, y)
    assert report.ok and report.max_rel_err <= RTOL, str(report)


def test_l1_penalty_gradient_is_sign():
    model = jm.MLP((N_IN, 4, 1), l1=0.5)
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    x, y = make_data(model)
    g_pen = jm.value_and_grad(model, params, x, y)[1]
    g_nopen = jm.value_and_grad(jm.MLP((N_IN, 4, 1)), params, x, y)[1]
    for gp, gn, p in zip(g_pen, g_nopen, params):
        np.testing.assert_allclose(gp["W"] - gn["W"], 0.5 * jnp.sign(p["W"]), rtol=1e-12)
        np.testing.assert_allclose(gp["b"], gn["b"], rtol=1e-12)  # biases: no penalty


# ----------------------------------------------------------------- loss values vs NumPy
@pytest.mark.parametrize("output,loss", OUTPUT_LOSS, ids=[f"{o}-{l}" for o, l in OUTPUT_LOSS])
def test_loss_matches_numpy_reference(output, loss):
    with jax.disable_jit():
        for act in ("tanh", "gelu", "elu"):
            model = jm.MLP((N_IN, 6, 4, K), activation=act, output=output, loss=loss,
                           l1=0.02, l2=0.03)
            params = jm.init_params(jax.random.key(3), model, dtype=jnp.float64)
            x, y = make_data(model, seed=4)
            y_np = np.asarray(prepared_y(model, y))
            expected = ref.loss(model, params, np.asarray(x), y_np)
            np.testing.assert_allclose(float(jm.loss(model, params, x, y)), expected, rtol=1e-12)
            yhat, _ = ref.forward(model, params, np.asarray(x))
            np.testing.assert_allclose(jm.forward(model, params, x), yhat, rtol=1e-12, atol=1e-15)


def test_loss_golden_values():
    """Hand-computed: one linear layer W = [[1, 2]], b = [0.5], x = [[1, 1], [0, 1]], y = [[3], [1]].
    ŷ = [[3.5], [2.5]], residuals [0.5, 1.5]: mse = (0.25 + 2.25)/2 = 1.25, sse = 0.625."""
    params = [{"W": jnp.array([[1.0, 2.0]]), "b": jnp.array([0.5])}]
    x, y = jnp.array([[1.0, 1.0], [0.0, 1.0]]), jnp.array([[3.0], [1.0]])
    assert float(jm.loss(jm.MLP((2, 1), loss="mse"), params, x, y)) == pytest.approx(1.25, rel=1e-15)
    assert float(jm.loss(jm.MLP((2, 1), loss="sse"), params, x, y)) == pytest.approx(0.625, rel=1e-15)
    # l2 = 0.1 adds 0.05·(1 + 4) = 0.25; l1 = 0.1 adds 0.1·3 = 0.3
    assert float(jm.loss(jm.MLP((2, 1), l2=0.1, l1=0.1), params, x, y)) == pytest.approx(1.8, rel=1e-15)
    out = jm.backprop(jm.MLP((2, 1), loss="mse"), params, x, y)
    # δ = 2(ŷ − y)/(N·K) = [[0.5], [1.5]]; dW = δᵀx = [[0.5, 2.0]]; db = 2.0
    np.testing.assert_allclose(out.deltas[0], [[0.5], [1.5]], rtol=1e-15)
    np.testing.assert_allclose(out.grads[0]["W"], [[0.5, 2.0]], rtol=1e-15)
    np.testing.assert_allclose(out.grads[0]["b"], [2.0], rtol=1e-15)
    # cce: logits [0, ln 3] → softmax [1/4, 3/4]; label 1 → −ln(3/4)
    m = jm.MLP((2, 2), output="softmax", loss="cce")
    p = [{"W": jnp.zeros((2, 2)), "b": jnp.array([0.0, np.log(3.0)])}]
    assert float(jm.loss(m, p, x[:1], jnp.array([1]))) == pytest.approx(-np.log(0.75), rel=1e-14)


# ----------------------------------------------------------------- jit, interchangeability
def test_value_and_grad_is_drop_in_for_jax_value_and_grad():
    model = jm.MLP((N_IN, 7, 5, 2), activation="tanh", output="sigmoid", loss="bce", l2=0.01)
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    x, y = make_data(model)
    ours = jm.value_and_grad(model, params, x, y)
    theirs = jax.value_and_grad(functools.partial(jm.loss, model))(params, x, y)
    chex.assert_trees_all_equal_structs(ours, theirs)
    chex.assert_trees_all_close(ours, theirs, rtol=1e-12, atol=1e-15)


def test_jitted_and_eager_agree_and_no_retrace():
    model = jm.MLP((N_IN, 8, 8, K), activation="gelu", output="softmax", loss="cce", l1=0.01)
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    x, y = make_data(model)
    with jax.disable_jit():
        eager = jm.value_and_grad(model, params, x, y)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, x, y):
        return jm.value_and_grad(model, params, x, y)

    jitted = step(params, x, y)
    step(jax.tree_util.tree_map(lambda p: p * 1.1, params), x + 1.0, y)  # no second trace
    chex.assert_trees_all_close(eager, jitted, rtol=1e-12, atol=1e-15)
    # also jax.jit with the model static, as DESIGN.md §2 promises
    vg = jax.jit(jm.value_and_grad, static_argnums=0)
    chex.assert_trees_all_close(vg(model, params, x, y), jitted, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("activation,output,loss", [
    ("relu", "identity", "mse"), ("tanh", "sigmoid", "bce"), ("gelu", "softmax", "cce")])
def test_float32_agrees_with_float64(activation, output, loss):
    """float32 manual grads vs float64 ones: relative error ~1e-6 expected; 1e-4 allowed."""
    model = jm.MLP((N_IN, 16, 16, K), activation=activation, output=output, loss=loss, l2=0.01)
    p64 = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), p64)
    x, y = make_data(model, n=32)
    L32, g32 = jm.value_and_grad(model, p32, x.astype(jnp.float32), y)
    L64, g64 = jm.value_and_grad(model, p64, x, y)
    assert L32.dtype == jnp.float32 and all(
        g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(g32))
    assert abs(float(L32) - float(L64)) <= 1e-5 * abs(float(L64))
    assert rel_err(g32, g64) <= 1e-4
    report = jm.check_gradients(model, p32, x.astype(jnp.float32), y)
    assert report.ok, str(report)


# ----------------------------------------------------------------- stability
@pytest.mark.parametrize("output,loss,k", [("sigmoid", "bce", 2), ("softmax", "cce", 3)])
def test_extreme_logits_stay_finite(output, loss, k):
    model = jm.MLP((2, k), output=output, loss=loss)
    for dtype in (jnp.float32, jnp.float64):
        W = jnp.array([[1e4, 0.0], [-1e4, 0.0], [0.0, 1e4]][:k], dtype)
        params = [{"W": W, "b": jnp.zeros((k,), dtype)}]
        x = jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], dtype)  # logits ±1e4
        y = (jnp.array([1, 0, 2]) % k if loss == "cce"
             else jnp.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype))
        out = jm.backprop(model, params, x, y)
        assert jnp.isfinite(out.loss) and float(out.loss) > 1e3  # confidently wrong → huge
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(out.grads))
        g_auto = jax.grad(functools.partial(jm.loss, model))(params, x, y)
        chex.assert_trees_all_close(out.grads, g_auto, rtol=1e-5)


# ----------------------------------------------------------------- property-based
@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_property_random_architectures(data):
    depth = data.draw(st.integers(0, 3), label="hidden layers")
    # widths from a small set: each new shape costs eager compiles, not coverage
    sizes = tuple(data.draw(st.lists(st.sampled_from([1, 2, 3, 4]), min_size=depth + 2,
                                     max_size=depth + 2), label="sizes"))
    pairs = [p for p in OUTPUT_LOSS if not (p[0] == "softmax" and sizes[-1] < 2)]
    output, loss = data.draw(st.sampled_from(pairs), label="output, loss")
    acts = tuple(data.draw(st.sampled_from(HIDDEN_ACTIVATIONS)) for _ in range(depth))
    l2 = data.draw(st.sampled_from([0.0, 0.1]))
    n = data.draw(st.sampled_from([1, 2, 5]), label="batch")
    model = jm.MLP(sizes, activation=acts, output=output, loss=loss, l2=l2)
    params = jm.init_params(jax.random.key(data.draw(st.integers(0, 100))), model,
                            dtype=jnp.float64)
    x, y = make_data(model, n=n)
    # jitted (the public functions jit inside): one compile per new shape, where the eager
    # path would compile every primitive anew
    out = jm.backprop(model, params, x, y)
    g = jax.grad(functools.partial(jm.loss, model))(params, x, y)
    assert rel_err(out.grads, g) <= RTOL
    assert [d.shape for d in out.deltas] == [(n, s) for s in sizes[1:]]
