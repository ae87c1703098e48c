"""The `jaxmlp` command line: `jaxmlp train` and `jaxmlp check`.

    jaxmlp train                       # spirals, 2 hidden layers of 64, Adam: < 1 min on a CPU
    jaxmlp train --dataset wine-red --hidden 32 --l2 1e-3 --patience 20
    jaxmlp train --csv data.csv --target price --task regression
    jaxmlp train --seeds 3 --lr 1e-3,3e-3,1e-2     # a sweep: 9 models in one program
    jaxmlp check grads.npz --activation sigmoid --output sigmoid --loss bce

`train` splits the data 70/15/15 (stratified for classification), standardises the
features on the training part, checks the manual gradients against jax.grad on the first
batch, trains with early stopping on the validation part, reports test metrics and writes
`--out`: `model.ckpt` (jaxmlp.checkpoint), `history.json`, `metrics.json` and `loss.png`
(when matplotlib is installed).

A sweep (`--seeds N` with N ≥ 2, or a comma list of ≥ 2 values for `--lr` or `--l2`)
trains the Cartesian product seeds × lr × l2 of models at once with `jaxmlp.sweeps.sweep`
(at most `MAX_MODELS`; a group of models per CPU core), prints a table of them, writes the
best one's checkpoint as `model.ckpt`, all of them in `sweep.ckpt`, and every model's history,
metrics and loss curves.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["main", "build_parser"]

DATASETS = ("spirals", "moons", "xor", "sine", "wine-red", "wine-white", "digits")
OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam", "adamw")


def _csv_ints(text):
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"layer widths must be positive, got {text!r}")
    return values


#: The most models one sweep may train (seeds × lr × l2).
MAX_MODELS = 1024


def _float_list(low: float, strict: bool):
    """An argparse type: one float, kept as a float (checked later, as before sweeps
    existed), or a comma list of >= 2 finite numbers > low (>= low when not strict),
    returned as a tuple (a sweep).  argparse names the flag in its error."""
    what = f"> {low:g}" if strict else f">= {low:g}"

    def parse(text: str):
        if "," not in text:
            try:
                return float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
        values = []
        for i, item in enumerate(t.strip() for t in text.split(",")):
            try:
                v = float(item)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected one number or a comma list of numbers {what}, got {text!r}: "
                    f"item {i + 1}, {item!r}, is not a number") from None
            if not math.isfinite(v) or (v <= low if strict else v < low):
                raise argparse.ArgumentTypeError(
                    f"expected one number or a comma list of numbers {what}, got {text!r}: "
                    f"item {i + 1}, {item}, is not a finite number {what}")
            values.append(v)
        return tuple(values)

    return parse


def _seed_count(text: str) -> int:
    """An argparse type for --seeds: the number of seeds, an int >= 1."""
    try:
        n = int(text)
    except ValueError:
        n = None
    if n is None or n < 1:
        raise argparse.ArgumentTypeError(
            f"expected the number of seeds, an int >= 1, got {text!r}")
    return n


def _add_train_arguments(p: argparse.ArgumentParser):
    d = p.add_argument_group("data")
    d.add_argument("--dataset", choices=DATASETS, default=None,
                   help="built-in data set (default: spirals, when no --csv)")
    d.add_argument("--csv", help="a CSV or CSV.gz file with a header row")
    d.add_argument("--target", default="-1",
                   help="--csv target column: a name or an index (default: the last)")
    d.add_argument("--task", choices=("regression", "classification"),
                   help="--csv task (default: classification when the target holds few "
                        "distinct integers, else regression)")
    d.add_argument("--data-dir", help="folder holding the real data files (else $JAXMLP_DATA)")
    a = p.add_argument_group("architecture")
    a.add_argument("--hidden", type=_csv_ints, default=(64, 64),
                   help="hidden layer widths, comma-separated (default 64,64)")
    a.add_argument("--activation", default="relu", help="hidden activation (or comma list)")
    a.add_argument("--output", help="output activation (default: identity / softmax / sigmoid)")
    a.add_argument("--loss", help="mse, sse, bce or cce (default: mse or cce by task)")
    a.add_argument("--init", default="auto")
    a.add_argument("--norm", choices=("batch", "layer"))
    a.add_argument("--dropout", type=float, default=0.0)
    a.add_argument("--l1", type=float, default=0.0)
    a.add_argument("--l2", type=_float_list(0.0, strict=False), default=0.0,
                   help="L2 penalty weight (default 0); a comma list of >= 2 sweeps over it")
    o = p.add_argument_group("optimisation")
    o.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    o.add_argument("--lr", type=_float_list(0.0, strict=True), default=None,
                   help="learning rate (default by optimizer); a comma list of >= 2 sweeps "
                        "over it")
    o.add_argument("--epochs", type=int, default=200)
    o.add_argument("--batch-size", type=int, default=32)
    o.add_argument("--patience", type=int, default=20,
                   help="early-stopping patience in epochs (0: off)")
    o.add_argument("--clip", type=float, default=None, help="clip gradients to this global norm")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the data, the split, the initialisation and the shuffling")
    p.add_argument("--seeds", type=_seed_count, default=None, metavar="N",
                   help="N >= 2: a sweep over the seeds --seed, …, --seed+N-1 (the "
                        "initialisation and the shuffling; the data and split keep --seed)")
    p.add_argument("--out", default=None, help="output folder (default runs/<dataset>)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxmlp", description="MLP training with hand-written backprop, verified by jax.grad")
    sub = parser.add_subparsers(dest="command", metavar="{train,check}")
    sub.required = True
    _add_train_arguments(sub.add_parser(
        "train", help="train an MLP on built-in or CSV data",
        description="Train an MLP and write checkpoint, history, metrics and a loss plot.",
        epilog=f"Sweeps: --seeds N (N >= 2), --lr a,b,… or --l2 a,b,… (>= 2 values) train "
               f"every combination, seeds × lr × l2 (at most {MAX_MODELS} models), at once "
               f"in one compiled program (jaxmlp.sweeps.sweep) on every CPU core; a table "
               f"shows each model and marks the best (lowest validation loss), whose "
               f"checkpoint becomes model.ckpt. A single value of each flag trains one "
               f"model, as without them."))
    from jaxmlp import oracle
    oracle.add_check_arguments(sub.add_parser(
        "check", help="check your own backprop's gradients against jaxmlp's",
        description="Compare the gradients in an .npz file with jaxmlp's reference gradients."))
    return parser


# --------------------------------------------------------------------------- data

class _Data:
    def __init__(self, name, x, y, task, n_classes=None, classes=None):
        self.name, self.x, self.y, self.task = name, x, y, task
        self.n_classes, self.classes = n_classes, classes


def _load(args) -> _Data:
    from jaxmlp import data
    if args.csv and args.dataset:
        raise ValueError(f"{WHERE}: give either --dataset or --csv, not both")
    if args.csv:
        target = int(args.target) if args.target.lstrip("-").isdigit() else args.target
        table = data.load_csv(args.csv, target=target)
        _check_finite(table, args.csv)
        task = args.task
        y = table.y
        if task is None:
            whole = np.all(np.mod(y, 1) == 0)
            task = "classification" if whole and len(np.unique(y)) <= 20 else "regression"
        if task == "classification":
            codes, classes = data.encode_labels(y)
            if len(classes) < 2:
                raise ValueError(
                    f"{args.csv}: the target (y) column {table.target_name!r} holds only one "
                    f"class, {classes[0]:g}; classification needs at least two")
            if len(classes) > len(y) // 2:
                print(f"{WHERE}: note: {len(classes)} classes for {len(y)} rows in "
                      f"{table.target_name!r}: a continuous target? (--task regression)",
                      file=sys.stderr)
            return _Data(Path(args.csv).stem, table.x, codes, task, len(classes), classes)
        return _Data(Path(args.csv).stem, table.x, y.reshape(-1, 1), task)
    name = args.dataset or "spirals"
    path = args.data_dir
    if name in ("spirals", "moons", "xor"):
        x, y = getattr(data, name)(n=600 if name == "spirals" else 400, seed=args.seed)
        k = int(y.max()) + 1
        return _Data(name, x, y, "classification", k, list(range(k)))
    if name == "sine":
        x, y = data.sine(n=400, seed=args.seed)
        return _Data(name, x, y, "regression")
    if name.startswith("wine"):
        table = data.wine_quality(name.split("-")[1], path=path)
        return _Data(name, table.x, table.y.reshape(-1, 1), "regression")
    x, y = data.digits(path=path)
    return _Data(name, x, y, "classification", 10, list(range(10)))


def _check_finite(table, path):
    """NaN or Inf in a CSV column: say which column (the target is y) and which row."""
    for values, names, what in ((table.y[:, None], (table.target_name,), "target (y)"),
                                (table.x, table.feature_names, "feature (x)")):
        bad = ~np.isfinite(values)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(
                f"{path}: the {what} column {names[col]!r} holds {values[row, col]} in data "
                f"row {row + 1}; remove or fill such rows first")


#: --optimizer's learning rate when --lr is not given.
DEFAULT_LR = {"sgd": 0.05, "momentum": 0.02, "rmsprop": 1e-3, "adam": 3e-3, "adamw": 3e-3}


def _optimizer(args, lr):
    """The optimizer of --optimizer with learning rate `lr` (None: its default) and --clip."""
    from jaxmlp import optim
    lr = lr or DEFAULT_LR[args.optimizer]
    if args.optimizer == "sgd":
        opt = optim.sgd(lr)
    elif args.optimizer == "momentum":
        opt = optim.sgd(lr, momentum=0.9)
    elif args.optimizer == "rmsprop":
        opt = optim.rmsprop(lr)
    elif args.optimizer == "adam":
        opt = optim.adam(lr)
    else:
        opt = optim.adamw(lr)
    if args.clip is not None:
        opt = optim.chain(optim.clip_by_global_norm(args.clip), opt)
    return opt


class _Progress:
    """A per-epoch progress display: tqdm when installed, else a plain line every few epochs."""

    def __init__(self, epochs, quiet):
        self.quiet, self.epochs, self.bar = quiet, epochs, None
        if not quiet:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=epochs, desc="training", unit="epoch", leave=True)
            except ImportError:
                pass
        self.every = max(1, epochs // 20)

    def text(self, logs) -> str:
        """The progress text of one epoch's logs (fit's callback dict)."""
        text = f"train {logs['train_loss']:.4f}"
        if logs["val_loss"] is not None:
            text += f"  val {logs['val_loss']:.4f}"
        return text

    def __call__(self, epoch, logs):
        if self.quiet:
            return
        text = self.text(logs)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(text)
        elif epoch % self.every == 0 or epoch == self.epochs - 1:
            done = int(30 * (epoch + 1) / self.epochs)
            print(f"epoch {epoch + 1:>4}/{self.epochs} [{'#' * done}{'.' * (30 - done)}] {text}",
                  flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class _SweepProgress(_Progress):
    """`_Progress` for `sweep`'s callback: the lowest train and validation loss of the
    models still training, and how many they are."""

    def text(self, logs) -> str:
        active = logs["active"]
        text = f"models training {int(active.sum())}/{active.size}"
        for name, key in (("train", "train_loss"), ("val", "val_loss")):
            low = _lowest(logs[key])
            if low is not None:
                text += f"  best {name} {low:.4f}"
        return text


def _lowest(values):
    """The smallest finite entry of `values`, or None when there is none."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    return float(values.min()) if values.size else None


