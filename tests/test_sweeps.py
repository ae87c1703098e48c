"""jaxmlp.sweep: model m of a sweep is the fit of model m (early stopping, divergence,
schedules, penalties, batch norm and dropout), resume is bitwise, bad input is named."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp as jm
from jaxmlp import optim, sweeps


def data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3))
    y = np.sin(x[:, :1]) + 0.5 * x[:, 1:2] * x[:, 2:3]
    return x, y


X, Y = data()
XV, YV = data(40, seed=1)
MODEL = jm.MLP((3, 16, 16, 1), activation="tanh")
# the default (a group per usable core), one program, groups of 2, 1 and 1 models (two
# programs), four groups of one model each on the suite's four CPU devices
WORKERS, WORKER_IDS = [None, 1, 3, 4], ["all-cores", "one-group", "uneven-groups",
                                        "four-groups"]


def slice_params(params, m):
    return [{k: v[m] for k, v in layer.items()} for layer in params]


def assert_close(a, b, rtol=1e-12, atol=1e-14):
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)


def assert_member_is_fit(model, params, opts, kw, fit_kw, m, P, H, keys):
    fit_p, fit_h = jm.fit(model, slice_params(params, m), opts[m], X, Y, key=keys[m],
                          on_divergence="stop", **kw, **fit_kw)
    pm, hm = sweeps.member(P, H, m)
    assert_close(pm, fit_p)
    assert hm["epochs_run"] == fit_h["epochs_run"]
    assert hm["best_epoch"] == fit_h["best_epoch"]
    assert hm["stopped_early"] == fit_h["stopped_early"]
    assert hm.get("diverged") == fit_h.get("diverged")
    np.testing.assert_allclose(hm["train_loss"], fit_h["train_loss"], rtol=1e-12)
    np.testing.assert_allclose(hm["val_loss"], fit_h["val_loss"], rtol=1e-12)
    np.testing.assert_allclose(hm["learning_rate"], fit_h["learning_rate"], rtol=1e-12)
    return fit_h


@pytest.mark.parametrize("workers", WORKERS, ids=WORKER_IDS)
def test_each_model_equals_its_fit_incl_early_stop_and_divergence(workers):
    # sgd: rate 1e100 diverges at once, 0.3 stops early, 1e-4 runs on; l2 per model
    rates, l2 = [1e-4, 0.3, 1e100, 0.1], [0.0, 1e-3, 0.0, 1e-2]
    keys = jax.random.split(jax.random.key(5), 4)
    params = sweeps.init_many(jax.random.split(jax.random.key(0), 4), MODEL,
                              dtype=jnp.float64)
    opts = [optim.sgd(r, momentum=0.9) for r in rates]
    kw = dict(epochs=15, batch_size=16, validation=(XV, YV), patience=2)
    P, H = jm.sweep(MODEL, params, opts, X, Y, key=keys, l2=l2, workers=workers, **kw)
    assert P[0]["W"].shape == (4, 16, 3)
    assert H["train_loss"].shape == (4, max(H["epochs_run"]))
    seen = set()
    for m in range(4):
        fh = assert_member_is_fit(MODEL, params, opts, kw, dict(l2=l2[m]), m, P, H, keys)
        seen.add("diverged" if "diverged" in fh else
                 "stopped" if fh["stopped_early"] else "ran")
    assert seen == {"diverged", "stopped", "ran"}, seen
    assert H["diverged"][2] is not None and H["diverged"][2]["cause"] in jm.train.CAUSES
    for leaf in jax.tree_util.tree_leaves(P):
        assert np.isfinite(np.asarray(leaf)).all()
    # a model's history after it stopped is NaN, before it is not
    m = int(np.argmin(H["epochs_run"]))
    assert np.isnan(H["train_loss"][m, H["epochs_run"][m]:]).all()
    assert np.isfinite(H["train_loss"][m, :H["epochs_run"][m]]).all()


def _warmup_adamw(peak):
    return optim.adamw(optim.warmup_cosine_decay_schedule(0.0, peak, 5, 30), mask=None)


def _linear_sgd(peak):
    return optim.sgd(optim.linear_schedule(peak, peak / 10, 12), momentum=0.9)


@pytest.mark.parametrize("norm, dropout, make", [
    (None, 0.2, _warmup_adamw),
    # sgd here: a bias just before batch norm has a gradient of exactly 0 (the mean is
    # subtracted), and Adam would scale its rounding noise up to steps of full size
    ("batch", 0.2, _linear_sgd),
], ids=["dropout-adamw-warmup-cosine", "batchnorm-dropout-sgd-linear"])
def test_single_key_schedules_dropout_and_batch_norm(norm, dropout, make):
    model = jm.MLP((3, 8, 8, 1), activation="relu", norm=norm, dropout=dropout)
    params = sweeps.init_many(jax.random.split(jax.random.key(2), 4), model,
                              dtype=jnp.float64)
    opts = [make(peak) for peak in (1e-3, 3e-3, 1e-2, 2e-2)]
    key = jax.random.key(11)
    kw = dict(epochs=6, batch_size=32, validation=(XV, YV))
    P, H = jm.sweep(model, params, opts, X, Y, key=key, workers=2, **kw)  # 2 groups of 2
    keys = jax.random.split(key, 4)
    for m in range(4):
        fp, fh = jm.fit(model, slice_params(params, m), opts[m], X, Y, key=keys[m], **kw)
        pm, hm = sweeps.member(P, H, m)
        # those zero-gradient biases hold rounding noise, ~1e-17: absolute tolerance
        assert_close(pm, fp, atol=1e-13)
        assert_close(hm["state"], fh["state"], atol=1e-13)
        np.testing.assert_allclose(hm["val_loss"], fh["val_loss"], rtol=1e-12)
        np.testing.assert_allclose(hm["learning_rate"], fh["learning_rate"], rtol=1e-12)
    assert len(set(H["learning_rate"][:, -1])) == 4  # each model's own schedule


def test_autodiff_gradients():
    """grad="autodiff" (jax.grad in fit's step, vmapped) gives each model its own fit too."""
    model = jm.MLP((3, 8, 8, 1), activation="tanh", l2=1e-3)
    params = sweeps.init_many(jax.random.split(jax.random.key(3), 2), model,
                              dtype=jnp.float64)
    opts = [optim.adam(r) for r in (1e-3, 3e-2)]
    key = jax.random.key(4)
    kw = dict(epochs=4, batch_size=16, validation=(XV, YV), grad="autodiff")
    P, H = jm.sweep(model, params, opts, X, Y, key=key, workers=1, **kw)
    assert H["train_loss"].shape == (2, 4)
    keys = jax.random.split(key, 2)
    for m in range(2):
        fp, fh = jm.fit(model, slice_params(params, m), opts[m], X, Y, key=keys[m], **kw)
        pm, hm = sweeps.member(P, H, m)
        assert_close(pm, fp)
        np.testing.assert_allclose(hm["val_loss"], fh["val_loss"], rtol=1e-12)


@pytest.mark.parametrize("workers", WORKERS, ids=WORKER_IDS)
def test_shared_shuffle_each_model_equals_fit_with_the_key_itself(workers):
    model = jm.MLP((3, 8, 8, 1), activation="relu", dropout=0.1)
    params = sweeps.init_many(jax.random.split(jax.random.key(2), 4), model,
                              dtype=jnp.float64)
    opts = [optim.adam(r) for r in (1e-3, 3e-3, 1e-2, 3e-2)]
    key = jax.random.key(9)
    kw = dict(epochs=4, batch_size=16, validation=(XV, YV))
    P, H = jm.sweep(model, params, opts, X, Y, key=key, shuffle="shared", workers=workers,
                    **kw)
    for m in range(4):
        fp, fh = jm.fit(model, slice_params(params, m), opts[m], X, Y, key=key, **kw)
        pm, hm = sweeps.member(P, H, m)
        assert_close(pm, fp)
        np.testing.assert_allclose(hm["train_loss"], fh["train_loss"], rtol=1e-12)
    with pytest.raises(ValueError, match="sweep: shuffle must be one of"):
        jm.sweep(model, params, opts, X, Y, key=key, shuffle="same", **kw)
    with pytest.raises(ValueError, match="sweep: key must be a single key"):
        jm.sweep(model, params, opts, X, Y, key=jax.random.split(key, 4), shuffle="shared",
                 **kw)


@pytest.mark.parametrize("rate", [1e-2, 1e100], ids=["stops-early", "diverges"])
def test_one_model_sweep_is_fit_bitwise(rate):
    # M = 1 runs fit's own epoch program (no vmap): the same bits
    params = sweeps.init_many(jax.random.split(jax.random.key(0), 1), MODEL,
                              dtype=jnp.float64)
    kw = dict(epochs=20, batch_size=16, validation=(XV, YV), patience=2)
    key = jax.random.key(3)
    P, H = jm.sweep(MODEL, params, optim.adam(rate), X, Y, key=key, **kw)
    fp, fh = jm.fit(MODEL, slice_params(params, 0), optim.adam(rate), X, Y,
                    key=jax.random.split(key, 1)[0], on_divergence="stop", **kw)
    pm, hm = sweeps.member(P, H, 0)
    for a, b in zip(jax.tree_util.tree_leaves(pm), jax.tree_util.tree_leaves(fp)):
        np.testing.assert_array_equal(a, b)
    assert hm["train_loss"] == fh["train_loss"] and hm.get("diverged") == fh.get("diverged")
    assert hm["stopped_early"]


def test_one_compile_serves_other_rates_and_penalties():
    params = sweeps.init_many(jax.random.split(jax.random.key(0), 2), MODEL,
                              dtype=jnp.float64)
    kw = dict(epochs=2, batch_size=32, key=jax.random.key(0))
    jm.sweep(MODEL, params, [optim.adam(1e-3), optim.adam(2e-3)], X, Y, l2=[0.0, 0.1], **kw)
    before = sweeps._run_sweep_epoch._cache_size()
    jm.sweep(MODEL, params, [optim.adam(5e-3), optim.adam(1e-2)], X, Y, l2=[0.2, 0.3], **kw)
    jm.sweep(MODEL, params, optim.adam(3e-2), X, Y, l2=0.5, **kw)
    assert sweeps._run_sweep_epoch._cache_size() == before


def test_interrupted_sweep_resumes_bitwise(tmp_path):
    params = sweeps.init_many(jax.random.split(jax.random.key(0), 4), MODEL,
                              dtype=jnp.float64)
    opts = [optim.sgd(r, momentum=0.9) for r in (1e-4, 0.3, 1e100, 0.1)]
    kw = dict(epochs=12, batch_size=16, key=jax.random.key(3), validation=(XV, YV),
              patience=2, l2=[0.0, 1e-3, 0.0, 1e-2])
    P, H = jm.sweep(MODEL, params, opts, X, Y, **kw)

    class Interrupt(Exception):
        pass

    def interrupt(epoch, logs):
        if epoch == 4:
            raise Interrupt

    folder = tmp_path / "ckpt"
    with pytest.raises(Interrupt):
        jm.sweep(MODEL, params, opts, X, Y, checkpoint_dir=folder, callback=interrupt, **kw)
    P2, H2 = jm.sweep(MODEL, params, opts, X, Y, checkpoint_dir=folder, **kw)
    for a, b in zip(jax.tree_util.tree_leaves(P), jax.tree_util.tree_leaves(P2)):
        np.testing.assert_array_equal(a, b)
    for k in ("train_loss", "val_loss", "learning_rate", "epochs_run", "best_epoch",
              "stopped_early"):
        np.testing.assert_array_equal(H[k], H2[k])
    assert H["diverged"] == H2["diverged"]
    # another sweep's folder is refused, naming what differs
    other = [optim.sgd(r, momentum=0.9) for r in (1e-4, 0.3, 1e100, 0.2)]
    with pytest.raises(ValueError, match="optimizer"):
        jm.sweep(MODEL, params, other, X, Y, checkpoint_dir=folder, **kw)
    with pytest.raises(ValueError, match="sweep: checkpoint_dir .* started with another set "
                                         "of keys"):
        jm.sweep(MODEL, params, opts, X, Y, checkpoint_dir=folder,
                 **dict(kw, key=jax.random.key(4)))


def test_callback_sees_every_model_and_can_stop_them_all():
    params = sweeps.init_many(jax.random.split(jax.random.key(0), 4), MODEL,
                              dtype=jnp.float64)
    opts = [optim.sgd(r) for r in (1e-2, 1e100, 3e-2, 1e-1)]  # model 1 diverges at once
    seen = []

    def callback(epoch, logs):
        seen.append((epoch, logs))
        return epoch == 2

    P, H = jm.sweep(MODEL, params, opts, X, Y, epochs=10, batch_size=16,
                    key=jax.random.key(1), callback=callback, workers=2)
    assert [e for e, _ in seen] == [0, 1, 2]
    logs = seen[1][1]
    assert logs["train_loss"].shape == (4,) and logs["active"].tolist() == [1, 0, 1, 1]
    assert np.isnan(logs["train_loss"][1]) and np.isfinite(logs["train_loss"][[0, 2, 3]]).all()
    np.testing.assert_allclose(logs["learning_rate"][[0, 2, 3]], [1e-2, 3e-2, 1e-1])
    assert H["epochs_run"].tolist() == [3, 0, 3, 3] and H["stopped_early"].all()
    assert H["diverged"][1] is not None and H["diverged"][0] is None


def test_best_model_stack_unstack_init_many():
    keys = jax.random.split(jax.random.key(0), 3)
    params = sweeps.init_many(keys, MODEL, dtype=jnp.float64)
    for m, p in enumerate(sweeps.unstack(params)):
        assert_close(p, jm.init_params(keys[m], MODEL, dtype=jnp.float64), rtol=0)
    assert_close(sweeps.stack(sweeps.unstack(params)), params, rtol=0)
    opts = [optim.adam(r) for r in (1e-4, 1e-2, 3e-3)]
    P, H = jm.sweep(MODEL, params, opts, X, Y, epochs=5, batch_size=16,
                    key=jax.random.key(1), validation=(XV, YV))
    m, pm = sweeps.best_model(P, H)
    assert m == int(np.argmin(H["val_loss"][np.arange(3), H["best_epoch"]]))
    assert_close(pm, sweeps.unstack(P)[m], rtol=0)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(l2=[0.1, 0.2]), ValueError, r"sweep: l2 must be one number or one per model \(3"),
    (dict(l2=np.zeros((3, 1))), ValueError,
     r"sweep: l2 must be one number or one per model \(3.*got an array of shape \(3, 1\)"),
    (dict(l1=[0.1, -0.2, 0.0]), ValueError, r"sweep: l1\[1\] \(model 1\) must be"),
    (dict(l2=[0.1, float("nan"), 0.0]), ValueError, r"l2\[1\] \(model 1\)"),
    (dict(optimizer=[optim.adam(1e-3)] * 2), ValueError,
     r"sweep: optimizer must be one optimizer or one per model \(3"),
    (dict(optimizer=[optim.adam(1e-3), optim.adam(1e-3), optim.sgd(1e-3)]), ValueError,
     r"optimizer\[2\] \(model 2\) must have the structure of optimizer\[0\]"),
    (dict(optimizer=[optim.adam(1e-3), optim.adam(1e-3), "adam"]), TypeError,
     r"optimizer\[2\] \(model 2\)"),
    (dict(key=jax.random.split(jax.random.key(0), 2)), ValueError,
     r"sweep: key must be one key or one key per model \(3"),
    (dict(batch_size=0), ValueError, "sweep: batch_size"),
    (dict(epochs=0), ValueError, "sweep: epochs"),
    (dict(workers=0), ValueError, "sweep: workers"),
])
def test_bad_input_names_the_argument_and_model(kwargs, error, match):
    params = sweeps.init_many(jax.random.split(jax.random.key(0), 3), MODEL,
                              dtype=jnp.float64)
    args = dict(optimizer=optim.adam(1e-3), epochs=2, batch_size=16, key=jax.random.key(0))
    args.update(kwargs)
    opt = args.pop("optimizer")
    with pytest.raises(error, match=match):
        jm.sweep(MODEL, params, opt, X, Y, **args)


