"""scripts/benchmark.py: the quick run reports every field with finite ratios (the CSV
section's too), and the compiled manual-δ step costs no more FLOPs, temporary memory or
kernels than the autodiff one.

No timing is asserted: timings depend on the machine and its load.  The quick run is a
subprocess (started by the background lane, tests/lane.py), so it gets a fresh JAX with
the default XLA flags and float32 defaults rather than this session's configuration.
"""
import importlib.util
import json
import math
import pathlib

import pytest

from tests import lane

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "benchmark.py"
WORKLOADS = lane.BENCHMARK_WORKLOADS  # what the lane's quick run covers

TOP_FIELDS = ("machine", "device", "jax_version", "config", "machine_peak_gflops",
              "workloads", "total_seconds")
WORKLOAD_FIELDS = ("name", "sizes", "activation", "output", "loss", "batch_size", "rows",
                   "n_weights", "flops_per_sample", "step", "throughput", "gemm",
                   "achieved_gflops", "fraction_of_gemm_peak", "seconds")
STEP_FIELDS = ("manual_s", "autodiff_s", "ratio_manual_over_autodiff",
               "ratio_manual_over_autodiff_quartiles", "manual_again_s",
               "ratio_control_manual_over_manual_again",
               "ratio_control_manual_over_manual_again_quartiles", "compiled")
COMPILED_FIELDS = ("flops", "bytes_accessed", "temp_bytes", "kernels")
THROUGHPUT_VARIANTS = ("fit_manual", "fit_autodiff", "python_loop", "pure_jax_scan")
THROUGHPUT_RATIOS = ("ratio_fit_manual_over_pure_jax", "ratio_fit_autodiff_over_pure_jax",
                     "ratio_fit_manual_over_fit_autodiff", "ratio_fit_manual_over_python_loop",
                     "ratio_python_loop_over_pure_jax")
GEMM_FIELDS = ("shapes", "gemm_gflops", "best_shape_gflops", "step_gemm_flops", "step_gemm_s")
CSV_FIELDS = ("format", "rows", "columns", "bytes", "same_values", "new_s", "old_s",
              "ratio_old_over_new", "ratio_old_over_new_quartiles", "new_mb_per_s",
              "old_mb_per_s", "result_bytes", "new_peak_bytes", "old_peak_bytes",
              "ratio_new_peak_over_result", "ratio_old_peak_over_result")


