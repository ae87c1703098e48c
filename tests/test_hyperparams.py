"""Hyperparameters as data (issue 31, item 1): every optimizer keeps its numbers in its
state, so optimizers that differ only in their numbers share one compiled step/epoch,
and every number can be an array or a tracer (jit, vmap); concrete values are still
validated; fit's history records the learning rate."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp as jm
from jaxmlp import optim, train

RNG = np.random.default_rng(7)
PARAMS = [{"W": jnp.asarray(RNG.standard_normal((3, 4))), "b": jnp.asarray(RNG.standard_normal(3))},
          {"W": jnp.asarray(RNG.standard_normal((2, 3))), "b": jnp.asarray(RNG.standard_normal(2))}]
GRADS = [jax.tree.map(lambda p: jnp.asarray(RNG.standard_normal(p.shape)), PARAMS)
         for _ in range(4)]


# ------------------------------------------------------------ one compile per structure

@pytest.fixture
def trace_counter(monkeypatch):
    """Counts the traces of fit's epoch: _run_epoch looks `_grad_fn` up once per trace."""
    count = {"n": 0}
    grad_fn = train._grad_fn

    def counting(model, grad):
        count["n"] += 1
        return grad_fn(model, grad)

    monkeypatch.setattr(train, "_grad_fn", counting)
    return count


def test_fit_compiles_its_epoch_once_across_numbers(trace_counter):
    # a model of its own, so that no earlier test has compiled this epoch
    model = jm.MLP((3, 7, 1), activation="tanh")
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    x = RNG.standard_normal((32, 3))
    y = x.sum(axis=1, keepdims=True)
    kw = dict(epochs=2, batch_size=8, key=jax.random.key(1))
    results = {}
    for opt in (optim.adam(1e-3), optim.adam(3e-3), optim.adam(1e-3, b1=0.8, eps=1e-6),
                optim.adam(1e-2, b2=0.99)):
        results[jm.optim.describe(opt)["args"]["learning_rate"]], _ = jm.fit(
            model, params, opt, x, y, **kw)
    assert trace_counter["n"] == 1
    for wd in (1e-4, 1e-2, 0.3):  # adamw: another type, one more compile for all three
        jm.fit(model, params, optim.adamw(1e-3, weight_decay=wd), x, y, **kw)
    assert trace_counter["n"] == 2
    # the numbers are not the first optimizer's: each run is its own
    p3, _ = jm.fit(model, params, optim.adam(3e-3), x, y, **kw)
    chex.assert_trees_all_equal(p3, results[3e-3])
    assert not np.array_equal(results[1e-3][0]["W"], results[3e-3][0]["W"])
    assert trace_counter["n"] == 2


def test_make_train_step_compiles_once_across_numbers(monkeypatch):
    traces = {"n": 0}
    apply = train._apply

    def counting(*args):  # the step looks `_apply` up once per trace
        traces["n"] += 1
        return apply(*args)

    monkeypatch.setattr(train, "_apply", counting)
    model = jm.MLP((3, 6, 1), activation="tanh")  # of its own: nothing compiled yet
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    x = jnp.asarray(RNG.standard_normal((8, 3)))
    y = x.sum(axis=1, keepdims=True)
    opts = [optim.adamw(1e-3), optim.adamw(3e-3, b1=0.8), optim.adamw(1e-3, eps=1e-5),
            optim.adamw(1e-3, weight_decay=0.1)]
    steps = [jm.make_train_step(model, o, donate=False) for o in opts]
    assert all(s is steps[0] for s in steps)
    for opt, step in zip(opts, steps):
        p, _, _ = step(params, opt.init(params), x, y)
        # the same step by hand, with this optimizer's own update
        _, g = jm.value_and_grad(model, params, x, y)
        u, _ = opt.update(g, opt.init(params), params)
        chex.assert_trees_all_close(p, optim.apply_updates(params, u), rtol=1e-12)
    assert traces["n"] == 1 and steps[0]._cache_size() == 1


