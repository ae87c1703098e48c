"""The experiment scripts: every `--quick` run completes and prints its tables, and the two
quality bars hold on the real data (skipped when ../shared/data is absent).

The scripts are loaded from scripts/ by path and run in-process through their
`main(argv)`.  Each builds its model and optimizer objects once at import, so a quality
bar reuses the compiled epoch of the quick run before it (same shapes on every split).
"""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HAS_WINE = (DATA / "winequality-red.csv").is_file()
HAS_DIGITS = (DATA / "digits.csv.gz").is_file()

_loaded = {}


def script(name):
    """The module scripts/<name>.py (loaded once; scripts/ goes on sys.path for _common)."""
    if name not in _loaded:
        if str(SCRIPTS) not in sys.path:
            sys.path.insert(0, str(SCRIPTS))
        spec = importlib.util.spec_from_file_location(f"jaxmlp_scripts_{name}",
                                                      SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _loaded[name] = module
    return _loaded[name]


def _has_matplotlib():
    return script("digits").C.pyplot() is not None


# (script, the PNG it writes, whether the data it needs is here)
QUICK = [
    ("wine_quality", "wine_quality.png", HAS_WINE),
    ("digits", "digits.png", HAS_DIGITS),
    ("vanishing_gradients", "vanishing_gradients.png", True),
    ("optimizers", "optimizers.png", True),
    ("regularization", "regularization.png", True),
]


# regularization.py's quick run is test_regularization_sweep_is_the_fits (with --time-fits)
@pytest.mark.parametrize("name,png,available", [q for q in QUICK if q[0] != "regularization"],
                         ids=[q[0] for q in QUICK if q[0] != "regularization"])
def test_quick_run(name, png, available, tmp_path, capsys):
    if not available:
        pytest.skip(f"{DATA} does not hold the data {name}.py needs")
    # optimizers.py falls back to synthetic data when the wine file is absent: point it
    # at an empty folder then, so that the test never downloads.
    data = DATA if HAS_WINE or name != "optimizers" else tmp_path / "no-data"
    argv = ["--quick", "--out", str(tmp_path), "--seed", "0"]
    if name in ("wine_quality", "digits", "optimizers"):
        argv += ["--data", str(data)]
    result = script(name).main(argv)
    assert not isinstance(result, int), f"{name}.py --quick returned exit status {result}"
    out = capsys.readouterr().out
    assert "## " in out
    table_lines = [line for line in out.splitlines() if line.startswith("|")]
    assert len(table_lines) >= 4, out
    if _has_matplotlib():
        assert (tmp_path / png).is_file()
    else:
        assert "matplotlib not installed: no PNG written" in out


@pytest.mark.parametrize("name", [q[0] for q in QUICK])
def test_plot_without_matplotlib(name, tmp_path, monkeypatch, capsys):
    module = script(name)
    common = module.C  # the scripts' own `import _common as C`
    monkeypatch.setattr(common, "pyplot", lambda: None)
    n_args = module.plot.__code__.co_argcount
    assert module.plot(*([None] * (n_args - 1)), tmp_path) is None
    assert capsys.readouterr().out.strip() == common.NO_MATPLOTLIB
    assert not any(tmp_path.iterdir())


def test_table_format():
    t = script("digits").C.table(["a", "bb"], [[1, 0.5], ["x", None]])
    assert t.splitlines() == ["| a |     bb |", "|--:|-------:|", "| 1 | 0.5000 |",
                              "| x |      – |"]


def test_regularization_sweep_is_the_fits(tmp_path, capsys):
    """--quick --time-fits (the script's quick run, as test_quick_run's for the others):
    the penalties train as one sweep (3 models, 30 epochs); its validation curves are
    those of the same models trained one by one with jm.fit (float32), its two scorings
    follow identical trajectories, and both figures appear."""
    rg = script("regularization")
    results = rg.main(["--quick", "--time-fits", "--out", str(tmp_path), "--seed", "0"])
    assert not isinstance(results, int), f"regularization.py --quick returned {results}"
    out = capsys.readouterr().out
    assert "## " in out and len([ln for ln in out.splitlines() if ln.startswith("|")]) >= 4
    assert [r["label"] for r in results] == ["none", "L2 (λ = 1e-3)", "L1 (λ = 1e-4)",
                                             rg.EARLY]
    assert "One sweep over the penalty weight: 3 models" in out
    assert "final parameters differ by at most 0\n" in out
    diff = float(out.split("largest |Δ val MSE| fit vs sweep over all epochs ")[1].split()[0])
    assert diff < 1e-4, out
    early = results[-1]  # early stopping's first epochs are the unregularised member's
    np.testing.assert_allclose(early["val_curve"], results[0]["val_curve"], rtol=1e-4)
    if _has_matplotlib():
        assert (tmp_path / "regularization.png").is_file()
        assert (tmp_path / "regularization_sweep.png").is_file()
    else:
        assert "matplotlib not installed: no PNG written" in out


@pytest.mark.skipif(not HAS_WINE, reason=f"no {DATA / 'winequality-red.csv'}")
def test_wine_quality_bar_mlp_beats_least_squares():
    """Five seeded 80/20 splits: the MLP's mean test MSE is below OLS's (split rule in
    scripts/wine_quality.py)."""
    wq = script("wine_quality")
    x, y = wq.load(DATA)
    bar = wq.quality_bar(x, y, range(5))
    print("\n" + wq.bar_table(bar))
    assert len(bar["rows"]) == 5
    assert all(r["n_test"] == 320 for r in bar["rows"])
    assert bar["mlp_mean"] < bar["ols_mean"], bar


@pytest.mark.skipif(not HAS_DIGITS, reason=f"no {DATA / 'digits.csv.gz'}")
def test_digits_bar_97_percent():
    """Three stratified 75/25 splits: mean test accuracy of the plain MLP ≥ 97%."""
    dg = script("digits")
    x, y = dg.load(DATA)
    bar = dg.quality_bar(x, y, range(3))
    print("\n" + dg.bar_table(bar))
    assert [r["n_test"] for r in bar["rows"]] == [449] * 3
    for r in bar["rows"]:  # stratified: every class in every test split
        assert np.all(r["confusion"].sum(axis=1) >= 17)
    assert bar["mean"] >= 0.97, bar
