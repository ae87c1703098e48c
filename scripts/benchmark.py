#!/usr/bin/env python
"""Benchmark: jaxmlp's manual δ backprop against autodiff and against plain JAX loops.

Three fixed workloads, deterministic synthetic data (NumPy, seed 0), float32, Adam(1e-3):

| id | name        | sizes                       | hidden | output   | loss | batch | rows  |
| -- | ----------- | --------------------------- | ------ | -------- | ---- | ----- | ----- |
| W1 | wine-like   | 11-64-64-1                  | relu   | identity | mse  | 32    | 1280  |
| W2 | mnist-like  | 784-512-512-10              | relu   | softmax  | cce  | 256   | 16384 |
| W3 | deep-narrow | 32-(128 × 16)-1             | tanh   | identity | mse  | 128   | 8192  |

For each workload, measured side by side in one process, with interleaved repeats (the
order of the variants rotating) and medians over the repeats; every ratio is the median of
the per-repeat ratios, each pair measured back to back, so the machine's slow drifts
cancel within a pair:

(a) step: the jitted `jm.make_train_step(model, opt, grad=...)` time per call, manual vs
    autodiff gradients, and their ratio (> 1: manual is slower);
(b) compiled: XLA's FLOP count (`cost_analysis()["flops"]`) and temporary memory
    (`memory_analysis().temp_size_in_bytes`) of both compiled steps;
(c) throughput in samples/s of `jm.fit` (manual and autodiff; `history["epoch_time"]`
    after a warm-up fit) against two references written here: a Python loop over the
    jitted step, and a minimal pure-JAX loop (params a list of (W, b), `jax.value_and_grad`
    of a plain loss, a 15-line Adam, each epoch one jitted `lax.scan` over minibatches
    pre-shuffled by one jitted call): the in-JAX bound.  All four reshuffle every epoch
    and the shuffle is inside the timed epoch;
(d) achieved GFLOP/s, counting 6 FLOPs per weight per sample (2 forward, 2 + 2 backward),
    against matmul rates measured here on the workload's own GEMM shapes, with the
    layouts the step uses, each in a jitted `lax.scan` over distinct operands: forward
    a·Wᵀ (B, n_in)(n_out, n_in), backward δ·W (B, n_out)(n_out, n_in) and δᵀ·a
    (B, n_out)(B, n_in).  `fraction_of_gemm_peak` divides by the best of those rates,
    `fraction_of_step_gemm_rate` by their aggregate (one step's GEMM FLOPs over their
    summed times: a step doing nothing but its matmuls; XLA may lay out a fused step's
    operands better than the isolated dots, so this can exceed 1), and
    `fraction_of_machine_peak` by a large square matmul (1024³; 512³ with --quick);
(e) CSV loading: `jm.data.load_csv` against the csv-module reader it replaced (kept here as
    `_csv_module_reader`) on a generated table (200,000 rows of 20 `%.6g` floats and an
    integer label, ~40 MB; 4,000 rows with --quick): seconds, MB/s, their paired ratio,
    and each one's tracemalloc peak over the float32 result's size (skip: --no-csv);
(f) before/after, with `--baseline REV` only: jaxmlp at git revision REV ("before",
    extracted with `git archive`) against this checkout ("after": its working tree, or
    `--after REV`), each imported in its own worker processes (`benchmark.py --_worker`,
    the same XLA_FLAGS and CPUs as this one).  `fit` samples/s on the chosen workloads
    (medians of `history["epoch_time"]`, as (c)) in three long-lived workers: before,
    after, and a second after whose ratio to the first is the A/A control; they run one
    at a time, interleaved, the order rotating, and each ratio is the median of the
    per-repeat ratios.  Then the time of ten `fit` calls on W1 with `adam(lr)` for ten
    learning rates (1e-4 to 1e-2, 5 epochs each), compiles included, in a fresh worker per
    version and repeat (3; 1 with --quick), so each pays its own first compile;
(g) sweep, with `--sweep` or `--only-sweep`: aggregate samples/s (M × each model's) of
    `jm.sweep` over M identical-architecture models against M sequential `fit` calls
    (aggregate: one fit's samples/s), for W1 at M = 1, 8, 32, 128, W3 at M = 8 and W2
    at M = 4 (W1 at 1 and 8 with --quick); variants: one program for all models, split
    over every core (the default), and so with `shuffle="shared"`; interleaved repeats, medians,
    paired ratios with quartiles; GFLOP/s (6 per weight per sample) as a fraction of
    the machine peak; compile time (first call minus a warm epoch).  Then (not with
    --quick unless --floor) the floor under a W1 model-step at M = 32: in a child process
    pinned to one CPU, one core's group of ⌈32 / cores⌉ models, µs per model and step of
    each dot as jaxmlp writes it and in its fastest layout, the optimizer update alone,
    and the shuffle; their sum leaves out all else a step does, so cores × fit step / floor
    is a ceiling on any sweep's speedup at M = 32.

With several devices (`--host-devices N` forces N host CPU devices through XLA_FLAGS
before JAX starts; on GPU machines with several GPUs it happens by itself) W1 and W2 also
run the step with `mesh=jm.parallel.data_mesh()` (batch sharded, params replicated) and
report its time and the number of all-reduces in the compiled HLO.

Usage:
    python scripts/benchmark.py                     # full run, a few minutes on 2 CPU cores
    python scripts/benchmark.py --quick --json out.json
    python scripts/benchmark.py --workloads W2 --repeats 9 --no-csv
    python scripts/benchmark.py --host-devices 4 --workloads W1,W2
    python scripts/benchmark.py --xla-flags="--xla_cpu_multi_thread_eigen=false"   # note the =
    python scripts/benchmark.py --cpus 1            # pin to one core: XLA's threading measured
    python scripts/benchmark.py --no-csv --baseline 3438e7d              # + (f), vs the working tree
    python scripts/benchmark.py --no-csv --baseline 3438e7d --after HEAD  # + (f), vs a commit
    python scripts/benchmark.py --baseline 3438e7d --after HEAD --only-before-after
    python scripts/benchmark.py --only-sweep                                 # (g) alone

`main(argv)` returns the results dict (what `--json` writes).  Timing is device-agnostic:
every measurement ends with `jax.block_until_ready` on everything it produced.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import time

import numpy as np


def _pre_parse_xla(argv):
    """--host-devices / --xla-flags must reach XLA_FLAGS before JAX initialises, and
    --cpus must pin the process before XLA sizes its thread pools."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--host-devices", type=int, default=None)
    p.add_argument("--xla-flags", default=None)
    p.add_argument("--cpus", type=int, default=None)
    known, _ = p.parse_known_args(argv)
    if known.cpus and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, cpus[: max(1, known.cpus)])
    flags = os.environ.get("XLA_FLAGS", "")
    if known.xla_flags:
        flags = f"{flags} {known.xla_flags}".strip()
    if known.host_devices and known.host_devices > 1:
        flags = f"{flags} --xla_force_host_platform_device_count={known.host_devices}".strip()
    if flags:
        os.environ["XLA_FLAGS"] = flags


if __name__ == "__main__":
    _pre_parse_xla(sys.argv[1:])

import jax  # noqa: E402  (after XLA_FLAGS is set)
import jax.numpy as jnp  # noqa: E402

import jaxmlp as jm  # noqa: E402

F32 = jnp.float32

# --------------------------------------------------------------------------- workloads

WORKLOADS = {
    "W1": dict(name="wine-like", sizes=(11, 64, 64, 1), activation="relu",
               output="identity", loss="mse", batch_size=32, rows=1280, quick_rows=1280),
    "W2": dict(name="mnist-like", sizes=(784, 512, 512, 10), activation="relu",
               output="softmax", loss="cce", batch_size=256, rows=16384, quick_rows=1024),
    "W3": dict(name="deep-narrow", sizes=(32,) + (128,) * 16 + (1,), activation="tanh",
               output="identity", loss="mse", batch_size=128, rows=8192, quick_rows=1024),
}

# Measurement budgets: seconds per timed sample, repeats, fit epochs per timed call.
MODES = {
    "full": dict(target_s=0.25, repeats=9, min_epochs=3, max_epochs=60, gemm_target_s=0.05,
                 peak_n=1024),
    "quick": dict(target_s=0.015, repeats=3, min_epochs=2, max_epochs=10, gemm_target_s=0.004,
                  peak_n=512),
}


def make_model(spec) -> "jm.MLP":
    return jm.MLP(sizes=spec["sizes"], activation=spec["activation"], output=spec["output"],
                  loss=spec["loss"])


def make_data(spec, rows):
    """Deterministic synthetic data (NumPy, seed 0): x ~ N(0, 1); y from a random
    one-hidden-layer teacher (regression targets, or one-hot argmax classes for cce)."""
    rng = np.random.default_rng(0)
    n_in, n_out = spec["sizes"][0], spec["sizes"][-1]
    x = rng.standard_normal((rows, n_in)).astype(np.float32)
    w1 = rng.standard_normal((n_in, 32)) / math.sqrt(n_in)
    w2 = rng.standard_normal((32, n_out)) / math.sqrt(32)
    t = np.tanh(x @ w1) @ w2
    if spec["loss"] == "cce":
        y = np.eye(n_out, dtype=np.float32)[np.argmax(t, axis=1)]
    else:
        y = t.astype(np.float32)
    return x, y


def make_params(spec):
    """Initial parameters in NumPy (seed 0), the schemes `init="auto"` picks: He normal
    for relu, Xavier uniform for tanh; biases 0.  (Made on the host: eager `jax.random`
    would compile a program per op and shape, seconds on a small CPU.)"""
    rng = np.random.default_rng(0)
    params = []
    for n_in, n_out in zip(spec["sizes"][:-1], spec["sizes"][1:]):
        if spec["activation"] == "relu":
            W = rng.standard_normal((n_out, n_in)) * math.sqrt(2.0 / n_in)
        else:
            lim = math.sqrt(6.0 / (n_in + n_out))
            W = rng.uniform(-lim, lim, (n_out, n_in))
        params.append({"W": W.astype(np.float32), "b": np.zeros((n_out,), np.float32)})
    return params


def n_weights(sizes) -> int:
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def _ratio(a, b):
    return float(a) / float(b) if b else (1.0 if a == 0 else math.inf)


def _median(xs):
    return float(statistics.median(xs))


def _paired_ratio(xs, ys):
    """The median over repeats of xs[r] / ys[r]: each pair was measured back to back, so
    the machine's slow drifts (other tenants, clock changes) cancel within a pair."""
    return _median([_ratio(a, b) for a, b in zip(xs, ys)])


