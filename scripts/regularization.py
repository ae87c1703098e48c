"""Over-fitting a small noisy training set with a big network, and what each regulariser does.

Replays the seeds' claims: a network with far more parameters than training examples
drives its training loss towards zero while the validation loss turns and rises
(over-fitting); an L2 penalty (weight decay, w ← w − η(∇w + λw)), an L1 penalty, dropout,
batch normalisation and early stopping each narrow the gap between training and
validation loss.

Setup: y = sin x + ε, ε ~ N(0, 0.3²) (so the best possible MSE is 0.09), 32 training
points and 1000 validation points (`jm.data.sine`, different seeds); 1 → 256 → 256 → 1
ReLU MLP (66k parameters), Adam(1e-3), minibatches of 8, 2000 epochs, the same
initialisation and shuffling for every configuration.

The penalties are one sweep (`jaxmlp.sweeps.sweep`): the unregularised network, a grid of
L2 weights λ and a grid of L1 weights, M = 1 + 9 + 5 = 15 models of one architecture
trained at once in one compiled, vmapped program, the weights passed as data (``l1=``,
``l2=``).  Dropout and batch normalisation change the architecture, so they stay separate
`jm.fit` runs, as does early stopping (patience 200: the unregularised network stopped at
its best validation epoch, with those parameters restored).

What is measured, per configuration: the training and validation MSE of the *final*
parameters (inference mode: no dropout, batch-norm running statistics, no penalty term),
and the best validation MSE over the epochs.  `fit` and `sweep` score one held-out set
per epoch, so everything is trained twice with the same keys (identical trajectories):
once with the validation set (its per-epoch curve) and once with the training set in its
place (the per-epoch training MSE in inference mode); the final values are the curves'
last points.  ``--time-fits`` also trains the sweep's 15 models one after another with
`jm.fit` (penalties as data too, so one compile serves them all), times both and prints
how far the two agree.

Usage:  python scripts/regularization.py [--out DIR] [--quick] [--seed S] [--time-fits]
                                        [--epochs N]
"""
from __future__ import annotations

import sys
import time

import _common as C

import jax
import jax.numpy as jnp
import numpy as np

import jaxmlp as jm
from jaxmlp import sweeps

NAME = "regularization"
WIDTH = 256
PATIENCE = 200
NOISE_FLOOR = 0.09
#: the penalty grids of the sweep (half decades for L2, decades for L1)
L2_GRID = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
L1_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
#: label -> (l1, l2) of the sweep members shown in the table and the curves figure
SHOWN = {"none": (0.0, 0.0), "L2 (λ = 1e-3)": (0.0, 1e-3), "L1 (λ = 1e-4)": (1e-4, 0.0)}
EARLY = f"early stopping (patience {PATIENCE})"
#: label -> MLP keyword arguments of the separate fits (None: early stopping on the plain
#: network)
SEPARATE = {"dropout 0.2": dict(dropout=0.2), "batch norm": dict(norm="batch"), EARLY: None}
ORDER = ("none", "L2 (λ = 1e-3)", "L1 (λ = 1e-4)", "dropout 0.2", "batch norm", EARLY)
DTYPE = jnp.float32
OPTIMIZER = jm.optim.adam(1e-3)  # configurations with the same model share a compile
PLAIN = jm.MLP((1, WIDTH, WIDTH, 1), activation="relu", output="identity", loss="mse")


def data(seed=0, n_train=32, n_val=1000):
    xtr, ytr = jm.data.sine(n_train, noise=0.3, seed=seed)
    xva, yva = jm.data.sine(n_val, noise=0.3, seed=seed + 1000)
    return xtr, ytr, xva, yva


def members(l2_grid=L2_GRID, l1_grid=L1_GRID):
    """The sweep's (l1, l2) pairs: no penalty, then the L2 grid, then the L1 grid."""
    return ([(0.0, 0.0)] + [(0.0, float(v)) for v in l2_grid]
            + [(float(v), 0.0) for v in l1_grid])


