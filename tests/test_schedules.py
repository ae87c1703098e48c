"""The optax-shaped learning-rate schedules of jaxmlp.optim against optax's documented
formulas, written out below in plain Python floats (no optax dependency): each schedule at
10 or more counts including its boundaries, eagerly and under `jax.jit` with a traced int32
count (float64, 1e-12), as an optimizer's learning rate, their descriptions (checkpoints
fingerprint an optimizer by them) and their refusals."""
from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp import optim

INT32_MAX = 2**31 - 1


# --------------------------------------------------------------------------------------
# optax's formulas, count -> value, in Python floats
# --------------------------------------------------------------------------------------


def f_constant(value):
    return lambda c: value


def f_linear(init, end, steps, begin=0):
    # init + (end − init)·clip((count − begin)/steps, 0, 1)
    return lambda c: init + (end - init) * min(max((c - begin) / steps, 0.0), 1.0)


def f_exponential(init, steps, rate, begin=0, staircase=False, end=None):
    # init·rate^((count − begin)/steps) (exponent floored with staircase); init while
    # count <= begin; then clipped at end: a lower bound when rate < 1, an upper one else
    def f(c):
        if c <= begin:
            v = init
        else:
            p = (c - begin) / steps
            try:
                v = init * rate ** (math.floor(p) if staircase else p)
            except OverflowError:  # rate > 1 at a huge count: float64's inf
                v = math.inf
        if end is not None:
            v = max(v, end) if rate < 1 else min(v, end)
        return v

    return f


def f_cosine(init, steps, alpha=0.0, exponent=1.0):
    # init·((1 − α)·(½(1 + cos(π·min(count, steps)/steps)))^exponent + α)
    return lambda c: init * (
        (1 - alpha) * (0.5 * (1 + math.cos(math.pi * min(c, steps) / steps))) ** exponent
        + alpha)


def f_warmup_cosine(init, peak, warmup, decay, end=0.0, exponent=1.0):
    # linear init → peak over warmup, then cosine peak → end over decay − warmup (decay
    # counts the warm-up)
    def f(c):
        if c < warmup:
            return init + (peak - init) * c / warmup
        d = decay - warmup
        cosine = 0.5 * (1 + math.cos(math.pi * min(c - warmup, d) / d))
        return end + (peak - end) * cosine**exponent

    return f


def f_piecewise(init, boundaries_and_scales):
    # init × the product of the scales of every boundary <= count (in boundary order)
    def f(c):
        v = init
        for b, s in sorted(boundaries_and_scales.items()):
            if c >= b:
                v *= s
        return v

    return f


def f_join(fs, boundaries):
    # schedule i on [boundaries[i − 1], boundaries[i]), with count − boundaries[i − 1]
    def f(c):
        i = sum(c >= b for b in boundaries)
        return fs[i](c - (boundaries[i - 1] if i else 0))

    return f


