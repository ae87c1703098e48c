"""scripts/benchmark.py: the quick run reports its sections with finite positive ratios (the
CSV section's too), and the compiled manual-δ step costs no more FLOPs, temporary memory or
kernels than the autodiff one.  Section (f), before/after (`--baseline REV`), run with HEAD
as the baseline on W1, reports its throughput ratios, A/A control and ten-learning-rate
timing, each version imported in its own worker processes.

No timing is asserted: timings depend on the machine and its load.  The quick run is
in-process (its `main(argv)`), on W1 only, with JAX's defaults (64-bit off, rank promotion
allowed) as a user running the script has them.
"""
import contextlib
import importlib.util
import io
import json
import math
import pathlib
import shutil

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "benchmark.py"
# W2 and W3 run the same code paths with other shapes; compiling their steps, fits and
# GEMMs would triple the smoke run's time on 2 cores.
WORKLOADS = ("W1",)
SECTIONS = ("machine", "device", "jax_version", "config", "machine_peak_gflops", "workloads",
            "csv", "total_seconds")
WORKLOAD_SECTIONS = ("step", "throughput", "gemm", "achieved_gflops", "fraction_of_gemm_peak")


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


def _items(tree):
    """Every (key, value) of every dict in the report."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield k, v
            yield from _items(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _items(v)


def _finite_positive(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """`--quick --workloads W1 --devices 1 --json OUT`: its JSON report and its stdout."""
    out = tmp_path_factory.mktemp("benchmark") / "bench.json"
    stdout = _run_main(["--quick", "--workloads", ",".join(WORKLOADS), "--devices", "1",
                        "--json", str(out)])
    return json.loads(out.read_text()), stdout


def _run_main(argv) -> str:
    """The script's main(argv) in-process, with JAX's defaults (64-bit off, rank promotion
    allowed) as a user running it has them; its stdout."""
    before = jax.config.jax_enable_x64, jax.config.jax_numpy_rank_promotion
    jax.config.update("jax_enable_x64", False)
    jax.config.update("jax_numpy_rank_promotion", "allow")
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            _load_script().main(argv)
    finally:
        jax.config.update("jax_enable_x64", before[0])
        jax.config.update("jax_numpy_rank_promotion", before[1])
    return stdout.getvalue()


def test_quick_run_reports_every_section_with_finite_ratios(quick):
    res, stdout = quick
    for section in SECTIONS:
        assert section in res, section
    assert res["config"]["mode"] == "quick" and res["jax_version"]
    assert isinstance(res["machine"]["cpu_count"], int) and res["device"]["count"] >= 1
    assert _finite_positive(res["machine_peak_gflops"])
    assert set(res["workloads"]) == set(WORKLOADS)
    for wid, w in res["workloads"].items():
        for section in WORKLOAD_SECTIONS:
            assert section in w, (wid, section)
        for g in ("manual", "autodiff"):
            assert _finite_positive(w["step"]["compiled"][g]["flops"]), (wid, g)
            assert w["step"]["compiled"][g]["temp_bytes"] >= 0, (wid, g)
        assert _finite_positive(w["step"]["manual_s"]) and _finite_positive(w["step"]["autodiff_s"])
        assert all(_finite_positive(s["gflops"]) for s in w["gemm"]["shapes"]), wid
        assert w["gemm"]["step_gemm_flops"] == w["flops_per_sample"] * w["batch_size"], wid
        throughputs = [v for k, v in w["throughput"].items() if k.endswith("_samples_per_s")]
        assert len(throughputs) >= 4 and all(map(_finite_positive, throughputs)), wid
        assert w["achieved_gflops"] and all(map(_finite_positive, w["achieved_gflops"].values()))
    assert res["csv"]["same_values"] is True
    assert _finite_positive(res["csv"]["new_mb_per_s"]) and _finite_positive(res["csv"]["old_s"])
    ratios = list(_ratios(res))
    assert len(ratios) >= 12 * len(WORKLOADS), ratios  # step, throughput, GEMM-peak ratios
    bad = [(p, v) for p, v in ratios if not _finite_positive(v)]
    assert not bad, bad
    quartiles = [(k, q) for k, q in _items(res) if k.endswith("_quartiles")]
    assert len(quartiles) >= 3 * len(WORKLOADS), quartiles
    assert all(len(q) == 2 and q[0] <= q[1] for _, q in quartiles), quartiles  # [q1, q3]
    assert "manual ms" in stdout and "samples/s" in stdout and "(e) CSV loading" in stdout
    assert "before_after" not in res and "(f) before/after" not in stdout  # opt-in only
    assert "sweep" not in res and "(g) sweep" not in stdout


def test_sweep_section_quick(tmp_path):
    """Section (g) alone, quick (W1 at M = 1 and 8): every variant's throughput, speedup
    and quartiles are finite and positive."""
    out = tmp_path / "sweep.json"
    stdout = _run_main(["--quick", "--only-sweep", "--repeats", "2", "--json", str(out)])
    res = json.loads(out.read_text())["sweep"]
    assert [(r["workload"], r["models"]) for r in res["runs"]] == [("W1", 1), ("W1", 8)]
    for r in res["runs"]:
        assert set(r["variants"]) == {"fit", "sweep_1worker", "sweep", "sweep_shared"}
        for name, v in r["variants"].items():
            assert _finite_positive(v["aggregate_samples_per_s"]), name
            assert _finite_positive(v["fraction_of_machine_peak"]), name
            if name != "fit":
                assert _finite_positive(v["speedup_over_sequential_fits"]), name
                q = v["speedup_quartiles"]
                assert q[0] <= q[1], name
    assert "(g) sweep" in stdout
    assert "floor" not in res  # the floor is off with --quick unless asked for


@pytest.mark.slow
def test_sweep_floor_quick():
    """(g)'s floor, in its child process pinned to one CPU: every dot's time in its best
    layout is at most its time as written, the floor is the sum of its parts, and the
    ceilings are cores × fit step / floor, with the measured dots and at the peak."""
    bench = _load_script()
    mode = dict(bench.MODES["quick"], repeats=1)
    fl = bench._floor_pinned(mode, True, lambda msg: None, 2)
    assert fl["pinned_cpus"] == 1 and fl["cores"] == 2 and fl["group"] == 16
    assert len(fl["dots"]) == 8  # W1: 3 forward, 3 weight gradients, 2 input gradients
    for name, v in fl["dots"].items():
        assert 0 <= v["best_us"] <= v["as_written_us"], name
    best = sum(v["best_us"] for v in fl["dots"].values())
    assert math.isclose(fl["matmuls_best_us"], best)
    assert math.isclose(fl["floor_us"], best + fl["optimizer_us"] + fl["shuffle_us"])
    assert _finite_positive(fl["optimizer_us"]) and _finite_positive(fl["shuffle_us"])
    assert _finite_positive(fl["sweep_group_step_us"])
    assert _finite_positive(fl["fit_step_pinned_us"])
    assert fl["matmul_flops"] == 2 * 32 * (3 * (11 * 64 + 64 * 64 + 64) - 11 * 64)  # W1
    out = bench._with_ceiling(fl, 30.0, 200.0)
    assert math.isclose(out["ceiling_speedup"], 2 * 30.0 / fl["floor_us"])
    assert math.isclose(out["needed_for_4x_us"], 15.0)
    assert math.isclose(out["matmuls_at_peak_us"], fl["matmul_flops"] / 100e9 * 1e6)
    assert out["floor_at_peak_us"] < fl["floor_us"] or out["matmuls_at_peak_us"] > best
    assert "ceiling on the speedup: 2 cores × 30.00" in "\n".join(bench.format_floor(out))


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


needs_git = pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                               reason="section (f) extracts the baseline with git")


@needs_git
def test_before_after_section_with_head_as_baseline(tmp_path):
    """`--quick --workloads W1 --baseline HEAD --only-before-after --repeats 2`: section
    (f) alone in its smallest form: HEAD as "before" (a worker importing `git archive HEAD
    jaxmlp`), the working tree as "after" (two workers), and one fresh worker per version
    for the ten learning rates.  About 12 s on 2 cores."""
    bench = _load_script()
    out = tmp_path / "ba.json"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        bench.main(["--quick", "--workloads", "W1", "--baseline", "HEAD", "--only-before-after",
                    "--repeats", "2", "--json", str(out)])
    res = json.loads(out.read_text())
    assert "workloads" not in res and "csv" not in res  # (a)-(e) not run
    ba = res["before_after"]
    head = bench._git(ROOT, "rev-parse", "HEAD").decode().strip()
    assert ba["before"]["commit"] == head and ba["after"]["commit"] == head
    assert ba["before"]["rev"] == "HEAD" and ba["after"]["rev"] == "working tree"
    assert set(ba["workloads"]) == {"W1"}
    w = ba["workloads"]["W1"]
    assert set(w["epoch_s_per_repeat"]) == {"before", "after", "after_again"}
    assert all(len(ts) == 2 for ts in w["epoch_s_per_repeat"].values()), w
    for side in ("before", "after", "after_again"):
        assert _finite_positive(w[f"{side}_samples_per_s"]), side
        assert _finite_positive(w["compile_s"][side]), side
    lr = ba["learning_rates"]
    assert lr["learning_rates"] == sorted(set(lr["learning_rates"]))
    assert len(lr["learning_rates"]) == 10
    for side in ("before", "after"):
        assert [len(c) for c in lr[f"{side}_call_s_per_repeat"]] == [10] * lr["repeats"]
        assert _finite_positive(lr[f"{side}_s"]) and _finite_positive(lr[f"{side}_first_call_s"])
    ratios = list(_ratios(ba))
    assert len(ratios) >= 6, ratios  # after/before (+ q1, q3), A/A (+ q1, q3), call, lrs
    bad = [(p, v) for p, v in ratios if not _finite_positive(v)]
    assert not bad, bad
    quartiles = [q for k, q in _items(ba) if k.endswith("_quartiles")]
    assert len(quartiles) == 3 and all(q[0] <= q[1] for q in quartiles), quartiles
    text = stdout.getvalue()
    assert "(f) before/after" in text and "after/before" in text and "A/A" in text
    assert "ten fit calls" in text and "manual ms" not in text


@needs_git
def test_before_after_refuses_an_unknown_revision(tmp_path):
    bench = _load_script()
    assert bench.parse_args(["--baseline", "3438e7d"]).baseline == "3438e7d"
    assert bench.parse_args([]).baseline is None
    for flags in (["--after", "HEAD"], ["--only-before-after"]):
        with pytest.raises(SystemExit):  # argparse: they need --baseline
            bench.parse_args(flags)
    with pytest.raises(SystemExit, match="no-such-revision"):
        bench.extract_revision(ROOT, "no-such-revision", tmp_path)
