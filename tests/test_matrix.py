"""Manual δ backprop ≡ jax.grad of the loss over the declared matrix, float64, rel. err ≤ 1e-9:
every hidden activation × every valid (output, loss) pair × depths 1-4 × without and with
l1/l2 (1008 configurations), the loss, the grads and the δ of every layer.

By default a factorised subset runs: 18 cells, one per (output, loss) pair, that between
them cover every activation and every depth, each without and with the penalties.  The
other 486 cells are marked `slow` (`python -m pytest -m slow`, which CI runs too).

The cells run eagerly (`jax.disable_jit`): XLA compiles each primitive once per shape and
reuses it, where a jit per cell would compile a program per cell.
"""
import functools

import jax
import jax.numpy as jnp
import pytest

import jaxmlp as jm
from jaxmlp.activations import HIDDEN_ACTIVATIONS as HIDDEN  # all of them
from jaxmlp.backprop import backprop_pass
from tests.test_backprop import (K, N, N_IN, OUTPUT_LOSS, RTOL, autodiff_reference, make_data,
                                 prepared_y, rel_err)

DEPTHS = (1, 2, 3, 4)  # hidden layers
PENALTIES = {"nopen": (0.0, 0.0), "l1l2": (0.03, 0.05)}
WIDTH = 4
CELLS = [(a, o, l, d) for a in HIDDEN for o, l in OUTPUT_LOSS for d in DEPTHS]
# pair i with activation i mod 7 and depth i mod 4: all 18 pairs, 7 activations, 4 depths
SUBSET = {(HIDDEN[i % len(HIDDEN)], o, l, DEPTHS[i % len(DEPTHS)])
          for i, (o, l) in enumerate(OUTPUT_LOSS)}


@pytest.fixture(scope="module")
def penalty_value_and_grad():
    """jax.value_and_grad of the penalty, jitted once per (sizes, l1, l2) and shared by the
    cells: it depends on the weights only, and eager autodiff of it cost a third of a cell."""
    @functools.cache
    def make(sizes, l1, l2):
        return jax.jit(jax.value_and_grad(
            functools.partial(jm.losses.penalty, jm.MLP(sizes, l1=l1, l2=l2))))
    return make


@pytest.mark.parametrize("cell", [c if c in SUBSET else pytest.param(c, marks=pytest.mark.slow)
                                  for c in CELLS],
                         ids=["{}-{}-{}-depth{}".format(*c) for c in CELLS])
def test_matrix_manual_equals_autodiff(cell, penalty_value_and_grad):
    """One autodiff pass of the unpenalised loss serves both penalty settings: by linearity
    the penalised reference is jax.grad(L) + jax.grad(penalty), and δ does not depend on it."""
    activation, output, loss, depth = cell
    sizes = (N_IN,) + (WIDTH,) * depth + (K,)
    plain = jm.MLP(sizes, activation=activation, output=output, loss=loss)
    with jax.disable_jit():
        params = jm.init_params(jax.random.key(0), plain, dtype=jnp.float64)
        x, y = make_data(plain, seed=1)
        L, g, d = autodiff_reference(plain, params, x, y)
        for pen, (l1, l2) in PENALTIES.items():
            model = jm.MLP(sizes, activation=activation, output=output, loss=loss, l1=l1, l2=l2)
            res = backprop_pass(model, params, x, prepared_y(model, y))
            with jax.disable_jit(False):
                P, gP = penalty_value_and_grad(sizes, l1, l2)(params)
            ref = jax.tree_util.tree_map(jnp.add, g, gP)
            assert (jax.tree_util.tree_structure(res.grads)
                    == jax.tree_util.tree_structure(params)), pen
            assert [tuple(dm.shape) for dm in res.deltas] == [(N, s) for s in sizes[1:]], pen
            assert abs(float(res.loss) - float(L + P)) <= 1e-12 * max(1.0, abs(float(L + P))), pen
            assert rel_err(res.grads, ref) <= RTOL, pen
            assert max(rel_err(dm, da) for dm, da in zip(res.deltas, d)) <= RTOL, pen


def test_matrix_is_the_declared_product():
    assert len(CELLS) * len(PENALTIES) == 7 * 18 * 4 * 2
    assert {c[0] for c in SUBSET} == set(HIDDEN) and {c[3] for c in SUBSET} == set(DEPTHS)
    assert {c[1:3] for c in SUBSET} == set(OUTPUT_LOSS) and SUBSET <= set(CELLS)