# ------------------------------------------------------------ traced values equal concrete

def _run(make, value):
    """Four updates of make(value) from its own state; the last updates and params."""
    opt = make(value)
    state, params = opt.init(PARAMS), PARAMS
    for g in GRADS:
        u, state = opt.update(g, state, params)
        params = optim.apply_updates(params, u)
    return params, u


TRACED = {
    "sgd-lr": lambda v: optim.sgd(v, momentum=0.9),
    "sgd-momentum": lambda v: optim.sgd(0.1, momentum=v),
    "sgd-nesterov-momentum": lambda v: optim.sgd(0.1, momentum=v, nesterov=True),
    "rmsprop-decay": lambda v: optim.rmsprop(0.01, decay=v),
    "rmsprop-eps": lambda v: optim.rmsprop(0.01, eps=v),
    "rmsprop-eps_root": lambda v: optim.rmsprop(0.01, eps_root=v),
    "rmsprop-centered-momentum": lambda v: optim.rmsprop(0.01, centered=True, momentum=v),
    "adam-b1": lambda v: optim.adam(1e-2, b1=v),
    "adam-b2": lambda v: optim.adam(1e-2, b2=v),
    "adam-eps": lambda v: optim.adam(1e-2, eps=v),
    "adam-eps_root": lambda v: optim.adam(1e-2, eps_root=v),
    "adamw-weight_decay": lambda v: optim.adamw(1e-2, weight_decay=v),
    "adamw-b1": lambda v: optim.adamw(1e-2, b1=v, weight_decay=0.1),
    "adagrad-eps": lambda v: optim.adagrad(0.1, eps=v),
    "adagrad-initial_accumulator_value": lambda v: optim.adagrad(0.1, initial_accumulator_value=v),
    "schedule-init_value": lambda v: optim.adam(optim.exponential_decay(v, 2, 0.5)),
    "schedule-decay_steps": lambda v: optim.sgd(optim.cosine_decay_schedule(0.1, v)),
}
VALUES = {"sgd-lr": [0.01, 0.1], "rmsprop-eps": [1e-8, 1e-3], "rmsprop-eps_root": [1e-8, 1e-3],
          "adam-eps": [1e-8, 1e-3], "adam-eps_root": [1e-8, 1e-3],
          "adamw-weight_decay": [1e-4, 0.5], "adagrad-eps": [1e-7, 1e-2],
          "adagrad-initial_accumulator_value": [0.1, 2.0],
          "schedule-init_value": [0.01, 0.1], "schedule-decay_steps": [3, 10]}


@pytest.mark.parametrize("name", TRACED, ids=TRACED)
def test_traced_values_equal_concrete_ones_under_jit_and_vmap(name):
    make, values = TRACED[name], VALUES.get(name, [0.5, 0.9])
    dtype = jnp.int32 if name.endswith("steps") else jnp.float64
    swept = jax.jit(jax.vmap(lambda v: _run(make, v)))(jnp.asarray(values, dtype))
    for i, v in enumerate(values):
        want = _run(make, v)  # a Python number: validated, untraced
        jitted = jax.jit(lambda a: _run(make, a))(jnp.asarray(v, dtype))
        chex.assert_trees_all_close(jitted, want, rtol=1e-12, atol=1e-15)
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], swept), want, rtol=1e-12,
                                    atol=1e-15)


def test_one_compile_serves_every_value():
    # the update of optimizers equal but for their numbers, jitted with the optimizer
    # static, is traced once and gives each optimizer's own result
    traces = {"n": 0}

    def update(opt, g, s, p):
        traces["n"] += 1
        return opt.update(g, s, p)

    step = jax.jit(update, static_argnums=0)
    for b1, eps, wd in ((0.9, 1e-8, 1e-4), (0.5, 1e-3, 0.1), (0.0, 0.0, 1.0)):
        opt = optim.adamw(optim.linear_schedule(0.1, 0.01, 3), b1=b1, eps=eps, weight_decay=wd)
        s = opt.init(PARAMS)
        for g in GRADS:
            got, s_jit = step(opt, g, s, PARAMS)
            want, s = opt.update(g, s, PARAMS)
            chex.assert_trees_all_close(got, want, rtol=1e-12)
    assert traces["n"] == 1