def _metrics(model, params, state, x, y, d: _Data, scale):
    import jaxmlp as jm
    yhat = np.asarray(jm.forward(model, params, x, state=state), np.float64)
    if d.task == "regression":
        err = (yhat - np.asarray(y, np.float64)) * scale  # back in the target's units
        mse = float(np.mean(err ** 2))
        return {"mse": mse, "rmse": float(np.sqrt(mse)), "mae": float(np.mean(np.abs(err)))}
    labels = np.asarray(y)
    if model.output == "sigmoid":
        p = np.clip(yhat[:, 0], 1e-12, 1 - 1e-12)
        pred = (p > 0.5).astype(int)
        logloss = float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
    else:
        p = np.clip(yhat, 1e-12, 1.0)
        pred = np.argmax(yhat, axis=1)
        logloss = float(-np.mean(np.log(p[np.arange(len(labels)), labels])))
    return {"accuracy": float(np.mean(pred == labels)), "log_loss": logloss}


def _plot(history, path: Path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(history["train_loss"], label="train")
    if history["val_loss"]:
        ax.plot(history["val_loss"], label="validation")
        ax.axvline(history["best_epoch"], color="gray", linestyle=":", label="best epoch")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


#: The `where` of `jaxmlp train`'s argument errors ("jaxmlp train: --epochs must be ...").
WHERE = "jaxmlp train"


def _values(value) -> tuple:
    """A flag's values: its tuple (a comma list) or the one value as a 1-tuple."""
    return value if isinstance(value, tuple) else (value,)


def _sweep_grid(args):
    """The models of a sweep, [(seed, lr, l2), …]: the Cartesian product seeds × lr × l2
    (l2 varying fastest; lr None: the optimizer's default), or None when every flag
    holds one value (one model, trained by `fit`)."""
    seeds = tuple(range(args.seed, args.seed + (args.seeds or 1)))
    lrs = tuple(lr or DEFAULT_LR[args.optimizer] for lr in _values(args.lr))
    l2s = _values(args.l2)
    if len(seeds) == len(lrs) == len(l2s) == 1:
        return None
    return list(itertools.product(seeds, lrs, l2s))


def _check_args(args):
    """The numeric flags, the sweep's size and --out, checked before any data is loaded."""
    from jaxmlp import _validate as _v
    _v.positive_int(args.epochs, "--epochs", where=WHERE)
    _v.positive_int(args.batch_size, "--batch-size", where=WHERE)
    _v.integer(args.patience, "--patience", where=WHERE, low=0)
    for flag, value in (("--lr", args.lr), ("--clip", args.clip)):
        if value is not None and not isinstance(value, tuple):  # lists: checked by argparse
            _v.positive_real(value, flag, where=WHERE)
    sizes = (args.seeds or 1, len(_values(args.lr)), len(_values(args.l2)))
    if math.prod(sizes) > MAX_MODELS:
        raise ValueError(
            f"{WHERE}: a sweep trains at most {MAX_MODELS} models (--seeds × --lr values × "
            f"--l2 values), got {' × '.join(map(str, sizes))} = {math.prod(sizes)}")
    if args.out is not None and os.path.lexists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"{WHERE}: --out must be a folder (to write model.ckpt, history.json "
                         f"and metrics.json into), got {args.out!r}: it exists and is not a "
                         f"folder")


