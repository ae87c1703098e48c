"""Tests for jaxmlp.optim: every optimizer against a plain NumPy float64 implementation of
its formula (DESIGN.md §3), schedules against hand-computed values, clipping invariants,
tree structure and dtype preservation, no retracing, and hyperparameter validation."""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp import optim

N_STEPS = 32
SHAPES = [{"W": (3, 4), "b": (3,)}, {"W": (2, 3), "b": (2,)}]


def _tree(rng, dtype, scale=1.0, shapes=SHAPES):
    return jax.tree.map(
        lambda s: (scale * rng.standard_normal(s)).astype(dtype),
        shapes,
        is_leaf=lambda x: isinstance(x, tuple),
    )


def _gradients(seed, n_steps=N_STEPS, dtype=np.float64):
    """n_steps gradient trees; each step has its own scale, 10^-3 .. 10^1."""
    rng = np.random.default_rng(seed)
    return [_tree(rng, dtype, 10.0 ** rng.uniform(-3.0, 1.0)) for _ in range(n_steps)]


PARAMS0 = _tree(np.random.default_rng(0), np.float64)
GRADS = _gradients(1)


# --------------------------------------------------------------------------------------
# NumPy float64 references, one leaf at a time: ref(theta0, grads, is_weight) -> updates
# --------------------------------------------------------------------------------------


def np_sgd(lr, momentum=0.0, nesterov=False):
    def run(theta, gs, is_weight):
        v, out = np.zeros_like(theta), []
        for count, g in enumerate(gs):
            v = momentum * v + g
            out.append(-lr(count) * (g + momentum * v) if nesterov else -lr(count) * v)
        return out

    return run


def np_rmsprop(lr, decay=0.9, eps=0.0, eps_root=1e-8, centered=False, momentum=0.0):
    def run(theta, gs, is_weight):
        s, m, buf, out = np.zeros_like(theta), np.zeros_like(theta), np.zeros_like(theta), []
        for count, g in enumerate(gs):
            s = decay * s + (1 - decay) * g**2
            m = decay * m + (1 - decay) * g
            var = s - m**2 if centered else s
            d = g / (np.sqrt(var + eps_root) + eps)
            if momentum > 0:
                buf = momentum * buf + d
                d = buf
            out.append(-lr(count) * d)
        return out

    return run


def np_adam(lr, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, weight_decay=None):
    def run(theta, gs, is_weight):
        m, v, out = np.zeros_like(theta), np.zeros_like(theta), []
        for count, g in enumerate(gs):
            t = count + 1
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g**2
            m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
            u = -lr(count) * m_hat / (np.sqrt(v_hat + eps_root) + eps)
            if weight_decay is not None and is_weight:
                u = u - lr(count) * weight_decay * theta
            theta = theta + u
            out.append(u)
        return out

    return run


def np_adagrad(lr, initial_accumulator_value=0.1, eps=1e-7):
    def run(theta, gs, is_weight):
        s, out = np.full_like(theta, initial_accumulator_value), []
        for count, g in enumerate(gs):
            s = s + g**2
            out.append(-lr(count) * g / (np.sqrt(s) + eps))
        return out

    return run


def np_exponential_decay(init, rate, steps, staircase=False):
    return lambda c: init * rate ** (math.floor(c / steps) if staircase else c / steps)


def np_cosine_decay(init, steps, alpha=0.0):
    def lr(c):
        cosine = 0.5 * (1 + math.cos(math.pi * min(c, steps) / steps))
        return init * ((1 - alpha) * cosine + alpha)

    return lr


def np_warmup_cosine(init, peak, warmup, total, end=0.0):
    def lr(c):
        if c < warmup:
            return init + (peak - init) * c / warmup
        k = min(c - warmup, total - warmup) / (total - warmup)
        return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * k))

    return lr


def const(x):
    return lambda c: x


class Case(NamedTuple):
    id: str
    make: Callable[[], optim.GradientTransformation]
    ref: Callable