# (id, schedule, formula, counts)
CASES = [
    ("constant", optim.constant_schedule(0.3), f_constant(0.3),
     [0, 1, 2, 7, 10, 100, 1000, 10_000, 2**20, INT32_MAX]),
    ("linear", optim.linear_schedule(1.0, 0.1, 10), f_linear(1.0, 0.1, 10),
     [0, 1, 2, 5, 9, 10, 11, 20, 1000, INT32_MAX]),
    ("linear-up-begin", optim.linear_schedule(0.0, 2.0, 8, transition_begin=5),
     f_linear(0.0, 2.0, 8, 5), [0, 1, 4, 5, 6, 9, 12, 13, 14, 100, INT32_MAX]),
    ("exponential", optim.exponential_decay(2.0, 10, 0.5), f_exponential(2.0, 10, 0.5),
     [0, 1, 5, 9, 10, 11, 25, 100, 1000, 5000]),
    ("exponential-staircase", optim.exponential_decay(2.0, 10, 0.5, staircase=True),
     f_exponential(2.0, 10, 0.5, staircase=True), [0, 1, 9, 10, 11, 19, 20, 25, 99, 100]),
    ("exponential-begin-end",
     optim.exponential_decay(1.0, 4, 0.5, transition_begin=6, end_value=0.2),
     f_exponential(1.0, 4, 0.5, 6, end=0.2), [0, 3, 5, 6, 7, 10, 14, 15, 16, 20, 1000,
                                              INT32_MAX]),
    ("exponential-staircase-begin-end",
     optim.exponential_decay(1.0, 3, 0.1, transition_begin=2, staircase=True, end_value=0.005),
     f_exponential(1.0, 3, 0.1, 2, True, 0.005), [0, 1, 2, 3, 4, 5, 7, 8, 10, 11, 50]),
    ("exponential-growth-upper-bound", optim.exponential_decay(0.1, 5, 2.0, end_value=0.7),
     f_exponential(0.1, 5, 2.0, end=0.7), [0, 1, 4, 5, 6, 10, 14, 15, 20, 100, INT32_MAX]),
    ("cosine", optim.cosine_decay_schedule(2.0, 8, alpha=0.1), f_cosine(2.0, 8, 0.1),
     [0, 1, 2, 3, 4, 5, 7, 8, 9, 100, INT32_MAX]),
    ("cosine-exponent", optim.cosine_decay_schedule(1.0, 10, alpha=0.05, exponent=2.0),
     f_cosine(1.0, 10, 0.05, 2.0), [0, 1, 2, 3, 5, 7, 9, 10, 11, 1000]),
    ("warmup-cosine",
     optim.warmup_cosine_decay_schedule(0.0, 1.0, 10, 110, end_value=0.1),
     f_warmup_cosine(0.0, 1.0, 10, 110, 0.1), [0, 1, 5, 9, 10, 11, 35, 60, 109, 110, 111,
                                                500, INT32_MAX]),
    ("warmup-cosine-init-exponent",
     optim.warmup_cosine_decay_schedule(0.2, 1.0, 4, 12, end_value=0.05, exponent=3.0),
     f_warmup_cosine(0.2, 1.0, 4, 12, 0.05, 3.0), [0, 1, 2, 3, 4, 5, 8, 11, 12, 13, 40]),
    ("warmup-cosine-no-warmup", optim.warmup_cosine_decay_schedule(0.5, 1.0, 0, 10),
     f_warmup_cosine(0.5, 1.0, 0, 10), [0, 1, 2, 4, 5, 6, 9, 10, 11, 100]),
    ("piecewise",
     optim.piecewise_constant_schedule(1.0, {10: 0.1, 20: 0.5, 5: 2.0}),
     f_piecewise(1.0, {10: 0.1, 20: 0.5, 5: 2.0}), [0, 1, 4, 5, 6, 9, 10, 11, 19, 20, 21,
                                                    1000, INT32_MAX]),
    ("piecewise-at-zero", optim.piecewise_constant_schedule(0.5, {0: 0.1, 3: 0.0}),
     f_piecewise(0.5, {0: 0.1, 3: 0.0}), [0, 1, 2, 3, 4, 5, 10, 100, 1000, INT32_MAX]),
    ("piecewise-none", optim.piecewise_constant_schedule(0.25), f_piecewise(0.25, {}),
     [0, 1, 2, 3, 5, 8, 13, 21, 34, 1000]),
    ("join",
     optim.join_schedules([optim.linear_schedule(0.0, 1.0, 5),
                           optim.constant_schedule(1.0),
                           optim.exponential_decay(1.0, 2, 0.5)], [5, 12]),
     f_join([f_linear(0.0, 1.0, 5), f_constant(1.0), f_exponential(1.0, 2, 0.5)], [5, 12]),
     [0, 1, 4, 5, 6, 11, 12, 13, 14, 20, 100, INT32_MAX]),
    ("join-a-function", optim.join_schedules([lambda c: 0.5 + 0.0 * c,
                                              lambda c: 0.5 / (1.0 + c)], [3]),
     f_join([lambda c: 0.5, lambda c: 0.5 / (1.0 + c)], [3]),
     [0, 1, 2, 3, 4, 5, 6, 10, 50, 1000]),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("schedule, formula, counts", [c[1:] for c in CASES], ids=IDS)
def test_schedule_equals_optax_formula(schedule, formula, counts):
    assert len(counts) >= 10
    expected = np.array([formula(c) for c in counts], dtype=np.float64)
    eager = np.array([float(schedule(c)) for c in counts])
    np.testing.assert_allclose(eager, expected, rtol=1e-12, atol=1e-12)
    # under jit, count a traced int32 (as an optimizer state's count is)
    traced = jax.jit(jax.vmap(schedule))(jnp.asarray(counts, dtype=jnp.int32))
    assert traced.dtype == jnp.float64 and traced.shape == (len(counts),)
    np.testing.assert_allclose(traced, expected, rtol=1e-12, atol=1e-12)


def test_warmup_cosine_decay_steps_include_the_warmup():
    s = optim.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=10, decay_steps=110,
                                           end_value=0.1)
    assert float(s(10)) == 1.0  # the peak, at the end of the warm-up
    assert float(s(60)) == pytest.approx(0.55, abs=1e-15)  # half-way: (peak + end) / 2
    assert float(s(110)) == pytest.approx(0.1, abs=1e-15)  # end, at decay_steps