class _Setup:
    """What one model and a sweep share: the data `d`, the standardised splits `train`,
    `val`, `test` ((x, y) pairs), the target's `scale`, the `model` (its l2: the first
    --l2 value) and its output activation and loss."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


def _setup(args) -> _Setup:
    """Loads and splits the data (seed --seed), standardises it and builds the MLP."""
    import jaxmlp as jm
    from jaxmlp import data
    d = _load(args)
    stratify = d.task == "classification"
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = data.train_val_test_split(
        d.x, d.y, val=0.15, test=0.15, seed=args.seed, stratify=stratify)
    x_tr, x_va, x_te, _ = data.standardize(x_tr, x_va, x_te)
    scale = 1.0
    if d.task == "regression":  # standardise y too; metrics are reported in y's units
        y_tr, y_va, y_te, y_scaler = data.standardize(y_tr, y_va, y_te)
        scale = float(y_scaler.std.reshape(-1)[0])
        output, loss = args.output or "identity", args.loss or "mse"
        if loss not in ("mse", "sse"):
            raise ValueError(
                f"--loss {loss} on a regression target: the command line standardises "
                f"regression targets and trains them with --loss mse or sse (for class "
                f"labels, --task classification)")
        n_out = y_tr.shape[1]
    elif d.n_classes == 2 and (args.output == "sigmoid" or args.loss == "bce"):
        output, loss, n_out = "sigmoid", "bce", 1
        y_tr, y_va, y_te = (y.reshape(-1, 1).astype(np.float32) for y in (y_tr, y_va, y_te))
    else:
        output, loss, n_out = args.output or "softmax", args.loss or "cce", d.n_classes
        if loss != "cce":  # the targets are class labels: cce, or bce for two classes
            two = ", or --loss bce (a sigmoid output)" if d.n_classes == 2 else ""
            raise ValueError(
                f"--loss {loss} on a classification data set with {d.n_classes} classes: "
                f"the command line trains class labels with --loss cce (a softmax "
                f"output){two}; other losses on one-hot targets are for the Python API "
                f"(jaxmlp.fit)")
    act = args.activation.split(",") if "," in args.activation else args.activation
    model = jm.MLP((x_tr.shape[1],) + tuple(args.hidden) + (n_out,), activation=act,
                   output=output, loss=loss, init=args.init, l1=args.l1,
                   l2=_values(args.l2)[0], norm=args.norm, dropout=args.dropout)
    return _Setup(d=d, train=(x_tr, y_tr), val=(x_va, y_va), test=(x_te, y_te), scale=scale,
                  model=model, output=output, loss=loss)


def _print_setup(args, s: _Setup):
    """The `data` and `model` lines."""
    d, model = s.d, s.model
    l2 = (f" l2={','.join(f'{v:g}' for v in args.l2)}" if isinstance(args.l2, tuple)
          else f" l2={args.l2}" if args.l2 else "")
    print(f"data     {d.name}: {d.x.shape[0]} rows, {d.x.shape[1]} features, {d.task}"
          f"{f' ({d.n_classes} classes)' if d.n_classes else ''}; "
          f"split train {len(s.train[0])} / val {len(s.val[0])} / test {len(s.test[0])}")
    print(f"model    {model.sizes} activation={args.activation} output={s.output} "
          f"loss={s.loss}"
          f"{f' norm={args.norm}' if args.norm else ''}"
          f"{f' dropout={args.dropout}' if args.dropout else ''}"
          f"{f' l1={args.l1}' if args.l1 else ''}{l2}")


def _gradient_check(model, params, x, y, batch_size, key):
    """Manual δ vs jax.grad on the first batch, in float64; prints the result line (and
    the report on stderr when they disagree).  Out: the report."""
    import jaxmlp as jm
    bs = min(batch_size, len(x))
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        s64 = jm.init_state(model, dtype=jnp.float64)
        report = jm.check_gradients(model, p64, np.asarray(x[:bs], np.float64),
                                    y[:bs], key=key, state=s64)
    print(f"gradient check (first batch of {bs}, float64): manual δ vs jax.grad "
          f"max rel err {report.max_rel_err:.2e}, max abs err {report.max_abs_err:.2e} "
          f"-> {'OK' if report.ok else 'MISMATCH'}")
    if not report.ok:
        print(report, file=sys.stderr)
    return report


def _seed_keys(seed):
    """(k_init, k_fit, k_check) of a seed: the initialisation, fit's and the check's key."""
    return jax.random.split(jax.random.key(seed), 3)


def _wrote(out: Path, wrote: list, plotted: bool):
    """The last line: which files were written (and why loss.png was not)."""
    note = ""
    if plotted:
        wrote = wrote + ["loss.png"]
    else:
        note = " (matplotlib not installed: no loss.png; pip install matplotlib)"
    print(f"wrote    {out}/{{{','.join(wrote)}}}{note}")


def run_train(args) -> int:
    """`jaxmlp train`: one model with `fit`, or a sweep (see `_sweep_grid`)."""
    t_start = time.perf_counter()
    _check_args(args)
    grid = _sweep_grid(args)
    s = _setup(args)
    _print_setup(args, s)
    if grid is None:
        return _train_one(args, s, t_start)
    return _train_sweep(args, s, grid, t_start)


def _train_one(args, s: _Setup, t_start) -> int:
    """One model: gradient check, `fit`, test metrics, and the files in --out."""
    import jaxmlp as jm
    d, model = s.d, s.model
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = s.train, s.val, s.test
    opt = _optimizer(args, args.lr)
    k_init, k_fit, k_check = _seed_keys(args.seed)
    params = jm.init_params(k_init, model)
    report = _gradient_check(model, params, x_tr, y_tr, args.batch_size, k_check)

    progress = _Progress(args.epochs, args.quiet)
    try:
        params, history = jm.fit(
            model, params, opt, x_tr, y_tr, epochs=args.epochs, batch_size=args.batch_size,
            key=k_fit, validation=(x_va, y_va) if len(x_va) else None,
            patience=args.patience or None if len(x_va) else None, callback=progress)
    except jm.DivergenceError as e:  # a user-facing outcome, not a crash: no traceback
        diverged = e
    else:
        diverged = None
    finally:
        progress.close()
    if diverged is not None:
        print(f"{WHERE}: training diverged at epoch {diverged.epoch + 1}, step "
              f"{diverged.step + 1} (counted from 1): {diverged.cause}; nothing written. Try "
              f"a smaller --lr, or --clip N", file=sys.stderr)
        return 1
    state = history["state"]
    metrics = {"test": _metrics(model, params, state, x_te, y_te, d, s.scale),
               "validation": _metrics(model, params, state, x_va, y_va, d, s.scale),
               "epochs_run": history["epochs_run"], "best_epoch": history["best_epoch"],
               "stopped_early": history["stopped_early"],
               "gradient_check_max_rel_err": report.max_rel_err,
               "seconds": time.perf_counter() - t_start}
    stop = (f"early stop at epoch {history['epochs_run']}, best epoch {history['best_epoch'] + 1}"
            if history["stopped_early"] else f"{history['epochs_run']} epochs")
    print(f"trained  {stop}; {np.sum(history['epoch_time']):.2f} s in fit")
    print("test     " + "  ".join(f"{k} {v:.4f}" for k, v in metrics["test"].items()))

    out = Path(args.out or os.path.join("runs", d.name))
    out.mkdir(parents=True, exist_ok=True)
    from jaxmlp import checkpoint
    checkpoint.save(out / "model.ckpt", params=params, state=state, model=model,
                    step=history["epochs_run"],
                    extra={"dataset": d.name, "task": d.task, "metrics": metrics["test"]})
    hist = {k: v for k, v in history.items() if k != "state"}
    (out / "history.json").write_text(json.dumps(hist, indent=1))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    _wrote(out, ["model.ckpt", "history.json", "metrics.json"], _plot(history, out / "loss.png"))
    return 0


# --------------------------------------------------------------------------- sweeps

def _status(history, m) -> str:
    """Model m's end, for the table: ran, stopped early, or diverged at epoch e step s
    (counted from 1)."""
    div = history["diverged"][m]
    if div is not None:
        return f"diverged at epoch {div['epoch'] + 1} step {div['step'] + 1}"
    return "stopped early" if history["stopped_early"][m] else "ran"


def _best_val(history, m):
    """Model m's validation loss at its best epoch; None without validation or epochs."""
    e = int(history["epochs_run"][m])
    if not history["val_loss"].shape[1] or e == 0:
        return None
    value = float(history["val_loss"][m, int(history["best_epoch"][m])])
    return value if math.isfinite(value) else None