CASES = [
    Case("sgd", lambda: optim.sgd(0.1), np_sgd(const(0.1))),
    Case("sgd-momentum", lambda: optim.sgd(0.1, momentum=0.9), np_sgd(const(0.1), 0.9)),
    Case(
        "sgd-nesterov",
        lambda: optim.sgd(0.1, momentum=0.9, nesterov=True),
        np_sgd(const(0.1), 0.9, nesterov=True),
    ),
    Case("rmsprop", lambda: optim.rmsprop(0.01), np_rmsprop(const(0.01))),
    Case(
        "rmsprop-eps-outside",
        lambda: optim.rmsprop(0.01, eps=1e-8, eps_root=0.0),
        np_rmsprop(const(0.01), eps=1e-8, eps_root=0.0),
    ),
    Case(
        "rmsprop-centered",
        lambda: optim.rmsprop(0.01, decay=0.8, centered=True),
        np_rmsprop(const(0.01), decay=0.8, centered=True),
    ),
    Case(
        "rmsprop-momentum",
        lambda: optim.rmsprop(0.01, momentum=0.9),
        np_rmsprop(const(0.01), momentum=0.9),
    ),
    Case(
        "rmsprop-centered-momentum",
        lambda: optim.rmsprop(0.01, decay=0.95, eps=1e-6, centered=True, momentum=0.5),
        np_rmsprop(const(0.01), decay=0.95, eps=1e-6, centered=True, momentum=0.5),
    ),
    Case("adam", lambda: optim.adam(1e-3), np_adam(const(1e-3))),
    Case(
        "adam-eps-root",
        lambda: optim.adam(1e-3, b1=0.8, b2=0.99, eps_root=1e-8),
        np_adam(const(1e-3), b1=0.8, b2=0.99, eps_root=1e-8),
    ),
    Case("adam-eps0", lambda: optim.adam(1e-3, eps=0.0), np_adam(const(1e-3), eps=0.0)),
    Case(
        "adamw",
        lambda: optim.adamw(1e-2, weight_decay=0.1),
        np_adam(const(1e-2), weight_decay=0.1),
    ),
    Case("adagrad", lambda: optim.adagrad(0.1), np_adagrad(const(0.1))),
    Case(
        "adagrad-options",
        lambda: optim.adagrad(0.5, initial_accumulator_value=0.0, eps=1e-10),
        np_adagrad(const(0.5), 0.0, 1e-10),
    ),
    Case(
        "sgd-momentum-staircase-schedule",
        lambda: optim.sgd(optim.exponential_decay(0.1, 10, 0.5, staircase=True), 0.9),
        np_sgd(np_exponential_decay(0.1, 0.5, 10, staircase=True), 0.9),
    ),
    Case(
        "rmsprop-exponential-schedule",
        lambda: optim.rmsprop(optim.exponential_decay(0.01, 7, 0.9), centered=True),
        np_rmsprop(np_exponential_decay(0.01, 0.9, 7), centered=True),
    ),
    Case(
        "adam-warmup-cosine-schedule",
        lambda: optim.adam(optim.warmup_cosine_decay_schedule(0.0, 0.01, 5, 25, end_value=1e-3)),
        np_adam(np_warmup_cosine(0.0, 0.01, 5, 25, 1e-3)),
    ),
    Case(
        "adamw-cosine-schedule",
        lambda: optim.adamw(optim.cosine_decay_schedule(0.01, 20, alpha=0.1), weight_decay=0.05),
        np_adam(np_cosine_decay(0.01, 20, 0.1), weight_decay=0.05),
    ),
    Case(
        "adagrad-schedule",
        lambda: optim.adagrad(optim.cosine_decay_schedule(0.2, 40)),
        np_adagrad(np_cosine_decay(0.2, 40)),
    ),
]


def _counting_jit(opt):
    """jax.jit(opt.update) plus a list that grows by one on every trace."""
    traces = []

    def update(updates, state, params):
        traces.append(None)
        return opt.update(updates, state, params)

    return jax.jit(update), traces


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_matches_numpy_reference(case):
    opt = case.make()
    step, traces = _counting_jit(opt)
    params = jax.tree.map(jnp.asarray, PARAMS0)
    state = opt.init(params)
    history = []
    for g in GRADS:
        updates, state = step(g, state, params)
        params = optim.apply_updates(params, updates)
        history.append(updates)
    assert len(traces) == 1, "the jitted update retraced"
    assert int(state.count) == N_STEPS

    paths_theta, _ = jax.tree_util.tree_flatten_with_path(PARAMS0)
    for i, (path, theta0) in enumerate(paths_theta):
        is_weight = path[-1].key == "W"
        expected = case.ref(theta0, [jax.tree.leaves(g)[i] for g in GRADS], is_weight)
        actual = [np.asarray(jax.tree.leaves(u)[i]) for u in history]
        np.testing.assert_allclose(
            actual, expected, rtol=1e-10, atol=0, err_msg=jax.tree_util.keystr(path)
        )
        np.testing.assert_allclose(
            jax.tree.leaves(params)[i], theta0 + np.sum(expected, axis=0), rtol=1e-10
        )


# --------------------------------------------------------------------------------------
# Specific properties
# --------------------------------------------------------------------------------------


def test_adam_first_step_moves_each_parameter_by_learning_rate():
    opt = optim.adam(0.05, eps=0.0)
    params = jax.tree.map(jnp.asarray, PARAMS0)
    grads = GRADS[3]
    assert all(np.all(g != 0) for g in jax.tree.leaves(grads))
    updates, _ = jax.jit(opt.update)(grads, opt.init(params), params)
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads)):
        np.testing.assert_allclose(u, -0.05 * np.sign(g), rtol=1e-14)


