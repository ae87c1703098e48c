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
    assert len(seen) == 1 and set(seen[0]) == {"train_loss", "val_loss", "epoch_time",
                                               "learning_rate"}
    assert seen[0]["learning_rate"] == h["learning_rate"][0] == 0.05


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
    assert h["diverged"] == {"epoch": err.epoch, "step": err.step, "cause": 1,
                             "what": jm.train.CAUSES[1]} and err.cause == jm.train.CAUSES[1]
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree_util.tree_leaves(p))


@pytest.mark.parametrize("bad,match", [
    (dict(x="nan"), "x contains NaN or Inf"),
    (dict(y="inf"), "y contains NaN or Inf"),
    (dict(batch_size=0), "fit: batch_size must be a positive int, got 0"),
    (dict(epochs=0), "epochs must be a positive int"),
    (dict(patience=3), "patience .* needs validation"),
    (dict(min_delta=-1.0), "min_delta must be"),
    (dict(grad="numeric"), "fit: grad must be one of"),
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
    with pytest.raises(TypeError, match="fit: batch_size must be a positive int, got 2.5"):
        jm.fit(model, params, adam, x, y, epochs=1, batch_size=2.5, key=jax.random.key(0))
    with pytest.raises(TypeError, match="fit: min_delta must be a finite number >= 0, got '0'"):
        jm.fit(model, params, adam, x, y, epochs=1, batch_size=4, min_delta="0",
               key=jax.random.key(0))


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


# --------------------------------------------------------------------------- hostile input

@pytest.fixture(scope="module")
def tiny32():
    """A float32 linear model whose data make single updates overflow."""
    model = jm.MLP((3, 1))
    params = [{"W": jnp.zeros((1, 3), jnp.float32), "b": jnp.zeros(1, jnp.float32)}]
    x = np.full((8, 3), 100.0, np.float32)
    y = np.full((8, 1), 1e6, np.float32)
    return model, params, x, y


def _finite(tree):
    return all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree_util.tree_leaves(tree)
               if jnp.issubdtype(a.dtype, jnp.inexact))


@pytest.mark.parametrize("epochs", [1, 4])
def test_an_update_that_overflows_is_caught_at_its_own_step(tiny32, epochs):
    """One full-batch sgd(1e36) step: loss and gradient are finite, the update is not."""
    model, params, x, y = tiny32
    with pytest.raises(DivergenceError, match="epoch 0, step 0: non-finite update") as e:
        jm.fit(model, params, optim.sgd(1e36), x, y, epochs=epochs, batch_size=None,
               key=jax.random.key(0))
    err = e.value
    assert (err.epoch, err.step) == (0, 0)
    chex.assert_trees_all_equal(err.params, params)  # the bad step was not applied
    p, h = jm.fit(model, params, optim.sgd(1e36), x, y, epochs=epochs, batch_size=None,
                  key=jax.random.key(0), on_divergence="stop")
    assert _finite(p) and h["diverged"]["step"] == 0 and h["diverged"]["cause"] == 3


def test_an_optimizer_state_that_overflows_is_divergence(tiny32):
    """adam's v = g² overflows float32 while g, the loss and the update (m/√∞ = 0) stay
    finite: without the state check training would silently stall forever."""
    model, params, x, _ = tiny32
    x, y = np.full((8, 3), 1e16, np.float32), np.full((8, 1), 1e5, np.float32)
    p, h = jm.fit(model, params, optim.adam(1e-3), x, y, epochs=2, batch_size=None,
                  key=jax.random.key(0), on_divergence="stop")
    assert h["diverged"] == {"epoch": 0, "step": 0, "cause": 5, "what": train.CAUSES[5]}
    chex.assert_trees_all_equal(p, params)


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf, -1e-3])
def test_a_schedule_that_turns_bad_is_caught_at_that_step(tiny32, bad):
    model, params, x, _ = tiny32
    y = np.ones((8, 1), np.float32)
    schedule = lambda count: jnp.where(count < 3, 1e-6, bad)  # noqa: E731
    p, h = jm.fit(model, params, optim.sgd(schedule), x, y, epochs=2, batch_size=2,
                  key=jax.random.key(0), on_divergence="stop")
    assert (h["diverged"]["epoch"], h["diverged"]["step"], h["diverged"]["cause"]) == (0, 3, 3)
    assert _finite(p) and h["epochs_run"] == 0


def test_a_large_finite_loss_is_not_divergence(tiny32):
    model, params, x, _ = tiny32
    y = np.full((8, 1), 1e15, np.float32)  # loss ≈ 1e30, finite
    p, h = jm.fit(model, params, optim.sgd(1e-12), x, y, epochs=1, batch_size=None,
                  key=jax.random.key(0))
    assert "diverged" not in h and h["train_loss"][0] > 1e29 and _finite(p)