def _paired_ratio_quartiles(xs, ys):
    """[first, third] quartile of the per-repeat ratios xs[r] / ys[r]: the spread that
    the median in `_paired_ratio` comes with (a ratio whose quartiles straddle 1 is a
    tie on this machine)."""
    rs = [_ratio(a, b) for a, b in zip(xs, ys)]
    if len(rs) < 2:
        return [rs[0], rs[0]] if rs else [math.nan, math.nan]
    q1, _, q3 = statistics.quantiles(rs, n=4, method="inclusive")
    return [float(q1), float(q3)]


def _sync(tree):
    return jax.block_until_ready(tree)


def _concurrently(fns):
    """Runs the callables in threads and returns their results in order.  Used for the
    warm-up compiles only (XLA compiles release the GIL, so on 2 cores two programs
    compile in the time of one); nothing is timed while threads run."""
    from concurrent.futures import ThreadPoolExecutor
    workers = max(1, min(len(fns), os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(lambda f: f(), fns))


def _rotate(items, r):
    """The r-th rotation of items: the order of the variants changes every repeat."""
    k = r % len(items)
    return items[k:] + items[:k]


def _calibrate(run_once, target_s, lo=3, hi=100_000):
    """How many calls of `run_once` (already warm) take about target_s."""
    n = 2
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            run_once()
        t = time.perf_counter() - t0
        if t > target_s / 4 or n >= hi:
            break
        n *= 4
    return int(min(hi, max(lo, round(n * target_s / max(t, 1e-9)))))


def _interleaved(fns, repeats):
    """{name: [result of fns[name]() per repeat]}, the order rotating every repeat."""
    out = {k: [] for k in fns}
    for r in range(repeats):
        for k in _rotate(list(fns), r):
            out[k].append(fns[k]())
    return out


class Setup:
    """One workload, ready to run: model, optimizer, data on the device, and fresh
    (params, optimizer state) on demand (the steps donate their inputs)."""

    def __init__(self, wid, quick):
        self.wid = wid
        self.spec = spec = dict(WORKLOADS[wid])
        self.rows = spec["quick_rows"] if quick else spec["rows"]
        self.B = B = spec["batch_size"]
        self.n_batches = self.rows // B
        self.model = make_model(spec)
        self.opt = jm.optim.adam(1e-3)
        x, y = make_data(spec, self.rows)
        self.x, self.y = jax.device_put(x), jax.device_put(y)
        self.xb, self.yb = jax.device_put(x[:B]), jax.device_put(y[:B])
        self._params = make_params(spec)
        self._opt_init = jax.jit(self.opt.init)
        self._pure_init = jax.jit(_adam_init)

    def fresh(self):
        """(params, opt_state) for jaxmlp, new device buffers."""
        params = jax.device_put(self._params)
        return params, self._opt_init(params)

    def fresh_pure(self):
        """([(W, b), ...], adam state) for the pure-JAX reference, new device buffers."""
        params = jax.device_put([(l["W"], l["b"]) for l in self._params])
        return params, self._pure_init(params)


# --------------------------------------------------------------------------- (a), (b) step

_NOT_KERNELS = frozenset({"parameter", "constant", "get-tuple-element", "tuple", "bitcast"})


def count_kernels(hlo_text: str) -> int:
    """Instructions of the compiled program's entry computation that do work (fusions,
    dots, copies, custom calls, ...): on CPU each is one kernel launch per call, the cost
    that dominates small steps.  Parameters, constants, tuples and bitcasts are free."""
    entry = hlo_text[hlo_text.index("\nENTRY"):]
    entry = entry[: entry.index("\n}")]
    ops = re.findall(r"=\s+\S+\s+([a-z][\w-]*)\(", entry)
    return sum(op not in _NOT_KERNELS for op in ops)


def compiled_stats(jitted, *args) -> dict:
    """FLOPs, bytes accessed, temporary bytes and kernel count of `jitted` compiled for
    `args`."""
    compiled = jitted.lower(*args).compile()
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
        cost = cost[0] if cost else {}
    cost = cost or {}
    mem = compiled.memory_analysis()
    try:
        kernels = count_kernels(compiled.as_text())
    except ValueError:  # a backend whose text has no ENTRY computation
        kernels = -1
    return {"flops": float(cost.get("flops", float("nan"))),
            "bytes_accessed": float(cost.get("bytes accessed", float("nan"))),
            "temp_bytes": int(getattr(mem, "temp_size_in_bytes", -1)) if mem is not None else -1,
            "kernels": kernels}


class StepBench:
    """(a) and (b): `make_train_step` with manual and autodiff gradients, and an A/A
    control: a second, separately made manual step timed like the others, whose ratio to
    the first measures how far apart this machine puts two identical programs."""

    GRADS = ("manual", "autodiff")

    def __init__(self, su: Setup, mode):
        self.su, self.mode = su, mode
        self.steps = {g: jm.make_train_step(su.model, su.opt, grad=g) for g in self.GRADS}
        self.steps["manual_again"] = jm.make_train_step(su.model, su.opt, grad="manual")
        self.compiled = {}

    def compile_tasks(self):
        def task(g):
            self.compiled[g] = compiled_stats(self.steps[g], *self.su.fresh(), self.su.xb,
                                              self.su.yb)
        return [lambda g=g: task(g) for g in self.GRADS]

    def measure(self):
        su, steps = self.su, self.steps
        state = {g: list(su.fresh()) for g in steps}

        def once(g):
            p, s, loss = steps[g](state[g][0], state[g][1], su.xb, su.yb)
            state[g] = [p, s]
            return loss

        for g in steps:  # warm (compiled already)
            for _ in range(3):
                once(g)
            _sync(state[g])
        n = max(_calibrate(lambda: once(g), self.mode["target_s"]) for g in steps)

        def timed(g):
            def run():
                # fresh buffers every repeat: a variant kept on the same (donated) buffers
                # for the whole run kept their placement's luck, and an A/A pair of one
                # program measured up to 9 % apart (0.91-0.98 in three W1 runs; with
                # fresh buffers 0.97-1.02)
                state[g] = None
                state[g] = list(su.fresh())
                _sync(once(g))
                t0 = time.perf_counter()
                for _ in range(n):
                    loss = once(g)
                _sync((state[g], loss))
                return (time.perf_counter() - t0) / n
            return run

        times = _interleaved({g: timed(g) for g in steps}, self.mode["repeats"])
        out = {"calls_per_sample": n,
               "manual_s": _median(times["manual"]), "autodiff_s": _median(times["autodiff"]),
               "manual_all_s": times["manual"], "autodiff_all_s": times["autodiff"]}
        out["ratio_manual_over_autodiff"] = _paired_ratio(times["manual"], times["autodiff"])
        out["ratio_manual_over_autodiff_quartiles"] = _paired_ratio_quartiles(
            times["manual"], times["autodiff"])
        out["ratio_of_medians_manual_over_autodiff"] = _ratio(out["manual_s"], out["autodiff_s"])
        out["manual_again_s"] = _median(times["manual_again"])
        out["ratio_control_manual_over_manual_again"] = _paired_ratio(times["manual"],
                                                                      times["manual_again"])
        out["ratio_control_manual_over_manual_again_quartiles"] = _paired_ratio_quartiles(
            times["manual"], times["manual_again"])
        cm, ca = self.compiled["manual"], self.compiled["autodiff"]
        out["compiled"] = {
            "manual": cm, "autodiff": ca,
            "flops_ratio_manual_over_autodiff": _ratio(cm["flops"], ca["flops"]),
            "temp_ratio_manual_over_autodiff": _ratio(cm["temp_bytes"], ca["temp_bytes"])}
        return out


# --------------------------------------------------------------------------- (c) throughput

def _plain_loss(params, x, y, *, activation, loss):
    """The workload's loss, written directly: params a list of (W (n_out, n_in), b)."""
    act = {"relu": jax.nn.relu, "tanh": jnp.tanh}[activation]
    a = x
    for W, b in params[:-1]:
        a = act(a @ W.T + b[None, :])
    W, b = params[-1]
    z = a @ W.T + b[None, :]
    if loss == "mse":  # identity output
        return jnp.mean(jnp.square(z - y))
    return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(z, axis=-1), axis=-1))  # softmax + cce


def _adam_init(params):
    return (jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params),
            jax.tree.map(jnp.zeros_like, params))


def _adam_update(grads, state, params, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    count, mu, nu = state
    count = count + 1
    t = count.astype(F32)
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, mu, grads)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, nu, grads)
    c1, c2 = 1 - b1 ** t, 1 - b2 ** t
    params = jax.tree.map(lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps),
                          params, mu, nu)
    return params, (count, mu, nu)


def make_shuffle(n_batches, batch_size):
    """Jitted: epoch e's permutation (fold_in(key, e), as fit does), cut into minibatches
    xs (n_batches, B, n_in), ys (n_batches, B, n_out)."""
    def shuffle(key, e, x, y):
        idx = jax.random.permutation(jax.random.fold_in(key, e), x.shape[0])
        idx = idx[: n_batches * batch_size]
        return (x[idx].reshape(n_batches, batch_size, x.shape[1]),
                y[idx].reshape(n_batches, batch_size, y.shape[1]))
    return jax.jit(shuffle)


def make_pure_jax_epoch(spec):
    """The in-JAX bound: one jitted lax.scan of value_and_grad + Adam over pre-shuffled
    minibatches xs (n_batches, B, n_in), ys; params and state donated."""
    loss_fn = jax.value_and_grad(
        lambda p, xb, yb: _plain_loss(p, xb, yb, activation=spec["activation"],
                                      loss=spec["loss"]))

    def epoch(params, opt_state, xs, ys):
        def body(carry, batch):
            p, s = carry
            loss, g = loss_fn(p, *batch)
            p, s = _adam_update(g, s, p)
            return (p, s), loss

        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), (xs, ys))
        return params, opt_state, jnp.mean(losses)

    return jax.jit(epoch, donate_argnums=(0, 1))


