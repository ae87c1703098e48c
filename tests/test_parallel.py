"""Data-parallel training over 4 forced host devices equals single-device training."""
import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest

import jaxmlp as jm
from tests import lane

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    # tests/parallel_worker.py on 4 forced host devices, run by the background lane
    return json.loads(lane.result("parallel", tmp_path_factory.getbasetemp()))


def test_four_devices_visible(results):
    assert results["devices"] == 4


def test_fit_with_mesh_equals_single_device(results):
    assert results["fit_rel_diff"] <= 1e-9
    assert results["fit_loss_diff"] <= 1e-9
    assert results["fit_params_replicated"] is True
    assert results["fit_bn_rel_diff"] <= 1e-9
    assert results["fit_bn_prenorm_bias_max"] <= 1e-8


def test_sharded_step_equals_single_device_step(results):
    assert results["step_rel_diff"] <= 1e-9
    assert results["step_loss_diff"] <= 1e-12


def test_compiled_step_reduces_across_devices(results):
    assert results["all_reduce_count"] >= 1
    assert results["single_device_all_reduce_count"] == 0


def test_uneven_batch_is_a_clear_error(results):
    for name, message in results["uneven_errors"].items():
        assert message is not None and "not divisible by the 4 devices" in message, name


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
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_distributed.py"),
                           "--host-devices", "2", "--epochs", "2", "--rows", "1024",
                           "--batch-size", "128"], capture_output=True, text=True,
                          env=lane.env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 process(es), 2 device(s)" in proc.stdout and "epoch 2: train loss" in proc.stdout
