"""jaxmlp.diagnostics: hand-computed goldens on a tiny ReLU net, shapes, saturation, and the
vanishing gradients of a deep sigmoid net at Xavier initialisation."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp as jm
from jaxmlp import diagnostics as dg

F64 = jnp.float64


def _tiny_relu():
    """2 → 3 (relu) → 1 (identity, mse); unit 2 is dead on the batch, unit 1 half-active.

    z¹ = x W¹ᵀ: example 0 → (1, 2, −3), example 1 → (3, −1, −2); a¹ = (1, 2, 0), (3, 0, 0)
    ŷ = a¹ W²ᵀ + ½ = 5.5, 3.5;  y = 1, 0;  L = ((4.5)² + (3.5)²)/2 = 16.25
    δ² = 2(ŷ − y)/N = (4.5, 3.5);  δ¹ = δ² W² ⊙ f′(z¹) = (4.5, 9, 0), (3.5, 0, 0)
    """
    model = jm.MLP((2, 3, 1), activation="relu", output="identity", loss="mse")
    params = [
        {"W": jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], F64), "b": jnp.zeros(3, F64)},
        {"W": jnp.array([[1.0, 2.0, 3.0]], F64), "b": jnp.array([0.5], F64)},
    ]
    x = np.array([[1.0, 2.0], [3.0, -1.0]])
    y = np.array([[1.0], [0.0]])
    return model, params, x, y


def test_hand_computed_relu_golden():
    model, params, x, y = _tiny_relu()
    r = dg.gradient_report(model, params, x, y)
    assert r.loss == pytest.approx(16.25, rel=1e-12)
    # dW¹ = δ¹ᵀx = [[15, 5.5], [9, 18], [0, 0]], db¹ = (8, 9, 0); dW² = (15, 9, 0), db² = 8
    np.testing.assert_allclose(r.weight_grad_norm, [math.sqrt(660.25), math.sqrt(306.0)],
                               rtol=1e-12)
    np.testing.assert_allclose(r.bias_grad_norm, [math.sqrt(145.0), 8.0], rtol=1e-12)
    np.testing.assert_allclose(r.delta_norm, [math.sqrt(101.25) + 3.5, 8.0], rtol=1e-12)
    np.testing.assert_allclose(r.dead_fraction, [1 / 3], rtol=1e-12)
    np.testing.assert_allclose(r.saturated_fraction, [0.5], rtol=1e-12)  # 3 of 6 entries off
    np.testing.assert_allclose(r.mean_abs_derivative, [0.5], rtol=1e-12)
    assert r.activations == ("relu",)
    assert r.first_to_last == pytest.approx(math.sqrt(660.25 / 306.0), rel=1e-12)


def test_norms_agree_with_backprop():
    model = jm.MLP((4, 6, 5, 3), activation=("tanh", "relu"), output="softmax", loss="cce",
                   l2=0.1)
    params = jm.init_params(jax.random.key(1), model, dtype=F64)
    x = np.random.default_rng(2).normal(size=(7, 4))
    y = np.arange(7) % 3
    out = jax.device_get(jm.backprop(model, params, x, y))
    r = dg.gradient_report(model, params, x, y)
    for l, g in enumerate(out.grads):
        assert r.weight_grad_norm[l] == pytest.approx(np.linalg.norm(g["W"]), rel=1e-12)
        assert r.bias_grad_norm[l] == pytest.approx(np.linalg.norm(g["b"]), rel=1e-12)
        per_example = 7 * np.linalg.norm(out.deltas[l], axis=1)  # ‖∂ℓᵢ/∂zᵢ‖
        assert r.delta_norm[l] == pytest.approx(per_example.mean(), rel=1e-12)
    assert r.loss == pytest.approx(float(out.loss), rel=1e-12)


def test_shapes_and_table():
    model = jm.MLP((3, 8, 8, 8, 2), activation="sigmoid", output="identity", loss="mse")
    params = jm.init_params(jax.random.key(0), model, dtype=F64)
    x = np.ones((5, 3))
    y = np.zeros((5, 2))
    r = dg.gradient_report(model, params, x, y)
    assert r.weight_grad_norm.shape == r.bias_grad_norm.shape == r.delta_norm.shape == (4,)
    for field in (r.dead_fraction, r.saturated_fraction, r.mean_abs_derivative):
        assert field.shape == (3,)
        assert np.all((field >= 0) & (field <= 1))
    rows = r.rows()
    assert len(rows) == 4 and rows[-1]["dead_fraction"] is None
    text = str(r)
    assert len(text.splitlines()) == 1 + 4 + 1 and "sigmoid" in text


def test_no_hidden_layer():
    model = jm.MLP((3, 1))
    params = jm.init_params(jax.random.key(0), model, dtype=F64)
    r = dg.gradient_report(model, params, np.ones((4, 3)), np.zeros(4))
    assert r.weight_grad_norm.shape == (1,)
    assert r.dead_fraction.shape == r.saturated_fraction.shape == (0,)
    assert r.first_to_last == 1.0


def test_sigmoid_and_tanh_saturation():
    # one hidden unit per pre-activation u ∈ {0, 10, −10, 3}: σ′ = ¼, 4.5e−5, 4.5e−5, 0.045
    W = jnp.array([[1.0], [10.0], [-10.0], [3.0]], F64)
    for act, saturated in (("sigmoid", 0.5), ("tanh", 0.5)):
        model = jm.MLP((1, 4, 1), activation=act)
        params = [{"W": W, "b": jnp.zeros(4, F64)},
                  {"W": jnp.ones((1, 4), F64), "b": jnp.zeros(1, F64)}]
        x = np.array([[0.0], [1.0]])  # example 0: every u = 0 (f′ max); example 1: u = W
        r = dg.gradient_report(model, params, x, np.zeros(2))
        # example 1 saturates units 1 and 2 (|u| = 10): 2 of 8 entries; tanh′(3) ≈ 0.0099
        assert r.saturated_fraction[0] == pytest.approx(2 / 8), act
        assert r.dead_fraction[0] == 0.0
    derivs = (jnp.array([[0.5, 1e-4], [2e-3, 1e-5]]),)
    np.testing.assert_allclose(dg.saturated_fraction(derivs, 1e-3), [0.5])
    np.testing.assert_allclose(dg.saturated_fraction(derivs, 1e-2), [0.75])
    np.testing.assert_allclose(dg.dead_fraction((jnp.array([[0.0, 1.0], [0.0, 0.0]]),)), [0.5])


def test_leaky_relu_is_never_dead():
    model = jm.MLP((2, 3, 1), activation="leaky_relu")
    _, params, x, y = _tiny_relu()
    r = dg.gradient_report(model, params, x, y)
    assert r.dead_fraction[0] == 0.0


def test_vanishing_gradients_deep_sigmoid_xavier():
    """10 dense layers, sigmoid, Xavier: σ′ ≤ ¼ shrinks the backward signal each layer."""
    sizes = (8,) + (32,) * 9 + (1,)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(64, 8)), rng.normal(size=(64, 1))
    sig = jm.MLP(sizes, activation="sigmoid", init="xavier_uniform")
    r = dg.gradient_report(sig, jm.init_params(jax.random.key(0), sig, dtype=F64), x, y)
    assert r.weight_grad_norm[0] < 1e-3 * r.weight_grad_norm[-1]
    assert r.delta_norm[0] < 1e-3 * r.delta_norm[-1]
    assert np.all(np.diff(r.delta_norm) > 0)  # shrinks at every layer going backwards
    assert np.all(r.mean_abs_derivative <= 0.25)
    relu = jm.MLP(sizes, activation="relu", init="he_normal")
    r2 = dg.gradient_report(relu, jm.init_params(jax.random.key(0), relu, dtype=F64), x, y)
    assert r2.first_to_last > 1e3 * r.first_to_last


def test_dropout_and_batch_norm():
    model = jm.MLP((3, 6, 1), dropout=0.5)
    params = jm.init_params(jax.random.key(0), model, dtype=F64)
    x, y = np.ones((4, 3)), np.zeros(4)
    with pytest.raises(ValueError, match="key"):
        dg.gradient_report(model, params, x, y)
    r = dg.gradient_report(model, params, x, y, key=jax.random.key(1))
    assert np.isfinite(r.loss)
    bn = jm.MLP((3, 6, 1), norm="batch")
    pbn = jm.init_params(jax.random.key(0), bn, dtype=F64)
    xb = np.random.default_rng(5).normal(size=(8, 3))
    r = dg.gradient_report(bn, pbn, xb, np.zeros(8), state=jm.init_state(bn, dtype=F64))
    assert r.dead_fraction.shape == (1,)


def test_validation():
    model, params, x, y = _tiny_relu()
    with pytest.raises(ValueError, match=r"\(batch, 2\)"):
        dg.gradient_report(model, params, np.ones((2, 5)), y)
    with pytest.raises(ValueError, match="batch"):
        dg.gradient_report(model, params, x, np.zeros((3, 1)))
    with pytest.raises(ValueError, match="shape"):
        dg.gradient_report(model, params[::-1], x, y)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="gradient_report: threshold must be a finite "
                                             "number > 0"):
            dg.gradient_report(model, params, x, y, threshold=bad)
    for bad in ("1e-3", True, None):  # a wrong type
        with pytest.raises(TypeError, match="gradient_report: threshold must be a finite "
                                            "number > 0"):
            dg.gradient_report(model, params, x, y, threshold=bad)