def test_piecewise_boundary_applies_at_its_count():
    s = optim.piecewise_constant_schedule(1.0, {10: 0.1})
    assert [float(s(c)) for c in (9, 10, 11)] == [1.0, 0.1, 0.1]


def test_join_restarts_each_schedule_at_its_boundary():
    s = optim.join_schedules([optim.constant_schedule(2.0), lambda c: 1.0 + 0.0 * c + c], [7])
    assert [float(s(c)) for c in (6, 7, 8)] == [2.0, 1.0, 2.0]


def test_schedule_as_learning_rate_under_jit():
    sched = optim.join_schedules(
        [optim.linear_schedule(0.0, 0.1, 4), optim.piecewise_constant_schedule(0.1, {3: 0.5})],
        [4])
    formula = f_join([f_linear(0.0, 0.1, 4), f_piecewise(0.1, {3: 0.5})], [4])
    opt = optim.sgd(sched)
    params = {"w": jnp.array([1.0, -2.0])}
    grads = {"w": jnp.array([0.5, 3.0])}
    step = jax.jit(opt.update)
    state = opt.init(params)
    for count in range(10):
        updates, state = step(grads, state, params)
        np.testing.assert_allclose(updates["w"], -formula(count) * grads["w"], rtol=1e-12,
                                   atol=1e-15)


def test_schedules_of_one_structure_are_equal():
    # a schedule's numbers live in the optimizer's state: schedules that differ only in
    # them are equal, so fit's jit compiles once for them; the static options are not
    a = optim.piecewise_constant_schedule(1.0, {10: 0.1, 20: 0.5})
    assert a == optim.piecewise_constant_schedule(1.0, {20: 0.5, 10: 0.1})
    assert a == optim.piecewise_constant_schedule(2.0, {10: 0.1, 20: 0.25})  # scales: values
    assert a != optim.piecewise_constant_schedule(1.0, {10: 0.1, 30: 0.5})  # boundaries
    lin = optim.linear_schedule(0.0, 1.0, 5)
    j = optim.join_schedules([lin, optim.constant_schedule(1.0)], [5])
    assert j == optim.join_schedules([optim.linear_schedule(0.5, 1.0, 8),
                                      optim.constant_schedule(2.0)], [9])
    assert j != optim.join_schedules([optim.constant_schedule(1.0), lin], [5])
    assert optim.linear_schedule(0.0, 1.0, 5) == optim.linear_schedule(
        init_value=0.3, end_value=1.0, transition_steps=50, transition_begin=2)
    assert hash(optim.linear_schedule(0.0, 1.0, 5)) == hash(optim.linear_schedule(1.0, 0.0, 7))
    assert optim.exponential_decay(1.0, 10, 0.5) != optim.exponential_decay(
        1.0, 10, 0.5, end_value=0.1)


# --------------------------------------------------------------------------------------
# Descriptions: every argument, defaults filled in, JSON round trip unchanged
# --------------------------------------------------------------------------------------

DESCRIBED = [
    (optim.constant_schedule(0.3), "constant_schedule", {"value": 0.3}),
    (optim.linear_schedule(1.0, 0.1, 10), "linear_schedule",
     {"init_value": 1.0, "end_value": 0.1, "transition_steps": 10, "transition_begin": 0}),
    (optim.exponential_decay(2.0, 10, 0.5, end_value=0.1), "exponential_decay",
     {"init_value": 2.0, "transition_steps": 10, "decay_rate": 0.5, "transition_begin": 0,
      "staircase": False, "end_value": 0.1}),
    (optim.cosine_decay_schedule(1.0, 8), "cosine_decay_schedule",
     {"init_value": 1.0, "decay_steps": 8, "alpha": 0.0, "exponent": 1.0}),
    (optim.warmup_cosine_decay_schedule(0.0, 1.0, 2, 10), "warmup_cosine_decay_schedule",
     {"init_value": 0.0, "peak_value": 1.0, "warmup_steps": 2, "decay_steps": 10,
      "end_value": 0.0, "exponent": 1.0}),
    (optim.piecewise_constant_schedule(1.0, {20: 0.5, 10: 0.1}), "piecewise_constant_schedule",
     {"init_value": 1.0, "boundaries_and_scales": [[10, 0.1], [20, 0.5]]}),
    (optim.join_schedules([optim.constant_schedule(1.0), optim.cosine_decay_schedule(1.0, 8)],
                          [5]), "join_schedules",
     {"schedules": [{"name": "constant_schedule", "args": {"value": 1.0}},
                    {"name": "cosine_decay_schedule",
                     "args": {"init_value": 1.0, "decay_steps": 8, "alpha": 0.0,
                              "exponent": 1.0}}],
      "boundaries": [5]}),
    (optim.cosine_decay(1.0, 8), "cosine_decay",  # the older spelling keeps its description
     {"init_value": 1.0, "decay_steps": 8, "alpha": 0.0}),
]


