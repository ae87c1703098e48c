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

What is measured, per configuration: the training and validation MSE of the *final*
parameters (inference mode: no dropout, batch-norm running statistics, no penalty term),
and the best validation MSE over the epochs.  `jm.fit` scores one held-out set per
epoch, so each configuration is trained twice with the same key (identical
trajectories): once with the validation set (its per-epoch curve) and once with the
training set in its place (the per-epoch training MSE in inference mode); the final
values are the curves' last points.  Early
stopping (patience 200) is the unregularised network stopped at its best validation
epoch, with those parameters restored.

Usage:  python scripts/regularization.py [--out DIR] [--quick] [--seed S]
"""
from __future__ import annotations

import sys
import time

import _common as C

import jax
import jax.numpy as jnp
import numpy as np

import jaxmlp as jm

NAME = "regularization"
WIDTH = 256
PATIENCE = 200
#: label -> MLP keyword arguments (None: early stopping on the plain network)
CONFIGS = {
    "none": {},
    "L2 (λ = 1e-3)": dict(l2=1e-3),
    "L1 (λ = 1e-4)": dict(l1=1e-4),
    "dropout 0.2": dict(dropout=0.2),
    "batch norm": dict(norm="batch"),
    f"early stopping (patience {PATIENCE})": None,
}
DTYPE = jnp.float32
OPTIMIZER = jm.optim.adam(1e-3)  # configurations with the same model share a compile


def data(seed=0, n_train=32, n_val=1000):
    xtr, ytr = jm.data.sine(n_train, noise=0.3, seed=seed)
    xva, yva = jm.data.sine(n_val, noise=0.3, seed=seed + 1000)
    return xtr, ytr, xva, yva


def run(seed=0, *, epochs=2000, configs=CONFIGS, n_train=32):
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
        params, hv = fit((xva, yva), PATIENCE if early else None)
        _, ht = fit((xtr, ytr))  # the same trajectory, scored on the training set
        n = hv["epochs_run"]
        train_curve, val_curve = ht["val_loss"][:n], hv["val_loss"]
        at = hv["best_epoch"] if early else n - 1  # the parameters this configuration keeps
        results.append(dict(label=label, train_curve=train_curve, val_curve=val_curve,
                            objective=hv["train_loss"], train=train_curve[at], val=val_curve[at],
                            best_val=min(val_curve), best_epoch=hv["best_epoch"],
                            epochs_run=n, early=early))
    return results


def result_table(results):
    rows = [[r["label"], r["epochs_run"], r["train"], r["val"], r["val"] - r["train"],
             r["best_val"], r["best_epoch"] + 1] for r in results]
    return C.table(["regulariser", "epochs run", "final train MSE", "final val MSE", "gap",
                    "best val MSE", "at epoch"], rows)


def plot(results, out):
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
        ax.axhline(0.09, color="gray", lw=0.8, ls=":", label="noise floor 0.09")
        ax.set_title(r["label"], fontsize=9)
        ax.set_xlabel("epoch")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    return C.save(fig, out, "regularization.png")


def main(argv=None):
    args = C.parser(NAME, __doc__).parse_args(argv)
    t0 = time.perf_counter()
    if args.quick:  # a smoke run: two configurations sharing one model, few epochs
        keys = ("none", f"early stopping (patience {PATIENCE})")
        results = run(args.seed, epochs=30, configs={k: CONFIGS[k] for k in keys})
    else:
        results = run(args.seed)
    print(f"## Regularisation: 32 noisy sine points, 1 → {WIDTH} → {WIDTH} → 1 ReLU, "
          f"Adam 1e-3, batch 8, {'30' if args.quick else '2000'} epochs "
          f"(noise floor MSE 0.09)\n")
    print(result_table(results))
    plot(results, args.out)
    print(f"time {time.perf_counter() - t0:.1f}s")
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