def test_bad_params():
    one = jm.init_params(jax.random.key(0), MODEL, dtype=jnp.float64)
    kw = dict(epochs=1, batch_size=16, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"params\[0\]\['W'\] must have shape \(M, 16, 3\)"):
        jm.sweep(MODEL, one, optim.adam(1e-3), X, Y, **kw)  # no model axis
    empty = jax.tree_util.tree_map(lambda a: a[None][:0], one)
    with pytest.raises(TypeError, match=r"got a list of 3 params lists: stack them with "
                                         r"jaxmlp.sweeps.stack"):
        jm.sweep(MODEL, [one, one, one], optim.adam(1e-3), X, Y, **kw)  # not stacked
    with pytest.raises(ValueError, match="at least one model"):
        jm.sweep(MODEL, empty, optim.adam(1e-3), X, Y, **kw)
    params = sweeps.init_many(jax.random.split(jax.random.key(0), 3), MODEL,
                              dtype=jnp.float64)
    params[1]["b"] = params[1]["b"].at[2, 0].set(jnp.nan)
    with pytest.raises(ValueError, match=r"params\[1\]\['b'\] of model 2 contains NaN"):
        jm.sweep(MODEL, params, optim.adam(1e-3), X, Y, **kw)
    with pytest.raises(ValueError, match=r"member: m must be a model index in \[0, 3\)"):
        sweeps.member(params, {"models": 3}, 3)
    fit_history = {"train_loss": [], "val_loss": []}
    with pytest.raises(TypeError, match=r"best_model: history must be the history "
                                        r"jaxmlp.sweep returns .* keys \['train_loss'"):
        sweeps.best_model(params, fit_history)
    with pytest.raises(TypeError, match="member: history must be"):
        sweeps.member(params, [], 0)
    small = jm.init_params(jax.random.key(0), jm.MLP((3, 8, 16, 1)), dtype=jnp.float64)
    with pytest.raises(ValueError, match=r"stack: trees\[1\] must have the leaf shapes of "
                                         r"trees\[0\], got a leaf of shape \(8, 3\)"):
        sweeps.stack([one, small])
    with pytest.raises(ValueError, match=r"stack: trees\[1\] must have the structure"):
        sweeps.stack([one, one[:2]])