def test_adamw_decays_W_only():
    rng = np.random.default_rng(2)
    shapes = [{"W": (3, 4), "b": (3,), "gamma": (3,), "beta": (3,)}, {"W": (2, 3), "b": (2,)}]
    params = jax.tree.map(jnp.asarray, _tree(rng, np.float64, shapes=shapes))
    zeros = jax.tree.map(jnp.zeros_like, params)
    opt = optim.adamw(0.1, weight_decay=0.01)
    updates, _ = jax.jit(opt.update)(zeros, opt.init(params), params)
    for layer_u, layer_p in zip(updates, params):
        np.testing.assert_allclose(layer_u["W"], -0.1 * 0.01 * layer_p["W"], rtol=1e-14)
        for name in layer_u.keys() - {"W"}:
            np.testing.assert_array_equal(layer_u[name], 0.0)


def test_adamw_without_W_keys_equals_adam_and_needs_params():
    params = {"a": jnp.ones(3), "nested": (jnp.full((2, 2), 0.5),)}
    grads = {"a": jnp.array([0.1, -2.0, 3.0]), "nested": (jnp.array([[1.0, -1], [2, 3]]),)}
    # no "W" leaf: the default mask refuses (test_adamw_default_mask_needs_a_W_leaf), so
    # say "decay nothing" with mask=False
    adamw, adam = optim.adamw(1e-2, weight_decay=0.5, mask=False), optim.adam(1e-2)
    u_w, s_w = jax.jit(adamw.update)(grads, adamw.init(params), params)
    u_a, s_a = jax.jit(adam.update)(grads, adam.init(params), params)
    chex.assert_trees_all_equal(u_w, u_a)
    # the states differ only in their hyperparameters (adamw's has weight_decay)
    chex.assert_trees_all_equal(s_w._replace(hyperparams=None), s_a._replace(hyperparams=None))
    with pytest.raises(ValueError, match="params"):
        adamw.update(grads, adamw.init(params))


def _adamw_against_reference(opt, params, mask_leaves, lr, wd, seed, n_steps=6):
    """Runs `opt` (an adamw) n_steps under jit and compares each leaf with np_adam's hand
    computation, decayed where `mask_leaves` (flat, in params' leaf order) is True."""
    rng = np.random.default_rng(seed)
    grads = [jax.tree.map(lambda p: rng.standard_normal(p.shape), params)
             for _ in range(n_steps)]
    step = jax.jit(opt.update)
    state, theta, history = opt.init(params), params, []
    for g in grads:
        u, state = step(g, state, theta)
        theta = optim.apply_updates(theta, u)
        history.append(u)
    leaves0 = jax.tree.leaves(params)
    assert len(mask_leaves) == len(leaves0)
    for i, (theta0, decayed) in enumerate(zip(leaves0, mask_leaves)):
        expected = np_adam(const(lr), weight_decay=wd)(
            np.asarray(theta0), [np.asarray(jax.tree.leaves(g)[i]) for g in grads], decayed)
        np.testing.assert_allclose([jax.tree.leaves(u)[i] for u in history], expected,
                                   rtol=1e-10, atol=1e-15)


def test_adamw_mask_on_a_dict_pytree():
    rng = np.random.default_rng(7)
    params = {"dense": {"kernel": jnp.asarray(rng.standard_normal((3, 2))),
                        "bias": jnp.asarray(rng.standard_normal(2))},
              "scale": jnp.asarray(rng.standard_normal(2))}
    # leaves in key order: dense.bias, dense.kernel, scale
    full = {"dense": {"kernel": True, "bias": False}, "scale": False}
    _adamw_against_reference(optim.adamw(0.05, weight_decay=0.3, mask=full), params,
                             [False, True, False], 0.05, 0.3, seed=1)
    prefix = {"dense": True, "scale": False}  # a bool covers its whole subtree
    _adamw_against_reference(optim.adamw(0.05, weight_decay=0.3, mask=prefix), params,
                             [True, True, False], 0.05, 0.3, seed=2)
    by_rank = lambda p: jax.tree.map(lambda x: x.ndim == 2, p)  # noqa: E731
    _adamw_against_reference(optim.adamw(0.05, weight_decay=0.3, mask=by_rank), params,
                             [False, True, False], 0.05, 0.3, seed=3)


def test_adamw_mask_on_a_tuple_pytree():
    rng = np.random.default_rng(8)
    params = (jnp.asarray(rng.standard_normal((2, 3))), jnp.asarray(rng.standard_normal(3)))
    _adamw_against_reference(optim.adamw(0.1, weight_decay=0.2, mask=(True, False)), params,
                             [True, False], 0.1, 0.2, seed=4)
    _adamw_against_reference(optim.adamw(0.1, weight_decay=0.2, mask=(False, True)), params,
                             [False, True], 0.1, 0.2, seed=5)
    _adamw_against_reference(optim.adamw(0.1, weight_decay=0.2, mask=True), params,
                             [True, True], 0.1, 0.2, seed=6)


def test_adamw_default_mask_on_an_mlp_decays_the_weight_matrices():
    import jaxmlp as jm
    model = jm.MLP((3, 4, 2), norm="layer")
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    is_w = [p[-1].key == "W" for p in paths]  # today's behaviour: "W" leaves only
    assert sum(is_w) == 2 and len(is_w) == 6  # W, b, beta, gamma; W, b
    _adamw_against_reference(optim.adamw(0.02, weight_decay=0.5), params, is_w, 0.02, 0.5,
                             seed=9)
    explicit = [{k: k == "W" for k in layer} for layer in params]
    a, b = optim.adamw(0.02, weight_decay=0.5), optim.adamw(0.02, weight_decay=0.5,
                                                            mask=explicit)
    g = jax.tree.map(jnp.ones_like, params)
    chex.assert_trees_all_equal(a.update(g, a.init(params), params),
                                b.update(g, b.init(params), params))