class ThroughputBench:
    """(c): samples/s of fit (manual, autodiff), the Python loop and the pure-JAX scan.
    Every epoch shuffles (fit inside its program, the references with one jitted call
    before the steps), so all four do the same work per epoch."""

    VARIANTS = ("fit_manual", "fit_autodiff", "python_loop", "pure_jax_scan")

    def __init__(self, su: Setup, step, mode):
        self.su, self.step, self.mode = su, step, mode
        self.key = jax.random.key(1)
        self.shuffle = make_shuffle(su.n_batches, su.B)
        self.mean_loss = jax.jit(lambda losses: jnp.mean(jnp.stack(losses)))
        self.pure_epoch = make_pure_jax_epoch(su.spec)
        self.p0 = su.fresh()[0]
        self.loop_state = su.fresh()
        self.pure_state = su.fresh_pure()
        self.run = {"fit_manual": lambda e: self.fit_epochs("manual", e),
                    "fit_autodiff": lambda e: self.fit_epochs("autodiff", e),
                    "python_loop": self.loop_epochs, "pure_jax_scan": self.pure_epochs}

    def fit_epochs(self, grad, epochs):
        su = self.su
        _, hist = jm.fit(su.model, self.p0, su.opt, su.x, su.y, epochs=epochs,
                         batch_size=su.B, key=self.key, grad=grad)
        return list(hist["epoch_time"])

    def loop_epochs(self, epochs):
        su, step = self.su, self.step
        p, s = self.loop_state
        times = []
        for e in range(epochs):
            t0 = time.perf_counter()
            xs, ys = self.shuffle(self.key, e, su.x, su.y)
            losses = []
            for xb, yb in zip(xs, ys):
                p, s, loss = step(p, s, xb, yb)
                losses.append(loss)
            float(self.mean_loss(losses))
            _sync((p, s))
            times.append(time.perf_counter() - t0)
        self.loop_state = (p, s)
        return times

    def pure_epochs(self, epochs):
        su = self.su
        p, s = self.pure_state
        times = []
        for e in range(epochs):
            t0 = time.perf_counter()
            xs, ys = self.shuffle(self.key, e, su.x, su.y)
            p, s, loss = self.pure_epoch(p, s, xs, ys)
            float(loss)
            _sync((p, s))
            times.append(time.perf_counter() - t0)
        self.pure_state = (p, s)
        return times

    def compile_tasks(self):
        # the python loop's step is compiled by StepBench; its shuffle by pure_jax_scan
        return [lambda: self.run["fit_manual"](1), lambda: self.run["fit_autodiff"](1),
                lambda: self.run["pure_jax_scan"](1)]

    def measure(self):
        su, mode = self.su, self.mode
        for f in self.run.values():  # leftover first-call work (the loop's unstack, ...)
            f(1)
        warm = {k: f(1)[0] for k, f in self.run.items()}
        epochs = int(min(mode["max_epochs"],
                         max(mode["min_epochs"], round(mode["target_s"] / max(warm.values())))))
        per_repeat = _interleaved({k: (lambda f=f: _median(f(epochs)))
                                   for k, f in self.run.items()}, mode["repeats"])
        samples = su.n_batches * su.B
        out = {"samples_per_epoch": samples, "epochs_per_sample": epochs}
        for k, ts in per_repeat.items():
            out[f"{k}_epoch_s"] = _median(ts)
            out[f"{k}_samples_per_s"] = samples / _median(ts)
        # throughput ratios a/b = time_b / time_a, paired per repeat (see _paired_ratio)
        t = per_repeat
        out["ratio_fit_manual_over_pure_jax"] = _paired_ratio(t["pure_jax_scan"],
                                                              t["fit_manual"])
        out["ratio_fit_manual_over_pure_jax_quartiles"] = _paired_ratio_quartiles(
            t["pure_jax_scan"], t["fit_manual"])
        out["ratio_fit_autodiff_over_pure_jax"] = _paired_ratio(t["pure_jax_scan"],
                                                                t["fit_autodiff"])
        out["ratio_fit_manual_over_fit_autodiff"] = _paired_ratio(t["fit_autodiff"],
                                                                  t["fit_manual"])
        out["ratio_fit_manual_over_python_loop"] = _paired_ratio(t["python_loop"],
                                                                 t["fit_manual"])
        out["ratio_python_loop_over_pure_jax"] = _paired_ratio(t["pure_jax_scan"],
                                                               t["python_loop"])
        out["epoch_s_per_repeat"] = per_repeat
        return out


# --------------------------------------------------------------------------- (d) GEMM rates

def gemm_shapes(sizes, batch_size):
    """The step's matmuls, per dense layer (n_in -> n_out), as the library writes them:
    forward a·Wᵀ, backward δ·W and δᵀ·a, each 2·B·n_in·n_out FLOPs (so one step's GEMMs
    are 6·weights·B); identical shapes merged with a count."""
    shapes = {}
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        for role, a_shape, b_shape in (
                ("fwd a.W^T", (batch_size, n_in), (n_out, n_in)),
                ("bwd d.W", (batch_size, n_out), (n_out, n_in)),
                ("bwd d^T.a", (batch_size, n_out), (batch_size, n_in))):
            key = (role, a_shape, b_shape, 2 * batch_size * n_in * n_out)
            shapes[key] = shapes.get(key, 0) + 1
    return [dict(role=role, a=list(a), b=list(b), count=c, flops=flops)
            for (role, a, b, flops), c in shapes.items()]


_GEMMS = {
    "fwd a.W^T": lambda a, b: a @ b.T,
    "bwd d.W": lambda a, b: a @ b,
    "bwd d^T.a": lambda a, b: a.T @ b,
}


def prepare_gemm(role, a_shape, b_shape, flops, mode):
    """A compiled timer for one GEMM shape: a jitted lax.scan over R distinct left
    operands (no loop-invariant hoisting).  Returns a function () -> seconds per GEMM."""
    R = int(min(512, max(4, mode["gemm_target_s"] * 2e10 / flops)))
    rng = np.random.default_rng(0)
    As = jax.device_put(rng.standard_normal((R,) + tuple(a_shape)).astype(np.float32))
    Bm = jax.device_put(rng.standard_normal(tuple(b_shape)).astype(np.float32))
    f = _GEMMS[role]
    run = jax.jit(lambda As, Bm: jax.lax.scan(lambda c, a: (c, f(a, Bm)), 0, As)[1])
    _sync(run(As, Bm))

    def timed():
        t0 = time.perf_counter()
        _sync(run(As, Bm))
        return (time.perf_counter() - t0) / R

    return timed


def machine_peak(mode, repeats):
    """GFLOP/s of one large square float32 matmul (n³), for reference."""
    n = mode["peak_n"]
    a = jax.device_put(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32))
    f = jax.jit(lambda a: a @ a)
    _sync(f(a))
    reps = max(2, int(mode["gemm_target_s"] * 2e10 / (2 * n ** 3)))
    for _ in range(2 * reps):  # warm: thread pool and clocks (a cold start read 111 for 200)
        out = f(a)
    _sync(out)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(reps):
            out = f(a)
        _sync(out)
        ts.append((time.perf_counter() - t0) / reps)
    return 2 * n ** 3 / _median(ts) / 1e9


class GemmBench:
    """(d): each GEMM shape's GFLOP/s (interleaved repeats, median) and the aggregate
    rate of one step's GEMMs (their FLOPs over their summed times)."""

    def __init__(self, su: Setup, mode):
        self.mode = mode
        self.shapes = gemm_shapes(su.spec["sizes"], su.B)
        self.timers = [None] * len(self.shapes)

    def compile_tasks(self):
        def task(i):
            s = self.shapes[i]
            self.timers[i] = prepare_gemm(s["role"], s["a"], s["b"], s["flops"], self.mode)
        return [lambda i=i: task(i) for i in range(len(self.shapes))]

    def measure(self):
        shapes = self.shapes
        times = _interleaved(dict(enumerate(self.timers)), self.mode["repeats"])
        for i, s in enumerate(shapes):
            s["seconds"] = _median(times[i])
            s["gflops"] = s["flops"] / s["seconds"] / 1e9
        total_flops = sum(s["flops"] * s["count"] for s in shapes)
        total_s = sum(s["seconds"] * s["count"] for s in shapes)
        return {"shapes": shapes, "step_gemm_flops": total_flops, "step_gemm_s": total_s,
                "gemm_gflops": total_flops / total_s / 1e9,
                "best_shape_gflops": max(s["gflops"] for s in shapes)}


# --------------------------------------------------------------------------- multi-device

def bench_parallel(su: Setup, single, n_devices, mode):
    """The step on a data mesh (batch sharded, params replicated): time per call and the
    all-reduces in the compiled HLO, against the single-device step."""
    model, opt, B = su.model, su.opt, su.B
    devices = jax.devices()[:n_devices]
    mesh = jm.parallel.data_mesh(devices)
    out = {"devices": len(devices)}
    if B % len(devices):
        out["skipped"] = f"batch {B} not divisible by {len(devices)} devices"
        return out
    step = jm.make_train_step(model, opt, mesh=mesh)
    xs, ys = jm.parallel.shard_batch(mesh, (su.xb, su.yb))
    st = {"mesh": list(jm.parallel.replicate(mesh, su.fresh())), "single": list(su.fresh())}
    text = step.lower(*st["mesh"], xs, ys).compile().as_text()
    out["all_reduce_text_count"] = text.count("all-reduce")
    ops = [line for line in text.splitlines()
           if " all-reduce(" in line or " all-reduce-start(" in line]
    out["all_reduce_ops"] = len(ops)  # XLA's combiner merges the gradients' all-reduces
    out["all_reduce_operands"] = sum(
        m.group(1).count("%") for m in (re.search(r" all-reduce(?:-start)?\(([^)]*)\)", line)
                                        for line in ops) if m)
    fns = {"mesh": (step, xs, ys), "single": (single, su.xb, su.yb)}

    def once(k):
        # Synchronised every call: on forced host devices (XLA CPU, jax 0.10.2) a queue of
        # ~100+ asynchronously dispatched steps with an all-reduce deadlocks in the
        # collective's rendezvous ("Expected N threads to join the rendezvous") and aborts.
        f, xa, ya = fns[k]
        p, s, loss = f(*st[k], xa, ya)
        st[k] = [p, s]
        return _sync(loss)

    for k in fns:
        for _ in range(3):
            once(k)
    n = max(_calibrate(lambda: once(k), mode["target_s"]) for k in fns)

    def timed(k):
        def run():
            t0 = time.perf_counter()
            for _ in range(n):
                once(k)
            _sync(st[k])
            return (time.perf_counter() - t0) / n
        return run

    times = _interleaved({k: timed(k) for k in fns}, mode["repeats"])
    out["mesh_step_s"] = _median(times["mesh"])
    out["single_step_s"] = _median(times["single"])
    out["ratio_mesh_over_single"] = _ratio(out["mesh_step_s"], out["single_step_s"])
    return out


# --------------------------------------------------------------------------- (e) CSV loading

CSV_ROWS = {"full": 200_000, "quick": 4_000}
CSV_FEATURES = 20
CSV_FORMAT = "20 float32 features as %.6g (e.g. -0.132105, 1.2e-05), an integer label, ','"


def write_csv(path, rows, seed=0):
    """A training table: CSV_FEATURES standard-normal float32 features written with 6
    significant digits and an integer class label 0..9, comma-separated, with a header."""
    rng = np.random.default_rng(seed)
    table = np.column_stack([rng.standard_normal((rows, CSV_FEATURES)).astype(np.float32),
                             rng.integers(0, 10, rows)])
    with open(path, "w") as f:
        f.write(",".join([f"x{j}" for j in range(CSV_FEATURES)] + ["label"]) + "\n")
        np.savetxt(f, table, fmt=["%.6g"] * CSV_FEATURES + ["%d"], delimiter=",")


