"""GD, momentum, RMSProp and Adam on a narrow valley and on real data; learning rates too
large and too small.

Replays the seeds' claims:

1. On an ill-conditioned problem (a narrow valley) gradient descent must keep η below
   2/λ_max of the steepest direction and then crawls along the flat one; momentum
   accumulates speed along the valley floor; RMSProp and Adam rescale each coordinate by
   its gradient's running RMS, so the scales of the features stop mattering.
2. A learning rate that is too large makes training diverge (`jm.fit` raises
   `DivergenceError`, or with ``on_divergence="stop"`` reports where and keeps the last
   finite parameters); one that is too small leaves the loss barely moving.

Part 1 (narrow valley): linear regression y = x·w* + b + ε with two features of scales 1
and 100 (N = 256, w* = (1, 0.01), ε ~ N(0, 0.1²)), fitted by a one-layer linear MLP
(2 → 1, identity, MSE) with full-batch steps from w = 0.  The Hessian 2[x 1]ᵀ[x 1]/N has
eigenvalues ≈ 1.8 and 2.0·10⁴ (condition number ≈ 10⁴); GD and momentum use
η = 0.9·2/λ_max computed from the data; "too large" is 1.5·2/λ_max, "too small"
10⁻⁴·2/λ_max.

Part 2 (real data): red Wine Quality (if the file is found; otherwise a synthetic
11-feature regression set), 11 → 64 → 1 ReLU MLP, minibatches of 64, 100 epochs, split
and standardisation as in `scripts/wine_quality.py` (seed --seed).

Usage:  python scripts/optimizers.py [--data DIR] [--out DIR] [--quick] [--seed S]
"""
from __future__ import annotations

import sys
import time

import _common as C

import jax
import jax.numpy as jnp
import numpy as np

import jaxmlp as jm

NAME = "optimizers"
DTYPE = jnp.float32


# --------------------------------------------------------------------------- part 1

def valley(seed=0, n=256):
    """x (n, 2) with column scales 1 and 100, y (n,), the least-squares optimum and the
    Hessian's eigenvalues of the MSE in (w₁, w₂, b)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)) * np.array([1.0, 100.0])
    y = x @ np.array([1.0, 0.01]) + 0.1 * rng.normal(size=n)
    x, y = x.astype(np.float32), y.astype(np.float32)
    design = np.concatenate([x, np.ones((n, 1))], axis=1).astype(np.float64)
    w_opt, *_ = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)
    loss_opt = float(np.mean((design @ w_opt - y) ** 2))
    eig = np.linalg.eigvalsh(2 * design.T @ design / n)
    return x, y, w_opt, loss_opt, eig


def valley_runs(x, y, eig, epochs, quick=False):
    """(label, optimizer, lr) rows for part 1; η for GD from the data's λ_max."""
    crit = 2.0 / eig[-1]
    rows = [
        ("GD", "sgd", 0.9 * crit),
        ("momentum 0.9", "momentum", 0.9 * crit),
        ("RMSProp", "rmsprop", 1e-2),
        ("Adam", "adam", 1e-2),
        ("Adam", "adam", 1e-1),
        ("GD, too large", "sgd", 1.5 * crit),
        ("GD, too small", "sgd", 1e-4 * crit),
    ]
    if quick:  # a smoke run: GD, Adam and the two bad rates
        rows = [rows[0], rows[3], rows[5], rows[6]]
    model = jm.MLP((2, 1), activation="relu", output="identity", loss="mse")
    params0 = [{"W": jnp.zeros((1, 2), DTYPE), "b": jnp.zeros((1,), DTYPE)}]
    results = []
    for label, kind, lr in rows:
        params, hist = jm.fit(model, params0, make(kind, lr), x, y, epochs=epochs,
                              batch_size=None, key=jax.random.key(0), on_divergence="stop")
        results.append(dict(label=label, lr=lr, history=hist, diverged=hist.get("diverged"),
                            w=np.asarray(params[0]["W"], np.float64).ravel()))
    return results


def make(kind, lr):
    if kind == "sgd":
        return jm.optim.sgd(lr)
    if kind == "momentum":
        return jm.optim.sgd(lr, momentum=0.9)
    if kind == "rmsprop":
        return jm.optim.rmsprop(lr)
    if kind == "adam":
        return jm.optim.adam(lr)
    raise ValueError(kind)


def _at(losses, epoch):
    return losses[epoch - 1] if len(losses) >= epoch else None


def valley_table(results, w_opt, loss_opt, epochs):
    rows = []
    for r in results:
        tl, d = r["history"]["train_loss"], r["diverged"]
        status = (f"diverged: epoch {d['epoch']}, step {d['step']} (on_divergence='stop')"
                  if d else "ok")
        rows.append([r["label"], f"{r['lr']:.3g}", _at(tl, 1), _at(tl, 10), _at(tl, 100),
                     None if d else tl[-1], f"{r['w'][0]:.4g}", f"{r['w'][1]:.4g}", status])
    rows.append(["least squares", "", None, None, None, loss_opt, f"{w_opt[0]:.4g}",
                 f"{w_opt[1]:.4g}", "optimum"])
    return C.table(["optimizer", "lr", "MSE @1", "@10", "@100", f"@{epochs}", "w₁", "w₂",
                    "status"], rows, floatfmt=".4g")


# --------------------------------------------------------------------------- part 2