def test_adamw_default_mask_needs_a_W_leaf():
    params = {"a": jnp.ones(3), "nested": (jnp.full((2, 2), 0.5),)}
    grads = jax.tree.map(jnp.ones_like, params)
    opt = optim.adamw(1e-2, weight_decay=0.5)
    with pytest.raises(ValueError, match=r"^adamw: mask=None .* pass mask="):
        opt.init(params)
    with pytest.raises(ValueError, match=r"^adamw: mask=None"):  # and at the update
        jax.jit(opt.update)(grads, optim.adam(1e-2).init(params), params)
    optim.adamw(1e-2, weight_decay=0.0).init(params)  # nothing to decay: no mask needed


@pytest.mark.parametrize("mask, params, error, match", [
    ({"a": 1}, {"a": jnp.ones(2)}, TypeError, r"^adamw: mask must be None, a pytree of bools"),
    ({"a": True}, {"a": jnp.ones(2), "b": jnp.ones(2)}, ValueError,
     r"^adamw: mask must have the structure of params or of a prefix of it"),
    ((True, False, True), (jnp.ones(2), jnp.ones(2)), ValueError, r"^adamw: mask must have"),
    (lambda p: jax.tree.map(lambda x: x.ndim, p), {"a": jnp.ones(2)}, TypeError,
     r"^adamw: the pytree returned by mask\(params\) must hold Python bools"),
])
def test_adamw_refuses_a_bad_mask(mask, params, error, match):
    with pytest.raises(error, match=match):
        optim.adamw(1e-2, mask=mask).init(params)


def test_adamw_mask_is_described_and_shared():
    a = optim.adamw(1e-3, mask={"x": True, "y": False})
    assert a == optim.adamw(1e-2, mask={"y": False, "x": True})  # one compile for both
    assert a != optim.adamw(1e-3, mask={"x": False, "y": True})
    d = optim.describe(a)
    assert d["args"]["mask"] == [["x", True], ["y", False]]
    assert d != optim.describe(optim.adamw(1e-3, mask={"x": False, "y": True}))
    assert optim.describe(optim.adamw(1e-3))["args"]["mask"] is None
    import json
    assert json.loads(json.dumps(d)) == d


def test_schedule_learning_rate_starts_at_count_zero():
    opt = optim.sgd(lambda count: 1.0 + count)
    params = jax.tree.map(jnp.asarray, PARAMS0)
    step = jax.jit(opt.update)
    state = opt.init(params)
    for k in range(3):
        updates, state = step(GRADS[0], state, params)
        chex.assert_trees_all_close(updates, jax.tree.map(lambda g: -(1.0 + k) * g, GRADS[0]))


def test_traced_learning_rate_sweeps_under_vmap():
    params = jax.tree.map(jnp.asarray, PARAMS0)
    grads = GRADS[0]

    def first_update(lr):
        opt = optim.adam(lr)
        return opt.update(grads, opt.init(params), params)[0]

    swept = jax.jit(jax.vmap(first_update))(jnp.array([1e-3, 1e-2]))
    for i, lr in enumerate([1e-3, 1e-2]):
        opt = optim.adam(lr)  # a Python float: the validated, untraced path
        expected, _ = jax.jit(opt.update)(grads, opt.init(params), params)
        chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], swept), expected, rtol=1e-13)


# --------------------------------------------------------------------------------------
# Schedules: hand-computed values
# --------------------------------------------------------------------------------------

COS_QUARTER = 0.5 * (1 + math.sqrt(0.5))  # ½(1 + cos(π/4)) = 0.8535533905932737

SCHEDULE_GOLDENS = [
    ("constant", optim.constant_schedule(0.3), {0: 0.3, 7: 0.3, 10_000: 0.3}),
    (
        "exponential",
        optim.exponential_decay(2.0, 10, 0.5),
        {0: 2.0, 5: 2.0 * math.sqrt(0.5), 10: 1.0, 25: 2.0 * 0.5**2.5},
    ),
    (
        "exponential-staircase",
        optim.exponential_decay(2.0, 10, 0.5, staircase=True),
        {0: 2.0, 9: 2.0, 10: 1.0, 25: 0.5},
    ),
    (
        "cosine",
        optim.cosine_decay_schedule(2.0, 8, alpha=0.1),
        {0: 2.0, 2: 2.0 * (0.9 * COS_QUARTER + 0.1), 4: 1.1, 8: 0.2, 100: 0.2},
    ),
    ("cosine-alpha0", optim.cosine_decay_schedule(1.0, 4), {0: 1.0, 2: 0.5, 4: 0.0, 9: 0.0}),
    (
        "warmup-cosine",
        optim.warmup_cosine_decay_schedule(0.0, 1.0, 10, 110, end_value=0.1),
        {0: 0.0, 5: 0.5, 10: 1.0, 35: 0.1 + 0.9 * COS_QUARTER, 60: 0.55, 110: 0.1, 500: 0.1},
    ),
    (
        "warmup-cosine-no-warmup",
        optim.warmup_cosine_decay_schedule(0.5, 1.0, 0, 10),
        {0: 1.0, 5: 0.5, 10: 0.0},
    ),
]


