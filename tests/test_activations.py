"""activations: custom (f, f′) pairs, checked against jax.grad, registered or passed to MLP.

One model (a registered softplus and an unregistered swish, one per hidden layer) is
shared by the training, gradient-check and checkpoint tests, so the file compiles only a
handful of programs.  Every name registered here starts with `t_` and is unregistered
by the fixtures, so other test files (which use "swish" as an unknown name) are not
affected.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp as jm
from jaxmlp import activations as A


def _softplus_df(z):            # one-argument df: f′(z) = σ(z)
    return jax.nn.sigmoid(z)


def _swish(z):
    return z * jax.nn.sigmoid(z)


def _swish_df(z, a):            # (z, a) df: σ(z)·(1 + z·(1 − σ(z)))
    s = jax.nn.sigmoid(z)
    return s * (1 + z * (1 - s))


@pytest.fixture(scope="module")
def softplus():
    act = A.register("t_softplus", jax.nn.softplus, _softplus_df)
    yield act
    A.unregister("t_softplus")


@pytest.fixture(scope="module")
def swish():
    return A.custom("t_swish", _swish, _swish_df)


@pytest.fixture(scope="module")
def model(softplus, swish):
    return jm.MLP((3, 6, 5, 1), activation=("t_softplus", swish))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3))
    y = np.sin(x.sum(axis=1, keepdims=True))
    return x, y


@pytest.fixture
def cleanup():
    """Names registered by a test are removed after it."""
    before = set(A.registered())
    yield
    for name in set(A.registered()) - before:
        A.unregister(name)


# ------------------------------------------------------------------ the check against jax.grad
def test_wrong_derivative_is_refused_with_the_points(cleanup):
    with pytest.raises(ValueError) as e:
        A.register("t_bad", jnp.tanh, lambda z, a: 1 - a)       # tanh′ is 1 − a²
    msg = str(e.value)
    assert "activation 't_bad': df is not the derivative of f" in msg
    assert "at 18 of the 21 grid points" in msg                 # right at 0, 20 and 50 only
    assert "z = 0.5: df gives 0.5378828427, jax.grad(f) gives 0.786447733" in msg
    assert "z = 0:" not in msg                                  # 1 − tanh 0 = 1 = tanh′(0)
    assert "t_bad" not in A.registered()


def test_wrong_derivative_off_by_a_factor_is_refused(cleanup):
    with pytest.raises(ValueError, match=r"z = 1: df gives 0\.3655\d*, jax\.grad\(f\) gives "
                                         r"0\.7310\d*"):
        A.custom("t_half", jax.nn.softplus, lambda z: 0.5 * jax.nn.sigmoid(z))


def test_right_derivatives_register(softplus, swish):
    assert softplus.name == "t_softplus" and "t_softplus" in A.registered()
    assert A.get("t_softplus") is softplus and repr(softplus) == "Activation('t_softplus', registered)"
    assert swish.name == "t_swish" and "t_swish" not in A.registered()
    z = jnp.linspace(-4.0, 4.0, 9)[None, :]
    np.testing.assert_allclose(softplus.df(z, softplus.f(z)), jax.nn.sigmoid(z), rtol=1e-15)
    g = jnp.ones_like(z)
    np.testing.assert_allclose(swish.vjp(z, swish.f(z), g),
                               jax.vmap(jax.grad(_swish))(z[0])[None, :], rtol=1e-12)


def test_one_and_two_argument_df_are_told_apart_by_signature(cleanup):
    one = A.custom("t_one", jax.nn.softplus, lambda z: jax.nn.sigmoid(z))
    two = A.custom("t_two", jax.nn.softplus, lambda z, a: 1 - jnp.exp(-a))   # σ = 1 − e⁻ᵃ
    opt = A.custom("t_opt", jax.nn.softplus, lambda z, a=None: jax.nn.sigmoid(z))
    z = jnp.array([[-2.0, 0.0, 3.0]])
    for act in (one, two, opt):
        np.testing.assert_allclose(act.df(z, act.f(z)), jax.nn.sigmoid(z), rtol=1e-12)
    with pytest.raises(TypeError, match=r"df must take \(z, a\) or \(z\)"):
        A.custom("t_three", jax.nn.softplus, lambda z, a, b: z)


def test_kink_accepts_either_one_sided_derivative_and_nothing_else(cleanup):
    # jax.nn.relu's autodiff gives 0 at 0; a hand-written (z >= 0) gives 1: both are
    # one-sided derivatives of the kink, so both are accepted
    A.custom("t_relu0", jax.nn.relu, lambda z: (z > 0).astype(z.dtype))
    A.custom("t_relu1", jax.nn.relu, lambda z: (z >= 0).astype(z.dtype))
    # jnp.maximum splits the tie: jax.grad gives ½ at 0, also accepted
    A.custom("t_relu_half", lambda z: jnp.maximum(z, 0.0),
             lambda z: jnp.where(z == 0, 0.5, (z > 0).astype(z.dtype)))
    with pytest.raises(ValueError, match=r"z = 0: df gives 0\.3, jax\.grad\(f\) gives 0 "
                                         r"\(a kink: one-sided derivatives 0 and 1\)"):
        A.custom("t_relu_bad", jax.nn.relu,
                 lambda z: jnp.where(z == 0, 0.3, (z > 0).astype(z.dtype)))


def test_smooth_point_is_no_kink(cleanup):
    # softplus is smooth at 0: σ(0) = ½ is the only right value there
    with pytest.raises(ValueError, match=r"1 of the 21 grid points:\n  z = 0: df gives 1, "
                                         r"jax\.grad\(f\) gives 0\.5$"):
        A.custom("t_sp0", jax.nn.softplus,
                 lambda z: jnp.where(z == 0, 1.0, jax.nn.sigmoid(z)))


@pytest.mark.parametrize("f,df,error,match", [
    (jax.nn.softmax, lambda z: z, ValueError, "f is not elementwise: f of the grid as a row "
                                              "and as a column differ"),
    (lambda z: z - jnp.mean(z), lambda z: jnp.ones_like(z), ValueError,
     "f is not elementwise: f of the grid and f of each point alone differ"),
    (lambda z: jnp.sum(z, axis=-1), lambda z: z, ValueError,
     r"f must be elementwise and keep its input's shape \(1, 21\), got \(1,\)"),
    (jnp.log, lambda z: 1 / z, ValueError, r"f is not finite at z = -50 \(nan\), .*0 \(-inf\)"),
    (jnp.tanh, lambda z: 1 / jnp.where(z == 0, 0.0, 1.0), ValueError,
     r"df is not finite at z = 0 \(inf\)"),
    (jnp.tanh, lambda z: 1.0, ValueError, "df must be elementwise and keep its input's shape"),
    (lambda z: z * np.float64(2.0), lambda z: jnp.full_like(z, 2.0), ValueError,
     "must keep float32 as float32 .* got f: float64"),
    (lambda z: jnp.sqrt(jnp.abs(z)), lambda z: jnp.sign(z) * 0.5 / jnp.sqrt(jnp.abs(z) + 1.0),
     ValueError, r"jax.grad\(f\) is not finite at z = 0 \(inf\)"),
    (lambda z: np.tanh(np.asarray(z)), lambda z: 1 - jnp.tanh(z) ** 2, ValueError,
     r"jax.vmap\(f\) raised TracerArrayConversionError: .* write them with jax.numpy"),
    (lambda z: z if z > 0 else 0.0, lambda z: z, ValueError, r"f\(z\) raised ValueError: The truth value of an array"),
    ("tanh", lambda z: z, TypeError, "f must be callable"),
    (jnp.tanh, None, TypeError, "df must be callable"),
    (jnp.tanh, 0.5, TypeError, "df must be callable"),
])
def test_bad_pairs_are_refused(f, df, error, match, cleanup):
    with pytest.raises(error, match=match):
        A.register("t_x", f, df)
    assert "t_x" not in A.registered()


# ------------------------------------------------------------------ names and the registry
@pytest.mark.parametrize("name,error,match", [
    ("relu", ValueError, "'relu' is a built-in activation and cannot be replaced"),
    ("softmax", ValueError, "built-in"),
    ("", ValueError, "non-empty Python identifier"),
    ("my act", ValueError, "non-empty Python identifier"),
    ("a,b", ValueError, "non-empty Python identifier"),
    ("lambda", ValueError, "non-empty Python identifier"),
    (3, TypeError, r"(register|custom): name must be a str, .* got 3$"),
    (None, TypeError, "got None$"),
])
def test_bad_names_are_refused(name, error, match):
    for build in (A.register, A.custom):
        with pytest.raises(error, match=match):
            build(name, jnp.tanh, lambda z, a: 1 - a * a)


def test_builtin_cannot_be_overwritten_even_when_asked():
    with pytest.raises(ValueError, match="built-in"):
        A.register("tanh", jnp.tanh, lambda z, a: 1 - a * a, overwrite=True)
    assert A.get("tanh") is A.ACTIVATIONS["tanh"]


def test_name_clash_overwrite_and_unregister(softplus, cleanup):
    with pytest.raises(ValueError, match="'t_softplus' is already registered; pass overwrite=True"):
        A.register("t_softplus", jax.nn.softplus, _softplus_df)
    with pytest.raises(ValueError, match="'t_softplus' is already registered; pick another name"):
        A.custom("t_softplus", jax.nn.softplus, _softplus_df)

    first = A.register("t_act", jnp.tanh, lambda z, a: 1 - a * a)
    m1 = jm.MLP((2, 3, 1), activation="t_act")
    second = A.register("t_act", jnp.sin, jnp.cos, overwrite=True)
    m2 = jm.MLP((2, 3, 1), activation="t_act")
    assert A.get("t_act") is second
    # each model keeps what it resolved; the two are different (jit caches never mix them)
    assert m1.activation_fns == (first,) and m2.activation_fns == (second,)
    assert m1.activation == m2.activation == "t_act" and m1 != m2 and hash(m1) != hash(m2)

    assert A.unregister("t_act") is second
    assert "t_act" not in A.registered() and not A.is_known("t_act")
    assert m2.activation_fns == (second,)           # still built and usable
    with pytest.raises(ValueError, match="MLP: activation must be one of .* got 't_act'"):
        jm.MLP((2, 3, 1), activation="t_act")
    with pytest.raises(ValueError, match="no activation 't_act' is registered"):
        A.unregister("t_act")
    with pytest.raises(ValueError, match="'relu' is a built-in activation and cannot be unregistered"):
        A.unregister("relu")


def test_hidden_names_and_is_known(softplus):
    names = A.hidden_names()
    assert names[:len(A.HIDDEN_ACTIVATIONS)] == A.HIDDEN_ACTIVATIONS
    assert "t_softplus" in names and "softmax" not in names
    assert A.is_known("softmax") and A.is_known("relu") and A.is_known("t_softplus")
    assert not A.is_known("t_nope") and not A.is_known(3) and not A.is_known(None)


# ------------------------------------------------------------------ MLP with custom activations
def test_mlp_takes_names_and_activation_objects(softplus, swish, model):
    assert model.activation == ("t_softplus", swish)
    assert model.hidden_activations == ("t_softplus", "t_swish")
    assert model.activation_fns == (softplus, swish)
    assert model.to_dict()["activation"] == ["t_softplus", "t_swish"]
    assert hash(model) == hash(jm.MLP((3, 6, 5, 1), activation=("t_softplus", swish)))
    # the registered object stands for its name, a built-in object for its name
    assert jm.MLP((3, 4, 1), activation=softplus) == jm.MLP((3, 4, 1), activation="t_softplus")
    assert jm.MLP((3, 4, 1), activation=A.get("gelu")).activation == "gelu"
    single = jm.MLP((3, 4, 4, 1), activation=swish)
    assert single.activation is swish and single.hidden_activations == ("t_swish", "t_swish")
    # as the output activation too
    out = jm.MLP((3, 4, 1), output=swish)
    assert out.output_fn is swish and out.to_dict()["output"] == "t_swish"
    assert jm.MLP((3, 4, 1), output="t_softplus").output == "t_softplus"


def test_mlp_refuses_unchecked_or_non_elementwise_activations(swish):
    forged = A.Activation("t_forged", jnp.tanh, lambda z, a: a, lambda z, a, g: g * a)
    with pytest.raises(ValueError, match="was not built by jaxmlp.activations.custom"):
        jm.MLP((3, 4, 1), activation=forged)
    with pytest.raises(ValueError, match="was not built by jaxmlp.activations.custom"):
        jm.MLP((3, 4, 1), output=forged)
    with pytest.raises(ValueError, match="softmax is output-only"):
        jm.MLP((3, 4, 1), activation=A.get("softmax"))
    with pytest.raises(ValueError, match="loss='bce' needs output='sigmoid'"):
        jm.MLP((3, 4, 1), output=swish, loss="bce")
    with pytest.raises(ValueError, match="MLP: output must be one of .* got 't_nope'"):
        jm.MLP((3, 4, 1), output="t_nope")


def test_auto_init_uses_he_for_relu_like_custom_activations(softplus, swish, cleanup):
    assert softplus.relu_like and swish.relu_like
    smooth_step = A.custom("t_tanh", jnp.tanh, lambda z, a: 1 - a * a)
    assert not smooth_step.relu_like
    assert A.custom("t_tanh_he", jnp.tanh, lambda z, a: 1 - a * a, relu_like=True).relu_like
    m = jm.MLP((3, 4, 4, 1), activation=("t_softplus", smooth_step))
    assert [jm.model.auto_scheme(m, l) for l in range(3)] == [
        "he_normal", "he_normal", "xavier_uniform"]


def test_custom_model_trains_and_passes_check_gradients(model, data):
    x, y = data
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    params, history = jm.fit(model, params, jm.optim.adam(1e-2), x, y, epochs=8, batch_size=8,
                             key=jax.random.key(1))
    losses = history["train_loss"]
    assert losses[-1] < 0.8 * losses[0] and all(np.isfinite(losses))
    assert sum(b < a for a, b in zip(losses, losses[1:])) >= len(losses) - 2
    report = jm.check_gradients(model, params, x, y)
    assert report.ok and report.max_rel_err <= 1e-9, str(report)


# ------------------------------------------------------------------ checkpoints
def test_checkpoint_records_custom_activations_and_refuses_another_function(
        model, swish, tmp_path, cleanup):
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    path = jm.checkpoint.save(tmp_path / "c.npz", params=params, model=model)
    # the given model supplies its unregistered swish
    ckpt = jm.checkpoint.load(path, model=model)
    assert ckpt.model == model
    # without a model, the names go through the registry: t_swish is not registered
    with pytest.raises(jm.checkpoint.CheckpointError, match="activation must be one of .* got 't_swish'"):
        jm.checkpoint.load(path)
    # registered under that name with the same function: rebuilt and accepted
    A.register("t_swish", _swish, _swish_df)
    rebuilt = jm.checkpoint.load(path).model
    assert rebuilt.hidden_activations == ("t_softplus", "t_swish")
    # another function under the same name is refused, not used
    A.register("t_swish", jnp.tanh, lambda z, a: 1 - a * a, overwrite=True)
    with pytest.raises(jm.checkpoint.CheckpointError,
                       match=r"saved with another activation 't_swish' than the one used now: "
                             r"at z = -50 its f was"):
        jm.checkpoint.load(path)
    # so is a given model whose (unregistered) activation of that name is another one
    tanh_named_swish = A.unregister("t_swish")
    other = jm.MLP((3, 6, 5, 1), activation=("t_softplus", tanh_named_swish))
    with pytest.raises(jm.checkpoint.CheckpointError, match="another activation 't_swish'"):
        jm.checkpoint.load(path, model=other)

def test_checkpoint_refuses_two_activations_of_one_name(swish, tmp_path):
    twin = A.custom("t_swish", lambda z: z * jax.nn.sigmoid(z), _swish_df)   # another f object
    m = jm.MLP((3, 4, 4, 1), activation=(swish, twin))
    params = jm.init_params(jax.random.key(0), m)
    with pytest.raises(ValueError, match="two different activations named 't_swish'"):
        jm.checkpoint.save(tmp_path / "c.npz", params=params, model=m)
