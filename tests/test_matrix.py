"""Manual δ backprop ≡ jax.grad of the loss over the declared matrix, float64, rel. err ≤ 1e-9:
every hidden activation × every valid (output, loss) pair × depths 1-4 × without and with
l1/l2 (1008 configurations), grads and the δ of every layer.  The numbers come from the
worker in tests/matrix.py, which runs beside the rest of the suite."""
import json

import pytest

from tests import lane, matrix

RTOL = 1e-9


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return json.loads(lane.result("matrix", tmp_path_factory.getbasetemp()))


@pytest.mark.parametrize("cell", matrix.CELLS, ids=[matrix.cell_id(*c) for c in matrix.CELLS])
def test_matrix_manual_equals_autodiff(results, cell):
    res = results[matrix.cell_id(*cell)]
    assert "error" not in res, res.get("error")
    for pen in matrix.PENALTIES:
        r = res[pen]
        assert r["same_tree"] and r["delta_shapes_ok"], (pen, r)
        assert r["loss"] <= 1e-12, (pen, r)
        assert r["grads"] <= RTOL, (pen, r)
        assert r["deltas"] <= RTOL, (pen, r)


def test_matrix_is_the_declared_product():
    assert len(matrix.CELLS) * len(matrix.PENALTIES) == 7 * 18 * 4 * 2