def _csv_module_reader(path, target=-1, dtype=np.float32):
    """The reader jaxmlp.data.load_csv replaced, kept as the baseline: the whole file read
    and decoded, split by Python's csv module, every cell through float (list of lists),
    then one float64 array, sliced into x and y.  Returns (x, y)."""
    import csv
    import gzip
    import io
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith(".gz") or raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    text = raw.decode("utf-8-sig")
    sample = "\n".join(text.splitlines()[:50])
    delim = ","
    for d in ("\t", ";", ","):
        rows = csv.reader(io.StringIO(sample, newline=""), delimiter=d, skipinitialspace=True)
        widths = {len(r) for r in rows if not all(not c.strip() for c in r)}
        if len(widths) == 1 and widths.pop() > 1:
            delim = d
            break
    rows, lines = [], []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim, skipinitialspace=True)
    for row in reader:
        if not all(not c.strip() for c in row):
            rows.append([c.strip() for c in row])
            lines.append(reader.line_num)
    width = len(rows[0])
    for row, line in zip(rows, lines):
        if len(row) != width:
            raise ValueError(f"line {line} has {len(row)} fields, expected {width}")

    def is_number(cell):
        try:
            float(cell)
        except ValueError:
            return False
        return True

    if not all(is_number(c) for c in rows[0]):
        rows = rows[1:]
    t = target % width
    values = np.array([[float(c) for c in row] for row in rows], dtype=np.float64)
    values = values.reshape(len(rows), width)
    features = [j for j in range(width) if j != t]
    return values[:, features].astype(dtype), values[:, t].astype(dtype)


def _peak_bytes(fn) -> int:
    """tracemalloc's peak over one call (NumPy reports its array memory to it)."""
    import tracemalloc
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def bench_csv(mode_name, repeats, log) -> dict:
    """load_csv against the csv-module baseline on one generated file: seconds (medians of
    interleaved repeats), MB/s, their paired ratio, and tracemalloc peaks over the float32
    result's size (x and y).  Both must read the same values."""
    import tempfile
    rows = CSV_ROWS[mode_name]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "table.csv")
        write_csv(path, rows)
        size = os.path.getsize(path)
        log(f"[csv] {size / 1e6:.1f} MB, {rows} rows: load_csv vs the csv-module reader ...")
        new = lambda: jm.data.load_csv(path)  # noqa: E731
        old = lambda: _csv_module_reader(path)  # noqa: E731
        table, (x_old, y_old) = new(), old()
        same = bool(np.array_equal(table.x, x_old) and np.array_equal(table.y, y_old))

        def timed(fn):
            def run():
                t0 = time.perf_counter()
                fn()
                return time.perf_counter() - t0
            return run

        times = _interleaved({"new": timed(new), "old": timed(old)}, repeats)
        new_peak, old_peak = _peak_bytes(new), _peak_bytes(old)
    result = table.x.nbytes + table.y.nbytes
    new_s, old_s = _median(times["new"]), _median(times["old"])
    return {"format": CSV_FORMAT, "rows": rows, "columns": CSV_FEATURES + 1, "bytes": size,
            "same_values": same, "new_s": new_s, "old_s": old_s,
            "new_all_s": times["new"], "old_all_s": times["old"],
            "ratio_old_over_new": _paired_ratio(times["old"], times["new"]),
            "ratio_old_over_new_quartiles": _paired_ratio_quartiles(times["old"], times["new"]),
            "new_mb_per_s": size / 1e6 / new_s, "old_mb_per_s": size / 1e6 / old_s,
            "result_bytes": result, "new_peak_bytes": new_peak, "old_peak_bytes": old_peak,
            "ratio_new_peak_over_result": new_peak / result,
            "ratio_old_peak_over_result": old_peak / result}


# --------------------------------------------------------------------------- (f) before/after

_REPLY = "@@benchmark-worker "  # the worker's reply lines start with this
LEARNING_RATES = tuple(float(v) for v in np.geomspace(1e-4, 1e-2, 10))  # ten, distinct
LR_WORKLOAD = "W1"
SIDES = ("before", "after", "after_again")  # after_again: a second "after" worker, the A/A