def _row(label, train_curve, val_curve, objective, *, early=False, best_epoch=None):
    n = len(val_curve)
    best = int(np.argmin(val_curve)) if best_epoch is None else int(best_epoch)
    at = best if early else n - 1  # the parameters this configuration keeps
    return dict(label=label, train_curve=np.asarray(train_curve), val_curve=np.asarray(val_curve),
                objective=np.asarray(objective), train=float(train_curve[at]),
                val=float(val_curve[at]), best_val=float(np.min(val_curve)), best_epoch=best,
                epochs_run=n, early=early)


def run_sweep(seed=0, *, epochs=2000, pairs=None, n_train=32):
    """The penalty grid as one sweep, trained twice (validation set, then training set in
    its place) with the same keys.  Returns a dict: `pairs`, the (M, epochs) curves
    `train`, `val`, `objective`, the wall times `seconds` (of each sweep) and
    `params_gap` (the largest difference between the two sweeps' final parameters: 0 for
    identical trajectories)."""
    pairs = members() if pairs is None else pairs
    xtr, ytr, xva, yva = data(seed, n_train)
    m = len(pairs)
    l1s = np.array([p[0] for p in pairs])
    l2s = np.array([p[1] for p in pairs])
    params0 = sweeps.stack([jm.init_params(jax.random.key(seed), PLAIN, dtype=DTYPE)] * m)
    keys = jnp.stack([jax.random.key(seed + 1)] * m)  # fit's key, for every model

    def go(valid):
        t0 = time.perf_counter()
        params, h = sweeps.sweep(PLAIN, params0, OPTIMIZER, xtr, ytr, epochs=epochs,
                                 batch_size=8, key=keys, validation=valid, l1=l1s, l2=l2s)
        jax.block_until_ready(params)
        return params, h, time.perf_counter() - t0

    pv, hv, t_val = go((xva, yva))
    pt, ht, t_train = go((xtr, ytr))  # the same trajectories, scored on the training set
    assert not any(hv["diverged"]) and not any(ht["diverged"]), "a sweep member diverged"
    gap = max(float(jnp.max(jnp.abs(a - b))) for a, b in
              zip(jax.tree_util.tree_leaves(pv), jax.tree_util.tree_leaves(pt)))
    return dict(pairs=pairs, l1=l1s, l2=l2s, val=hv["val_loss"], train=ht["val_loss"],
                objective=hv["train_loss"], seconds=(t_val, t_train), params_gap=gap,
                epochs=epochs, seed=seed, n_train=n_train)


def run_fits(seed=0, *, epochs=2000, configs=SEPARATE, n_train=32):
    """The configurations that change the architecture (and early stopping), each a
    separate `jm.fit`, trained twice with the same key."""
    xtr, ytr, xva, yva = data(seed, n_train)
    results = []
    for label, kwargs in configs.items():
        early = kwargs is None
        model = jm.MLP((1, WIDTH, WIDTH, 1), activation="relu", output="identity", loss="mse",
                       **({} if early else kwargs))
        params0 = jm.init_params(jax.random.key(seed), model, dtype=DTYPE)
        fit = lambda valid, patience=None: jm.fit(  # noqa: E731
            model, params0, OPTIMIZER, xtr, ytr, epochs=epochs, batch_size=8,
            key=jax.random.key(seed + 1), validation=valid, patience=patience)
        _, hv = fit((xva, yva), PATIENCE if early else None)
        _, ht = fit((xtr, ytr))  # the same trajectory, scored on the training set
        n = hv["epochs_run"]
        results.append(_row(label, ht["val_loss"][:n], hv["val_loss"], hv["train_loss"],
                            early=early, best_epoch=hv["best_epoch"]))
    return results