# ------------------------------------------------------------ validation

@pytest.mark.parametrize("make, error, match", [
    (lambda: optim.adam(0.1, b1=1.0), ValueError, r"^adam: b1 must be a number in \[0, 1\), got 1.0"),
    (lambda: optim.adam(0.1, b1=jnp.asarray(1.0)), ValueError, r"^adam: b1 must be a number in \[0, 1\), got 1.0"),
    (lambda: optim.adam(0.1, eps=-1), ValueError, r"^adam: eps must be a finite number >= 0, got -1"),
    (lambda: optim.adam(0.1, eps=np.float64(-1)), ValueError, r"^adam: eps must be"),
    (lambda: optim.rmsprop(0.1, eps=jnp.asarray(-1.0)), ValueError, r"^rmsprop: eps must be"),
    (lambda: optim.adam(jnp.ones(2)), ValueError, r"^adam: learning_rate must be a scalar, got an array of shape \(2,\) \(for one value per model, jm.sweep takes a list of optimizers"),
    (lambda: optim.adam(0.1, b2=jnp.full(3, 0.9)), ValueError, r"^adam: b2 must be a scalar"),
    (lambda: optim.adamw(0.1, weight_decay=jnp.asarray(-0.1)), ValueError, r"^adamw: weight_decay must be"),
    (lambda: optim.sgd(0.1, momentum=jnp.asarray(True)), TypeError, r"^sgd: momentum must be"),
    (lambda: optim.sgd(0.1, momentum="0.9"), TypeError, r"^sgd: momentum must be"),
    (lambda: optim.linear_schedule(1.0, 0.0, jnp.asarray(0)), ValueError, r"transition_steps must be a positive int"),
    (lambda: optim.cosine_decay_schedule(1.0, jnp.asarray(2.5)), TypeError, r"decay_steps"),
])
def test_concrete_values_are_validated_as_before(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_traced_values_are_not_validated_and_a_bad_rate_gives_nan():
    # b1 = 1 would be refused concretely; traced, it runs (0/0: NaN), as optax does
    def first(lr, b1):
        opt = optim.adam(lr, b1=b1)
        return opt.update(GRADS[0], opt.init(PARAMS), PARAMS)[0]

    u = jax.jit(first)(jnp.nan, 0.9)  # a traced NaN rate: a NaN update
    assert all(bool(jnp.all(jnp.isnan(a))) for a in jax.tree.leaves(u))
    u = jax.jit(first)(-1e-3, 0.9)  # a traced negative rate: NaN too, never an ascent
    assert all(bool(jnp.all(jnp.isnan(a))) for a in jax.tree.leaves(u))
    u = jax.jit(first)(1e-3, 0.5)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(u))


def test_a_rate_that_turns_nan_at_run_time_is_caught_by_fit():
    # fit builds its state from the optimizer (no tracer can be passed in): the rate is
    # read from the state inside the compiled epoch, and a schedule of this module whose
    # second part is NaN from its boundary on gives a NaN there only at run time
    model = jm.MLP((3, 5, 1), activation="tanh")
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    x = RNG.standard_normal((16, 3))
    y = x.sum(axis=1, keepdims=True)
    sched = optim.join_schedules(
        [optim.constant_schedule(1e-2), lambda c: jnp.where(c >= 0, jnp.nan, 1.0)], [6])
    p, h = jm.fit(model, params, optim.adam(sched), x, y, epochs=3, batch_size=4,
                  key=jax.random.key(0), on_divergence="stop")
    assert h["diverged"]["epoch"] == 1 and h["diverged"]["step"] == 2  # count 6
    assert h["diverged"]["cause"] == 3  # a non-finite update
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(p))
    assert h["learning_rate"] == [1e-2]  # the one epoch that ran

    # make_train_step does not check: a NaN rate put into the state gives NaN params
    opt = optim.adam(1e-2)
    state = opt.init(params)
    state = state._replace(hyperparams=dict(state.hyperparams, learning_rate=jnp.nan))
    step = jm.make_train_step(model, opt, donate=False)
    p, _, _ = step(params, state, jnp.asarray(x[:4]), jnp.asarray(y[:4]))
    assert bool(jnp.isnan(p[0]["W"]).all())