def test_workers_divide_the_models_and_groups_go_round_the_devices():
    assert sweeps.workers(6, 4) == 4 and sweeps.workers(3, 4) == 3
    assert sweeps.workers(1) == 1 and sweeps.workers(8, 8) == 8 and sweeps.workers(8, 3) == 3
    groups = sweeps._groups(8, 4)
    assert [(g.lo, g.hi) for g in groups] == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert [g.device for g in groups] == jax.devices()[:4]
    assert [(g.lo, g.hi) for g in sweeps._groups(7, 3)] == [(0, 3), (3, 5), (5, 7)]
    with pytest.raises(ValueError, match="sweep: workers must be"):
        sweeps.workers(4, 0)


def test_worker_threads_keep_the_callers_jax_settings():
    # a setting made with a context manager holds for the calling thread only: with 64-bit
    # off globally and `with jax.enable_x64(True)` around the sweep, the groups' threads
    # must still train in float64 (else they would silently drop to float32)
    model = jm.MLP((3, 8, 1), activation="tanh")
    jax.config.update("jax_enable_x64", False)
    try:
        with jax.enable_x64(True):
            params = sweeps.init_many(jax.random.split(jax.random.key(0), 2), model,
                                      dtype=jnp.float64)
            kw = dict(epochs=2, batch_size=16, key=jax.random.key(1))
            P2, H2 = jm.sweep(model, params, optim.adam(1e-2), X, Y, workers=2, **kw)
            P1, H1 = jm.sweep(model, params, optim.adam(1e-2), X, Y, workers=1, **kw)
    finally:
        jax.config.update("jax_enable_x64", True)
    assert P2[0]["W"].dtype == np.float64
    assert_close(P2, P1)
    np.testing.assert_allclose(H2["train_loss"], H1["train_loss"], rtol=1e-12)


def test_group_size_does_not_change_the_bits_in_float32():
    """Groups of 4 (one program) and of 2 and 2 give the same float32 bits: each model's
    computation is the same whatever else is batched with it (docs/sweeps.md)."""
    model = jm.MLP((3, 8, 8, 1), activation="relu")
    params = sweeps.init_many(jax.random.split(jax.random.key(6), 4), model,
                              dtype=jnp.float32)
    opts = [optim.adam(r) for r in (1e-3, 3e-3, 1e-2, 3e-2)]
    runs = [jm.sweep(model, params, opts, X.astype(np.float32), Y.astype(np.float32),
                     epochs=3, batch_size=16, key=jax.random.key(7), workers=w)
            for w in (1, 2)]
    for a, b in zip(jax.tree_util.tree_leaves(runs[0][0]), jax.tree_util.tree_leaves(runs[1][0])):
        assert a.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(runs[0][1]["train_loss"], runs[1][1]["train_loss"])