@pytest.mark.parametrize(
    "schedule, goldens", [g[1:] for g in SCHEDULE_GOLDENS], ids=[g[0] for g in SCHEDULE_GOLDENS]
)
def test_schedule_goldens(schedule, goldens):
    counts = jnp.array(list(goldens), dtype=jnp.int32)
    values = jax.jit(jax.vmap(schedule))(counts)
    np.testing.assert_allclose(values, list(goldens.values()), rtol=1e-13, atol=1e-15)
    assert float(schedule(list(goldens)[-1])) == pytest.approx(list(goldens.values())[-1])


# --------------------------------------------------------------------------------------
# Clipping and chain
# --------------------------------------------------------------------------------------


def test_global_norm():
    tree = {"a": jnp.array([3.0]), "b": [jnp.array([[4.0, 0.0], [0.0, 12.0]])]}
    assert float(optim.global_norm(tree)) == pytest.approx(13.0, rel=1e-15)
    assert float(optim.global_norm([])) == 0.0


def test_clip_by_global_norm():
    grads = GRADS[5]
    norm = float(optim.global_norm(grads))
    above = optim.clip_by_global_norm(norm / 3)
    clipped, state = jax.jit(above.update)(grads, above.init(grads))
    assert isinstance(state, optim.ClipState)
    assert float(optim.hyperparams(state)["max_norm"]) == pytest.approx(norm / 3, rel=1e-15)
    assert float(optim.global_norm(clipped)) == pytest.approx(norm / 3, rel=1e-13)
    chex.assert_trees_all_close(clipped, jax.tree.map(lambda g: g / 3, grads), rtol=1e-13)

    below = optim.clip_by_global_norm(2 * norm)
    chex.assert_trees_all_equal(below.update(grads, below.init(grads))[0], grads)
    zeros = jax.tree.map(jnp.zeros_like, grads)
    chex.assert_trees_all_equal(below.update(zeros, below.init(zeros))[0], zeros)


def test_clip_threshold_is_data_traced_and_vmapped():
    grads = GRADS[5]
    norm = float(optim.global_norm(grads))
    taus = jnp.asarray([norm / 4, norm / 2, 2 * norm])
    step = jax.jit(lambda o, g, s: o.update(g, s), static_argnums=0)
    for tau in taus:  # one compile: the threshold is in the state
        opt = optim.clip_by_global_norm(float(tau))
        got, _ = step(opt, grads, opt.init(grads))
        assert float(optim.global_norm(got)) == pytest.approx(min(float(tau), norm), rel=1e-13)
    assert step._cache_size() == 1

    def clipped(tau):  # tau traced, under jit and vmap
        opt = optim.clip_by_global_norm(tau)
        return opt.update(grads, opt.init(grads))[0]

    batched = jax.jit(jax.vmap(clipped))(taus)
    for i, tau in enumerate(taus):
        want = optim.clip_by_global_norm(float(tau))
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], batched),
                                    want.update(grads, want.init(grads))[0], rtol=1e-12)
    with pytest.raises(ValueError, match="max_norm must be a scalar"):
        optim.clip_by_global_norm(jnp.ones(2))


def test_chain_of_clip_and_sgd_equals_manual_composition():
    clip, sgd = optim.clip_by_global_norm(0.5), optim.sgd(0.1, momentum=0.9)
    chained = optim.chain(clip, sgd)
    params = jax.tree.map(jnp.asarray, PARAMS0)
    state = chained.init(params)
    assert isinstance(state, tuple) and len(state) == 2
    clip_state, sgd_state = clip.init(params), sgd.init(params)
    step = jax.jit(chained.update)
    for g in GRADS[:5]:
        updates, state = step(g, state, params)
        c, clip_state = clip.update(g, clip_state, params)
        expected, sgd_state = sgd.update(c, sgd_state, params)
        chex.assert_trees_all_close(updates, expected, rtol=1e-12)
    chex.assert_trees_all_close(state, (clip_state, sgd_state), rtol=1e-12)


def test_identity_and_empty_chain():
    for t in (optim.identity(), optim.chain()):
        out, _ = t.update(GRADS[0], t.init(PARAMS0))
        chex.assert_trees_all_equal(out, GRADS[0])


# --------------------------------------------------------------------------------------
# Structure, dtypes, retracing, hashability
# --------------------------------------------------------------------------------------

