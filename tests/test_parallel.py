"""Data-parallel training over the session's 4 CPU devices (tests/conftest.py) equals
single-device training."""
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import jaxmlp as jm

ROOT = Path(__file__).resolve().parents[1]


def max_diff(a, b):
    return max(float(jnp.max(jnp.abs(u - v)) / (jnp.max(jnp.abs(v)) + 1e-300))
               for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.fixture(scope="module")
def setup():
    mesh = jm.parallel.data_mesh()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 5))
    y = rng.integers(0, 3, 96)
    xv, yv = rng.standard_normal((24, 5)), rng.integers(0, 3, 24)
    model = jm.MLP((5, 16, 16, 3), activation="tanh", output="softmax", loss="cce", l2=1e-3)
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    opt = jm.optim.adam(1e-2)
    kw = dict(epochs=3, batch_size=16, key=jax.random.key(1), validation=(xv, yv))
    return mesh, x, y, model, params, opt, kw


@pytest.fixture(scope="module")
def step(setup):
    """One step, single-device and under explicit NamedSharding inputs."""
    mesh, x, y, model, params, opt, _ = setup
    step1 = jm.make_train_step(model, opt, donate=False)
    step4 = jm.make_train_step(model, opt, donate=False, mesh=mesh)
    xs, ys = jm.parallel.shard_batch(mesh, (jnp.asarray(x[:16]), jnp.asarray(y[:16])))
    rp, s0 = jm.parallel.replicate(mesh, params), opt.init(params)
    return dict(step1=step1, step4=step4, xs=xs, ys=ys, rp=rp, s0=s0,
                rs0=jm.parallel.replicate(mesh, s0))


def test_four_devices_visible():
    assert len(jax.devices()) == 4


def test_fit_with_mesh_equals_single_device(setup):
    mesh, x, y, model, params, opt, kw = setup
    p1, h1 = jm.fit(model, params, opt, x, y, **kw)
    p4, h4 = jm.fit(model, params, opt, x, y, mesh=mesh, **kw)
    assert max_diff(p4, p1) <= 1e-9
    assert max(abs(a - b) for a, b in zip(h1["train_loss"], h4["train_loss"])) <= 1e-9
    assert p4[0]["W"].sharding.spec == P()

    # with batch norm and dropout too: state and keys go through the sharded scan
    bn = jm.MLP((5, 16, 3), output="softmax", loss="cce", norm="batch", dropout=0.1)
    pb = jm.init_params(jax.random.key(0), bn, dtype=jnp.float64)
    b1, hb1 = jm.fit(bn, pb, opt, x, y, **kw)
    b4, hb4 = jm.fit(bn, pb, opt, x, y, mesh=mesh, **kw)
    # The bias of a batch-normalised layer has a true gradient of exactly 0 (the norm
    # subtracts it again); Adam's g/√v turns round-off into ~1e-11 moves of random sign, so
    # that leaf is compared absolutely, everything else relatively.
    assert max(float(jnp.max(jnp.abs(p[0]["b"]))) for p in (b1, b4)) <= 1e-8
    b1[0].pop("b"), b4[0].pop("b")
    assert max(max_diff(b4, b1), max_diff(hb4["state"], hb1["state"])) <= 1e-9


def test_sharded_step_equals_single_device_step(setup, step):
    mesh, x, y, *_ = setup
    assert step["xs"].sharding == NamedSharding(mesh, P("data"))
    a = step["step1"](setup[4], step["s0"], x[:16], y[:16])
    b = step["step4"](step["rp"], step["rs0"], step["xs"], step["ys"])
    assert max_diff(b[0], a[0]) <= 1e-9
    assert abs(float(a[2]) - float(b[2])) <= 1e-12


def test_compiled_step_reduces_across_devices(setup, step):
    x, y, params = setup[1], setup[2], setup[4]
    hlo = step["step4"].lower(step["rp"], step["rs0"], step["xs"], step["ys"]).compile().as_text()
    assert hlo.count("all-reduce(") + hlo.count("all-reduce-start(") >= 1
    hlo1 = step["step1"].lower(params, step["s0"], x[:16], y[:16]).compile().as_text()
    assert hlo1.count("all-reduce") == 0


def test_uneven_batch_is_a_clear_error(setup, step):
    mesh, x, y, model, params, opt, _ = setup
    calls = {
        "fit": lambda: jm.fit(model, params, opt, x, y, epochs=1, batch_size=10,
                              key=jax.random.key(0), mesh=mesh),
        "step": lambda: step["step4"](step["rp"], step["rs0"], x[:10], y[:10]),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match="not divisible by the 4 devices"):
            call()


def test_mesh_checks_in_process():
    mesh = jm.parallel.data_mesh()
    assert jm.parallel.check_mesh(mesh, 8) == len(jax.devices())
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        jm.parallel.check_mesh("data", 8)
    other = jax.sharding.Mesh(mesh.devices, ("batch",))
    with pytest.raises(ValueError, match="mesh must have an axis named 'data'"):
        jm.parallel.check_mesh(other, 8)
    with pytest.raises(ValueError, match="devices must not be empty"):
        jm.parallel.data_mesh([])


def test_train_distributed_script_runs_on_forced_host_devices():
    # a subprocess: --host-devices sets XLA_FLAGS, which only a JAX that has not started
    # its backend reads
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_distributed.py"),
                           "--host-devices", "2", "--epochs", "2", "--rows", "1024",
                           "--batch-size", "128"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 process(es), 2 device(s)" in proc.stdout and "epoch 2: train loss" in proc.stdout