def _git(root, *args) -> bytes:
    """`git -C root args…`'s stdout; SystemExit with git's message when git or the
    revision is missing."""
    import subprocess
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True)
    except FileNotFoundError:
        raise SystemExit("--baseline needs git on PATH (to extract the old jaxmlp)") from None
    if proc.returncode:
        raise SystemExit(f"--baseline: git {' '.join(args)} failed in {root}: "
                         f"{proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def _repo_root():
    """The checkout this script belongs to (its parent folder's parent), checked with git."""
    import pathlib
    here = pathlib.Path(__file__).resolve().parents[1]
    return pathlib.Path(_git(here, "rev-parse", "--show-toplevel").decode().strip())


def extract_revision(root, rev, dest) -> dict:
    """`git archive rev jaxmlp` unpacked under dest (dest/jaxmlp): the package as it was at
    rev, importable with PYTHONPATH=dest.  Returns {rev, commit, subject}."""
    import io
    import tarfile
    commit = _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").decode().strip()
    data = _git(root, "archive", "--format=tar", commit, "jaxmlp")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(dest, **kw)
    subject = _git(root, "log", "-1", "--format=%s", commit).decode().strip()
    return {"rev": rev, "commit": commit, "subject": subject[:120]}


def snapshot_working_tree(root, dest) -> dict:
    """The checkout's jaxmlp/ as it is now, copied under dest (so edits made while the
    benchmark runs do not reach its workers).  Returns {rev, commit (HEAD), dirty}."""
    import shutil
    shutil.copytree(root / "jaxmlp", os.path.join(dest, "jaxmlp"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    head = _git(root, "rev-parse", "HEAD").decode().strip()
    dirty = bool(_git(root, "status", "--porcelain", "--", "jaxmlp").strip())
    return {"rev": "working tree", "commit": head, "dirty": dirty}


class Worker:
    """A long-lived `python benchmark.py --_worker` process importing jaxmlp from `src`
    (PYTHONPATH first, ahead of an installed copy); it inherits this process's environment
    (XLA_FLAGS) and CPU affinity (--cpus).  One JSON command per line on its stdin, one
    JSON reply per line on its stdout (prefixed; anything else it prints is skipped)."""

    def __init__(self, src):
        import subprocess
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(src)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.src = str(src)
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--_worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=str(src))

    def send(self, op, **kw):
        self.proc.stdin.write(json.dumps(dict(kw, op=op)) + "\n")
        self.proc.stdin.flush()

    def receive(self):
        for line in self.proc.stdout:
            if line.startswith(_REPLY):
                reply = json.loads(line[len(_REPLY):])
                if "error" in reply:
                    raise RuntimeError(f"benchmark worker ({self.src}): {reply['error']}")
                return reply
        raise RuntimeError(f"benchmark worker ({self.src}) exited with code "
                           f"{self.proc.wait()} (its stderr is above)")

    def ask(self, op, **kw):
        self.send(op, **kw)
        return self.receive()

    def close(self):
        """Asks the worker to quit (kills it if it does not within 30 s); closes the pipes."""
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=30)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:  # the worker went away with data unflushed
                pass


def _worker_ops():
    """The worker's commands: hello, prepare (build a workload, compile fit), fit (time
    one fit call), drop, lrs (the ten-learning-rate timing: run it first in a fresh
    worker, so it pays the process's first compile)."""
    setups = {}

    def hello():
        return {"jaxmlp": os.path.abspath(jm.__file__), "jax": jax.__version__,
                "xla_flags": os.environ.get("XLA_FLAGS", ""),
                "cpus_used": len(os.sched_getaffinity(0))
                if hasattr(os, "sched_getaffinity") else os.cpu_count()}

    def fit_call(wid, epochs):
        su, p0, key = setups[wid]
        t0 = time.perf_counter()
        params, hist = jm.fit(su.model, p0, su.opt, su.x, su.y, epochs=epochs,
                              batch_size=su.B, key=key)
        _sync(params)
        return {"epoch_times": [float(t) for t in hist["epoch_time"]],
                "wall_s": time.perf_counter() - t0}

    def prepare(wid, quick):
        su = Setup(wid, quick)
        setups[wid] = (su, su.fresh()[0], jax.random.key(1))
        compile_s = fit_call(wid, 1)["wall_s"]
        fit_call(wid, 1)  # leftover first-call work
        return {"compile_s": compile_s, "epoch_s": fit_call(wid, 1)["epoch_times"][0],
                "samples_per_epoch": su.n_batches * su.B}

    def drop(wid):
        setups.pop(wid, None)
        return {}

    def lrs(learning_rates, epochs):
        su = Setup(LR_WORKLOAD, False)
        p0, key = su.fresh()[0], jax.random.key(1)
        _sync(p0)
        calls = []
        t0 = time.perf_counter()
        for lr in learning_rates:
            t1 = time.perf_counter()
            params, _ = jm.fit(su.model, p0, jm.optim.adam(lr), su.x, su.y, epochs=epochs,
                               batch_size=su.B, key=key)
            _sync(params)
            calls.append(time.perf_counter() - t1)
        return {"total_s": time.perf_counter() - t0, "call_s": calls}

    return {"hello": hello, "prepare": prepare, "fit": fit_call, "drop": drop, "lrs": lrs}


def worker_main():
    """`benchmark.py --_worker`: answers the commands of `Worker` until stdin closes or
    'quit'.  An exception is replied as {"error": traceback} and the worker goes on."""
    import traceback
    try:  # a persistent compilation cache would hide the compiles the lrs timing counts
        jax.config.update("jax_enable_compilation_cache", False)
    except Exception:  # pragma: no cover  (an older JAX without the option)
        pass
    ops = _worker_ops()
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        op = cmd.pop("op")
        if op == "quit":
            break
        try:
            reply = ops[op](**cmd)
        except Exception:
            reply = {"error": traceback.format_exc()}
        print(_REPLY + json.dumps(reply), flush=True)


def _start_workers(srcs, expect):
    """{side: Worker} for srcs {side: folder}, each checked to import jaxmlp from its folder
    with this process's XLA_FLAGS and CPU count (`expect`); all closed on failure."""
    workers = {}
    try:
        for side, src in srcs.items():
            workers[side] = Worker(src)
        for side, w in workers.items():
            hello = w.ask("hello")
            if not hello["jaxmlp"].startswith(os.path.abspath(w.src) + os.sep):
                raise RuntimeError(f"{side} worker imported jaxmlp from {hello['jaxmlp']}, "
                                   f"not from {w.src}")
            got = {k: hello[k] for k in expect}
            if got != expect:
                raise RuntimeError(f"{side} worker runs with {got}, this process with {expect}")
    except BaseException:
        for w in workers.values():
            w.close()
        raise
    return workers


def _fit_before_after(workers, wid, mode, quick, log):
    """One workload's `fit` samples/s in the three workers: each compiles its fit (all at
    once: nothing is timed), then `mode["repeats"]` interleaved repeats, one worker at a
    time, the order rotating; a repeat's value is the median of the call's
    `history["epoch_time"]`, as in (c)."""
    for w in workers.values():
        w.send("prepare", wid=wid, quick=quick)
    prep = {side: w.receive() for side, w in workers.items()}
    epochs = int(min(mode["max_epochs"], max(mode["min_epochs"], round(
        mode["target_s"] / max(p["epoch_s"] for p in prep.values())))))
    for w in workers.values():  # a fit of that many epochs once, untimed, in each
        w.send("fit", wid=wid, epochs=epochs)
    for w in workers.values():
        w.receive()
    walls = {side: [] for side in workers}

    def timed(side):
        def run():
            reply = workers[side].ask("fit", wid=wid, epochs=epochs)
            walls[side].append(reply["wall_s"])
            return _median(reply["epoch_times"])
        return run

    log(f"[{wid}] before/after fit throughput ({epochs} epochs a call) ...")
    t = _interleaved({side: timed(side) for side in workers}, mode["repeats"])
    for w in workers.values():
        w.ask("drop", wid=wid)
    samples = prep["after"]["samples_per_epoch"]
    out = {"samples_per_epoch": samples, "epochs_per_call": epochs,
           "compile_s": {side: p["compile_s"] for side, p in prep.items()}}
    for side in workers:
        out[f"{side}_samples_per_s"] = samples / _median(t[side])
    # throughput ratios a/b = epoch time b / epoch time a, paired per repeat
    out["ratio_after_over_before"] = _paired_ratio(t["before"], t["after"])
    out["ratio_after_over_before_quartiles"] = _paired_ratio_quartiles(t["before"], t["after"])
    out["ratio_after_again_over_before"] = _paired_ratio(t["before"], t["after_again"])
    out["ratio_control_after_over_after_again"] = _paired_ratio(t["after_again"], t["after"])
    out["ratio_control_after_over_after_again_quartiles"] = _paired_ratio_quartiles(
        t["after_again"], t["after"])
    out["ratio_fit_call_after_over_before"] = _paired_ratio(walls["before"], walls["after"])
    out["epoch_s_per_repeat"] = t
    out["fit_call_s_per_repeat"] = walls
    return out


def _learning_rates_before_after(srcs, repeats, epochs, expect, log):
    """Ten `fit` calls on W1 with `adam(lr)` for the ten LEARNING_RATES, `epochs` each,
    timed back to back (compiles included) in a fresh worker per version and repeat, so
    each pays its own first compile; the versions alternate, the order rotating."""
    totals = {side: [] for side in srcs}
    calls = {side: [] for side in srcs}
    for r in range(repeats):
        for side in _rotate(list(srcs), r):
            log(f"[{LR_WORKLOAD}] ten learning rates, {side}, repeat {r + 1}/{repeats} ...")
            w = _start_workers({side: srcs[side]}, expect)[side]
            try:
                reply = w.ask("lrs", learning_rates=list(LEARNING_RATES), epochs=epochs)
            finally:
                w.close()
            totals[side].append(reply["total_s"])
            calls[side].append(reply["call_s"])
    out = {"workload": LR_WORKLOAD, "learning_rates": list(LEARNING_RATES), "epochs": epochs,
           "repeats": repeats, "optimizer": "adam(lr)"}
    for side in srcs:
        out[f"{side}_s"] = _median(totals[side])
        out[f"{side}_first_call_s"] = _median([c[0] for c in calls[side]])
        out[f"{side}_later_call_s"] = _median([_median(c[1:]) for c in calls[side]])
        out[f"{side}_all_s"] = totals[side]
        out[f"{side}_call_s_per_repeat"] = calls[side]
    out["ratio_before_over_after"] = _paired_ratio(totals["before"], totals["after"])
    out["ratio_before_over_after_quartiles"] = _paired_ratio_quartiles(totals["before"],
                                                                       totals["after"])
    return out


def bench_before_after(baseline, workloads, mode, quick, log, after=None, lr_repeats=None,
                       lr_epochs=5) -> dict:
    """(f): this checkout's jaxmlp ("after": revision `after`, or a snapshot of the working
    tree when None) against revision `baseline` ("before"), each in its own processes (two
    versions of one package cannot share a process).  `fit` samples/s on `workloads` in three long-lived workers
    (before, after and a second after: the A/A control), and the ten-learning-rate timing
    on W1 in fresh workers.  Workers run one at a time, never concurrently."""
    import tempfile
    root = _repo_root()
    expect = {"xla_flags": os.environ.get("XLA_FLAGS", ""),
              "cpus_used": len(os.sched_getaffinity(0))
              if hasattr(os, "sched_getaffinity") else os.cpu_count()}
    lr_repeats = lr_repeats or (1 if quick else 3)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jaxmlp-bench-") as tmp:
        srcs = {"before": os.path.join(tmp, "before"), "after": os.path.join(tmp, "after")}
        out = {"before": extract_revision(root, baseline, srcs["before"]),
               "after": extract_revision(root, after, srcs["after"]) if after
               else snapshot_working_tree(root, srcs["after"]),
               "config": {"repeats": mode["repeats"], "target_s": mode["target_s"],
                          "dtype": "float32", "optimizer": "adam(1e-3)", "grad": "manual",
                          **expect}}
        log(f"(f) before = {_side_text(out['before'])}, after = {_side_text(out['after'])}: "
            f"starting workers ...")
        workers = _start_workers(dict(srcs, after_again=srcs["after"]), expect)
        try:
            out["workloads"] = {wid: _fit_before_after(workers, wid, mode, quick, log)
                                for wid in workloads}
        finally:
            for w in workers.values():
                w.close()
        out["learning_rates"] = _learning_rates_before_after(srcs, lr_repeats, lr_epochs,
                                                             expect, log)
    out["seconds"] = time.perf_counter() - t0
    return out


def _side_text(side) -> str:
    """'3438e7d (3438e7d53a)', or 'working tree at ea913e7da5 (modified)'."""
    if side["rev"] == "working tree":
        return (f"working tree at {side['commit'][:10]}"
                f"{' (modified)' if side['dirty'] else ''}")
    return f"{side['rev']} ({side['commit'][:10]})"


def format_before_after(ba) -> list:
    """The table lines of section (f)."""
    lines = [f"(f) before/after: before = {_side_text(ba['before'])}, "
             f"after = {_side_text(ba['after'])}",
             "fit samples/s, one worker process per version (after' a second 'after' worker: "
             "A/A); ratios: medians of the per-repeat paired ratios, q1-q3 their quartiles",
             f"{'':4} {'before':>10} {'after':>10} {'after2':>10} {'after/before':>12} "
             f"{'a/b q1-q3':>12} {'A/A':>6} {'A/A q1-q3':>12} {'call a/b':>9} {'epochs':>6}"]
    for wid, r in ba["workloads"].items():
        lines.append(f"{wid:4} {r['before_samples_per_s']:10.0f} {r['after_samples_per_s']:10.0f} "
                     f"{r['after_again_samples_per_s']:10.0f} "
                     f"{r['ratio_after_over_before']:12.3f} "
                     f"{_quartiles_text(r['ratio_after_over_before_quartiles']):>12} "
                     f"{r['ratio_control_after_over_after_again']:6.3f} "
                     f"{_quartiles_text(r['ratio_control_after_over_after_again_quartiles']):>12} "
                     f"{r['ratio_fit_call_after_over_before']:9.3f} {r['epochs_per_call']:6d}")
    lr = ba["learning_rates"]
    lines.append(f"ten fit calls on {lr['workload']}, adam(lr) for {len(lr['learning_rates'])} "
                 f"learning rates ({lr['learning_rates'][0]:g}..{lr['learning_rates'][-1]:g}), "
                 f"{lr['epochs']} epochs each, compiles included, a fresh process per version; "
                 f"medians of {lr['repeats']}")
    lines.append(f"{'':7} {'total s':>8} {'1st call s':>10} {'later call s':>12}")
    for side in ("before", "after"):
        lines.append(f"{side:7} {lr[f'{side}_s']:8.3f} {lr[f'{side}_first_call_s']:10.3f} "
                     f"{lr[f'{side}_later_call_s']:12.4f}")
    lines.append(f"before/after {lr['ratio_before_over_after']:.1f}x (q1-q3 "
                 f"{_quartiles_text(lr['ratio_before_over_after_quartiles'])})")
    return lines


# --------------------------------------------------------------------------- driver

def run_workload(su: Setup, mode, log, machine_gflops):
    """All four measurements of one workload: every program is compiled first (two at a
    time), then everything is timed with nothing else running."""
    spec, wid = su.spec, su.wid
    t0 = time.perf_counter()
    res = {"name": spec["name"], "sizes": list(spec["sizes"]),
           "activation": spec["activation"], "output": spec["output"], "loss": spec["loss"],
           "batch_size": su.B, "rows": su.rows, "n_weights": n_weights(spec["sizes"]),
           "flops_per_sample": 6 * n_weights(spec["sizes"])}
    step_b = StepBench(su, mode)
    thr_b = ThroughputBench(su, step_b.steps["manual"], mode)
    gemm_b = GemmBench(su, mode)
    log(f"[{wid}] compiling ...")
    _concurrently(step_b.compile_tasks() + thr_b.compile_tasks() + gemm_b.compile_tasks())
    phases = {"compile": time.perf_counter() - t0}
    for name, bench in (("step", step_b), ("throughput", thr_b), ("gemm", gemm_b)):
        log(f"[{wid}] {name} ...")
        t1 = time.perf_counter()
        res[name] = bench.measure()
        phases[name] = time.perf_counter() - t1
    fps = res["flops_per_sample"]
    achieved = {k: res["throughput"][f"{k}_samples_per_s"] * fps / 1e9
                for k in ThroughputBench.VARIANTS}
    achieved["step_manual"] = su.B * fps / res["step"]["manual_s"] / 1e9
    achieved["step_autodiff"] = su.B * fps / res["step"]["autodiff_s"] / 1e9
    res["achieved_gflops"] = achieved
    # peak: the best rate of the workload's own GEMM shapes; step GEMM rate: what one
    # step's matmuls alone would reach; machine: the large square matmul
    res["fraction_of_gemm_peak"] = {k: v / res["gemm"]["best_shape_gflops"]
                                    for k, v in achieved.items()}
    res["fraction_of_step_gemm_rate"] = {k: v / res["gemm"]["gemm_gflops"]
                                         for k, v in achieved.items()}
    res["fraction_of_machine_peak"] = {k: v / machine_gflops for k, v in achieved.items()}
    res["phase_seconds"] = phases
    res["seconds"] = time.perf_counter() - t0
    return res, step_b.steps["manual"]


def environment(mode_name, repeats):
    d = jax.devices()[0]
    return {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "machine": platform.machine(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version(),
                    "cpus_used": len(os.sched_getaffinity(0))
                    if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                    "loadavg_start": _loadavg()},
        "device": {"platform": d.platform, "device_kind": d.device_kind,
                   "count": len(jax.devices()), "backend": jax.default_backend()},
        "jax_version": jax.__version__,
        "jaxlib_version": getattr(getattr(jax, "lib", None), "__version__", None)
        or _jaxlib_version(),
        "jaxmlp_version": getattr(jm, "__version__", None),
        "config": {"mode": mode_name, "repeats": repeats,
                   "xla_flags": os.environ.get("XLA_FLAGS", ""),
                   "dtype": "float32", "optimizer": "adam(1e-3)"},
    }


def _loadavg():
    """The 1-minute load average (other processes skew CPU timings), or None."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # pragma: no cover
        return None


def _jaxlib_version():
    try:
        import jaxlib
        return jaxlib.__version__
    except Exception:  # pragma: no cover
        return None


def _quartiles_text(q) -> str:
    return f"{q[0]:.3f}-{q[1]:.3f}" if q else "-"


def format_table(results) -> str:
    lines = []
    env = results
    lines.append(f"device: {env['device']['platform']} / {env['device']['device_kind']} "
                 f"x{env['device']['count']}   cpus: {env['machine'].get('cpus_used')} of "
                 f"{env['machine']['cpu_count']}   "
                 f"jax {env['jax_version']}   mode: {env['config']['mode']}   "
                 f"XLA_FLAGS: {env['config']['xla_flags'] or '-'}")
    if "workloads" not in results:  # --only-before-after or --only-sweep
        lines.append(f"load average at start: {env['machine']['loadavg_start'] or 0:.2f}")
        lines.append("")
        if "before_after" in results:
            lines.extend(format_before_after(results["before_after"]))
        if "sweep" in results:
            lines.extend(format_sweep(results["sweep"]))
        return "\n".join(lines)
    lines.append(f"machine matmul peak ({env['machine_peak_n']}³ f32): "
                 f"{env['machine_peak_gflops']:.1f} GFLOP/s   load average at start: "
                 f"{env['machine']['loadavg_start'] or 0:.2f}")
    lines.append("")
    lines.append("(a, b) jitted train step, manual δ vs autodiff (medians of interleaved "
                 "repeats; ratio: the median of the per-repeat ratios, q1-q3 their quartiles;\n"
                 "A/A: the manual step against a second copy of itself, the noise floor)")
    hdr = (f"{'':4} {'manual ms':>10} {'autodiff ms':>12} {'ratio m/a':>10} "
           f"{'MFLOP m':>10} {'MFLOP a':>10} {'temp KiB m':>11} {'temp KiB a':>11} "
           f"{'kernels m/a':>12} {'m/a q1-q3':>12} {'A/A':>6} {'A/A q1-q3':>12}")
    lines.append(hdr)
    for wid, r in results["workloads"].items():
        s, c = r["step"], r["step"]["compiled"]
        lines.append(f"{wid:4} {s['manual_s'] * 1e3:10.4f} {s['autodiff_s'] * 1e3:12.4f} "
                     f"{s['ratio_manual_over_autodiff']:10.3f} "
                     f"{c['manual']['flops'] / 1e6:10.3f} {c['autodiff']['flops'] / 1e6:10.3f} "
                     f"{c['manual']['temp_bytes'] / 1024:11.1f} "
                     f"{c['autodiff']['temp_bytes'] / 1024:11.1f} "
                     f"{c['manual'].get('kernels', -1):>6d}/{c['autodiff'].get('kernels', -1):<5d} "
                     f"{_quartiles_text(s.get('ratio_manual_over_autodiff_quartiles')):>12} "
                     f"{s.get('ratio_control_manual_over_manual_again', math.nan):6.3f} "
                     f"{_quartiles_text(s.get('ratio_control_manual_over_manual_again_quartiles')):>12}")
    lines.append("")
    lines.append("(c) epoch throughput, samples/s (after warm-up; medians of interleaved "
                 "repeats; ratios: medians of the per-repeat ratios, q1-q3 their quartiles)")
    lines.append(f"{'':4} {'fit manual':>11} {'fit autodiff':>12} {'py loop':>10} "
                 f"{'pure JAX':>10} {'fit/pure':>9} {'fitA/pure':>9} {'fit m/a':>8} "
                 f"{'fit/loop':>9} {'fit/pure q1-q3':>14}")
    for wid, r in results["workloads"].items():
        t = r["throughput"]
        lines.append(f"{wid:4} {t['fit_manual_samples_per_s']:11.0f} "
                     f"{t['fit_autodiff_samples_per_s']:12.0f} "
                     f"{t['python_loop_samples_per_s']:10.0f} "
                     f"{t['pure_jax_scan_samples_per_s']:10.0f} "
                     f"{t['ratio_fit_manual_over_pure_jax']:9.3f} "
                     f"{t['ratio_fit_autodiff_over_pure_jax']:9.3f} "
                     f"{t['ratio_fit_manual_over_fit_autodiff']:8.3f} "
                     f"{t['ratio_fit_manual_over_python_loop']:9.2f} "
                     f"{_quartiles_text(t.get('ratio_fit_manual_over_pure_jax_quartiles')):>14}")
    lines.append("")
    lines.append("(d) GFLOP/s (6 FLOPs/weight/sample); fractions of the workload's best GEMM "
                 "shape (peak), of its step-GEMM rate, and of the machine peak")
    lines.append(f"{'':4} {'peak':>7} {'stepGEMM':>8} {'fit man':>8} {'fit aut':>8} "
                 f"{'py loop':>8} {'pureJAX':>8} {'fit/peak':>8} {'pure/peak':>9} "
                 f"{'fit/stepG':>9} {'fit/mach':>8}")
    for wid, r in results["workloads"].items():
        a, g = r["achieved_gflops"], r["gemm"]
        lines.append(f"{wid:4} {g['best_shape_gflops']:7.1f} {g['gemm_gflops']:8.1f} "
                     f"{a['fit_manual']:8.1f} {a['fit_autodiff']:8.1f} "
                     f"{a['python_loop']:8.1f} {a['pure_jax_scan']:8.1f} "
                     f"{r['fraction_of_gemm_peak']['fit_manual']:8.3f} "
                     f"{r['fraction_of_gemm_peak']['pure_jax_scan']:9.3f} "
                     f"{r['fraction_of_step_gemm_rate']['fit_manual']:9.3f} "
                     f"{r['fraction_of_machine_peak']['fit_manual']:8.3f}")
    lines.append("")
    lines.append("GEMM shapes, GFLOP/s (a·Wᵀ forward; δ·W and δᵀ·a backward; ×count)")
    for wid, r in results["workloads"].items():
        for sh in r["gemm"]["shapes"]:
            lines.append(f"{wid:4} {sh['role']:10} a {str(tuple(sh['a'])):12} "
                         f"b {str(tuple(sh['b'])):12} x{sh['count']:<3} {sh['gflops']:8.1f}")
    c = results.get("csv")
    if c:
        lines.append("")
        lines.append(f"(e) CSV loading, {c['bytes'] / 1e6:.1f} MB, {c['rows']} rows x "
                     f"{c['columns']} ({c['format']}); peak: tracemalloc over the float32 "
                     f"result ({c['result_bytes'] / 1e6:.1f} MB)")
        lines.append(f"{'':12} {'seconds':>8} {'MB/s':>7} {'peak/result':>12}")
        lines.append(f"{'load_csv':12} {c['new_s']:8.3f} {c['new_mb_per_s']:7.1f} "
                     f"{c['ratio_new_peak_over_result']:12.2f}")
        lines.append(f"{'csv module':12} {c['old_s']:8.3f} {c['old_mb_per_s']:7.1f} "
                     f"{c['ratio_old_peak_over_result']:12.2f}")
        lines.append(f"old/new {c['ratio_old_over_new']:.1f}x (q1-q3 "
                     f"{_quartiles_text(c['ratio_old_over_new_quartiles'])}); same values: "
                     f"{c['same_values']}")
    par = results.get("parallel")
    if par:
        lines.append("")
        if par.get("skipped"):
            lines.append(f"multi-device: skipped ({par['skipped']})")
        else:
            lines.append(f"multi-device step, mesh over {par['devices']} devices")
            lines.append(f"{'':4} {'mesh ms':>9} {'single ms':>10} {'ratio':>7} "
                         f"{'all-reduce (text)':>18} {'(ops)':>6} {'(operands)':>10}")
            for wid, p in par["workloads"].items():
                if p.get("skipped"):
                    lines.append(f"{wid:4} skipped: {p['skipped']}")
                    continue
                lines.append(f"{wid:4} {p['mesh_step_s'] * 1e3:9.3f} "
                             f"{p['single_step_s'] * 1e3:10.3f} {p['ratio_mesh_over_single']:7.3f} "
                             f"{p['all_reduce_text_count']:18d} {p['all_reduce_ops']:6d} "
                             f"{p['all_reduce_operands']:10d}")
    ba = results.get("before_after")
    if ba:
        lines.append("")
        lines.extend(format_before_after(ba))
    if results.get("sweep"):
        lines.append("")
        lines.extend(format_sweep(results["sweep"]))
    return "\n".join(lines)



# --------------------------------------------------------------------------- (g) sweep

#: Section (g)'s plan: (workload, M values); W1's whole curve, W3 and W2 at one M each.
SWEEP_PLAN = (("W1", (1, 8, 32, 128)), ("W3", (8,)), ("W2", (4,)))
SWEEP_PLAN_QUICK = (("W1", (1, 8)),)


class SweepBench:
    """(g): aggregate samples/s (M × each model's) of `jm.sweep` over M models against
    M sequential `fit` calls (whose aggregate is one fit's samples/s: they run one
    after another), side by side: interleaved repeats, the median of each run's
    epoch times, paired ratios.  Variants: one program for every model (`workers=1`),
    split over every core in worker threads (`workers=None`, the default), and so with
    `shuffle="shared"`.  Compile time: a variant's first call (1 epoch) minus a warm epoch."""

    def __init__(self, su: Setup, n_models, mode):
        self.su, self.M, self.mode = su, n_models, mode
        self.key = jax.random.key(1)
        p0 = su.fresh()[0]
        self.p0 = p0
        self.stacked = jm.sweeps.stack([p0] * n_models)
        self.variants = {"fit": None, "sweep_1worker": dict(workers=1),
                         "sweep": dict(workers=None),
                         "sweep_shared": dict(workers=None, shuffle="shared")}

    def run(self, name, epochs):
        su = self.su
        if name == "fit":
            _, h = jm.fit(su.model, self.p0, su.opt, su.x, su.y, epochs=epochs,
                          batch_size=su.B, key=self.key)
        else:
            _, h = jm.sweep(su.model, self.stacked, su.opt, su.x, su.y, epochs=epochs,
                            batch_size=su.B, key=self.key, **self.variants[name])
        return list(h["epoch_time"])

    def measure(self, log):
        su, mode, M = self.su, self.mode, self.M
        compile_s = {}
        for name in self.variants:  # first call: compile + 1 epoch, then a warm epoch
            t0 = time.perf_counter()
            self.run(name, 1)
            first = time.perf_counter() - t0
            compile_s[name] = max(0.0, first - self.run(name, 1)[0])
        warm = {k: _median(self.run(k, 2)) for k in self.variants}
        epochs = {k: int(min(mode["max_epochs"], max(2, round(mode["target_s"] / t))))
                  for k, t in warm.items()}
        log(f"[{su.wid}] sweep M={M}: epochs per sample {epochs} ...")
        per_repeat = _interleaved({k: (lambda k=k: _median(self.run(k, epochs[k])))
                                   for k in self.variants}, mode["repeats"])
        samples = su.n_batches * su.B
        flops_per_sample = 6 * n_weights(su.spec["sizes"])
        out = {"models": M, "workers": jm.sweeps.workers(M), "compile_s": compile_s,
               "epochs_per_sample": epochs, "variants": {}}
        for k, ts in per_repeat.items():
            n = 1 if k == "fit" else M
            agg = n * samples / _median(ts)
            out["variants"][k] = {
                "epoch_s": _median(ts), "aggregate_samples_per_s": agg,
                "gflops": agg * flops_per_sample / 1e9}
            if k != "fit":
                # aggregate ratio to M sequential fits: (M / t_sweep) / (1 / t_fit)
                scaled = [t / M for t in ts]
                out["variants"][k]["speedup_over_sequential_fits"] = _paired_ratio(
                    per_repeat["fit"], scaled)
                out["variants"][k]["speedup_quartiles"] = _paired_ratio_quartiles(
                    per_repeat["fit"], scaled)
        return out


def bench_sweep(mode, quick, log, machine_gflops, floor=None):
    """Section (g) over SWEEP_PLAN (SWEEP_PLAN_QUICK with --quick), then (unless `floor`
    is False; by default not with --quick) the floor under a W1 model-step (`_floor`)."""
    out = {"devices": len(jax.devices()), "cores": jm.sweeps._usable_cores(),
           "machine_peak_gflops": machine_gflops, "runs": []}
    for wid, ms in (SWEEP_PLAN_QUICK if quick else SWEEP_PLAN):
        su = Setup(wid, quick)
        sub = dict(mode)
        if wid != "W1":  # big epochs: fewer repeats, one or two epochs per sample
            sub["repeats"] = min(mode["repeats"], 5)
        for M in ms:
            r = SweepBench(su, M, sub).measure(log)
            r["workload"] = wid
            for v in r["variants"].values():
                v["fraction_of_machine_peak"] = v["gflops"] / machine_gflops
            out["runs"].append(r)
    if floor if floor is not None else not quick:
        fl = _floor_pinned(mode, quick, log, out["cores"])
        # the ceiling is read against the fit that (g)'s speedups divide by: unpinned, its
        # host work on another core than XLA's (pinned, the two share one: slower)
        fits = [r["variants"]["fit"]["epoch_s"] for r in out["runs"] if r["workload"] == "W1"]
        fit_us = _median(fits) / Setup("W1", quick).n_batches * 1e6
        out["floor"] = _with_ceiling(fl, fit_us, machine_gflops)
    return out


def _with_ceiling(fl, fit_us, machine_gflops):
    """The floor `fl` with the ceilings it puts on the speedup over fits of `fit_us` µs a
    step: with the measured dots, and were every matmul at the machine's peak (a 1024³
    matmul's rate, per core)."""
    fl = dict(fl, fit_step_us=fit_us, ceiling_speedup=fl["cores"] * fit_us / fl["floor_us"],
              needed_for_4x_us=fl["cores"] * fit_us / 4)
    per_core = machine_gflops / fl["cores"]
    fl["matmuls_at_peak_us"] = fl["matmul_flops"] / (per_core * 1e9) * 1e6
    fl["floor_at_peak_us"] = fl["matmuls_at_peak_us"] + fl["optimizer_us"] + fl["shuffle_us"]
    fl["ceiling_at_peak_speedup"] = fl["cores"] * fit_us / fl["floor_at_peak_us"]
    return fl


def _floor_pinned(mode, quick, log, cores):
    """`_floor` in a child process pinned to one CPU before JAX starts (so XLA's own
    thread pool cannot lend a group's matmuls the other cores: the floor is one core's),
    its results read back as JSON."""
    import subprocess
    cmd = [sys.executable, os.path.abspath(__file__), "--_floor", "--cpus", "1",
           "--repeats", str(mode["repeats"]), "--_cores", str(cores)]
    if quick:
        cmd.append("--quick")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"the floor's child process failed:\n{proc.stderr[-3000:]}")
    for line in proc.stderr.splitlines():
        log(line)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def floor_main(argv):
    """`benchmark.py --_floor --cpus 1 --repeats R --_cores K [--quick]`: `_floor`,
    printed as one JSON line (the CPU pinning happened in `_pre_parse_xla`)."""
    p = argparse.ArgumentParser()
    p.add_argument("--_floor", action="store_true")
    p.add_argument("--cpus", type=int)
    p.add_argument("--repeats", type=int, required=True)
    p.add_argument("--_cores", type=int, required=True)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    mode = dict(MODES["quick" if args.quick else "full"], repeats=args.repeats)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    fl = _floor(mode, args.quick, log, args._cores)
    fl["pinned_cpus"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    print(json.dumps(fl))


#: The floor's case: W1 at M = 32, the 4× goal, is one group of ⌈32 / cores⌉ models per core.
FLOOR_M = 32


def _per_step(fn, args, n_steps, repeats):
    """Median seconds per step of `fn(*args)` run n_steps times in one jitted `lax.scan`.
    An optimization barrier ties the operands to the loop's carry (so the call cannot be
    hoisted out of the loop) and another keeps the whole output (so XLA cannot shrink the
    call to the one element read back into the carry); no arithmetic is added.  `_floor`
    subtracts the same loop around the identity."""
    def body(c, _):
        ops, c = jax.lax.optimization_barrier((args, c))
        out = jax.lax.optimization_barrier(fn(*ops))
        return c + jnp.ravel(out)[0].astype(c.dtype), None

    return _time_per_step(
        jax.jit(lambda: jax.lax.scan(body, jnp.float32(0), None, length=n_steps)[0]),
        (), n_steps, repeats)


def _time_per_step(run, args, n_steps, repeats):
    """Median seconds of run(*args) (warmed up first) over n_steps."""
    _sync(run(*args))
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _sync(run(*args))
        ts.append(time.perf_counter() - t0)
    return _median(ts) / n_steps


def _floor_dots(sizes, B, G, key):
    """The dots of one manual-δ step of G models, vmapped as `jm.sweep` runs them, each
    as jaxmlp writes it and in the other layouts of the same product (operands stored
    transposed beforehand): {name: [(fn, args), ...]}, the first entry jaxmlp's own."""
    dots = {}
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        ks = jax.random.split(jax.random.fold_in(key, l), 3)
        a = jax.random.normal(ks[0], (G, B, n_in))
        W = jax.random.normal(ks[1], (G, n_out, n_in))
        d = jax.random.normal(ks[2], (G, B, n_out))
        aT, WT, dT = (jnp.swapaxes(t, 1, 2) for t in (a, W, d))
        v = jax.vmap
        dots[f"layer {l + 1} forward a·Wᵀ"] = [
            (v(lambda a, W: a @ W.T), (a, W)), (v(lambda a, WT: a @ WT), (a, WT)),
            (v(lambda W, aT: (W @ aT).T), (W, aT))]
        dots[f"layer {l + 1} weight gradient δᵀ·a"] = [
            (v(lambda d, a: d.T @ a), (d, a)), (v(lambda dT, a: dT @ a), (dT, a)),
            (v(lambda dT, aT: dT @ aT.T), (dT, aT)), (v(lambda d, aT: d.T @ aT.T), (d, aT))]
        if l > 0:  # the first layer's input gradient is never computed
            dots[f"layer {l + 1} input gradient δ·W"] = [
                (v(lambda d, W: d @ W), (d, W)), (v(lambda d, WT: d @ WT.T), (d, WT)),
                (v(lambda W, dT: (W.T @ dT).T), (W, dT))]
    return dots


def _floor(mode, quick, log, cores):
    """What the 4× goal at M = 32 needs of one core, on W1 (see `format_floor`).  One
    core trains a group of G = ⌈M / cores⌉ models; per model and step, in µs: the matmuls
    as jaxmlp writes them and each in its fastest layout, the optimizer update alone,
    and the shuffle (each model's permutation once per epoch, its minibatch gathers), all
    vmapped over the G models in one thread, each in a `lax.scan` of the epoch's
    n_batches steps, minus the same loop around nothing.  Everything else a step does
    (activations, bias gradients, the loss) is left out, so their sum is a floor under
    the step's time and `cores × fit step / floor` a ceiling on any sweep's speedup."""
    from jaxmlp import train as _train
    su = Setup("W1", quick)
    G = -(-FLOOR_M // cores)
    n, B, nb = su.rows, su.B, su.n_batches
    reps = mode["repeats"]
    key = jax.random.key(0)
    log(f"[W1] floor of a model-step, a group of {G} models on one core ...")
    noop = _per_step(lambda a: a, (jnp.zeros((G, B, su.spec["sizes"][1])),), nb, reps)
    per = lambda fn, args: max(0.0, _per_step(fn, args, nb, reps) - noop) / G  # noqa: E731
    dots = {}
    for name, forms in _floor_dots(su.spec["sizes"], B, G, key).items():
        ts = [per(fn, args) for fn, args in forms]
        dots[name] = {"as_written_us": ts[0] * 1e6, "best_us": min(ts) * 1e6}
    params = jm.sweeps.stack([su.fresh()[0]] * G)
    grads = jax.tree_util.tree_map(lambda a: jnp.full_like(a, 1e-3), params)
    update = jax.vmap(lambda p, o, g: _train._apply(su.opt, p, o, g))

    def optimizer(params, opt_state):  # the update alone, its state carried step to step
        return jax.lax.scan(lambda c, _: (update(*c, grads), None), (params, opt_state), None,
                            length=nb)[0]

    t_opt = _time_per_step(jax.jit(optimizer), (params, jax.vmap(su.opt.init)(params)),
                           nb, reps) / G
    x, y = su.x, su.y

    def shuffle(keys):  # each model's permutation, then its minibatch gathers
        idx = jax.vmap(lambda k: _train._permutation(k, n)[: nb * B].reshape(nb, B))(keys)

        def body(c, i):
            xb, yb = jax.lax.optimization_barrier((x[i], y[i]))
            return c + xb[0, 0, 0] + yb[0, 0, 0], None
        return jax.lax.scan(body, jnp.float32(0), jnp.swapaxes(idx, 0, 1))[0]

    t_shuffle = _time_per_step(jax.jit(shuffle), (jax.random.split(key, G),), nb, reps) / G
    # the whole step, as the sweep runs it (one group in one thread) and as fit runs it
    times = {}
    for name, run_one in (
            ("sweep", lambda e: jm.sweep(su.model, params, su.opt, su.x, su.y, epochs=e,
                                         batch_size=B, key=key, workers=1)[1]),
            ("fit", lambda e: jm.fit(su.model, su.fresh()[0], su.opt, su.x, su.y, epochs=e,
                                     batch_size=B, key=key)[1])):
        run_one(1)
        times[name] = _median(run_one(max(3, reps))["epoch_time"]) / nb
    # the FLOPs of those dots: forward and weight gradient in every layer, the input
    # gradient in all but the first
    sizes = su.spec["sizes"]
    flops = 2 * B * (3 * n_weights(sizes) - sizes[0] * sizes[1])
    mm = sum(v["as_written_us"] for v in dots.values())
    best = sum(v["best_us"] for v in dots.values())
    # the ceilings are `_with_ceiling`'s, against the fit (g)'s table divides by
    return {"workload": "W1", "models": FLOOR_M, "cores": cores, "group": G,
            "dots": dots, "matmul_flops": flops, "matmuls_as_written_us": mm,
            "matmuls_best_us": best,
            "optimizer_us": t_opt * 1e6, "shuffle_us": t_shuffle * 1e6,
            "sweep_group_step_us": times["sweep"] * 1e6 / G,
            "fit_step_pinned_us": times["fit"] * 1e6,
            "floor_us": best + (t_opt + t_shuffle) * 1e6}


def format_floor(fl) -> list:
    """(g)'s floor lines, from `_with_ceiling`'s dict."""
    lines = [f"(g) what 4× at M = {fl['models']} needs: W1, one core's group of "
             f"{fl['group']} models, µs per model and step (vmapped, in a process pinned "
             f"to one CPU)"]
    for name, v in fl["dots"].items():
        lines.append(f"    {name:<34}{v['as_written_us']:>7.2f} as written, "
                     f"{v['best_us']:>6.2f} best layout")
    rows = (("fit: one model's whole step (as in the table)", fl["fit_step_us"]),
            ("fit: the same, pinned to one CPU", fl["fit_step_pinned_us"]),
            ("sweep: a model's whole step in the group", fl["sweep_group_step_us"]),
            ("matmuls as jaxmlp writes them", fl["matmuls_as_written_us"]),
            ("matmuls, each in its best layout", fl["matmuls_best_us"]),
            ("optimizer update alone", fl["optimizer_us"]),
            ("shuffle: permutation and gathers", fl["shuffle_us"]),
            ("floor: best matmuls + optimizer + shuffle", fl["floor_us"]))
    lines += [f"  {k:<46}{v:>7.2f}" for k, v in rows]
    lines.append(f"  ceiling on the speedup: {fl['cores']} cores × {fl['fit_step_us']:.2f} / "
                 f"{fl['floor_us']:.2f} = {fl['ceiling_speedup']:.2f}× (4× needs a whole "
                 f"model-step of at most {fl['needed_for_4x_us']:.2f} µs per core)")
    lines.append(f"  were every matmul at the machine peak per core "
                 f"({fl['matmul_flops']:,} FLOPs in {fl['matmuls_at_peak_us']:.2f} µs): "
                 f"floor {fl['floor_at_peak_us']:.2f}, ceiling "
                 f"{fl['ceiling_at_peak_speedup']:.2f}×")
    return lines


def format_sweep(sw) -> list:
    lines = [f"(g) sweep: aggregate samples/s of M models vs M sequential fits, "
             f"{sw['cores']} cores, {sw['devices']} device(s); speedup = sweep aggregate / "
             f"fit (q1-q3), "
             f"GFLOP/s as a fraction of the machine peak ({sw['machine_peak_gflops']:.1f})",
             f"{'wl':<4}{'M':>5} {'variant':<18}{'epoch ms':>10}{'agg samples/s':>15}"
             f"{'speedup':>9} {'(q1-q3)':<14}{'GFLOP/s':>9}{'/peak':>7}{'compile s':>10}"]
    for r in sw["runs"]:
        for k, v in r["variants"].items():
            sp = v.get("speedup_over_sequential_fits")
            q = v.get("speedup_quartiles")
            lines.append(
                f"{r['workload']:<4}{r['models']:>5} {k:<18}{v['epoch_s'] * 1e3:>10.2f}"
                f"{v['aggregate_samples_per_s']:>15,.0f}"
                f"{'' if sp is None else f'{sp:.2f}':>9} "
                f"{'' if q is None else f'({q[0]:.2f}-{q[1]:.2f})':<14}"
                f"{v['gflops']:>9.1f}{v['fraction_of_machine_peak']:>7.2f}"
                f"{r['compile_s'][k]:>10.2f}")
    if sw.get("floor"):
        lines.append("")
        lines.extend(format_floor(sw["floor"]))
    return lines


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny budgets and fewer rows (same architectures): < 30 s")
    p.add_argument("--json", metavar="OUT", default=None, help="write the results here")
    p.add_argument("--workloads", default="W1,W2,W3", help="comma-separated subset of W1,W2,W3")
    p.add_argument("--no-csv", action="store_true", help="skip (e), the CSV loading measurement")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats (median)")
    p.add_argument("--devices", type=int, default=None,
                   help="run the data-mesh section over this many devices (default: all, "
                        "when more than one is visible)")
    p.add_argument("--host-devices", type=int, default=None,
                   help="force N host (CPU) devices via XLA_FLAGS; only when run as a script")
    p.add_argument("--cpus", type=int, default=None,
                   help="pin the process to its first N CPUs before JAX starts (XLA sizes "
                        "its thread pools from this); only when run as a script")
    p.add_argument("--xla-flags", default=None,
                   help="extra XLA_FLAGS, appended before JAX starts; only when run as a "
                        "script; write it with '=': --xla-flags=\"--xla_cpu_...=false\"")
    p.add_argument("--baseline", metavar="REV", default=None,
                   help="also run (f): fit throughput and the ten-learning-rate timing of "
                        "jaxmlp at git revision REV (before) against this checkout (after), "
                        "each in its own worker processes")
    p.add_argument("--after", metavar="REV", default=None,
                   help="with --baseline: the 'after' side is jaxmlp at git revision REV "
                        "(default: this checkout's working tree, as it is when (f) starts)")
    p.add_argument("--sweep", action="store_true",
                   help="also run (g): jm.sweep of M models against M sequential fits")
    p.add_argument("--only-sweep", action="store_true",
                   help="run section (g) alone (and the machine peak it is read against)")
    p.add_argument("--floor", action=argparse.BooleanOptionalAction, default=None,
                   help="with (g): measure the floor under a W1 model-step and the ceiling "
                        "it puts on the sweep's speedup (default: on, off with --quick)")
    p.add_argument("--only-before-after", action="store_true",
                   help="with --baseline: run section (f) alone (no (a)-(e), no machine peak)")
    args = p.parse_args(argv)
    wl = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    bad = [w for w in wl if w not in WORKLOADS]
    if bad or not wl:
        p.error(f"--workloads must be a subset of {list(WORKLOADS)}, got {args.workloads!r}")
    args.workloads = wl
    if (args.after or args.only_before_after) and not args.baseline:
        p.error("--after and --only-before-after need --baseline REV")
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.host_devices and args.host_devices > 1 and len(jax.devices()) < args.host_devices:
        raise SystemExit(
            f"--host-devices {args.host_devices}: JAX already started with "
            f"{len(jax.devices())} device(s); run this file as a script (python "
            f"scripts/benchmark.py ...) so XLA_FLAGS is set before JAX initialises")
    mode_name = "quick" if args.quick else "full"
    mode = dict(MODES[mode_name])
    if args.repeats is not None:
        mode["repeats"] = args.repeats
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    t_start = time.perf_counter()
    results = environment(mode_name, mode["repeats"])
    if args.only_before_after:
        results["before_after"] = bench_before_after(args.baseline, args.workloads, mode,
                                                     args.quick, log, after=args.after)
        return _report(results, args, t_start)
    results["machine_peak_n"] = mode["peak_n"]
    results["machine_peak_gflops"] = machine_peak(mode, mode["repeats"])
    if args.only_sweep:
        results["sweep"] = bench_sweep(mode, args.quick, log, results["machine_peak_gflops"],
                                       floor=args.floor)
        return _report(results, args, t_start)
    results["workloads"] = {}
    kept = {}
    for wid in args.workloads:
        su = Setup(wid, args.quick)
        results["workloads"][wid], step = run_workload(su, mode, log,
                                                         results["machine_peak_gflops"])
        kept[wid] = (su, step)
    n_dev = args.devices if args.devices is not None else len(jax.devices())
    n_dev = min(n_dev, len(jax.devices()))
    if args.devices is not None or len(jax.devices()) > 1:
        if n_dev < 2:
            results["parallel"] = {"skipped": f"{len(jax.devices())} device(s) visible "
                                              f"(use --host-devices N on CPU)",
                                   "devices": n_dev}
        else:
            par = {"devices": n_dev, "workloads": {}}
            for wid in ("W1", "W2"):
                if wid not in kept:
                    continue
                log(f"[{wid}] data mesh over {n_dev} devices ...")
                par["workloads"][wid] = bench_parallel(*kept[wid], n_dev, mode)
            results["parallel"] = par
    if not args.no_csv:
        results["csv"] = bench_csv(mode_name, min(mode["repeats"], 5), log)
    if args.baseline:
        results["before_after"] = bench_before_after(args.baseline, args.workloads, mode,
                                                     args.quick, log, after=args.after)
    if args.sweep:
        results["sweep"] = bench_sweep(mode, args.quick, log, results["machine_peak_gflops"],
                                       floor=args.floor)
    return _report(results, args, t_start)


def _report(results, args, t_start) -> dict:
    """Prints the table, writes --json, returns the results."""
    results["total_seconds"] = time.perf_counter() - t_start
    results["machine"]["loadavg_end"] = _loadavg()
    print(format_table(results))
    print(f"\ntotal {results['total_seconds']:.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    if sys.argv[1:] == ["--_worker"]:
        worker_main()  # a worker process of section (f)
    elif "--_floor" in sys.argv[1:]:
        floor_main(sys.argv[1:])  # the child process of (g)'s floor
    else:
        main()