def real_data(data=None, seed=0):
    """Standardised red-wine split (as in wine_quality.py), or a synthetic stand-in.

    Returns (name, x_tr, y_tr, x_va, y_va)."""
    try:
        t = jm.data.wine_quality("red", path=C.data_dir(data))
        x, y, name = t.x, t.y, "red wine"
    except (FileNotFoundError, ValueError) as e:
        print(f"red Wine Quality not available ({type(e).__name__}); using a synthetic "
              f"11-feature regression set instead")
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(1599, 11)).astype(np.float32)
        w1, w2 = rng.normal(size=11) / np.sqrt(11), rng.normal(size=11) / np.sqrt(11)
        y = (5.6 + np.sin(2 * x @ w1) + 0.5 * x @ w2 + 0.5 * rng.normal(size=1599)).astype(
            np.float32)
        name = "synthetic"
    (xtr, ytr), (xva, yva), _ = jm.data.train_val_test_split(x, y, val=0.15, test=0.2,
                                                             seed=seed)
    xtr, xva, _ = jm.data.standardize(xtr, xva)
    return name, xtr, ytr, xva, yva


REAL = (
    ("GD", "sgd", 1e-2),
    ("momentum 0.9", "momentum", 1e-2),
    ("RMSProp", "rmsprop", 1e-3),
    ("Adam", "adam", 1e-3),
    ("GD, too large", "sgd", 0.3),
    ("GD, too small", "sgd", 1e-5),
)


def real_runs(xtr, ytr, xva, yva, seed, epochs, rows=REAL):
    model = jm.MLP((xtr.shape[1], 64, 1), activation="relu", output="identity", loss="mse")
    params0 = jm.init_params(jax.random.key(seed), model, dtype=DTYPE)
    params0[-1]["b"] = jnp.full((1,), float(np.mean(ytr)), DTYPE)
    results = []
    for label, kind, lr in rows:
        try:
            _, hist = jm.fit(model, params0, make(kind, lr), xtr, ytr, epochs=epochs,
                             batch_size=64, key=jax.random.key(seed), validation=(xva, yva))
            err = None
        except jm.DivergenceError as e:  # the default on_divergence="raise"
            hist, err = e.history, e
        results.append(dict(label=label, lr=lr, history=hist, error=err))
    return results


def real_table(results, epochs):
    rows = []
    for r in results:
        tl, vl, e = r["history"]["train_loss"], r["history"]["val_loss"], r["error"]
        status = (f"DivergenceError: epoch {e.epoch}, step {e.step}" if e else "ok")
        rows.append([r["label"], f"{r['lr']:g}", _at(tl, 1), _at(tl, 10), _at(tl, epochs),
                     min(vl) if vl and not e else None, status])
    return C.table(["optimizer", "lr", "train MSE @1", "@10", f"@{epochs}", "best val MSE",
                    "status"], rows)


# --------------------------------------------------------------------------- main

def plot(valley_results, real_results, loss_opt, data_name, out):
    plt = C.pyplot()
    if plt is None:
        print(C.NO_MATPLOTLIB)
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in valley_results:
        tl = r["history"]["train_loss"]
        axes[0].semilogy(np.arange(1, len(tl) + 1), np.asarray(tl) - loss_opt + 1e-8,
                         label=f"{r['label']} ({r['lr']:.2g})")
    axes[0].set_title("narrow valley: MSE − optimum")
    axes[0].set_ylim(1e-6, 1e3)
    for r in real_results:
        tl = r["history"]["train_loss"]
        if tl:
            axes[1].semilogy(np.arange(1, len(tl) + 1), tl, label=f"{r['label']} ({r['lr']:g})")
    axes[1].set_title(f"{data_name}: training MSE")
    if not any(r["history"]["train_loss"] for r in real_results):
        axes[1].text(0.5, 0.5, "every run diverged in its first epoch", ha="center",
                     transform=axes[1].transAxes)
    for ax in axes:
        ax.set_xlabel("epoch")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return C.save(fig, out, "optimizers.png")


def main(argv=None):
    args = C.parser(NAME, __doc__, data=True).parse_args(argv)
    t0 = time.perf_counter()
    x, y, w_opt, loss_opt, eig = valley(args.seed)
    epochs1 = 100 if args.quick else 300
    vres = valley_runs(x, y, eig, epochs1, quick=args.quick)
    print(f"## Narrow valley: features scaled 1 and 100, Hessian eigenvalues "
          f"{', '.join(f'{e:.3g}' for e in eig)} (2/λ_max = {2 / eig[-1]:.3g}); full batch, "
          f"{epochs1} epochs\n")
    print(valley_table(vres, w_opt, loss_opt, epochs1))

    data_name, xtr, ytr, xva, yva = real_data(args.data, args.seed)
    epochs2 = 10 if args.quick else 100
    rows = (REAL[4],) if args.quick else REAL
    rres = real_runs(xtr, ytr, xva, yva, args.seed, epochs2, rows)
    print(f"\n## {data_name}: 11 → 64 → 1 ReLU, minibatches of 64, {epochs2} epochs\n")
    print(real_table(rres, epochs2))
    plot(vres, rres, loss_opt, data_name, args.out)
    print(f"time {time.perf_counter() - t0:.1f}s")
    return dict(valley=vres, real=rres, loss_opt=loss_opt)


if __name__ == "__main__":
    main()
    sys.exit(0)