STRUCT_OPTIMIZERS = {
    "sgd-nesterov": lambda: optim.sgd(0.1, momentum=0.9, nesterov=True),
    "rmsprop-centered-momentum": lambda: optim.rmsprop(0.1, centered=True, momentum=0.9),
    "adam": lambda: optim.adam(optim.cosine_decay_schedule(1e-3, 10)),
    "adamw": lambda: optim.adamw(1e-3),
    "adagrad": lambda: optim.adagrad(0.1),
    "chain-clip-adam": lambda: optim.chain(
        optim.clip_by_global_norm(1.0), optim.adam(optim.warmup_cosine_decay_schedule(0, 1e-3, 2, 10))
    ),
}


@pytest.mark.parametrize("make", STRUCT_OPTIMIZERS.values(), ids=STRUCT_OPTIMIZERS.keys())
def test_float32_structure_and_dtypes_preserved(make):
    rng = np.random.default_rng(3)
    shapes = [{"W": (3, 4), "b": (3,), "gamma": (3,), "beta": (3,)}, {"W": (2, 3), "b": (2,)}]
    params = jax.tree.map(jnp.asarray, _tree(rng, np.float32, shapes=shapes))
    opt = make()
    chex.clear_trace_counter()  # adam and adamw share their update's source code
    step = jax.jit(chex.assert_max_traces(opt.update, n=1))
    state0 = state = opt.init(params)
    for _ in range(3):
        grads = jax.tree.map(jnp.asarray, _tree(rng, np.float32, shapes=shapes))
        updates, state = step(grads, state, params)
        chex.assert_trees_all_equal_structs(updates, params)
        chex.assert_trees_all_equal_shapes_and_dtypes(updates, params)
        params = optim.apply_updates(params, updates)
        chex.assert_trees_all_equal_shapes_and_dtypes(state, state0)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    inner = state[-1] if type(state) is tuple else state  # a chain's state is a tuple
    assert int(inner.count) == 3 and inner.count.dtype == jnp.int32
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_state_fields_and_shapes():
    params = jax.tree.map(jnp.asarray, PARAMS0)
    assert optim.sgd(0.1).init(params).velocity == ()
    s = optim.rmsprop(0.1).init(params)
    assert isinstance(s, optim.RmsPropState) and s.mu == () and s.momentum == ()
    s = optim.adam(0.1).init(params)
    assert isinstance(s, optim.AdamState) and s.count.dtype == jnp.int32
    chex.assert_trees_all_equal_shapes_and_dtypes(s.mu, params)
    chex.assert_trees_all_equal_shapes_and_dtypes(s.nu, params)
    s = optim.adagrad(0.1, initial_accumulator_value=0.3).init(params)
    s0 = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
    chex.assert_trees_all_equal(s.sum_of_squares, s0)


def test_optimizers_are_hashable_and_usable_as_static_arguments():
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-3))
    assert hash(opt) == hash(opt) and opt in {opt}

    step = jax.jit(lambda o, g, s: o.update(g, s), static_argnums=0)
    params = jax.tree.map(jnp.asarray, PARAMS0)
    updates, _ = step(opt, GRADS[0], opt.init(params))
    chex.assert_trees_all_equal_structs(updates, params)


def test_equal_structure_gives_equal_optimizers_so_jit_compiles_once():
    # the numbers live in the state: optimizers of one factory and structure are equal
    # (and hash alike), whatever their numbers, so a jit with the optimizer static
    # compiles once for all of them; no object cache (optim._shared) is left
    assert not hasattr(optim, "_shared")
    assert optim.adam(1e-3) == optim.adam(3e-3, b1=0.8, eps=1e-6)
    assert hash(optim.adam(1e-3)) == hash(optim.adam(3e-3, b1=0.8))
    assert optim.adam(1e-3) == optim.adam(jnp.asarray(1e-3))  # a number or an array
    assert optim.adam(1e-3) != optim.adamw(1e-3)
    assert optim.adamw(1e-3, weight_decay=1e-4) == optim.adamw(1e-2, weight_decay=0.1)
    assert optim.adamw(1e-3) != optim.adamw(1e-3, weight_decay=0.0)  # no decay: structure
    assert optim.adam(1e-3) != optim.adam(1e-3, eps_root=1e-8)  # ε_root = 0 adds nothing
    assert optim.sgd(0.1) != optim.sgd(0.1, momentum=0.9)  # a velocity in the state
    assert optim.sgd(0.1, momentum=0.5) == optim.sgd(0.2, momentum=0.9)
    assert optim.sgd(0.1, momentum=0.5) != optim.sgd(0.1, momentum=0.5, nesterov=True)
    assert optim.rmsprop(0.1) != optim.rmsprop(0.1, centered=True)
    assert optim.sgd(optim.cosine_decay_schedule(0.1, 100)) == optim.sgd(
        optim.cosine_decay_schedule(0.5, 10, alpha=0.1))
    assert optim.sgd(optim.cosine_decay_schedule(0.1, 100)) != optim.sgd(0.1)
    assert optim.sgd(optim.exponential_decay(0.1, 10, 0.5)) != optim.sgd(
        optim.exponential_decay(0.1, 10, 0.5, staircase=True))
    sched = lambda c: 0.1  # noqa: E731  a user's callable: compared by identity
    assert optim.sgd(sched) == optim.sgd(sched) and optim.sgd(sched) != optim.sgd(lambda c: 0.1)
    assert (optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-3))
            == optim.chain(optim.clip_by_global_norm(3.0), optim.adam(2e-3)))
    with pytest.raises(TypeError, match="sgd: nesterov must be a bool"):
        optim.sgd(0.1, nesterov=1)

    step = jax.jit(lambda o, g, s: o.update(g, s), static_argnums=0)
    params = jax.tree.map(jnp.asarray, PARAMS0)
    results = {}
    for lr in (1e-3, 3e-3, 1e-2):
        opt = optim.chain(optim.clip_by_global_norm(2.0), optim.adam(lr))
        results[lr], _ = step(opt, GRADS[0], opt.init(params))
    assert step._cache_size() == 1
    for lr, got in results.items():  # each with its own rate, from its own state
        opt = optim.chain(optim.clip_by_global_norm(2.0), optim.adam(lr))
        want, _ = opt.update(GRADS[0], opt.init(params))
        chex.assert_trees_all_close(got, want, rtol=1e-12)


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------