# ------------------------------------------------------------ reading them back

def test_hyperparams_of_a_state():
    opt = optim.adamw(optim.linear_schedule(0.1, 0.0, 10), b1=0.8, weight_decay=0.01)
    state = opt.init(PARAMS)
    hp = optim.hyperparams(state)
    assert set(hp) == {"learning_rate", "schedule", "b1", "b2", "eps", "eps_root",
                       "weight_decay"}
    assert float(hp["b1"]) == 0.8 and float(hp["weight_decay"]) == 0.01
    assert float(hp["learning_rate"]) == 0.1  # before any update: the first update's
    update = jax.jit(opt.update)
    for k in range(3):
        _, state = update(GRADS[k], state, PARAMS)
        # after an update: the rate it used, η(count) = 0.1·(1 − count/10)
        np.testing.assert_allclose(float(optim.current_learning_rate(state)),
                                   0.1 * (1 - k / 10), rtol=1e-15)
    chained = optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(0.3, momentum=0.5))
    cs = chained.init(PARAMS)
    assert optim.hyperparams(cs) == ({"max_norm": cs[0].hyperparams["max_norm"]},
                                     {"learning_rate": cs[1].hyperparams["learning_rate"],
                                      "momentum": cs[1].hyperparams["momentum"]})
    assert float(optim.hyperparams(cs)[0]["max_norm"]) == 1.0
    assert float(optim.current_learning_rate(cs)) == 0.3
    assert optim.current_learning_rate(optim.identity().init(PARAMS)) is None
    # under vmap too: a swept rate read back per member
    rates = jax.vmap(lambda lr: optim.current_learning_rate(optim.sgd(lr).init(PARAMS)))(
        jnp.asarray([0.1, 0.2]))
    np.testing.assert_array_equal(rates, [0.1, 0.2])


def test_fit_history_records_the_learning_rate_per_epoch():
    model = jm.MLP((3, 5, 1), activation="tanh")
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    x = RNG.standard_normal((16, 3))
    y = x.sum(axis=1, keepdims=True)
    # 4 steps per epoch: the last steps of the epochs are counts 3, 7, 11
    sched = optim.linear_schedule(0.1, 0.0, 10)
    seen = []
    _, h = jm.fit(model, params, optim.sgd(sched), x, y, epochs=3, batch_size=4,
                  key=jax.random.key(0), callback=lambda e, logs: seen.append(logs["learning_rate"]))
    np.testing.assert_allclose(h["learning_rate"], [0.07, 0.03, 0.0], atol=1e-15)
    assert seen == h["learning_rate"]
    _, h = jm.fit(model, params, optim.adam(2e-3), x, y, epochs=2, batch_size=4,
                  key=jax.random.key(0))
    assert h["learning_rate"] == [2e-3, 2e-3]


def test_describe_tells_values_apart_although_they_share_a_compile():
    a, b = optim.adam(1e-3), optim.adam(3e-3)
    assert a == b and optim.describe(a) != optim.describe(b)
    assert optim.describe(optim.adam(1e-3, b1=0.8))["args"]["b1"] == 0.8
    s1, s2 = optim.linear_schedule(0.1, 0.0, 10), optim.linear_schedule(0.1, 0.0, 20)
    assert s1 == s2 and optim.describe(optim.sgd(s1)) != optim.describe(optim.sgd(s2))
    # a resume with other values is refused: tests/test_train.py (test_resume_refuses...)