def time_fits(sw):
    """The sweep's validation run as a sequence of `jm.fit` calls (penalties as data, so
    they share one compile): wall times and the largest |difference| of the validation
    curves from the sweep's (float32: the vmapped matmuls may sum in another order)."""
    xtr, ytr, xva, yva = data(sw["seed"], sw["n_train"])
    params0 = jm.init_params(jax.random.key(sw["seed"]), PLAIN, dtype=DTYPE)
    times, diffs = [], []
    for m, (l1, l2) in enumerate(sw["pairs"]):
        t0 = time.perf_counter()
        _, h = jm.fit(PLAIN, params0, OPTIMIZER, xtr, ytr, epochs=sw["epochs"], batch_size=8,
                      key=jax.random.key(sw["seed"] + 1), validation=(xva, yva), l1=l1, l2=l2)
        times.append(time.perf_counter() - t0)
        diffs.append(float(np.max(np.abs(np.asarray(h["val_loss"]) - sw["val"][m]))))
    return dict(seconds=times, total=sum(times), max_diff=max(diffs),
                final_diff=max(abs(d) for d in diffs))


def shown(sw):
    """The rows of the sweep members named in SHOWN (those in the sweep)."""
    rows = []
    for label, pair in SHOWN.items():
        if pair in sw["pairs"]:
            m = sw["pairs"].index(pair)
            rows.append(_row(label, sw["train"][m], sw["val"][m], sw["objective"][m]))
    return rows


def run(seed=0, *, epochs=2000, pairs=None, configs=SEPARATE, n_train=32):
    """(results, sweep): the rows of the configurations in ORDER, and `run_sweep`'s dict."""
    sw = run_sweep(seed, epochs=epochs, pairs=pairs, n_train=n_train)
    rows = shown(sw) + run_fits(seed, epochs=epochs, configs=configs, n_train=n_train)
    rows.sort(key=lambda r: ORDER.index(r["label"]))
    return rows, sw


def result_table(results):
    rows = [[r["label"], r["epochs_run"], r["train"], r["val"], r["val"] - r["train"],
             r["best_val"], r["best_epoch"] + 1] for r in results]
    return C.table(["regulariser", "epochs run", "final train MSE", "final val MSE", "gap",
                    "best val MSE", "at epoch"], rows)


def grid_rows(sw):
    """One row per sweep member: penalty, λ, final train/val MSE, gap, best val MSE, epoch."""
    rows = []
    for m, (l1, l2) in enumerate(sw["pairs"]):
        kind, lam = ("L1", l1) if l1 else ("L2", l2) if l2 else ("none", 0.0)
        tr, va = float(sw["train"][m, -1]), float(sw["val"][m, -1])
        best = int(np.argmin(sw["val"][m]))
        rows.append(dict(kind=kind, lam=lam, train=tr, val=va, best_val=float(sw["val"][m, best]),
                         best_epoch=best))
    return rows


def grid_table(sw):
    rows = [[r["kind"], "0" if r["lam"] == 0 else f"{r['lam']:g}", r["train"], r["val"],
             r["val"] - r["train"], r["best_val"], r["best_epoch"] + 1] for r in grid_rows(sw)]
    return C.table(["penalty", "λ", "final train MSE", "final val MSE", "gap", "best val MSE",
                    "at epoch"], rows)


def best_lambdas(sw):
    """Per penalty, the λ with the lowest final validation MSE: {kind: row}."""
    out = {}
    for r in grid_rows(sw):
        if r["kind"] != "none" and (r["kind"] not in out or r["val"] < out[r["kind"]]["val"]):
            out[r["kind"]] = r
    return out


