"""MLP construction, initialisation, forward pass and the argument checks of every entry point."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp as jm
from jaxmlp import init as jinit
from jaxmlp.activations import ACTIVATIONS


# ----------------------------------------------------------------- MLP
def test_mlp_is_frozen_hashable_and_normalises_sequences():
    a = jm.MLP([3, 4, 2], activation=["relu"])
    b = jm.MLP((3, 4, 2), activation=("relu",))
    assert a == b and hash(a) == hash(b)
    assert a.sizes == (3, 4, 2) and a.activation == ("relu",)
    assert a.n_layers == 2 and a.hidden_activations == ("relu",)
    with pytest.raises(Exception):
        a.sizes = (1, 2)
    assert jm.MLP(**a.to_dict()) == a
    assert jm.MLP(np.array([3, 4, 2])).sizes == (3, 4, 2)


@pytest.mark.parametrize("kwargs,match", [
    (dict(sizes=(3,)), "at least two"),
    (dict(sizes=()), "at least two"),
    (dict(sizes=(3, 0, 1)), r"sizes\[1\] must be a positive int"),
    (dict(sizes=(3, -2, 1)), r"sizes\[1\]"),
    (dict(sizes=(3, 4, 1), activation="swish"), "MLP: activation must be one of .* got 'swish'"),
    (dict(sizes=(3, 4, 1), activation="softmax"), "softmax is output-only"),
    (dict(sizes=(3, 4, 4, 1), activation=("relu",)), "one name per hidden layer"),
    (dict(sizes=(3, 4, 1), activation=("relu", "tanh")), "one name per hidden layer"),
    (dict(sizes=(3, 4, 1), output="swish"), "MLP: output must be one of .* got 'swish'"),
    (dict(sizes=(3, 4, 1), loss="hinge"), "MLP: loss must be one of .* got 'hinge'"),
    (dict(sizes=(3, 4, 1), loss="bce"), "loss='bce' needs output='sigmoid'"),
    (dict(sizes=(3, 4, 2), loss="cce", output="sigmoid"), "loss='cce' needs output='softmax'"),
    (dict(sizes=(3, 4, 1), loss="cce", output="softmax"), "at least 2 outputs"),
    (dict(sizes=(3, 4, 1), init="orthogonal"), "MLP: init must be one of .* got 'orthogonal'"),
    (dict(sizes=(3, 4, 1), l1=-0.1), "l1 must be"),
    (dict(sizes=(3, 4, 1), l2=-1e-9), "l2 must be"),
    (dict(sizes=(3, 4, 1), l2=float("nan")), "l2 must be"),
    (dict(sizes=(3, 4, 1), dropout=1.0), r"MLP: dropout must be a number in \[0, 1\)"),
    (dict(sizes=(3, 4, 1), dropout=-0.1), "dropout must be"),
    (dict(sizes=(3, 4, 1), norm="group"), "MLP: norm must be one of .* got 'group'"),
    (dict(sizes=(3, 4, 1), norm_momentum=1.0), "norm_momentum must be"),
])
def test_mlp_refuses_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jm.MLP(**kwargs)


@pytest.mark.parametrize("kwargs,match", [  # a wrong type is a TypeError
    (dict(sizes=(3, 2.5, 1)), r"MLP: sizes\[1\] must be a positive int, got 2.5"),
    (dict(sizes=(3, True, 1)), r"MLP: sizes\[1\] must be a positive int, got True"),
    (dict(sizes="34"), "MLP: sizes must be a sequence"),
    (dict(sizes=3), "MLP: sizes must be a sequence"),
    (dict(sizes=(3, 4, 1), activation=3), "MLP: activation must be a name"),
    (dict(sizes=(3, 4, 1), l2="0.1"), "MLP: l2 must be a finite number >= 0, got '0.1'"),
    (dict(sizes=(3, 4, 1), loss=None), "MLP: loss must be one of"),
])
def test_mlp_refuses_bad_config_type(kwargs, match):
    with pytest.raises(TypeError, match=match):
        jm.MLP(**kwargs)


# ----------------------------------------------------------------- init
@pytest.mark.parametrize("scheme", sorted(jinit.SCHEMES))
def test_init_variance_within_3_percent(scheme):
    model = jm.MLP((600, 400))  # W is (400, 600): n_out = 400, n_in = 600
    W = jm.init_params(jax.random.key(0), model, scheme, dtype=jnp.float64)[0]["W"]
    assert W.shape == (400, 600)
    expected = jinit.variance(scheme, n_in=600, n_out=400)
    assert abs(float(jnp.var(W)) / expected - 1) < 0.03
    assert abs(float(jnp.mean(W))) < 3 * np.sqrt(expected / W.size) * 2
    if "uniform" in scheme:
        assert float(jnp.max(jnp.abs(W))) <= np.sqrt(3 * expected)


def test_init_exact_variances_and_zero_biases():
    assert jinit.variance("he_normal", 600, 400) == 2 / 600
    assert jinit.variance("xavier_uniform", 600, 400) == 2 / 1000
    assert jinit.variance("lecun_normal", 600, 400) == 1 / 600
    params = jm.init_params(jax.random.key(1), jm.MLP((5, 4, 3), norm="layer"))
    assert all(float(jnp.abs(p["b"]).max()) == 0 for p in params)
    np.testing.assert_array_equal(params[0]["gamma"], 1.0)
    np.testing.assert_array_equal(params[0]["beta"], 0.0)
    assert set(params[1]) == {"W", "b"}  # the output layer is never normalised


def test_init_same_key_same_params_different_key_different():
    model = jm.MLP((5, 8, 3))
    p1 = jm.init_params(jax.random.key(7), model)
    p2 = jm.init_params(jax.random.key(7), model)
    p3 = jm.init_params(jax.random.key(8), model)
    for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p2)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(p1[0]["W"], p3[0]["W"])
    # a legacy uint32 PRNGKey works too
    p4 = jm.init_params(jax.random.PRNGKey(7), model)
    assert p4[0]["W"].shape == (8, 5)


def test_init_auto_picks_he_for_relu_family_and_xavier_otherwise():
    relu = jm.MLP((10, 20, 1), activation="relu")
    tanh = jm.MLP((10, 20, 1), activation="tanh")
    assert jm.model.auto_scheme(relu, 0) == "he_normal" == jm.model.auto_scheme(relu, 1)
    assert jm.model.auto_scheme(tanh, 0) == "xavier_uniform"
    mixed = jm.MLP((10, 20, 20, 1), activation=("tanh", "gelu"))
    assert [jm.model.auto_scheme(mixed, l) for l in range(3)] == [
        "xavier_uniform", "xavier_uniform", "he_normal"]


def test_init_dtype_and_errors():
    model = jm.MLP((3, 2))
    assert jm.init_params(jax.random.key(0), model, dtype=jnp.float32)[0]["W"].dtype == jnp.float32
    with pytest.raises(ValueError, match="init_params: scheme must be one of"):
        jm.init_params(jax.random.key(0), model, "kaiming")
    with pytest.raises(TypeError, match="dtype must be a float"):
        jm.init_params(jax.random.key(0), model, dtype=jnp.int32)
    with pytest.raises(TypeError, match="key must be a jax.random.key"):
        jm.init_params(0, model)
    with pytest.raises(TypeError, match="key must be a jax.random.key, got None"):
        jm.init_params(None, model)
    with pytest.raises(TypeError, match="model must be a jaxmlp.MLP"):
        jm.init_params(jax.random.key(0), (3, 2))


# ----------------------------------------------------------------- activations
@pytest.mark.parametrize("name", [n for n in ACTIVATIONS if n != "softmax"])
def test_activation_derivative_equals_autodiff_including_zero(name):
    act = ACTIVATIONS[name]
    z = jnp.array([-30.0, -3.0, -0.5, -1e-3, 0.0, 1e-3, 0.7, 4.0, 30.0])
    a = act.f(z)
    auto = jax.vmap(jax.grad(act.f))(z)
    np.testing.assert_allclose(act.df(z, a), auto, rtol=1e-12, atol=1e-300)


def test_softmax_vjp_and_stability():
    act = ACTIVATIONS["softmax"]
    z = jnp.array([[1.0, 2.0, -1.0], [1e4, -1e4, 0.0]])
    a = act.f(z)
    assert bool(jnp.all(jnp.isfinite(a)))
    np.testing.assert_allclose(a.sum(axis=1), 1.0)
    g = jnp.array([[0.3, -1.0, 2.0], [1.0, 0.5, -0.5]])
    _, vjp = jax.vjp(act.f, z)
    np.testing.assert_allclose(act.vjp(z, a, g), vjp(g)[0], rtol=1e-13, atol=1e-300)


def test_relu_derivative_at_zero_is_zero():
    assert float(ACTIVATIONS["relu"].df(jnp.array(0.0), jnp.array(0.0))) == 0.0


def test_gelu_is_exact_not_tanh_approximation():
    z = jnp.linspace(-5, 5, 11)
    np.testing.assert_allclose(ACTIVATIONS["gelu"].f(z), jax.nn.gelu(z, approximate=False),
                               rtol=1e-13, atol=1e-300)


# ----------------------------------------------------------------- forward
def test_forward_shapes_and_cast():
    model = jm.MLP((4, 6, 3), output="softmax", loss="cce")
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float32)
    yhat = jm.forward(model, params, np.ones((5, 4)))  # NumPy float64 in, float32 out
    assert yhat.shape == (5, 3) and yhat.dtype == jnp.float32
    np.testing.assert_allclose(yhat.sum(axis=1), 1.0, rtol=1e-6)


# ----------------------------------------------------------------- argument checks
@pytest.fixture(scope="module")
def setup():
    model = jm.MLP((3, 4, 2), output="softmax", loss="cce")
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    return model, params, jnp.ones((5, 3)), jnp.array([0, 1, 1, 0, 1])


ENTRY_POINTS = {
    "forward": lambda m, p, x, y, **k: jm.forward(m, p, x, **k),
    "loss": jm.loss,
    "backprop": jm.backprop,
    "value_and_grad": jm.value_and_grad,
    "check_gradients": jm.check_gradients,
}


def _bad_params(params, layer, key, value):
    out = [dict(p) for p in params]
    out[layer][key] = value
    return out


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_every_entry_point_checks_x_and_params(entry, setup):
    model, params, x, y = setup
    f = ENTRY_POINTS[entry]
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 3\), got \(5, 4\)"):
        f(model, params, jnp.ones((5, 4)), y)
    with pytest.raises(ValueError, match=r"x must be 2-D \(batch, n_in=3\), got shape \(3,\)"):
        f(model, params, jnp.ones((3,)), y)
    with pytest.raises(TypeError, match="x must be a float array, got dtype int"):
        f(model, params, jnp.ones((5, 3), jnp.int32), y)
    with pytest.raises(TypeError, match="x must be an array"):
        f(model, params, "abc", y)
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        f(model, params, x.at[0, 0].set(jnp.nan), y)
    with pytest.raises(ValueError, match="x must have at least one row"):
        f(model, params, jnp.ones((0, 3)), y[:0])
    with pytest.raises(ValueError, match=r"params\[0\]\['W'\] must have shape \(4, 3\), got \(3, 4\)"):
        f(model, _bad_params(params, 0, "W", params[0]["W"].T), x, y)
    with pytest.raises(ValueError, match=r"params\[1\]\['b'\] must have shape \(2,\), got \(2, 1\)"):
        f(model, _bad_params(params, 1, "b", params[1]["b"][:, None]), x, y)
    with pytest.raises(ValueError, match="params has 1 layers but the model"):
        f(model, params[:1], x, y)
    with pytest.raises(ValueError, match=r"params\[0\] must have keys \['W', 'b'\]"):
        f(model, _bad_params(params, 0, "gamma", params[0]["b"]), x, y)
    with pytest.raises(TypeError, match=r"params\[0\]\['W'\] must be a float array"):
        f(model, _bad_params(params, 0, "W", params[0]["W"].astype(jnp.int32)), x, y)
    with pytest.raises(TypeError, match="params must be a list"):
        f(model, {"W": 1}, x, y)
    with pytest.raises(TypeError, match="params must be a list .* got tuple"):
        f(model, tuple(params), x, y)
    with pytest.raises(ValueError, match=r"params\[1\]\['b'\] contains NaN \(1 of 2"):
        f(model, _bad_params(params, 1, "b", params[1]["b"].at[0].set(jnp.nan)), x, y)
    with pytest.raises(ValueError, match=r"params\[0\]\['W'\] contains Inf"):
        f(model, _bad_params(params, 0, "W", params[0]["W"].at[0, 0].set(jnp.inf)), x, y)
    with pytest.raises(TypeError, match="x must be a real array, got dtype complex128"):
        f(model, params, x.astype(jnp.complex128), y)


@pytest.mark.parametrize("entry", ["loss", "backprop", "value_and_grad", "check_gradients"])
def test_every_gradient_entry_point_checks_y(entry, setup):
    model, params, x, y = setup
    f = ENTRY_POINTS[entry]
    with pytest.raises(ValueError, match="y has batch 4 but x has batch 5"):
        f(model, params, x, y[:4])
    with pytest.raises(ValueError, match=r"class labels outside \[0, 2\): min 0, max 2"):
        f(model, params, x, y.at[0].set(2))
    with pytest.raises(ValueError, match=r"outside \[0, 2\): min -1"):
        f(model, params, x, y.at[0].set(-1))
    with pytest.raises(TypeError, match="must hold integer class labels"):
        f(model, params, x, y.astype(jnp.float64))
    with pytest.raises(ValueError, match=r"y must have shape \(5, 2\), got \(5, 3\)"):
        f(model, params, x, jnp.ones((5, 3)))
    with pytest.raises(ValueError, match="y contains NaN"):
        f(model, params, x, jnp.full((5, 2), jnp.nan))
    onehot = jax.nn.one_hot(y, 2, dtype=jnp.float64)
    with pytest.raises(ValueError, match=r"y\[0, 1\] = -1.0 is negative"):
        f(model, params, x, onehot.at[0].set(jnp.array([2.0, -1.0])))
    with pytest.raises(ValueError, match="row 3 sums to 0.5"):
        f(model, params, x, onehot.at[3].set(jnp.array([0.25, 0.25])))
    with pytest.raises(TypeError, match="y must be a real array, got dtype complex"):
        f(model, params, x, onehot + 0j)


def test_cce_targets_in_their_own_dtype_are_checked_before_any_cast():
    """Without x64 an int64 label 2³² would wrap to 0 in a cast to int32."""
    model = jm.MLP((3, 3), output="softmax", loss="cce")
    with jax.enable_x64(False):
        params = jm.init_params(jax.random.key(0), model)
        x = np.ones((3, 3), np.float32)
        for labels in (np.array([0, 1, 2**32], np.int64), [0, 1, 2**32],
                       np.array([0, 1, 2**31], np.uint64)):
            with pytest.raises(ValueError, match=r"outside \[0, 3\): min 0, max 2147483648|"
                                                 r"outside \[0, 3\): min 0, max 4294967296"):
                jm.loss(model, params, x, labels)
        soft = jax.nn.softmax(jax.random.normal(jax.random.key(1), (3, 3)))  # float32 rows
        assert np.isfinite(float(jm.loss(model, params, x, soft)))
        assert np.isfinite(float(jm.loss(model, params, x, np.array([0, 1, 2], np.int64))))


def test_y_shapes_accepted():
    reg = jm.MLP((3, 1))
    params = jm.init_params(jax.random.key(0), reg, dtype=jnp.float64)
    x = jnp.ones((4, 3))
    L1 = jm.loss(reg, params, x, jnp.arange(4.0))
    L2 = jm.loss(reg, params, x, jnp.arange(4.0)[:, None])
    L3 = jm.loss(reg, params, x, np.arange(4))  # integer targets are cast for regression
    assert float(L1) == float(L2) == float(L3)
    wide = jm.MLP((3, 2))
    with pytest.raises(ValueError, match=r"y must have shape \(4, 2\), got \(4,\)"):
        jm.loss(wide, jm.init_params(jax.random.key(0), wide), x, jnp.arange(4.0))
    bce = jm.MLP((3, 1), output="sigmoid", loss="bce")
    with pytest.raises(ValueError, match=r"y must lie in \[0, 1\]"):
        jm.loss(bce, jm.init_params(jax.random.key(0), bce), x, jnp.arange(4.0))


def test_labels_under_a_trace_are_not_checked_but_concrete_ones_are(setup):
    model, params, x, y = setup
    f = jax.jit(lambda p, x, y: jm.loss(model, p, x, y))
    assert jnp.isfinite(f(params, x, y))  # traced labels: no value check, no error


def test_training_extras_are_checked():
    drop = jm.MLP((3, 4, 1), dropout=0.5)
    params = jm.init_params(jax.random.key(0), drop)
    x, y = jnp.ones((2, 3)), jnp.ones((2, 1))
    with pytest.raises(ValueError, match=r"needs a PRNG key: pass key=jax.random.key"):
        jm.value_and_grad(drop, params, x, y)
    with pytest.raises(TypeError, match="key must be a jax.random.key"):
        jm.value_and_grad(drop, params, x, y, key=3)
    jm.forward(drop, params, x)  # inference: no key needed
    bn = jm.MLP((3, 4, 1), norm="batch")
    p_bn = jm.init_params(jax.random.key(0), bn)
    with pytest.raises(ValueError, match="inference mode needs its running statistics"):
        jm.forward(bn, p_bn, x)
    with pytest.raises(ValueError, match="state= is only for models with norm='batch'"):
        jm.forward(drop, params, x, state=jm.init_state(bn))
    with pytest.raises(ValueError, match=r"state\[0\]\['mean'\] must have shape \(4,\)"):
        jm.forward(bn, p_bn, x, state=[{"mean": jnp.zeros(3), "var": jnp.ones(4)}])
    with pytest.raises(ValueError, match=r"state\[0\]\['var'\] contains NaN"):
        jm.forward(bn, p_bn, x, state=[{"mean": jnp.zeros(4), "var": jnp.ones(4).at[2].set(jnp.nan)}])
    with pytest.raises(ValueError, match=r"state\[0\]\['var'\] holds a negative running variance"):
        jm.forward(bn, p_bn, x, state=[{"mean": jnp.zeros(4), "var": -jnp.ones(4)}])


def test_init_params_refuses_a_model_larger_than_memory():
    with pytest.raises(ValueError, match=r"need 4,000,004,000,000 bytes .* more than the"):
        jm.init_params(jax.random.key(0), jm.MLP((10**6, 10**6)), dtype=jnp.float32)
    assert jm.model.param_bytes(jm.MLP((3, 4, 2)), jnp.float32) == 4 * (12 + 4 + 8 + 2)
    with pytest.raises(TypeError, match="model must be a jaxmlp.MLP"):
        jm.model.param_bytes((3, 4, 2))
    with pytest.raises(TypeError, match="dtype must be a float dtype"):
        jm.model.param_bytes(jm.MLP((3, 4, 2)), jnp.int32)