@pytest.mark.parametrize("schedule, name, args", DESCRIBED, ids=[d[1] for d in DESCRIBED])
def test_describe_names_every_argument(schedule, name, args):
    d = optim.describe(schedule)
    assert d == {"name": name, "args": args}
    assert json.loads(json.dumps(d)) == d  # what a checkpoint stores compares equal
    assert optim.describe(optim.adam(schedule))["args"]["learning_rate"] == d


def test_describe_tells_schedules_apart():
    pairs = [
        (optim.exponential_decay(1.0, 10, 0.5), optim.exponential_decay(1.0, 10, 0.5, 1)),
        (optim.exponential_decay(1.0, 10, 0.5), optim.exponential_decay(1.0, 10, 0.5,
                                                                         end_value=0.1)),
        (optim.piecewise_constant_schedule(1.0, {10: 0.1}),
         optim.piecewise_constant_schedule(1.0, {11: 0.1})),
        (optim.join_schedules([optim.constant_schedule(1.0), optim.constant_schedule(0.5)], [5]),
         optim.join_schedules([optim.constant_schedule(1.0), optim.constant_schedule(0.5)], [6])),
        (optim.cosine_decay_schedule(1.0, 8), optim.cosine_decay(1.0, 8)),
    ]
    for a, b in pairs:
        assert optim.describe(a) != optim.describe(b)


