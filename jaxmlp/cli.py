"""The `jaxmlp` command line: `jaxmlp train` and `jaxmlp check`.

    jaxmlp train                       # spirals, 2 hidden layers of 64, Adam: < 1 min on a CPU
    jaxmlp train --dataset wine-red --hidden 32 --l2 1e-3 --patience 20
    jaxmlp train --csv data.csv --target price --task regression
    jaxmlp check grads.npz --activation sigmoid --output sigmoid --loss bce

`train` splits the data 70/15/15 (stratified for classification), standardises the
features on the training part, checks the manual gradients against jax.grad on the first
batch, trains with early stopping on the validation part, reports test metrics and writes
`--out`: `model.ckpt` (jaxmlp.checkpoint), `history.json`, `metrics.json` and `loss.png`
(when matplotlib is installed).
"""
from __future__ import annotations

import argparse
import json
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
    a.add_argument("--l2", type=float, default=0.0)
    o = p.add_argument_group("optimisation")
    o.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    o.add_argument("--lr", type=float, default=None, help="learning rate (default by optimizer)")
    o.add_argument("--epochs", type=int, default=200)
    o.add_argument("--batch-size", type=int, default=32)
    o.add_argument("--patience", type=int, default=20,
                   help="early-stopping patience in epochs (0: off)")
    o.add_argument("--clip", type=float, default=None, help="clip gradients to this global norm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default runs/<dataset>)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxmlp", description="MLP training with hand-written backprop, verified by jax.grad")
    sub = parser.add_subparsers(dest="command", metavar="{train,check}")
    sub.required = True
    _add_train_arguments(sub.add_parser(
        "train", help="train an MLP on built-in or CSV data",
        description="Train an MLP and write checkpoint, history, metrics and a loss plot."))
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


def _optimizer(args):
    from jaxmlp import optim
    lr = args.lr
    if args.optimizer == "sgd":
        opt = optim.sgd(lr or 0.05)
    elif args.optimizer == "momentum":
        opt = optim.sgd(lr or 0.02, momentum=0.9)
    elif args.optimizer == "rmsprop":
        opt = optim.rmsprop(lr or 1e-3)
    elif args.optimizer == "adam":
        opt = optim.adam(lr or 3e-3)
    else:
        opt = optim.adamw(lr or 3e-3)
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

    def __call__(self, epoch, logs):
        if self.quiet:
            return
        text = f"train {logs['train_loss']:.4f}"
        if logs["val_loss"] is not None:
            text += f"  val {logs['val_loss']:.4f}"
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


def _check_args(args):
    """The numeric flags and --out, checked before any data is loaded."""
    from jaxmlp import _validate as _v
    _v.positive_int(args.epochs, "--epochs", where=WHERE)
    _v.positive_int(args.batch_size, "--batch-size", where=WHERE)
    _v.integer(args.patience, "--patience", where=WHERE, low=0)
    for flag, value in (("--lr", args.lr), ("--clip", args.clip)):
        if value is not None:
            _v.positive_real(value, flag, where=WHERE)
    if args.out is not None and os.path.lexists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"{WHERE}: --out must be a folder (to write model.ckpt, history.json "
                         f"and metrics.json into), got {args.out!r}: it exists and is not a "
                         f"folder")


def run_train(args) -> int:
    import jaxmlp as jm
    from jaxmlp import data
    t_start = time.perf_counter()
    _check_args(args)
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
        n_out = y_tr.shape[1]
    elif d.n_classes == 2 and (args.output == "sigmoid" or args.loss == "bce"):
        output, loss, n_out = "sigmoid", "bce", 1
        y_tr, y_va, y_te = (y.reshape(-1, 1).astype(np.float32) for y in (y_tr, y_va, y_te))
    else:
        output, loss, n_out = args.output or "softmax", args.loss or "cce", d.n_classes
    act = args.activation.split(",") if "," in args.activation else args.activation
    model = jm.MLP((x_tr.shape[1],) + tuple(args.hidden) + (n_out,), activation=act,
                   output=output, loss=loss, init=args.init, l1=args.l1, l2=args.l2,
                   norm=args.norm, dropout=args.dropout)
    opt = _optimizer(args)
    key = jax.random.key(args.seed)
    k_init, k_fit, k_check = jax.random.split(key, 3)
    params = jm.init_params(k_init, model)
    print(f"data     {d.name}: {d.x.shape[0]} rows, {d.x.shape[1]} features, {d.task}"
          f"{f' ({d.n_classes} classes)' if d.n_classes else ''}; "
          f"split train {len(x_tr)} / val {len(x_va)} / test {len(x_te)}")
    print(f"model    {model.sizes} activation={args.activation} output={output} loss={loss}"
          f"{f' norm={args.norm}' if args.norm else ''}"
          f"{f' dropout={args.dropout}' if args.dropout else ''}"
          f"{f' l1={args.l1}' if args.l1 else ''}{f' l2={args.l2}' if args.l2 else ''}")

    # gradient check on the first batch, in float64: manual δ vs jax.grad
    bs = min(args.batch_size, len(x_tr))
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        s64 = jm.init_state(model, dtype=jnp.float64)
        report = jm.check_gradients(model, p64, np.asarray(x_tr[:bs], np.float64),
                                    y_tr[:bs], key=k_check, state=s64)
    print(f"gradient check (first batch of {bs}, float64): manual δ vs jax.grad "
          f"max rel err {report.max_rel_err:.2e}, max abs err {report.max_abs_err:.2e} "
          f"-> {'OK' if report.ok else 'MISMATCH'}")
    if not report.ok:
        print(report, file=sys.stderr)

    progress = _Progress(args.epochs, args.quiet)
    try:
        params, history = jm.fit(
            model, params, opt, x_tr, y_tr, epochs=args.epochs, batch_size=args.batch_size,
            key=k_fit, validation=(x_va, y_va) if len(x_va) else None,
            patience=args.patience or None if len(x_va) else None, callback=progress)
    finally:
        progress.close()
    state = history["state"]
    metrics = {"test": _metrics(model, params, state, x_te, y_te, d, scale),
               "validation": _metrics(model, params, state, x_va, y_va, d, scale),
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
    wrote = ["model.ckpt", "history.json", "metrics.json"]
    if _plot(history, out / "loss.png"):
        wrote.append("loss.png")
        note = ""
    else:
        note = " (matplotlib not installed: no loss.png; pip install matplotlib)"
    print(f"wrote    {out}/{{{','.join(wrote)}}}{note}")
    return 0


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
