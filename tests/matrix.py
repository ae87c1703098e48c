"""The declared matrix of test_matrix.py, computed in a worker process.

Every hidden activation × every valid (output, loss) pair × depths 1-4, each without and
with l1/l2: manual δ backprop against jax.grad of the same loss, float64.  The cells run
eagerly (`jax.disable_jit`: XLA compiles each primitive once per shape and reuses it,
where a jit per cell would compile a thousand programs), in a subprocess that the
background lane (tests/lane.py) starts right after collection, so it runs on the second
core while the other test files run; `test_matrix.py` asserts on the numbers it reports.

    python -m tests.matrix OUT.json      # what the lane runs
"""
import functools
import json
import os
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OUTPUT_LOSS = [(o, l) for l in ("mse", "sse") for o in
               ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "softmax")]
OUTPUT_LOSS += [("sigmoid", "bce"), ("softmax", "cce")]
from jaxmlp.activations import HIDDEN_ACTIVATIONS as HIDDEN  # noqa: E402  (all of them)
DEPTHS = (1, 2, 3, 4)
PENALTIES = {"nopen": (0.0, 0.0), "l1l2": (0.03, 0.05)}
N, N_IN, WIDTH, K = 5, 3, 4, 3
CELLS = [(a, o, l, d) for a in HIDDEN for o, l in OUTPUT_LOSS for d in DEPTHS]


def cell_id(activation, output, loss, depth):
    return f"{activation}-{output}-{loss}-depth{depth}"


@functools.lru_cache(maxsize=None)
def _penalty_value_and_grad(sizes, l1, l2):
    """jax.value_and_grad of the penalty, jitted: it depends only on the weights, so one
    compile per (sizes, l1, l2) serves every activation and loss (8 in all), where eager
    autodiff of it cost about a third of each cell."""
    import jax
    import jaxmlp as jm
    vg = jax.jit(jax.value_and_grad(functools.partial(jm.losses.penalty,
                                                      jm.MLP(sizes, l1=l1, l2=l2))))

    def call(params):
        with jax.disable_jit(False):
            return vg(params)
    return call


def cell_errors(activation, output, loss, depth):
    """For each penalty setting: the relative errors of loss, grads and deltas, manual vs
    autodiff.  One autodiff pass of the unpenalised loss serves both settings: by
    linearity the penalised reference is jax.grad(L) + jax.grad(penalty), and δ does not
    depend on the penalty."""
    import jax
    import jax.numpy as jnp
    import jaxmlp as jm
    from jaxmlp.backprop import backprop_pass
    from tests.test_backprop import autodiff_reference, make_data, prepared_y, rel_err

    sizes = (N_IN,) + (WIDTH,) * depth + (K,)
    plain = jm.MLP(sizes, activation=activation, output=output, loss=loss)
    params = jm.init_params(jax.random.key(0), plain, dtype=jnp.float64)
    x, y = make_data(plain, seed=1)
    yp = prepared_y(plain, y)
    L, g, d = autodiff_reference(plain, params, x, y)
    out = {}
    for pen, (l1, l2) in PENALTIES.items():
        model = jm.MLP(sizes, activation=activation, output=output, loss=loss, l1=l1, l2=l2)
        res = backprop_pass(model, params, x, yp)
        P, gP = _penalty_value_and_grad(sizes, l1, l2)(params)
        ref = jax.tree_util.tree_map(jnp.add, g, gP)
        same_tree = (jax.tree_util.tree_structure(res.grads)
                     == jax.tree_util.tree_structure(params))
        out[pen] = {
            "loss": abs(float(res.loss) - float(L + P)) / max(1.0, abs(float(L + P))),
            "grads": rel_err(res.grads, ref),
            "deltas": max(rel_err(dm, da) for dm, da in zip(res.deltas, d)),
            "delta_shapes_ok": [tuple(dm.shape) for dm in res.deltas]
            == [(N, s) for s in sizes[1:]],
            "same_tree": same_tree,
        }
    return out


def main(path):
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_rank_promotion", "raise")
    results = {}
    with jax.disable_jit():
        for cell in CELLS:
            try:
                results[cell_id(*cell)] = cell_errors(*cell)
            except Exception:  # reported per cell by test_matrix.py
                results[cell_id(*cell)] = {"error": traceback.format_exc()}
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(results, f)
    os.replace(tmp, path)


if __name__ == "__main__":
    main(sys.argv[1])