def _load_script():
    spec = importlib.util.spec_from_file_location("jaxmlp_benchmark_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ratios(tree, path="", inside=False):
    """Every (path, number) whose key, or an enclosing key, names a ratio or a fraction."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            p = f"{path}.{k}" if path else k
            yield from _ratios(v, p, inside or "ratio" in k or "fraction" in k)
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _ratios(v, f"{path}[{i}]", inside)
    elif inside:
        yield path, tree


def _finite_positive(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    # run by the background lane (tests/lane.py): `--quick --workloads W1 --json`
    text, stdout = lane.result("benchmark_quick", tmp_path_factory.getbasetemp())
    return json.loads(text), stdout


def test_quick_run_reports_every_field(quick):
    res, stdout = quick
    for field in TOP_FIELDS:
        assert field in res, field
    assert isinstance(res["machine"]["cpu_count"], int) and res["machine"]["platform"]
    assert res["device"]["platform"] and res["device"]["device_kind"]
    assert res["device"]["count"] >= 1 and res["jax_version"]
    assert res["config"]["mode"] == "quick"
    assert _finite_positive(res["machine_peak_gflops"])
    assert set(res["workloads"]) == set(WORKLOADS)
    for wid in WORKLOADS:
        w = res["workloads"][wid]
        for field in WORKLOAD_FIELDS:
            assert field in w, (wid, field)
        for field in STEP_FIELDS:
            assert field in w["step"], (wid, field)
        for g in ("manual", "autodiff"):
            for field in COMPILED_FIELDS:
                assert field in w["step"]["compiled"][g], (wid, g, field)
            assert _finite_positive(w["step"]["compiled"][g]["flops"]), (wid, g)
            assert w["step"]["compiled"][g]["temp_bytes"] >= 0, (wid, g)
        for v in THROUGHPUT_VARIANTS:
            assert _finite_positive(w["throughput"][f"{v}_samples_per_s"]), (wid, v)
            assert _finite_positive(w["achieved_gflops"][v]), (wid, v)
            assert v in w["fraction_of_gemm_peak"], (wid, v)
        for r in THROUGHPUT_RATIOS:
            assert r in w["throughput"], (wid, r)
        for q in (w["step"]["ratio_manual_over_autodiff_quartiles"],
                  w["step"]["ratio_control_manual_over_manual_again_quartiles"],
                  w["throughput"]["ratio_fit_manual_over_pure_jax_quartiles"]):
            assert len(q) == 2 and q[0] <= q[1], (wid, q)  # [q1, q3]; finite: below
        for field in GEMM_FIELDS:
            assert field in w["gemm"], (wid, field)
        assert all(_finite_positive(s["gflops"]) for s in w["gemm"]["shapes"]), wid
        assert w["gemm"]["step_gemm_flops"] == w["flops_per_sample"] * w["batch_size"], wid
        assert _finite_positive(w["step"]["manual_s"]), wid
        assert _finite_positive(w["step"]["autodiff_s"]), wid
    for field in CSV_FIELDS:  # (e) CSV loading: load_csv against the csv-module reader
        assert field in res["csv"], field
    assert res["csv"]["same_values"] is True
    assert _finite_positive(res["csv"]["new_mb_per_s"]) and _finite_positive(res["csv"]["old_s"])
    ratios = list(_ratios(res))
    assert len(ratios) >= len(WORKLOADS) * (1 + 2 + len(THROUGHPUT_RATIOS)
                                            + len(THROUGHPUT_VARIANTS))
    bad = [(p, v) for p, v in ratios if not _finite_positive(v)]
    assert not bad, bad
    assert "manual ms" in stdout and "samples/s" in stdout and "(e) CSV loading" in stdout


@pytest.mark.parametrize("wid", ["W1", "W2"])
def test_manual_step_compiles_to_no_more_flops_memory_or_kernels_than_autodiff(wid):
    """W1's shapes (11-64-64-1, relu, mse, batch 32) and W2's (784-512-512-10, softmax/cce,
    batch 256), float32, Adam: deterministic compiler statistics, no timing.  The kernel
    count is what a small step's time follows on CPU."""
    bench = _load_script()
    su = bench.Setup(wid, quick=True)
    stats = {}
    for grad in ("manual", "autodiff"):
        step = bench.jm.make_train_step(su.model, su.opt, grad=grad)
        stats[grad] = bench.compiled_stats(step, *su.fresh(), su.xb, su.yb)
    manual, autodiff = stats["manual"], stats["autodiff"]
    assert manual["flops"] > 0 and autodiff["flops"] > 0
    assert manual["flops"] <= autodiff["flops"], stats
    assert manual["temp_bytes"] <= autodiff["temp_bytes"], stats
    assert 0 < manual["kernels"] <= autodiff["kernels"], stats


def test_count_kernels_reads_the_entry_computation():
    bench = _load_script()
    text = """HloModule m

%fused (p: f32[2]) -> f32[2] {
  %p = f32[2]{0} parameter(0)
  ROOT %n = f32[2]{0} negate(%p)
}

ENTRY %main (a: f32[2], b: f32[2]) -> (f32[2], f32[]) {
  %a = f32[2]{0} parameter(0)
  %b = f32[2]{0} parameter(1)
  %c = f32[] constant(0)
  %f = f32[2]{0} fusion(%a), kind=kLoop, calls=%fused
  %d = f32[] dot(%f, %b), lhs_contracting_dims={0}, rhs_contracting_dims={0}
  ROOT %t = (f32[2]{0}, f32[]) tuple(%f, %d)
}
"""
    assert bench.count_kernels(text) == 2
