"""scripts/benchmark.py: the quick run reports every field with finite ratios, and the
compiled manual-δ step costs no more FLOPs or temporary memory than the autodiff one.

No timing is asserted: timings depend on the machine and its load.  The quick run is a
subprocess, so it gets a fresh JAX (float32 defaults, its own XLA_FLAGS) rather than this
session's x64 configuration.
"""
import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "benchmark.py"
# The smoke run covers W1 only: W2 and W3 run the same code paths with other shapes, and
# compiling their steps, fits and GEMMs would triple this file's time on 2 cores.
WORKLOADS = ("W1",)

TOP_FIELDS = ("machine", "device", "jax_version", "config", "machine_peak_gflops",
              "workloads", "total_seconds")
WORKLOAD_FIELDS = ("name", "sizes", "activation", "output", "loss", "batch_size", "rows",
                   "n_weights", "flops_per_sample", "step", "throughput", "gemm",
                   "achieved_gflops", "fraction_of_gemm_peak", "seconds")
STEP_FIELDS = ("manual_s", "autodiff_s", "ratio_manual_over_autodiff", "compiled")
COMPILED_FIELDS = ("flops", "bytes_accessed", "temp_bytes")
THROUGHPUT_VARIANTS = ("fit_manual", "fit_autodiff", "python_loop", "pure_jax_scan")
THROUGHPUT_RATIOS = ("ratio_fit_manual_over_pure_jax", "ratio_fit_autodiff_over_pure_jax",
                     "ratio_fit_manual_over_fit_autodiff", "ratio_fit_manual_over_python_loop",
                     "ratio_python_loop_over_pure_jax")
GEMM_FIELDS = ("shapes", "gemm_gflops", "best_shape_gflops", "step_gemm_flops", "step_gemm_s")


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
    out = tmp_path_factory.mktemp("benchmark") / "bench.json"
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_ENABLE_X64", "XLA_FLAGS")}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--workloads",
                           ",".join(WORKLOADS), "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(out.read_text()), proc.stdout


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
        for field in GEMM_FIELDS:
            assert field in w["gemm"], (wid, field)
        assert all(_finite_positive(s["gflops"]) for s in w["gemm"]["shapes"]), wid
        assert w["gemm"]["step_gemm_flops"] == w["flops_per_sample"] * w["batch_size"], wid
        assert _finite_positive(w["step"]["manual_s"]), wid
        assert _finite_positive(w["step"]["autodiff_s"]), wid
    ratios = list(_ratios(res))
    assert len(ratios) >= len(WORKLOADS) * (1 + 2 + len(THROUGHPUT_RATIOS)
                                            + len(THROUGHPUT_VARIANTS))
    bad = [(p, v) for p, v in ratios if not _finite_positive(v)]
    assert not bad, bad
    assert "manual ms" in stdout and "samples/s" in stdout


def test_manual_step_compiles_to_no_more_flops_or_temp_memory_than_autodiff():
    """W1's shapes (11-64-64-1, relu, mse, batch 32), float32, Adam: deterministic
    compiler statistics, no timing."""
    bench = _load_script()
    su = bench.Setup("W1", quick=True)
    stats = {}
    for grad in ("manual", "autodiff"):
        step = bench.jm.make_train_step(su.model, su.opt, grad=grad)
        stats[grad] = bench.compiled_stats(step, *su.fresh(), su.xb, su.yb)
    manual, autodiff = stats["manual"], stats["autodiff"]
    assert manual["flops"] > 0 and autodiff["flops"] > 0
    assert manual["flops"] <= autodiff["flops"], stats
    assert manual["temp_bytes"] <= autodiff["temp_bytes"], stats