def _member_history(history, m) -> dict:
    """Model m's history in fit's form without `state` (sweeps.member's lists)."""
    from jaxmlp import sweeps
    h = sweeps._member_history(dict(history, state=None), m)
    del h["state"]
    return h


def _json_safe(value):
    """`value` with NumPy scalars and arrays as Python numbers and lists, tuples as lists
    and NaN or ±Inf as None, so that json.dumps writes strict JSON."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _label(seed, lr, l2) -> str:
    """A model's name in the plot's legend."""
    return f"seed {seed}, lr {lr:g}, l2 {l2:g}"


def _table(rows, best) -> str:
    """The per-model table: one line per model, the best marked with `*`; epochs counted
    from 1, "-" for a number that does not exist (no epoch ran) or is not finite."""
    metric_names = list(rows[0]["test"])
    head = ["", "model", "seed", "lr", "l2", "epochs", "best epoch", "best val loss"] + \
        [f"test {k}" for k in metric_names] + ["status"]

    def num(v, spec=".4f"):
        return "-" if v is None or not math.isfinite(v) else format(v, spec)

    lines = [head]
    for r in rows:
        lines.append(["*" if r["model"] == best else "", str(r["model"]), str(r["seed"]),
                      f"{r['lr']:g}", f"{r['l2']:g}", str(r["epochs_run"]),
                      str(r["best_epoch"] + 1) if r["epochs_run"] else "-",
                      num(r["best_val_loss"], ".4g")]
                     + [num(r["test"][k]) for k in metric_names] + [r["status"]])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i in (0, len(head) - 1) else c.rjust(w)
                               for i, (c, w) in enumerate(zip(line, widths))).rstrip()
                     for line in lines)


def _plot_sweep(history, labels, best, path: Path) -> bool:
    """Every model's train (dashed) and validation (solid) loss in one figure, one colour
    per model, log scale; the legend names each model (the best one's marked), or only
    the best when there are more than 20.  False when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    n = len(labels)
    colours = plt.get_cmap("tab10" if n <= 10 else "viridis")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m, label in enumerate(labels):
        e = int(history["epochs_run"][m])
        colour = colours(m if n <= 10 else m / max(n - 1, 1))
        name = label + (" (best)" if m == best else "")
        show = n <= 20 or m == best
        ax.plot(history["train_loss"][m, :e], color=colour, linestyle="--", linewidth=1)
        if history["val_loss"].shape[1]:
            ax.plot(history["val_loss"][m, :e], color=colour, linestyle="-", linewidth=1.2,
                    label=name if show else None)
        else:
            ax.lines[-1].set_label(name if show else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (dashed: train, solid: validation)")
    ax.set_yscale("log")
    ax.set_title(f"{n} models")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _train_sweep(args, s: _Setup, grid, t_start) -> int:
    """A sweep: the models of `grid` trained at once by `jaxmlp.sweeps.sweep`, a table
    of them, and the files in --out (model.ckpt: the best model)."""
    import jaxmlp as jm
    from jaxmlp import checkpoint, sweeps
    d, model = s.d, s.model
    (x_tr, y_tr), (x_va, y_va) = s.train, s.val
    n = len(grid)
    counts = [args.seeds or 1, len(_values(args.lr)), len(_values(args.l2))]
    groups = sweeps._groups(n, None)  # sweep's default: a group of models per usable core
    sizes = " or ".join(str(k) for k in sorted({g.hi - g.lo for g in groups}, reverse=True))
    used = len(groups)
    print(f"sweep    {n} models = {counts[0]} seeds × {counts[1]} lr × {counts[2]} l2, in "
          f"{used} group{'s' if used > 1 else ''} of {sizes} trained side by side")

    keys = {seed: _seed_keys(seed) for seed in dict.fromkeys(g[0] for g in grid)}
    k_init = jnp.stack([keys[seed][0] for seed, _, _ in grid])
    k_fit = jnp.stack([keys[seed][1] for seed, _, _ in grid])
    params = sweeps.init_many(k_init, model)
    seed0 = grid[0][0]
    report = _gradient_check(model, jm.init_params(keys[seed0][0], model), x_tr, y_tr,
                             args.batch_size, keys[seed0][2])

    opts = [_optimizer(args, lr) for _, lr, _ in grid]
    l2 = [g[2] for g in grid] if counts[2] > 1 else None
    progress = _SweepProgress(args.epochs, args.quiet)
    try:
        params, history = sweeps.sweep(
            model, params, opts, x_tr, y_tr, epochs=args.epochs, batch_size=args.batch_size,
            key=k_fit, validation=(x_va, y_va) if len(x_va) else None,
            patience=args.patience or None if len(x_va) else None, callback=progress, l2=l2)
    finally:
        progress.close()
    print(f"trained  {n} models, {len(history['epoch_time'])} epochs; "
          f"{np.sum(history['epoch_time']):.2f} s in sweep")

    try:
        best, _ = sweeps.best_model(params, history)
    except ValueError:  # every model diverged
        best = None
    rows, host_params, states = _sweep_rows(s, grid, params, history)
    print(_table(rows, best))

    out = Path(args.out or os.path.join("runs", d.name))
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"best_model": best,
               "test": rows[best]["test"] if best is not None else None,
               "validation": rows[best]["validation"] if best is not None else None,
               "models": rows, "gradient_check_max_rel_err": report.max_rel_err,
               "workers": used, "seconds": time.perf_counter() - t_start}
    histories = [dict(model=m, seed=seed, lr=lr, l2=l2_m, **_member_history(history, m))
                 for m, (seed, lr, l2_m) in enumerate(grid)]
    (out / "history.json").write_text(json.dumps(
        _json_safe({"best_model": best, "models": histories}), indent=1, allow_nan=False))
    (out / "metrics.json").write_text(json.dumps(_json_safe(metrics), indent=1,
                                                 allow_nan=False))
    info = {"dataset": d.name, "task": d.task, "model": model.to_dict(), "best_model": best,
            "grid": [{"seed": seed, "lr": lr, "l2": l2_m} for seed, lr, l2_m in grid]}
    checkpoint.save(out / "sweep.ckpt", params=params, state=history["state"],
                    step=int(np.max(history["epochs_run"])), extra=_json_safe(info))
    wrote = ["history.json", "metrics.json", "sweep.ckpt"]
    if best is not None:
        seed, lr, l2_m = grid[best]
        checkpoint.save(out / "model.ckpt", params=host_params[best], state=states[best],
                        model=dataclasses.replace(model, l2=l2_m),
                        step=rows[best]["epochs_run"],
                        extra=_json_safe({"dataset": d.name, "task": d.task,
                                          "metrics": rows[best]["test"],
                                          "sweep": {"model": best, "models": n, "seed": seed,
                                                    "lr": lr, "l2": l2_m}}))
        wrote.insert(0, "model.ckpt")
        print(f"best     model {best} ({_label(seed, lr, l2_m)}): test "
              + "  ".join(f"{k} {v:.4f}" for k, v in rows[best]["test"].items()))
    labels = [_label(*g) for g in grid]
    _wrote(out, wrote, _plot_sweep(history, labels, best, out / "loss.png"))
    if best is None:
        print(f"{WHERE}: every model diverged: no best model, no model.ckpt", file=sys.stderr)
        return 1
    return 0


def _sweep_rows(s: _Setup, grid, params, history):
    """Each model's results (the table's and metrics.json's rows: seed, lr, l2, test
    and validation metrics of its returned params, epochs, best epoch and validation
    loss, how it ended).  Out: (rows, params, states), the last two per model, on the
    host."""
    from jaxmlp import sweeps
    n = len(grid)
    host_params = sweeps.unstack(jax.device_get(params))
    states = (sweeps.unstack(jax.device_get(history["state"])) if history["state"] is not None
              else [None] * n)
    rows = []
    for m, (seed, lr, l2) in enumerate(grid):
        p, st = host_params[m], states[m]
        rows.append({
            "model": m, "seed": seed, "lr": lr, "l2": l2,
            "test": _metrics(s.model, p, st, *s.test, s.d, s.scale),
            "validation": _metrics(s.model, p, st, *s.val, s.d, s.scale),
            "epochs_run": int(history["epochs_run"][m]),
            "best_epoch": int(history["best_epoch"][m]),
            "best_val_loss": _best_val(history, m),
            "stopped_early": bool(history["stopped_early"][m]),
            "diverged": history["diverged"][m], "status": _status(history, m)})
    return rows, host_params, states


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "check":
        from jaxmlp import oracle
        return oracle.run_check(args)
    try:
        return run_train(args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        message = str(e).removeprefix(f"{WHERE}: ")  # said once, argparse's way
        print(f"{WHERE}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