def test_nonfinite_or_overflowing_starts_are_refused_before_training(tiny32):
    model, params, x, y = tiny32
    nan = [{"W": params[0]["W"].at[0, 1].set(jnp.nan), "b": params[0]["b"]}]
    with pytest.raises(ValueError, match=r"params\[0\]\['W'\] contains NaN"):
        jm.fit(model, nan, optim.sgd(0.1), x, y, epochs=1, batch_size=None, key=jax.random.key(0))
    inf = [{"W": params[0]["W"], "b": params[0]["b"].at[0].set(-jnp.inf)}]
    with pytest.raises(ValueError, match=r"params\[0\]\['b'\] contains Inf"):
        jm.fit(model, inf, optim.sgd(0.1), x, y, epochs=1, batch_size=None, key=jax.random.key(0))
    with pytest.raises(ValueError, match="fit: optimizer must have hyperparameters that fit the "
                                         "parameters' dtype float32, got sgd's learning_rate = "
                                         "1e\\+39: it overflows .* float32"):
        jm.fit(model, params, optim.sgd(1e39), x, y, epochs=1, batch_size=None,
               key=jax.random.key(0))
    with pytest.raises(ValueError, match="chain → sgd's learning_rate"):
        jm.fit(model, params, optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(1e39)),
               x, y, epochs=1, batch_size=None, key=jax.random.key(0))


def test_train_step_refuses_another_optimizers_state(reg):
    model, params, x, y = reg
    step = jm.make_train_step(model, optim.adam(1e-3), donate=False)
    with pytest.raises(TypeError, match="opt_state does not belong to this optimizer"):
        step(params, optim.sgd(0.1, momentum=0.9).init(params), x[:8], y[:8])
    other = jm.init_params(jax.random.key(0), jm.MLP((3, 16, 1), activation="tanh"))
    with pytest.raises(TypeError, match="opt_state does not belong"):
        step(params, optim.adam(1e-3).init(other), x[:8], y[:8])


# --------------------------------------------------------------------------- resume fingerprint

@pytest.fixture(scope="module")
def resumable(tiny32):
    model, params, x, _ = tiny32
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 3)).astype(np.float32)
    y = rng.standard_normal((8, 1)).astype(np.float32)
    return model, params, x, y


def _fit_ckpt(setup, folder, opt, x=None, y=None, **kw):
    model, params, x0, y0 = setup
    return jm.fit(model, params, opt, x0 if x is None else x, y0 if y is None else y,
                  epochs=2, batch_size=4, key=jax.random.key(0), checkpoint_dir=folder, **kw)


@pytest.mark.parametrize("change,match", [
    (dict(opt=optim.adam(2e-3)), r"optimizer: adam\(learning_rate=0.001.* adam\(learning_rate=0.002"),
    (dict(opt=optim.adam(1e-3, b1=0.8)), r"b1=0.9.*b1=0.8"),
    (dict(opt=optim.sgd(1e-3)), r"optimizer: adam\(.*in the checkpointed run, sgd\(.*now"),
    (dict(y="shifted"), r"y: same shape and dtype, other values"),
    (dict(x="shuffled"), r"x: same shape and dtype, other values"),
    (dict(validation=True), r"validation x: absent in the checkpointed run, given now"),
])
def test_resume_refuses_a_changed_run_and_names_what_changed(resumable, tmp_path, change, match):
    model, params, x, y = resumable
    p0, h0 = _fit_ckpt(resumable, tmp_path, optim.adam(1e-3))
    kw = {}
    opt = change.get("opt", optim.adam(1e-3))
    if change.get("y") == "shifted":
        kw["y"] = y + 1
    if change.get("x") == "shuffled":
        kw["x"] = x[::-1].copy()
    if change.get("validation"):
        kw["validation"] = (x, y)
    with pytest.raises(ValueError, match=match) as e:
        _fit_ckpt(resumable, tmp_path, opt, **kw)
    assert "another checkpoint_dir" in str(e.value)
    p1, h1 = _fit_ckpt(resumable, tmp_path, optim.adam(1e-3))  # the same call still resumes
    chex.assert_trees_all_equal(p0, p1)
    assert h1["train_loss"] == h0["train_loss"]


def test_a_diverged_run_stays_diverged_when_called_again(tiny32, tmp_path):
    model, params, x, y = tiny32
    call = lambda **kw: jm.fit(model, params, optim.sgd(1e36), x, y, epochs=3,  # noqa: E731
                               batch_size=None, key=jax.random.key(0), checkpoint_dir=tmp_path,
                               **kw)
    with pytest.raises(DivergenceError) as first:
        call()
    with pytest.raises(DivergenceError, match="diverged before, as recorded") as again:
        call()
    assert (again.value.epoch, again.value.step) == (first.value.epoch, first.value.step)
    chex.assert_trees_all_equal(again.value.params, first.value.params)
    p, h = call(on_divergence="stop")
    assert h["diverged"]["step"] == first.value.step and _finite(p)
