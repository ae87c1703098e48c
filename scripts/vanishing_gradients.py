"""Vanishing gradients in a deep sigmoid network, and dead ReLUs.

Replays the seeds' claims: (1) in a deep network of sigmoid units the error signal δ⁽ˡ⁾ =
(δ⁽ˡ⁺¹⁾W⁽ˡ⁺¹⁾) ⊙ σ′(z⁽ˡ⁾) shrinks at every layer on its way back (σ′ ≤ ¼), so the first
layers' gradients are orders of magnitude smaller than the last layer's and the network
barely learns, even with Xavier initialisation; (2) tanh with Xavier and ReLU with He
initialisation keep the per-layer gradient norms of the same order and train; (3) ReLU
units can die (z ≤ 0 for every input, so no gradient ever reaches them again), which a
too-large learning rate provokes.

Setup: three-class spirals (600 points, no download), 10 dense layers (2 → 32 × 9 → 3,
softmax + cross-entropy), SGD with momentum 0.9, minibatches of 32, 300 epochs; the same
data, seed and optimizer for every network.  Per-layer norms ‖∂L/∂W⁽ˡ⁾‖_F, dead-unit and
saturation fractions come from `jaxmlp.diagnostics.gradient_report` on the whole
training set, at initialisation and after training.

Usage:  python scripts/vanishing_gradients.py [--out DIR] [--quick] [--seed S]
"""
from __future__ import annotations

import sys
import time

import _common as C

import jax
import jax.numpy as jnp
import numpy as np

import jaxmlp as jm
from jaxmlp import diagnostics as dg

NAME = "vanishing_gradients"
WIDTH = 32
#: (label, activation, init, learning rate); SGD with momentum 0.9 for all.
NETS = (
    ("sigmoid + Xavier", "sigmoid", "xavier_uniform", 0.01),
    ("tanh + Xavier", "tanh", "xavier_uniform", 0.01),
    ("ReLU + He", "relu", "he_normal", 0.01),
    ("ReLU + He, lr 0.5", "relu", "he_normal", 0.5),
)
DTYPE = jnp.float32


def accuracy(model, params, x, y) -> float:
    return float(np.mean(np.argmax(np.asarray(jm.forward(model, params, x)), axis=1) == y))


def run(seed=0, *, n_layers=10, n=600, epochs=300, nets=NETS):
    """Trains every net of `nets` on spirals; returns one dict per net."""
    x, y = jm.data.spirals(n, classes=3, noise=0.05, seed=seed)
    sizes = (2,) + (WIDTH,) * (n_layers - 1) + (3,)
    results = []
    for label, act, init, lr in nets:
        model = jm.MLP(sizes, activation=act, output="softmax", loss="cce", init=init)
        params0 = jm.init_params(jax.random.key(seed), model, dtype=DTYPE)
        before = dg.gradient_report(model, params0, x, y)
        params, hist = jm.fit(model, params0, jm.optim.sgd(lr, momentum=0.9), x, y,
                              epochs=epochs, batch_size=32, key=jax.random.key(seed + 1),
                              on_divergence="stop")
        after = dg.gradient_report(model, params, x, y)
        results.append(dict(label=label, lr=lr, before=before, after=after, history=hist,
                            acc0=accuracy(model, params0, x, y),
                            acc=accuracy(model, params, x, y)))
    return results


def layer_table(results):
    headers = ["layer"] + [f"{r['label']}: {w}" for r in results for w in ("init", "trained")]
    n = len(results[0]["before"].weight_grad_norm)
    rows = [[l] + [f"{r[w].weight_grad_norm[l]:.2e}" for r in results for w in ("before", "after")]
            for l in range(n)]
    return C.table(headers, rows)


def summary_table(results):
    rows = []
    for r in results:
        b, a, h = r["before"], r["after"], r["history"]
        rows.append([r["label"], f"{r['lr']:g}", f"{b.loss:.3f} → {a.loss:.3f}",
                     f"{r['acc0']:.3f} → {r['acc']:.3f}", f"{b.first_to_last:.1e}",
                     f"{a.first_to_last:.1e}", f"{b.dead_fraction.mean():.2f}",
                     f"{a.dead_fraction.mean():.2f}", f"{a.dead_fraction[-1]:.2f}",
                     f"{a.saturated_fraction.mean():.2f}",
                     "diverged" if h.get("diverged") else "ok"])
    return C.table(["net", "lr", "loss init → trained", "train acc", "‖∂W⁰‖/‖∂Wᴸ⁻¹‖ init",
                    "trained", "dead init", "dead trained", "dead last hidden",
                    "saturated trained", "status"], rows)


def plot(results, out):
    plt = C.pyplot()
    if plt is None:
        print(C.NO_MATPLOTLIB)
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in results:
        layers = np.arange(len(r["before"].weight_grad_norm))
        line, = axes[0].semilogy(layers, r["before"].weight_grad_norm, "o-",
                                 label=f"{r['label']} (init)")
        trained = r["after"].weight_grad_norm
        if np.any(trained > 0):  # zeros (dead units) have no place on a log scale
            axes[0].semilogy(layers, np.where(trained > 0, trained, np.nan), "x--",
                             color=line.get_color(), label=f"{r['label']} (trained)")
        else:
            line.set_label(f"{r['label']} (init; trained: all 0, dead)")
        axes[1].plot(np.arange(1, len(r["history"]["train_loss"]) + 1),
                     r["history"]["train_loss"], color=line.get_color(), label=r["label"])
    axes[0].set_xlabel("dense layer l (0 = input side)")
    axes[0].set_ylabel("‖∂L/∂W⁽ˡ⁾‖_F")
    axes[0].set_title("per-layer gradient norms")
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("training cross-entropy")
    axes[1].set_title("training loss")
    axes[1].legend(fontsize=7)
    return C.save(fig, out, "vanishing_gradients.png")


def main(argv=None):
    args = C.parser(NAME, __doc__).parse_args(argv)
    t0 = time.perf_counter()
    # quick: two nets, four layers (compiling dominates a smoke run)
    cfg = dict(n_layers=4, n=150, epochs=10, nets=NETS[::2]) if args.quick else dict()
    results = run(args.seed, **cfg)
    n_layers = cfg.get("n_layers", 10)
    print(f"## Per-layer ‖∂L/∂W⁽ˡ⁾‖_F, {n_layers} dense layers, spirals "
          f"(full training set, at init and after training)\n")
    print(layer_table(results))
    print("\n## Summary\n")
    print(summary_table(results))
    plot(results, args.out)
    print(f"time {time.perf_counter() - t0:.1f}s")
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