BAD = [
    (lambda: optim.sgd(0.0), ValueError, "learning_rate.*got 0.0"),
    (lambda: optim.sgd(-0.1), ValueError, "learning_rate.*-0.1"),
    (lambda: optim.adam(float("nan")), ValueError, "learning_rate"),
    (lambda: optim.adam(float("inf")), ValueError, "learning_rate"),
    (lambda: optim.adam(jnp.array(-1e-3)), ValueError, "learning_rate"),
    (lambda: optim.adam(jnp.ones(2)), ValueError, "learning_rate"),
    (lambda: optim.sgd("0.1"), TypeError, "learning_rate"),
    (lambda: optim.sgd(None), TypeError, "learning_rate"),
    (lambda: optim.sgd(True), TypeError, "learning_rate"),
    (lambda: optim.sgd(0.1, momentum=1.0), ValueError, r"sgd: momentum must be a number in \[0, 1\), got 1.0"),
    (lambda: optim.sgd(0.1, momentum=-0.5), ValueError, "momentum"),
    (lambda: optim.sgd(0.1, nesterov=1), TypeError, "nesterov"),
    (lambda: optim.rmsprop(0.1, decay=1.0), ValueError, "decay"),
    (lambda: optim.rmsprop(0.1, eps=-1e-8), ValueError, "eps.*-1e-08"),
    (lambda: optim.rmsprop(0.1, eps_root=-1.0), ValueError, "eps_root"),
    (lambda: optim.rmsprop(0.1, centered="yes"), TypeError, "centered"),
    (lambda: optim.rmsprop(0.1, momentum=1.5), ValueError, "momentum"),
    (lambda: optim.adam(0.1, b1=1.0), ValueError, r"adam: b1 must be a number in \[0, 1\), got 1.0"),
    (lambda: optim.adam(0.1, b1=-0.1), ValueError, "b1"),
    (lambda: optim.adam(0.1, b2=1.0), ValueError, r"adam: b2 must be a number in \[0, 1\), got 1.0"),
    (lambda: optim.adam(0.1, b2=float("nan")), ValueError, "b2"),
    (lambda: optim.adam(0.1, b1="0.9"), TypeError, r"adam: b1 must be a number in \[0, 1\), got '0.9'"),
    (lambda: optim.adam(0.1, eps=-1e-8), ValueError, "eps"),
    (lambda: optim.adam(0.1, eps_root=-1e-8), ValueError, "eps_root"),
    (lambda: optim.adamw(0.1, weight_decay=-1e-4), ValueError, "weight_decay"),
    (lambda: optim.adamw(0.0), ValueError, "learning_rate"),
    (lambda: optim.adamw(0.1, b2=1.0), ValueError, "b2"),
    (
        lambda: optim.adagrad(0.1, initial_accumulator_value=-1.0),
        ValueError,
        "initial_accumulator_value",
    ),
    (lambda: optim.adagrad(0.1, eps=-1.0), ValueError, "eps"),
    (lambda: optim.adagrad(-1), ValueError, "learning_rate"),
    (lambda: optim.clip_by_global_norm(0.0), ValueError, "max_norm.*0.0"),
    (lambda: optim.clip_by_global_norm(-1.0), ValueError, "max_norm"),
    (lambda: optim.chain(optim.adam(0.1), "sgd"), TypeError, "chain.*argument 1"),
    (lambda: optim.constant_schedule(float("nan")), ValueError, "value"),
    (lambda: optim.exponential_decay(-1.0, 10, 0.5), ValueError, "init_value"),
    (lambda: optim.exponential_decay(1.0, 10, 0.0), ValueError, "decay_rate"),
    (lambda: optim.exponential_decay(1.0, 0, 0.5), ValueError, "transition_steps.*0"),
    (lambda: optim.exponential_decay(1.0, 2.5, 0.5), TypeError, "transition_steps"),
    (lambda: optim.exponential_decay(1.0, 10, 0.5, staircase="no"), TypeError, "staircase"),
    (lambda: optim.cosine_decay_schedule(1.0, 0), ValueError, "decay_steps"),
    (lambda: optim.cosine_decay_schedule(1.0, 10, alpha=1.5), ValueError, "alpha.*1.5"),
    (lambda: optim.warmup_cosine_decay_schedule(0.0, 1.0, 10, 10), ValueError, "decay_steps"),
    (lambda: optim.warmup_cosine_decay_schedule(0.0, 1.0, -1, 10), ValueError, "warmup_steps"),
    (lambda: optim.warmup_cosine_decay_schedule(0.0, float("nan"), 1, 10), ValueError, "peak_value"),
    (lambda: optim.warmup_cosine_decay_schedule(0.0, 1.0, 1, 10, end_value=-0.1), ValueError, "end_value"),
]