def test_older_spellings_still_work():
    np.testing.assert_allclose(
        [float(optim.cosine_decay(2.0, 8, alpha=0.1)(c)) for c in range(12)],
        [f_cosine(2.0, 8, 0.1)(c) for c in range(12)], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        [float(optim.warmup_cosine_decay(0.0, 1.0, 3, 9, end_value=0.1)(c)) for c in range(12)],
        [f_warmup_cosine(0.0, 1.0, 3, 9, 0.1)(c) for c in range(12)], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------
# Refusals: "<function>: <argument> must be ..., got ..."
# --------------------------------------------------------------------------------------

BAD = [
    (lambda: optim.linear_schedule(-1.0, 0.0, 10), ValueError,
     r"^linear_schedule: init_value must be a finite number >= 0, got -1.0"),
    (lambda: optim.linear_schedule(1.0, "0", 10), TypeError,
     r"^linear_schedule: end_value must be .*, got '0'"),
    (lambda: optim.linear_schedule(1.0, 0.0, 0), ValueError,
     r"^linear_schedule: transition_steps must be a positive int, got 0 \(optax"),
    (lambda: optim.linear_schedule(1.0, 0.0, 2.5), TypeError,
     r"^linear_schedule: transition_steps must be a positive int, got 2.5"),
    (lambda: optim.linear_schedule(1.0, 0.0, 10, transition_begin=-1), ValueError,
     r"^linear_schedule: transition_begin must be an int >= 0, got -1"),
    (lambda: optim.exponential_decay(1.0, -3, 0.5), ValueError,
     r"^exponential_decay: transition_steps must be a positive int, got -3"),
    (lambda: optim.exponential_decay(1.0, 10, -0.5), ValueError,
     r"^exponential_decay: decay_rate must be a finite number > 0, got -0.5"),
    (lambda: optim.exponential_decay(1.0, 10, 0.5, transition_begin=1.0), TypeError,
     r"^exponential_decay: transition_begin must be an int >= 0, got 1.0"),
    (lambda: optim.exponential_decay(1.0, 10, 0.5, end_value=-0.1), ValueError,
     r"^exponential_decay: end_value must be None or a finite number >= 0, got -0.1"),
    (lambda: optim.exponential_decay(1.0, 10, 0.5, end_value="0.1"), TypeError,
     r"^exponential_decay: end_value must be None or a finite number >= 0, got '0.1'"),
    (lambda: optim.cosine_decay_schedule(1.0, 10, exponent=0.0), ValueError,
     r"^cosine_decay_schedule: exponent must be a finite number > 0, got 0.0"),
    (lambda: optim.cosine_decay_schedule(1.0, 10, alpha="0"), TypeError,
     r"^cosine_decay_schedule: alpha must be a number in \[0, 1\], got '0'"),
    (lambda: optim.cosine_decay_schedule(1.0, 0), ValueError,
     r"^cosine_decay_schedule: decay_steps must be a positive int, got 0"),
    (lambda: optim.warmup_cosine_decay_schedule(0.0, 1.0, 5, 5), ValueError,
     r"^warmup_cosine_decay_schedule: decay_steps must be > warmup_steps \(5\)"),
    (lambda: optim.warmup_cosine_decay_schedule(0.0, 0.0, 1, 5, end_value=0.1), ValueError,
     r"^warmup_cosine_decay_schedule: end_value must be 0 when peak_value is 0"),
    (lambda: optim.warmup_cosine_decay_schedule(0.0, 1.0, 1, 5, exponent=float("inf")),
     ValueError, r"^warmup_cosine_decay_schedule: exponent must be"),
    (lambda: optim.warmup_cosine_decay_schedule(0.0, 1.0, 1.5, 5), TypeError,
     r"^warmup_cosine_decay_schedule: warmup_steps must be an int >= 0, got 1.5"),
    (lambda: optim.piecewise_constant_schedule(1.0, [(10, 0.1)]), TypeError,
     r"^piecewise_constant_schedule: boundaries_and_scales must be None or a dict"),
    (lambda: optim.piecewise_constant_schedule(1.0, {-1: 0.1}), ValueError,
     r"^piecewise_constant_schedule: each boundary \(key\) of boundaries_and_scales must be "
     r"an int >= 0, got -1"),
    (lambda: optim.piecewise_constant_schedule(1.0, {2.5: 0.1}), TypeError,
     r"^piecewise_constant_schedule: each boundary \(key\) of boundaries_and_scales"),
    (lambda: optim.piecewise_constant_schedule(1.0, {10: -0.5}), ValueError,
     r"^piecewise_constant_schedule: boundaries_and_scales\[10\] must be a finite number "
     r">= 0, got -0.5"),
    (lambda: optim.piecewise_constant_schedule(1.0, {10: float("nan")}), ValueError,
     r"^piecewise_constant_schedule: boundaries_and_scales\[10\] must be"),
    (lambda: optim.piecewise_constant_schedule(float("inf"), {10: 0.5}), ValueError,
     r"^piecewise_constant_schedule: init_value must be"),
    (lambda: optim.join_schedules([], []), TypeError,
     r"^join_schedules: schedules must be a non-empty list of schedules"),
    (lambda: optim.join_schedules([optim.constant_schedule(1.0), 0.5], [3]), TypeError,
     r"^join_schedules: schedules must be"),
    (lambda: optim.join_schedules([optim.constant_schedule(1.0)] * 2, 3), TypeError,
     r"^join_schedules: boundaries must be a list of ints >= 0, got 3"),
    (lambda: optim.join_schedules([optim.constant_schedule(1.0)] * 2, [3, 5]), ValueError,
     r"^join_schedules: boundaries must have len\(schedules\) - 1 = 1 entries, got \[3, 5\]"),
    (lambda: optim.join_schedules([optim.constant_schedule(1.0)] * 3, [5, 5]), ValueError,
     r"^join_schedules: boundaries must be increasing, got \[5, 5\]"),
    (lambda: optim.join_schedules([optim.constant_schedule(1.0)] * 2, [-1]), ValueError,
     r"^join_schedules: each entry of boundaries must be an int >= 0, got -1"),
    (lambda: optim.join_schedules([optim.constant_schedule(1.0)] * 2, ["3"]), TypeError,
     r"^join_schedules: each entry of boundaries must be an int >= 0, got '3'"),
]


@pytest.mark.parametrize("make, error, match", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_schedule_arguments_name_the_argument(make, error, match):
    with pytest.raises(error, match=match):
        make()
