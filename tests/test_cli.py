"""The command line: `jaxmlp train` end to end, its errors, and `jaxmlp check` dispatch."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxmlp as jm
from jaxmlp import cli

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_train_default_run_writes_everything(tmp_path, capsys):
    assert cli.main(["train", "--epochs", "15", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "gradient check" in out and "-> OK" in out and "accuracy" in out
    for name in ("model.ckpt", "history.json", "metrics.json"):
        assert (tmp_path / name).exists()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 <= metrics["test"]["accuracy"] <= 1 and metrics["gradient_check_max_rel_err"] < 1e-9
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history["train_loss"]) == history["epochs_run"] <= 15
    ckpt = jm.checkpoint.load(tmp_path / "model.ckpt")
    assert ckpt.model.sizes == (2, 64, 64, 3) and ckpt.extra["dataset"] == "spirals"


def test_train_regression_csv(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.standard_normal(120)
    rows = ["a;b;c;target"] + [";".join(f"{v:.6f}" for v in (*r, t)) for r, t in zip(x, y)]
    csv = tmp_path / "data.csv"
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    code = cli.main(["train", "--csv", str(csv), "--target", "target", "--task", "regression",
                     "--hidden", "16", "--epochs", "30", "--batch-size", "16",
                     "--optimizer", "rmsprop", "--clip", "1.0", "--l2", "1e-4",
                     "--out", str(out), "--quiet"])
    assert code == 0
    text = capsys.readouterr().out
    assert "rmse" in text and "mae" in text
    m = json.loads((out / "metrics.json").read_text())["test"]
    assert m["rmse"] == pytest.approx(np.sqrt(m["mse"]))
    assert m["mse"] < np.var(y)  # it learned something


@pytest.mark.parametrize("argv,message", [
    (["train", "--csv", "missing.csv"], "missing.csv"),
    (["train", "--dataset", "xor", "--csv", "x.csv"], "either --dataset or --csv"),
    (["train", "--dropout", "1.5", "--epochs", "1"], "MLP: dropout must be a number in [0, 1)"),
    (["train", "--activation", "swish", "--epochs", "1"], "MLP: activation must be one of"),
    (["train", "--batch-size", "0", "--epochs", "1"], "train: error: --batch-size must be a positive int, got 0"),
    (["train", "--epochs", "0"], "train: error: --epochs must be a positive int, got 0"),
    (["train", "--lr", "-1", "--epochs", "1"], "--lr must be a finite number > 0, got -1.0"),
])
def test_train_bad_input_exits_2(argv, message, tmp_path, capsys):
    assert cli.main(argv + ["--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_bad_flags_are_argparse_errors(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--hidden", "64,x"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["fly"])


def test_console_script_check_dispatch(tmp_path):
    rng = np.random.default_rng(0)
    W1, b1, W2, b2 = rng.standard_normal((4, 3)), np.zeros(4), rng.standard_normal((1, 4)), np.zeros(1)
    X, Y = rng.standard_normal((8, 3)), rng.standard_normal((8, 1))
    ref = jm.oracle.reference_gradients([W1, W2], [b1, b2], X, Y, activation="tanh",
                                        output="identity", loss="mse")
    path = tmp_path / "g.npz"
    np.savez(path, W1=W1, b1=b1, W2=W2, b2=b2, X=X, Y=Y, dW1=ref["dW"][0], db1=ref["db"][0],
             dW2=ref["dW"][1], db2=ref["db"][1])
    proc = subprocess.run([sys.executable, "-m", "jaxmlp", "check", str(path), "--activation",
                           "tanh", "--output", "identity", "--loss", "mse"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout


def _table(tmp, name, header, rows):
    path = tmp / name
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def _fifo(tmp):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(tmp / "pipe.csv")
    return tmp / "pipe.csv"


ROWS = [f"{i % 5 * 0.5},{i % 3 - 1}" for i in range(40)]


@pytest.mark.parametrize("make_csv,message", [
    (lambda t: t, "is a directory, not a regular file"),
    (_fifo, "pipe.csv is a FIFO"),  # refused from its stat: opening it would block
    (lambda t: _table(t, "nan_y.csv", "a,b,y", [r + (",nan" if i == 7 else f",{i % 2}")
                                                 for i, r in enumerate(ROWS)]),
     "nan_y.csv: the target (y) column 'y' holds nan in data row 8"),
    (lambda t: _table(t, "nan_x.csv", "a,b,y", [("inf," if i == 3 else "1,") + r
                                                 for i, r in enumerate(ROWS)]),
     "nan_x.csv: the feature (x) column 'a' holds inf in data row 4"),
    (lambda t: _table(t, "y_only.csv", "y", [str(i % 2) for i in range(40)]),
     "y_only.csv: no feature columns"),
    (lambda t: _table(t, "one.csv", "a,b,y", [r + ",1" for r in ROWS]),
     "one.csv: the target (y) column 'y' holds only one class, 1; classification needs"),
])
def test_train_bad_csv_exits_2_before_training(make_csv, message, tmp_path, capsys,
                                                monkeypatch):
    monkeypatch.setattr(jm, "fit", lambda *a, **k: pytest.fail("training started"))
    code = cli.main(["train", "--csv", str(make_csv(tmp_path)), "--out", str(tmp_path / "run"),
                     "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err


@pytest.mark.parametrize("argv, message", [
    (["--output", "sigmoid", "--loss", "mse"],
     "--loss mse on a classification data set with 3 classes: the command line trains class "
     "labels with --loss cce (a softmax output); other losses on one-hot targets are for the "
     "Python API (jaxmlp.fit)"),
    (["--dataset", "moons", "--loss", "sse"],
     "--loss sse on a classification data set with 2 classes: the command line trains class "
     "labels with --loss cce (a softmax output), or --loss bce (a sigmoid output);"),
    (["--dataset", "sine", "--loss", "bce", "--output", "sigmoid"],
     "--loss bce on a regression target: the command line standardises regression targets "
     "and trains them with --loss mse or sse (for class labels, --task classification)"),
])
def test_train_loss_of_the_other_task_exits_2_before_training(argv, message, tmp_path, capsys,
                                                             monkeypatch):
    monkeypatch.setattr(jm, "fit", lambda *a, **k: pytest.fail("training started"))
    assert cli.main(["train", *argv, "--epochs", "1", "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"jaxmlp train: error: {message}" in err and "Traceback" not in err, err


def test_train_classification_of_a_continuous_target_notes_it(tmp_path, capsys):
    csv = _table(tmp_path, "cont.csv", "a,y", [f"{i % 7},{i * 0.37:.2f}" for i in range(40)])
    assert cli.main(["train", "--csv", str(csv), "--task", "classification", "--epochs", "1",
                     "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert ("jaxmlp train: note: 40 classes for 40 rows in 'y': a continuous target? "
            "(--task regression)") in capsys.readouterr().err


def test_train_out_that_is_a_file_exits_2_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(jm, "fit", lambda *a, **k: pytest.fail("training started"))
    out = tmp_path / "taken"
    out.write_text("not a folder")
    assert cli.main(["train", "--epochs", "1", "--out", str(out), "--quiet"]) == 2
    assert (f"jaxmlp train: error: --out must be a folder (to write model.ckpt, history.json "
            f"and metrics.json into), got {str(out)!r}: it exists and is not a folder"
            in capsys.readouterr().err)
    assert out.read_text() == "not a folder"


def test_train_that_diverges_exits_1_with_a_message_not_a_traceback(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "--optimizer", "sgd", "--lr", "1e30", "--epochs", "2",
                     "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    assert re.search(r"jaxmlp train: training diverged at epoch 1, step [1-9]\d* \(counted "
                     r"from 1\): non-finite \w+; nothing written\. Try a smaller --lr, or "
                     r"--clip N", err), err
    assert not (out / "model.ckpt").exists()


# --------------------------------------------------------------------------- sweeps

SWEEP = ["train", "--dataset", "sine", "--hidden", "8", "--epochs", "4", "--batch-size", "64",
         "--quiet"]


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    """One small sweep, 2 seeds × 2 learning rates: (its --out folder, its stdout)."""
    import contextlib
    import io
    out = tmp_path_factory.mktemp("sweep")
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        code = cli.main(SWEEP + ["--seeds", "2", "--lr", "1e-3,1e-2", "--out", str(out)])
    assert code == 0, text.getvalue()
    return out, text.getvalue()


def test_train_sweep_prints_a_table_and_writes_every_model(sweep_run):
    out, text = sweep_run
    assert "sweep    4 models = 2 seeds × 2 lr × 1 l2" in text
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if "best val loss" in line)
    rows = lines[head + 1:head + 5]
    assert [r.split()[-1] for r in rows] == ["ran"] * 4, text
    metrics = json.loads((out / "metrics.json").read_text())
    best = metrics["best_model"]
    assert [r.startswith("*") for r in rows] == [m == best for m in range(4)]
    models = metrics["models"]
    assert [(r["seed"], r["lr"], r["l2"]) for r in models] == [
        (0, 1e-3, 0.0), (0, 1e-2, 0.0), (1, 1e-3, 0.0), (1, 1e-2, 0.0)]
    assert best == int(np.argmin([r["best_val_loss"] for r in models]))
    assert metrics["test"] == models[best]["test"] and "rmse" in metrics["test"]
    history = json.loads((out / "history.json").read_text())
    assert history["best_model"] == best and len(history["models"]) == 4
    for m, h in enumerate(history["models"]):
        assert h["model"] == m and len(h["train_loss"]) == h["epochs_run"] == 4
    ckpt = jm.checkpoint.load(out / "model.ckpt")
    assert ckpt.model.sizes == (1, 8, 1) and ckpt.extra["sweep"]["model"] == best
    assert ckpt.extra["metrics"] == models[best]["test"]
    stacked = jm.checkpoint.load(out / "sweep.ckpt")
    assert stacked.params[0]["W"].shape == (4, 8, 1)
    np.testing.assert_array_equal(stacked.params[0]["W"][best], ckpt.params[0]["W"])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "no loss.png" in text
    else:
        assert (out / "loss.png").stat().st_size > 0


def test_train_sweep_model_equals_the_single_model_run(sweep_run, tmp_path, capsys):
    out, _ = sweep_run
    assert cli.main(SWEEP + ["--seed", "0", "--lr", "1e-2", "--out", str(tmp_path)]) == 0
    assert "\nsweep " not in capsys.readouterr().out
    one = json.loads((tmp_path / "metrics.json").read_text())
    member = json.loads((out / "metrics.json").read_text())["models"][1]  # seed 0, lr 1e-2
    for k, v in one["test"].items():
        assert member["test"][k] == pytest.approx(v, rel=1e-9), k
    one_h = json.loads((tmp_path / "history.json").read_text())
    member_h = json.loads((out / "history.json").read_text())["models"][1]
    np.testing.assert_allclose(member_h["train_loss"], one_h["train_loss"], rtol=1e-9)
    np.testing.assert_allclose(member_h["val_loss"], one_h["val_loss"], rtol=1e-9)


def test_train_single_values_do_not_sweep(tmp_path, capsys, monkeypatch):
    from jaxmlp import sweeps
    monkeypatch.setattr(sweeps, "sweep", lambda *a, **k: pytest.fail("a sweep started"))
    argv = SWEEP + ["--seeds", "1", "--lr", "1e-2", "--l2", "1e-3", "--epochs", "1"]
    assert cli.main(argv + ["--out", str(tmp_path)]) == 0
    assert "\nsweep " not in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--lr", "1e-3,abc"], "argument --lr: expected one number or a comma list of numbers "
                           "> 0, got '1e-3,abc': item 2, 'abc', is not a number"),
    (["--lr", "0.1,-1"], "argument --lr: expected one number or a comma list of numbers > 0, "
                         "got '0.1,-1': item 2, -1, is not a finite number > 0"),
    (["--l2", "0.1,inf"], "argument --l2: expected one number or a comma list of numbers >= 0"),
    (["--lr", "1e-3,"], "item 2, '', is not a number"),
    (["--seeds", "0"], "argument --seeds: expected the number of seeds, an int >= 1, got '0'"),
    (["--seeds", "two"], "argument --seeds: expected the number of seeds"),
])
def test_train_bad_sweep_lists_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train"] + argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_train_sweep_too_big_exits_2_before_training(tmp_path, capsys, monkeypatch):
    from jaxmlp import sweeps
    monkeypatch.setattr(sweeps, "sweep", lambda *a, **k: pytest.fail("training started"))
    argv = ["train", "--seeds", "64", "--lr", "1,2,3,4", "--l2", "0,1,2,3,4", "--out",
            str(tmp_path)]
    assert cli.main(argv) == 2
    assert ("jaxmlp train: error: a sweep trains at most 1024 models (--seeds × --lr values "
            "× --l2 values), got 64 × 4 × 5 = 1280" in capsys.readouterr().err)
