"""Run in a subprocess by test_parallel.py, with 4 forced host devices; prints JSON results.

(Device count and x64 must be set before JAX initialises, hence the separate process.)
"""
import json
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=4")
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

import jaxmlp as jm  # noqa: E402


def max_diff(a, b):
    return max(float(jnp.max(jnp.abs(u - v)) / (jnp.max(jnp.abs(v)) + 1e-300))
               for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def main():
    out = {"devices": len(jax.devices())}
    mesh = jm.parallel.data_mesh()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 5))
    y = rng.integers(0, 3, 96)
    xv, yv = rng.standard_normal((24, 5)), rng.integers(0, 3, 24)
    model = jm.MLP((5, 16, 16, 3), activation="tanh", output="softmax", loss="cce", l2=1e-3)
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    opt = jm.optim.adam(1e-2)
    kw = dict(epochs=3, batch_size=16, key=jax.random.key(1), validation=(xv, yv))
    p1, h1 = jm.fit(model, params, opt, x, y, **kw)
    p4, h4 = jm.fit(model, params, opt, x, y, mesh=mesh, **kw)
    out["fit_rel_diff"] = max_diff(p4, p1)
    out["fit_loss_diff"] = max(abs(a - b) for a, b in zip(h1["train_loss"], h4["train_loss"]))
    out["fit_params_replicated"] = p4[0]["W"].sharding.spec == P()

    # with batch norm and dropout too: state and keys go through the sharded scan
    bn = jm.MLP((5, 16, 3), output="softmax", loss="cce", norm="batch", dropout=0.1)
    pb = jm.init_params(jax.random.key(0), bn, dtype=jnp.float64)
    b1, hb1 = jm.fit(bn, pb, opt, x, y, **kw)
    b4, hb4 = jm.fit(bn, pb, opt, x, y, mesh=mesh, **kw)
    # The bias of a batch-normalised layer has a true gradient of exactly 0 (the norm
    # subtracts it again); Adam's g/√v turns round-off into ~1e-11 moves of random sign, so
    # that leaf is compared absolutely, everything else relatively.
    out["fit_bn_prenorm_bias_max"] = max(float(jnp.max(jnp.abs(p[0]["b"]))) for p in (b1, b4))
    b1[0].pop("b"), b4[0].pop("b")
    out["fit_bn_rel_diff"] = max(max_diff(b4, b1), max_diff(hb4["state"], hb1["state"]))

    # one step under explicit NamedSharding inputs equals the single-device step
    step1 = jm.make_train_step(model, opt, donate=False)
    step4 = jm.make_train_step(model, opt, donate=False, mesh=mesh)
    xs, ys = jm.parallel.shard_batch(mesh, (jnp.asarray(x[:16]), jnp.asarray(y[:16])))
    assert xs.sharding == NamedSharding(mesh, P("data"))
    rp = jm.parallel.replicate(mesh, params)
    s0 = opt.init(params)
    a = step1(params, s0, x[:16], y[:16])
    b = step4(rp, jm.parallel.replicate(mesh, s0), xs, ys)
    out["step_rel_diff"] = max_diff(b[0], a[0])
    out["step_loss_diff"] = abs(float(a[2]) - float(b[2]))
    hlo = step4.lower(rp, jm.parallel.replicate(mesh, s0), xs, ys).compile().as_text()
    out["all_reduce_count"] = hlo.count("all-reduce(") + hlo.count("all-reduce-start(")
    hlo1 = step1.lower(params, s0, x[:16], y[:16]).compile().as_text()
    out["single_device_all_reduce_count"] = hlo1.count("all-reduce")

    # uneven batches: a clear error
    errors = {}
    for name, call in {
        "fit": lambda: jm.fit(model, params, opt, x, y, epochs=1, batch_size=10,
                              key=jax.random.key(0), mesh=mesh),
        "step": lambda: step4(rp, jm.parallel.replicate(mesh, s0), x[:10], y[:10]),
    }.items():
        try:
            call()
            errors[name] = None
        except ValueError as e:
            errors[name] = str(e)
    out["uneven_errors"] = errors
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
