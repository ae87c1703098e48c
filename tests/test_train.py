"""make_train_step and fit: equivalence with autodiff, early stopping, divergence, determinism."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp as jm
from jaxmlp import optim, train
from jaxmlp.train import DivergenceError, _permutation, _run_epoch


def regression_data(n=96, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3)).astype(dtype)
    y = (np.sin(x[:, :1]) + 0.5 * x[:, 1:2] * x[:, 2:3]).astype(dtype)
    return x, y


@pytest.fixture(scope="module")
def reg():
    model = jm.MLP((3, 16, 16, 1), activation="tanh")
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    x, y = regression_data()
    return model, params, x, y


@pytest.fixture(scope="module")
def adam():
    return optim.adam(1e-2)


def test_manual_and_autodiff_steps_give_same_params(reg):
    model, params, x, y = reg
    opt = optim.adam(1e-2)
    steps = {g: jm.make_train_step(model, opt, grad=g, donate=False) for g in ("manual", "autodiff")}
    results = {}
    for g, step in steps.items():
        p, s = params, opt.init(params)
        for i in range(20):
            sl = slice((i * 16) % 96, (i * 16) % 96 + 16)
            p, s, loss = step(p, s, x[sl], y[sl])
        results[g] = p
    chex.assert_trees_all_close(results["manual"], results["autodiff"], rtol=1e-10, atol=1e-13)


def test_step_is_jitted_and_does_not_retrace(reg):
    model, params, x, y = reg
    opt = optim.sgd(0.1)
    step = jm.make_train_step(model, opt)
    p, s = jax.tree_util.tree_map(jnp.copy, params), opt.init(params)
    p, s, l1 = step(p, s, x[:16], y[:16])
    p, s, l2 = step(p, s, x[16:32], y[16:32])
    assert step._cache_size() == 1
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 3\)"):
        step(p, s, x[:16, :2], y[:16])


def test_fit_lowers_loss_and_is_deterministic(reg, adam):
    model, params, x, y = reg
    kw = dict(epochs=15, batch_size=16, key=jax.random.key(3))
    p1, h1 = jm.fit(model, params, adam, x, y, **kw)
    p2, h2 = jm.fit(model, params, adam, x, y, **kw)
    assert h1["train_loss"][-1] < 0.5 * h1["train_loss"][0]
    assert len(h1["train_loss"]) == 15 and h1["val_loss"] == [] and h1["epochs_run"] == 15
    for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p2)):
        np.testing.assert_array_equal(a, b)  # bitwise
    p3, _ = jm.fit(model, params, adam, x, y, **dict(kw, key=jax.random.key(4)))
    assert not np.array_equal(p1[0]["W"], p3[0]["W"])


def test_fit_compiles_once(reg, adam):
    model, params, x, y = reg
    kw = dict(epochs=2, batch_size=32, key=jax.random.key(0))
    jm.fit(model, params, adam, x, y, **kw)
    before = _run_epoch._cache_size()
    jm.fit(model, params, adam, x + 1.0, y, **kw)  # same shapes, other values
    assert _run_epoch._cache_size() == before


@pytest.mark.parametrize("case", ["plain", "callback_stop", "diverged"])
def test_one_epoch_ahead_changes_no_result(reg, adam, monkeypatch, case):
    # fit dispatches epoch e + 1 before reading epoch e back when epochs are short
    # (_AHEAD_S); never (0) and always (inf) must give the same params and history, also
    # when epoch e stops training (its speculative successor is dropped) or diverges
    model, params, x, y = reg
    opt, kw = adam, dict(epochs=8, batch_size=16, key=jax.random.key(3))
    if case == "callback_stop":
        kw["callback"] = lambda e, logs: (seen.append(e), e == 3)[1]
    if case == "diverged":
        opt, y = optim.sgd(1e6), y * 1e3
        kw["on_divergence"] = "stop"
    runs = []
    for ahead in (0.0, float("inf")):
        monkeypatch.setattr(train, "_AHEAD_S", ahead)
        seen = []
        p, h = jm.fit(model, params, opt, x, y, **kw)
        assert len(h["epoch_time"]) == h["epochs_run"]
        runs.append((p, {k: v for k, v in h.items() if k != "epoch_time"}, seen))
    (p0, h0, s0), (p1, h1, s1) = runs
    chex.assert_trees_all_equal(p0, p1)  # bitwise
    assert h0 == h1 and s0 == s1
    if case == "callback_stop":
        assert h0["epochs_run"] == 4 and h0["stopped_early"] and s0 == [0, 1, 2, 3]
    if case == "diverged":
        assert "diverged" in h0 and 2 <= h0["epochs_run"] < 8  # after epochs ran ahead


def test_matmul_precision_is_the_callers(reg):
    # jaxmlp sets no precision on its dots: jax.default_matmul_precision (the GPU/TPU
    # switch between TF32/bf16 passes and true float32) reaches every one of them
    model, params, x, y = reg
    opt = optim.sgd(0.1)
    step = jm.make_train_step(model, opt)
    args = (params, opt.init(params), x[:16], y[:16])
    plain = step.lower(*args).as_text()
    with jax.default_matmul_precision("highest"):
        highest = step.lower(*args).as_text()
    n_dots = highest.count("stablehlo.dot_general")
    assert n_dots == 8 and "HIGHEST" not in plain  # forward 3, backward dW 3 and δ 2
    assert highest.count("HIGHEST") == 2 * n_dots  # both operands of every dot


def test_epoch_permutation_is_a_uniform_permutation():
    # fit's shuffle packs the index into the sort key's low bits (one single-key sort a
    # round): every n gives a permutation, and all 24 orders of 4 items come out equally
    # often (chi-squared, 23 degrees of freedom: 60 is beyond the 99.99th percentile)
    for n in (1, 2, 3, 1000, 1280, 4097):
        p = np.asarray(jax.jit(_permutation, static_argnums=1)(jax.random.key(n), n))
        assert p.dtype == np.int32 and np.array_equal(np.sort(p), np.arange(n)), n
    keys = jax.random.split(jax.random.key(7), 24_000)
    perms = np.asarray(jax.jit(jax.vmap(lambda k: _permutation(k, 4)))(keys))
    codes = perms @ np.array([64, 16, 4, 1])
    counts = np.array([np.sum(codes == c) for c in np.unique(codes)])
    assert len(counts) == 24
    chi2 = float(np.sum((counts - 1000.0) ** 2 / 1000.0))
    assert chi2 < 60.0, chi2


def test_guarded_epoch_equals_the_fast_epoch_when_all_is_finite(reg, adam):
    # fit re-runs a non-finite epoch guarded; on finite data both programs must agree, up
    # to rounding (XLA fuses the two programs differently: a few ulp, here ≤ 6e-17)
    model, params, x, y = reg
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    static = dict(model=model, optimizer=adam, grad="manual", batch_size=16, n_batches=6,
                  unroll=1, mesh=None)
    args = (params, adam.init(params), None, xj, yj, None, None, jax.random.key(5), np.int32(2))
    fast = _run_epoch(*args, **static)
    slow = _run_epoch(*args, **static, guarded=True)
    assert int(fast.bad_step) == int(slow.bad_step) == -1
    chex.assert_trees_all_close(fast.params, slow.params, rtol=1e-13, atol=1e-15)
    chex.assert_trees_all_close(fast.opt_state, slow.opt_state, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(float(fast.train_loss), float(slow.train_loss), rtol=1e-13)


def test_full_batch_and_partial_batch_dropped(reg):
    model, params, x, y = reg
    opt = optim.sgd(0.05)
    seen = []
    jm.fit(model, params, opt, x[:50], y[:50], epochs=1, batch_size=None, key=jax.random.key(0))
    # full batch gradient descent is exactly one step on the whole set
    p_fit, _ = jm.fit(model, params, opt, x[:50], y[:50], epochs=3, batch_size=None,
                      key=jax.random.key(0))
    p = params
    for _ in range(3):
        _, g = jm.value_and_grad(model, p, x[:50], y[:50])
        p = jax.tree_util.tree_map(lambda a, b: a - 0.05 * b, p, g)
    chex.assert_trees_all_close(p_fit, p, rtol=1e-12)
    _, h = jm.fit(model, params, opt, x[:50], y[:50], epochs=1, batch_size=16,
                  key=jax.random.key(0), callback=lambda e, logs: seen.append(logs))
    assert len(seen) == 1 and set(seen[0]) == {"train_loss", "val_loss", "epoch_time"}


def test_early_stopping_restores_best_epoch(adam):
    # a wide net on few noisy points over-fits: validation loss turns up
    model = jm.MLP((3, 64, 64, 1), activation="relu")
    params = jm.init_params(jax.random.key(1), model, dtype=jnp.float64)
    x, y = regression_data(40, seed=1)
    y = y + np.random.default_rng(2).normal(0, 0.5, y.shape)
    xv, yv = regression_data(200, seed=3)
    best_params = {}

    def remember(epoch, logs):
        best_params[epoch] = logs["val_loss"]

    p, h = jm.fit(model, params, optim.adam(3e-2), x, y, epochs=300, batch_size=8,
                  key=jax.random.key(0), validation=(xv, yv), patience=5, callback=remember)
    assert h["stopped_early"] and h["epochs_run"] < 300
    best = int(np.argmin(h["val_loss"]))
    assert h["best_epoch"] == best and h["epochs_run"] == best + 1 + 5
    # the returned params are the best epoch's: their validation loss is the minimum
    val = float(jm.loss(model, p, xv, yv, train=False))
    assert val == pytest.approx(min(h["val_loss"]), rel=1e-12)


def test_divergence_is_reported_and_params_stay_finite(reg):
    model, params, x, y = reg
    huge = optim.sgd(1e6)
    with pytest.raises(DivergenceError, match=r"epoch \d+, step \d+.*smaller learning rate") as e:
        jm.fit(model, params, huge, x, y * 1e3, epochs=10, batch_size=16, key=jax.random.key(0))
    err = e.value
    assert f"epoch {err.epoch}, step {err.step}" in str(err)
    assert len(err.history["train_loss"]) == err.epoch  # the finished epochs, all finite
    assert all(np.isfinite(err.history["train_loss"]))
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree_util.tree_leaves(err.params))
    p, h = jm.fit(model, params, huge, x, y * 1e3, epochs=10, batch_size=16,
                  key=jax.random.key(0), on_divergence="stop")
    assert h["diverged"] == {"epoch": err.epoch, "step": err.step}
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree_util.tree_leaves(p))


@pytest.mark.parametrize("bad,match", [
    (dict(x="nan"), "x contains NaN or Inf"),
    (dict(y="inf"), "y contains NaN or Inf"),
    (dict(batch_size=0), "batch_size must be a positive int"),
    (dict(batch_size=2.5), "batch_size must be a positive int"),
    (dict(epochs=0), "epochs must be a positive int"),
    (dict(patience=3), "patience .* needs validation"),
    (dict(min_delta=-1.0), "min_delta must be"),
    (dict(grad="numeric"), "grad must be one of"),
    (dict(on_divergence="ignore"), "on_divergence must be"),
    (dict(validation=(np.ones((4, 2)), np.ones((4, 1)))), r"validation x must have shape \(batch, 3\)"),
    (dict(validation=(np.ones((4, 3)), np.full((4, 1), np.nan))), "validation y contains NaN"),
])
def test_fit_refuses_bad_arguments(reg, adam, bad, match):
    model, params, x, y = reg
    kw = dict(epochs=1, batch_size=16, key=jax.random.key(0))
    if bad.get("x") == "nan":
        x = x.copy(); x[3, 1] = np.nan; bad = {}
    elif bad.get("y") == "inf":
        y = y.copy(); y[5, 0] = np.inf; bad = {}
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
        jm.fit(model, params, adam, x, y, **kw)


def test_fit_refuses_bad_types(reg, adam):
    model, params, x, y = reg
    with pytest.raises(TypeError, match="optimizer must be a jaxmlp.optim.GradientTransformation"):
        jm.fit(model, params, "adam", x, y, epochs=1, batch_size=4, key=jax.random.key(0))
    with pytest.raises(TypeError, match="key must be a jax.random.key"):
        jm.fit(model, params, adam, x, y, epochs=1, batch_size=4, key=0)


# ----------------------------------------------------------------- with norm and dropout
@pytest.mark.parametrize("extra", [dict(norm="batch"), dict(norm="layer"), dict(dropout=0.2),
                                   dict(norm="batch", dropout=0.1, l2=1e-3, l1=1e-4)],
                         ids=["batch", "layer", "dropout", "all"])
def test_fit_trains_with_norm_and_dropout_and_early_stopping(extra):
    model = jm.MLP((3, 32, 1), activation="relu", **extra)
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    x, y = regression_data(128)
    xv, yv = regression_data(64, seed=5)
    p, h = jm.fit(model, params, optim.adam(1e-2), x, y, epochs=40, batch_size=16,
                  key=jax.random.key(1), validation=(xv, yv), patience=4)
    assert min(h["val_loss"]) < 0.6 * h["val_loss"][0]
    state = h["state"]
    assert (state is None) == (extra.get("norm") != "batch")
    val = float(jm.loss(model, p, xv, yv, state=state, train=False)) - float(
        jm.losses.penalty(model, p))
    assert val == pytest.approx(min(h["val_loss"]), rel=1e-9)


def test_train_step_with_batch_norm_and_dropout():
    model = jm.MLP((3, 8, 1), norm="batch", dropout=0.3)
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    opt = optim.sgd(0.1)
    step = jm.make_train_step(model, opt)
    x, y = regression_data(16)
    state = jm.init_state(model, dtype=jnp.float64)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        step(params, opt.init(params), x, y, state=state)
    with pytest.raises(ValueError, match="pass state=jaxmlp.init_state"):
        step(params, opt.init(params), x, y, key=jax.random.key(0))
    p, s, loss, new_state = step(params, opt.init(params), x, y, key=jax.random.key(0),
                                 state=state)
    assert not np.allclose(new_state[0]["mean"], state[0]["mean"])
    assert jnp.isfinite(loss)


def test_without_patience_fit_returns_the_last_epoch_not_the_best():
    model = jm.MLP((3, 64, 64, 1), activation="relu")
    params = jm.init_params(jax.random.key(1), model, dtype=jnp.float64)
    x, y = regression_data(40, seed=1)
    y = y + np.random.default_rng(2).normal(0, 0.5, y.shape)
    xv, yv = regression_data(200, seed=3)
    p, h = jm.fit(model, params, optim.adam(3e-2), x, y, epochs=60, batch_size=8,
                  key=jax.random.key(0), validation=(xv, yv))
    assert not h["stopped_early"] and h["epochs_run"] == 60
    assert h["best_epoch"] == int(np.argmin(h["val_loss"])) < 59  # it over-fits
    val = float(jm.loss(model, p, xv, yv, train=False))
    assert val == pytest.approx(h["val_loss"][-1], rel=1e-12)