@pytest.mark.parametrize("make, error, match", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_hyperparameters_raise(make, error, match):
    with pytest.raises(error, match=match):
        make()


# ----------------------------------------------------------------- hostile hyperparameters

@pytest.mark.parametrize("schedule,error,match", [
    (lambda c: jnp.full(3, 0.1), ValueError, r"must return a scalar rate, got an array of shape \(3,\)"),
    (lambda c: jnp.nan, ValueError, "returned nan at count 0"),
    (lambda c: jnp.inf, ValueError, "returned inf at count 0"),
    (lambda c: -0.1, ValueError, "returned -0.1 at count 0: rates must be finite and >= 0"),
    (lambda c: "fast", TypeError, "must return a number"),
    (lambda c: jnp.asarray(0.1 + 0j), TypeError, "must return a real number"),
])
def test_bad_schedules_are_refused_when_the_optimizer_is_built(schedule, error, match):
    for make in (optim.sgd, optim.adam, optim.rmsprop):
        with pytest.raises(error, match=match):
            make(schedule)


def test_a_traced_bad_rate_becomes_a_nan_update():
    """Under jit a rate is only known at run time: NaN, Inf or negative gives a NaN
    update, which fit's guard catches at that step (tested in test_train)."""
    opt = optim.sgd(lambda c: jnp.where(c < 1, 0.5, -0.5))
    params = {"w": jnp.ones(2)}
    update = jax.jit(opt.update)
    state = opt.init(params)
    u, state = update(params, state)
    np.testing.assert_allclose(u["w"], -0.5)
    u, state = update(params, state)
    assert bool(jnp.all(jnp.isnan(u["w"])))
    with pytest.raises(ValueError, match="must return a scalar rate"):
        jax.jit(optim.sgd(lambda c: jnp.where(c < 0, jnp.ones(2), 0.1)).update)(params, state)


@pytest.mark.parametrize("make,other", [
    (lambda: optim.adam(1e-3), lambda: optim.sgd(0.1)),
    (lambda: optim.sgd(0.1), lambda: optim.adam(1e-3)),
    (lambda: optim.rmsprop(0.1), lambda: optim.adagrad(0.1)),
    (lambda: optim.adagrad(0.1), lambda: optim.rmsprop(0.1)),
    (lambda: optim.adamw(0.1), lambda: optim.sgd(0.1)),
    (lambda: optim.clip_by_global_norm(1.0), lambda: optim.sgd(0.1)),
    (lambda: optim.chain(optim.sgd(0.1)), lambda: optim.sgd(0.1)),
])
def test_an_update_refuses_another_optimizers_state(make, other):
    params = {"W": jnp.ones((2, 2))}
    with pytest.raises(TypeError, match="another optimizer|tuple of their"):
        make().update(params, other().init(params), params)


def test_describe_names_type_and_every_hyperparameter():
    d = optim.describe(optim.adam(1e-3))
    assert d == {"name": "adam", "args": {"learning_rate": 0.001, "b1": 0.9, "b2": 0.999,
                                          "eps": 1e-8, "eps_root": 0.0}}
    assert optim.describe(optim.adam(1e-3, b1=0.8)) != d
    sched = optim.describe(optim.sgd(optim.exponential_decay(0.1, 10, 0.5)))
    assert sched["args"]["learning_rate"] == {
        "name": "exponential_decay",
        "args": {"init_value": 0.1, "transition_steps": 10, "decay_rate": 0.5,
                 "transition_begin": 0, "staircase": False, "end_value": None}}
    chained = optim.describe(optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-3)))
    assert [t["name"] for t in chained["args"]["transforms"]] == ["clip_by_global_norm", "adam"]
    a = optim.describe(optim.sgd(lambda c: 0.1))
    b = optim.describe(optim.sgd(lambda c: 0.2))
    assert a["args"]["learning_rate"]["callable"].endswith("<lambda>") and a != b
    arr = optim.describe(optim.sgd(jnp.asarray(0.1)))["args"]["learning_rate"]
    assert arr["array"] == [] and len(arr["sha256"]) == 64
    import json
    json.dumps([d, sched, chained, a, arr])  # stored in checkpoints