def plot(results, sw, out):
    """regularization.png (curves per configuration) and regularization_sweep.png (final
    and best MSE against λ); returns the two paths, or None without matplotlib."""
    plt = C.pyplot()
    if plt is None:
        print(C.NO_MATPLOTLIB)
        return None
    n = len(results)
    cols = 3
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), sharey=True,
                             squeeze=False)
    for ax, r in zip(axes.ravel(), results):
        ep = np.arange(1, len(r["val_curve"]) + 1)
        ax.semilogy(ep, r["train_curve"], label="train MSE")
        ax.semilogy(ep, r["val_curve"], label="val MSE")
        ax.axhline(NOISE_FLOOR, color="gray", lw=0.8, ls=":", label="noise floor 0.09")
        ax.set_title(r["label"], fontsize=9)
        ax.set_xlabel("epoch")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    curves = C.save(fig, out, "regularization.png")

    grid = grid_rows(sw)
    none = [r for r in grid if r["kind"] == "none"]
    kinds = [k for k in ("L2", "L1") if any(r["kind"] == k for r in grid)]
    fig, axes = plt.subplots(1, max(len(kinds), 1), figsize=(5.5 * max(len(kinds), 1), 3.8),
                             sharey=True, squeeze=False)
    for ax, kind in zip(axes.ravel(), kinds):
        rs = [r for r in grid if r["kind"] == kind]
        lam = [r["lam"] for r in rs]
        ax.loglog(lam, [r["val"] for r in rs], "o-", color="C1", label="final val MSE")
        ax.loglog(lam, [r["best_val"] for r in rs], "s--", color="C1", alpha=0.6, mfc="none",
                  label="best val MSE (any epoch)")
        ax.loglog(lam, [r["train"] for r in rs], "x-", color="C0", label="final train MSE")
        if none:
            ax.axhline(none[0]["val"], color="C1", lw=0.8, ls="-.",
                       label=f"λ = 0: final val {none[0]['val']:.3f}")
            ax.axhline(none[0]["train"], color="C0", lw=0.8, ls="-.",
                       label=f"λ = 0: final train {none[0]['train']:.3f}")
        ax.axhline(NOISE_FLOOR, color="gray", lw=0.8, ls=":", label="noise floor 0.09")
        ax.set_xlabel(f"{kind} weight λ")
        ax.set_title(f"{kind} penalty: one sweep of {len(sw['pairs'])} models, "
                     f"{sw['epochs']} epochs", fontsize=9)
    axes[0, 0].set_ylabel("MSE")
    axes[0, 0].legend(fontsize=7)
    path = C.save(fig, out, "regularization_sweep.png")
    return curves, path


def main(argv=None):
    p = C.parser(NAME, __doc__)
    p.add_argument("--time-fits", action="store_true",
                   help="also train the sweep's models one by one with jm.fit and time both")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per run (default 2000; 30 with --quick)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if args.quick:  # a smoke run: a 3-model sweep and early stopping, few epochs
        epochs = args.epochs or 30
        results, sw = run(args.seed, epochs=epochs, pairs=list(SHOWN.values()),
                          configs={EARLY: None})
    else:
        epochs = args.epochs or 2000
        results, sw = run(args.seed, epochs=epochs)
    print(f"## Regularisation: 32 noisy sine points, 1 → {WIDTH} → {WIDTH} → 1 ReLU, "
          f"Adam 1e-3, batch 8, {epochs} epochs (noise floor MSE 0.09)\n")
    print(result_table(results))
    print(f"\n## One sweep over the penalty weight: {len(sw['pairs'])} models, "
          f"{epochs} epochs\n")
    print(grid_table(sw))
    best = best_lambdas(sw)
    none = grid_rows(sw)[0]
    print("\nlowest final val MSE: "
          + "; ".join(f"{k} λ = {r['lam']:g} ({r['val']:.4f})" for k, r in best.items())
          + f"; λ = 0: {none['val']:.4f}")
    gap0 = none["val"] - none["train"]
    narrower = [r["label"] for r in results[1:] if r["val"] - r["train"] < gap0]
    print(f"gap (final val − final train) without regularisation {gap0:.4f}; narrower with "
          f"{len(narrower)} of {len(results) - 1} regularisers")
    t_val, t_train = sw["seconds"]
    print(f"sweep wall time: {t_val:.1f}s scored on the validation set, {t_train:.1f}s on the "
          f"training set (compile included); the two runs' final parameters differ by at "
          f"most {sw['params_gap']:.2g}")
    if args.time_fits:
        tf = time_fits(sw)
        s = tf["seconds"]
        print(f"the same {len(s)} models as jm.fit calls, one after another (validation set): "
              f"{tf['total']:.1f}s (first {s[0]:.1f}s with the compile, then median "
              f"{np.median(s[1:]) if len(s) > 1 else float('nan'):.2f}s each) against "
              f"{t_val:.1f}s for the sweep; largest |Δ val MSE| fit vs sweep over all "
              f"epochs {tf['max_diff']:.2g}")
        sw["fits"] = tf
    plot(results, sw, args.out)
    print(f"time {time.perf_counter() - t0:.1f}s")
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
