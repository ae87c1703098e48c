"""Many models in one compile: `sweep` trains M MLPs of one architecture at once.

    for m = 0 … M−1, at once:   θ_m ← fit's epoch(θ_m, s_m, key_m, η_m, λ_m)

The M models share the architecture (`MLP`), the data, the batch size, the number of
epochs and the early-stopping settings.  Each has its own initial parameters, its own key
(shuffling and dropout), its own optimizer numbers (learning rate, b1, eps, weight decay, a
schedule's values: M optimizers of one structure, e.g. ``[adam(r) for r in rates]``) and
its own penalty weights ``l1``/``l2``.  Arrays carry the model axis first: parameters
``W`` of shape (M, n_out, n_in), history arrays (M, epochs).

Model m of a sweep *is* the `fit` of model m: every epoch runs fit's own epoch function
(`jaxmlp.train`, one `lax.scan` over minibatches) under `jax.vmap` over the model axis, in
one jitted program for all M, and the host keeps each model's history with fit's own
bookkeeping (the same recording, early stopping and divergence pieces).  Per model:

- early stopping: a model whose validation loss has not improved for `patience` epochs
  stops; its parameters and optimizer state are frozen from then on (the vmapped program
  still runs its epoch and discards it: a `where`), and it hands back its best epoch's
  parameters, as `fit` does;
- divergence: the first non-finite step of model m (loss, gradient, update, parameters,
  optimizer or batch-norm state) is not applied, m is frozen with its last finite
  parameters and ``history["diverged"][m]`` says where and what; the others train on.
  A sweep never raises for one model's divergence (fit's ``on_divergence="stop"``);
- the one-epoch look-ahead, the fast path with a guarded re-run of an epoch that saw a
  non-finite value (only for the models that saw one), and checkpoint/resume (of the
  whole sweep, bitwise equal to an uninterrupted one) are fit's too.

Cores and devices: the model axis is cut into k = min(M, ``workers``) groups of ⌈M/k⌉ or
⌊M/k⌋ models (``workers`` defaulting to the usable CPU cores on a CPU, the devices on an
accelerator), and each group's epoch runs in its own thread (XLA runs a CPU
program on the thread that calls it, so k threads keep k cores busy, with the one device
JAX starts with and no flags).  When JAX has several devices, group i goes to device
i mod their number.  As in `fit`, one epoch is in flight while the host reads the last
(the worker threads queue epoch e + 1 behind epoch e).  The threads run with the caller's
JAX settings (`jax.enable_x64` and the like, which hold for one thread only).
``workers=1`` gives one program for all models.  Results do not depend on k beyond
rounding: each model's computation is the same, on a CPU bitwise in groups of two or more
(tests/test_sweeps.py checks it in float32), while a model alone in its group runs `fit`'s own
program, whose unbatched matmuls may round differently in the last bit.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import _validate as _v
from jaxmlp import optim as _optim
from jaxmlp import train as _train
from jaxmlp.losses import _penalty_value
from jaxmlp.model import MLP, _check_key, check_model, init_params

__all__ = ["sweep", "init_many", "stack", "unstack", "member", "best_model", "workers"]

_WHERE = "sweep"


# --------------------------------------------------------------------------- stacking

def stack(trees: Sequence) -> Any:
    """One pytree whose every leaf stacks the M trees' leaves on a new leading axis.

    In: a non-empty sequence of M pytrees of one structure (e.g. M params lists from
    `jaxmlp.init_params`), leaves of equal shapes.  Out: that structure with leaves of
    shape (M, *shape)."""
    trees = list(trees)
    if not trees:
        raise ValueError("stack: trees must hold at least one pytree, got an empty sequence")
    first, treedef = jax.tree_util.tree_flatten(trees[0])
    for i, tree in enumerate(trees[1:], 1):
        leaves, other = jax.tree_util.tree_flatten(tree)
        if other != treedef:
            raise ValueError(f"stack: trees[{i}] must have the structure of trees[0], got "
                             f"{_train._short(other)} and {_train._short(treedef)}")
        for a, b in zip(leaves, first):
            if np.shape(a) != np.shape(b):
                raise ValueError(f"stack: trees[{i}] must have the leaf shapes of trees[0], "
                                 f"got a leaf of shape {np.shape(a)} where trees[0] has "
                                 f"{np.shape(b)}")
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack(tree) -> list:
    """The inverse of `stack`: M pytrees, the m-th holding every leaf's slice m.

    In: a pytree whose leaves share a leading (model) axis of length M, e.g. the params
    `sweep` returns.  Out: a list of M pytrees (leaves of shape leaf.shape[1:])."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    if not leaves:
        return []
    return [jax.tree_util.tree_unflatten(treedef, [a[m] for a in leaves])
            for m in range(_model_axis(leaves, "unstack"))]


def _model_axis(leaves, where: str) -> int:
    """The leading (model) axis every leaf shares; a ValueError naming `where` if not."""
    n = {np.shape(a)[0] if np.ndim(a) else None for a in leaves}
    if len(n) != 1 or None in n:
        raise ValueError(f"{where}: every leaf must have the same leading (model) axis, got "
                         f"leading sizes {sorted(n, key=str)}")
    return n.pop()


def init_many(keys, model: MLP, scheme: Optional[str] = None, *, dtype=None) -> list:
    """M models' initial parameters, stacked: model m is ``init_params(keys[m], model,
    scheme, dtype=dtype)`` exactly.

    In: `keys`, an array of M ≥ 1 keys (``jax.random.split(key, M)``; raw uint32 keys of
    shape (M, 2) too).  Out: params with a leading model axis: W (M, n_out, n_in),
    b (M, n_out)."""
    keys = _keys(keys, None, "keys", where="init_many")
    return stack([init_params(keys[m], model, scheme, dtype=dtype)
                  for m in range(keys.shape[0])])


# --------------------------------------------------------------------------- checks

def _keys(key, n_models: Optional[int], name: str, *, where: str) -> jax.Array:
    """An array of keys, one per model: `key` as given when it holds n_models of them
    (typed, shape (M,), or raw uint32 (M, 2)), else a single key split into n_models."""
    if isinstance(key, (jax.Array, np.ndarray)) and not isinstance(key, jax.core.Tracer):
        typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        if typed and key.ndim == 1 or (not typed and key.dtype == np.uint32 and key.ndim == 2):
            keys = key if typed else jax.random.wrap_key_data(jnp.asarray(key))
            if keys.shape[0] < 1:
                raise ValueError(f"{where}: {name} must hold at least one key, got none")
            if n_models is not None and keys.shape[0] != n_models:
                raise ValueError(
                    f"{where}: {name} must be one key or one key per model ({n_models}, the "
                    f"params' leading axis), got {keys.shape[0]} keys")
            return keys
    if n_models is None:
        raise TypeError(f"{where}: {name} must be an array of keys (jax.random.split(key, M)), "
                        f"got {type(key).__name__} of shape {np.shape(key)}")
    return jax.random.split(_check_key(key, name, where=where), n_models)


def _n_models(model: MLP, params) -> int:
    """M, the leading axis of the stacked params, after checking their structure, shapes
    ((M, *shape) for every leaf of one model's params) and that every model's values are
    finite (a non-finite one is named with its model index)."""
    expected = model.layer_shapes()
    if not isinstance(params, list):
        raise TypeError(
            f"{_WHERE}: params must be a list of {len(expected)} dicts with a leading model "
            f"axis on every leaf (jaxmlp.sweeps.init_many), got {type(params).__name__}")
    if params and all(isinstance(p, (list, tuple)) for p in params):
        raise TypeError(
            f"{_WHERE}: params must be one stacked params list (a leading model axis on "
            f"every leaf), got a list of {len(params)} params lists: stack them with "
            f"jaxmlp.sweeps.stack(...)")
    if len(params) != len(expected):
        raise ValueError(f"{_WHERE}: params has {len(params)} layers but the model "
                         f"{model.sizes} has {len(expected)}")
    n = None
    for l, (layer, shapes) in enumerate(zip(params, expected)):
        if not isinstance(layer, dict):
            raise TypeError(f"{_WHERE}: params[{l}] must be a dict, got {type(layer).__name__}")
        if set(layer) != set(shapes):
            raise ValueError(
                f"{_WHERE}: params[{l}] must have keys {sorted(shapes)}, got {sorted(layer)}")
        for k, shape in shapes.items():
            leaf = layer[k]
            if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
                raise TypeError(f"{_WHERE}: params[{l}][{k!r}] must be an array, got "
                                f"{type(leaf).__name__}")
            got = tuple(leaf.shape)
            if n is None and len(got) == len(shape) + 1:
                n = got[0]
            if len(got) != len(shape) + 1 or got[1:] != shape or got[0] != n:
                want = f"({n}, {', '.join(map(str, shape))})" if n is not None else \
                    f"(M, {', '.join(map(str, shape))})"
                raise ValueError(
                    f"{_WHERE}: params[{l}][{k!r}] must have shape {want} (a leading model "
                    f"axis, then the layer's shape), got {got}")
            if not jnp.issubdtype(leaf.dtype, jnp.floating):
                raise TypeError(f"{_WHERE}: params[{l}][{k!r}] must be a float array, got "
                                f"dtype {leaf.dtype}")
    if n < 1:
        raise ValueError(f"{_WHERE}: params must hold at least one model (a leading axis of "
                         f"length >= 1), got 0")
    for l, layer in enumerate(params):
        for k, leaf in layer.items():
            ok = np.isfinite(np.asarray(leaf)).reshape(n, -1).all(axis=1)
            if not ok.all():
                m = int(np.argmin(ok))
                raise ValueError(
                    f"{_WHERE}: params[{l}][{k!r}] of model {m} contains NaN or Inf; "
                    f"parameters must be finite: start from init_many or a checkpoint")
    return n


def _optimizers(optimizer, n_models: int) -> list:
    """One optimizer per model: `optimizer` repeated, or the M given ones after checking
    that they share one structure (so one compiled program serves them all)."""
    if isinstance(optimizer, _optim.GradientTransformation):
        return [optimizer] * n_models
    if not isinstance(optimizer, (list, tuple)):
        _train._check_optimizer(optimizer, _WHERE)
    if len(optimizer) != n_models:
        raise ValueError(
            f"{_WHERE}: optimizer must be one optimizer or one per model ({n_models}, the "
            f"params' leading axis), got {len(optimizer)}")
    for m, opt in enumerate(optimizer):
        _train._check_optimizer(opt, f"{_WHERE}: optimizer[{m}] (model {m})")
        if opt != optimizer[0]:
            raise ValueError(
                f"{_WHERE}: optimizer[{m}] (model {m}) must have the structure of "
                f"optimizer[0] (the same factory and options; only numbers may differ), got "
                f"{_train._optimizer_text(_optim.describe(opt))} and "
                f"{_train._optimizer_text(_optim.describe(optimizer[0]))}")
    return list(optimizer)


def _penalties(value, name: str, n_models: int):
    """An l1/l2 override as an (M,) array (a number: the same for every model), or None
    (the model's own).  Each value must be a finite number >= 0."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or np.ndim(value) == 1:
        values = list(np.asarray(value).tolist()) if not isinstance(value, (list, tuple)) \
            else list(value)
        if len(values) != n_models:
            raise ValueError(
                f"{_WHERE}: {name} must be one number or one per model ({n_models}, the "
                f"params' leading axis), got {len(values)} values")
        for m, v in enumerate(values):
            _penalty_value(v, f"{name}[{m}] (model {m})", _WHERE)
        return jnp.asarray(np.asarray(values, float), jnp.result_type(float))
    if np.ndim(value) > 1:
        raise ValueError(
            f"{_WHERE}: {name} must be one number or one per model ({n_models}, the "
            f"params' leading axis), got an array of shape {np.shape(value)}")
    one = _penalty_value(value, name, _WHERE)
    return jnp.broadcast_to(one, (n_models,))


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def workers(n_models: int, workers=None) -> int:
    """How many groups of models a sweep of `n_models` trains concurrently: k = min(M,
    `workers`), `workers` defaulting to the usable CPU cores on a CPU and the number of
    devices on an accelerator.  The groups hold ⌈M/k⌉ or ⌊M/k⌋ consecutive models: one
    compiled program when k divides M, two otherwise (compiled side by side)."""
    n = _v.positive_int(n_models, "n_models", where="workers")
    if workers is None:
        devices = jax.devices()
        limit = _usable_cores() if devices[0].platform == "cpu" else len(devices)
    else:
        limit = _v.positive_int(workers, "workers", where=_WHERE)
    return min(limit, n)


class _Group(NamedTuple):
    """One worker's share of the models: the slice lo:hi of the model axis, on `device`."""

    lo: int
    hi: int
    device: Any


def _groups(n_models: int, n_workers) -> list:
    """k = `workers(M, n_workers)` groups of consecutive models, the first M mod k of
    them one model larger, group i on jax.devices()[i mod the device count]."""
    k = workers(n_models, n_workers)
    devices = jax.devices()
    size, extra = divmod(n_models, k)
    bounds = np.cumsum([0] + [size + (i < extra) for i in range(k)])
    return [_Group(int(bounds[i]), int(bounds[i + 1]), devices[i % len(devices)])
            for i in range(k)]


def _split(tree, groups) -> list:
    """`tree` (model axis first; None stays None) cut into the groups' slices, each on its
    group's device."""
    if tree is None:
        return [None] * len(groups)
    return [jax.device_put(jax.tree_util.tree_map(lambda a: a[g.lo:g.hi], tree), g.device)
            for g in groups]


def _join(trees):
    """The groups' trees concatenated back along the model axis (on the first group's
    device)."""
    if trees[0] is None:
        return None
    if len(trees) == 1:
        return trees[0]
    home = jax.tree_util.tree_leaves(trees[0])[0].devices().pop()
    trees = [jax.device_put(t, home) for t in trees]
    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *trees)


# --------------------------------------------------------------------------- one epoch

def _select(mask, new, old):
    """`new` where mask[m] else `old`, model by model (mask (M,) bool; leaves (M, …))."""
    def one(a, b):
        return jnp.where(mask.reshape((-1,) + (1,) * (jnp.ndim(a) - 1)), a, b)
    return jax.tree_util.tree_map(one, new, old)


_select_jit = jax.jit(_select)


def _sweep_epoch(params, opt_state, state, x, y, xv, yv, keys, epoch, pen, active, *,
                 guarded=False, **static):
    """fit's epoch for every model at once (vmapped over the model axis of params,
    opt_state, state, keys and pen; the data shared; `keys` of shape () is one key
    shared by every model).  A model that is not `active`
    (stopped early or diverged) keeps its params, opt_state and state, and its flag
    reads −1 (nothing to re-run)."""
    def one(p, o, s, k, pn):
        return _train._epoch(p, o, s, x, y, xv, yv, k, epoch, pn, guarded=guarded, **static)

    key_axis = 0 if keys.ndim else None
    if active.shape[0] == 1:
        # one model: fit's own program (no batched dots); an inactive model ends the loop
        take = lambda tree: jax.tree_util.tree_map(lambda a: a[0], tree)  # noqa: E731
        out = one(take(params), take(opt_state), take(state),
                  keys[0] if key_axis == 0 else keys, take(pen))
        return jax.tree_util.tree_map(lambda a: a[None], out)
    # one key for all ("shared" shuffle): unbatched, so every model gathers the same
    # minibatch and the first layer's matmuls are one wide GEMM over the models
    out = jax.vmap(one, in_axes=(0, 0, 0, key_axis, 0))(params, opt_state, state, keys, pen)
    kept = _select(active, (out.params, out.opt_state, out.state), (params, opt_state, state))
    return out._replace(params=kept[0], opt_state=kept[1], state=kept[2],
                        bad_step=jnp.where(active, out.bad_step, -1))


_run_sweep_epoch = jax.jit(_sweep_epoch, static_argnames=_train._STATIC)


class _Sweep(NamedTuple):
    """What `sweep` carries from epoch to epoch: on the devices, one tree per worker
    group (model axis first: the group's slice of the models), and for each model on
    the host (`runs`: fit's `_Run` bookkeeping, params not kept there)."""

    params: list
    opt_state: list
    state: list
    best_params: list
    best_state: list
    runs: list          # M `train._Run`s: history, best_val, since_best
    active: np.ndarray  # (M,) bool: still training
    has_best: np.ndarray  # (M,) bool: best_params[m] was set (early stopping)
    epoch_time: list    # the sweep's wall time per epoch


class _Context(NamedTuple):
    """The fixed inputs of every epoch, per group: the data on the group's device,
    its keys and penalties; the static arguments; the thread pool (None for one group:
    then the epoch is dispatched asynchronously, as fit does)."""

    groups: list
    data: list          # per group: (x, y, xv, yv) on its device
    keys: list          # per group: its slice of the keys, or the shared key
    pen: list           # per group: (l1, l2) slices or None
    static: dict
    pool: Any
    config: tuple       # the caller's JAX settings, for the worker threads (see _configured)


def _run_blocking(args, static, guarded=False):
    """One group's epoch, waited for (the worker thread's job: XLA runs it on this
    thread, so k threads keep k cores busy)."""
    return jax.block_until_ready(_run_sweep_epoch(*args, **static, guarded=guarded))


def _settings() -> tuple:
    """The calling thread's JAX settings that a context manager may have changed for it
    alone (`with jax.enable_x64(True):` and the like do not reach other threads)."""
    c = jax.config
    return (c.jax_enable_x64, c.jax_default_matmul_precision, c.jax_numpy_rank_promotion,
            c.jax_numpy_dtype_promotion)


@contextlib.contextmanager
def _configured(config):
    """A worker thread with the caller's settings (`_settings`)."""
    x64, precision, rank, dtype = config
    with jax.enable_x64(x64), jax.default_matmul_precision(precision), \
            jax.numpy_rank_promotion(rank), jax.numpy_dtype_promotion(dtype):
        yield


def _group_args(ctx: _Context, g, trees, epoch, act):
    """Group g's arguments of `_run_sweep_epoch`; `trees` its (params, opt_state, state)."""
    return (*trees, *ctx.data[g], ctx.keys[g], np.int32(epoch), ctx.pen[g],
            jax.device_put(act, ctx.groups[g].device))


def _group_job(ctx: _Context, g, source, epoch, act):
    """A worker thread's job: group g's epoch from `source`, its (params, opt_state,
    state) or the previous epoch's job (a Future, waited for here: the look-ahead).
    Out: (args, out)."""
    if hasattr(source, "result"):
        out = source.result()[1]
        source = (out.params, out.opt_state, out.state)
    with _configured(ctx.config):
        args = _group_args(ctx, g, source, epoch, act)
        return args, _run_blocking(args, ctx.static)


def _launch(ctx: _Context, active, trees, epoch, after=None) -> list:
    """Starts epoch `epoch` for every group with an active model, from `trees` =
    (params, opt_state, state), lists over the groups, or, for the look-ahead, from the
    results of `after`, the previous epoch's jobs.  Out: per group a job: (args, out)
    with one group (dispatched asynchronously, as fit does) or a Future of it (a worker
    thread's); None for a group whose models have all stopped (it is not run)."""
    jobs = []
    for g, grp in enumerate(ctx.groups):
        act = active[grp.lo:grp.hi]
        if not act.any():
            jobs.append(None)
            continue
        if after is None:
            source = tuple(t[g] for t in trees)
        elif hasattr(after[g], "result"):  # a worker thread's job, maybe not done
            source = after[g]
        else:  # a job done (or dispatched asynchronously): its outputs
            out = after[g][1]
            source = (out.params, out.opt_state, out.state)
        if ctx.pool is not None:
            jobs.append(ctx.pool.submit(_group_job, ctx, g, source, epoch, act))
            continue
        args = _group_args(ctx, g, source, epoch, act)
        jobs.append((args, _run_sweep_epoch(*args, **ctx.static)))
    return jobs


def _result(job):
    """A job's (args, out), waiting for a worker thread's."""
    return job.result() if hasattr(job, "result") else job


def _drop(jobs) -> None:
    """Lets look-ahead jobs that will not be used finish (so they do not compete with
    their replacements for the cores)."""
    for job in jobs or ():
        if job is not None:
            _result(job)


def _read(ctx: _Context, jobs, sw: _Sweep):
    """fit's `_read_epoch` for the groups: one transfer of every group's flags, losses
    and rates; the models whose fast path saw a non-finite value (flag −2) take the
    guarded re-run's results (their groups re-run, only then).  Out: (outs, bad, cause,
    train_loss, val, rate, rerun): outs per group (None for a group not run), host
    arrays of shape (M,) (−1 and NaN for models not run), rerun True after a re-run."""
    jobs = [None if job is None else _result(job) for job in jobs]
    outs = [None if job is None else job[1] for job in jobs]
    n = len(sw.runs)
    bad, cause = np.full(n, -1, np.int32), np.zeros(n, np.int32)
    train_loss, val, rate = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    has_rate = False

    def gather(g_outs, with_cause):
        nonlocal has_rate
        parts = {g: (o.bad_step, o.cause, o.train_loss, o.val_loss,
                     _optim.current_learning_rate(o.opt_state))
                 for g, o in g_outs.items()}
        for g, (b, c, t, v, r) in jax.device_get(parts).items():
            sl = slice(ctx.groups[g].lo, ctx.groups[g].hi)
            bad[sl], train_loss[sl], val[sl] = b, t, v
            if with_cause:
                cause[sl] = c
            if r is not None:
                rate[sl], has_rate = r, True

    gather({g: o for g, o in enumerate(outs) if o is not None}, False)
    again = [g for g, o in enumerate(outs) if o is not None
             and (bad[ctx.groups[g].lo:ctx.groups[g].hi] == -2).any()]
    if again:
        def guarded(g):
            with _configured(ctx.config):
                return _run_blocking(jobs[g][0], ctx.static, guarded=True)
        redo = list(ctx.pool.map(guarded, again)) if ctx.pool else [guarded(g) for g in again]
        for g, out in zip(again, redo):
            grp = ctx.groups[g]
            mask = jax.device_put(bad[grp.lo:grp.hi] == -2, grp.device)
            outs[g] = _select_jit(mask, out, outs[g])
        gather({g: outs[g] for g in again}, True)
    return outs, bad, cause, train_loss, val, rate if has_rate else None, bool(again)


def _book(sw: _Sweep, epoch, bad, cause, train_loss, val, rate, elapsed, *, validated,
          min_delta, patience) -> tuple:
    """fit's per-epoch bookkeeping for each active model (`_diverge` with
    on_divergence="stop", `_record_epoch`, `_check_stop`).  Out: (improved, stopped),
    (M,) bool masks of the models whose validation loss improved (their params become
    the best) and of those that stopped at this epoch."""
    n = len(sw.runs)
    improved, stopped = np.zeros(n, bool), np.zeros(n, bool)
    for m in np.flatnonzero(sw.active):
        run = sw.runs[m]
        if bad[m] >= 0:
            _train._diverge(run, epoch, int(bad[m]), int(cause[m]), on_divergence="stop",
                            save=None)
            stopped[m] = True
            continue
        before = run.history["best_epoch"]
        r = None if rate is None else np.asarray(rate)[m]
        run, logs = _train._record_epoch(run, train_loss[m], val[m], r, elapsed,
                                         validated=validated, min_delta=min_delta)
        improved[m] = run.history["best_epoch"] != before
        _train._check_stop(run, logs, None, patience)
        stopped[m] = run.history["stopped_early"]
        sw.runs[m] = run
    return improved, stopped


def sweep(model: MLP, params, optimizer, x, y, *, epochs: int, batch_size: Optional[int],
          key, validation=None, patience: Optional[int] = None, min_delta: float = 0.0,
          grad: str = "manual", callback: Optional[Callable] = None, state=None,
          unroll: int = 1, workers=None, checkpoint_dir=None, checkpoint_every: int = 1,
          keep: int = 2, l1=None, l2=None, shuffle: str = "per_model"):
    """Trains M models of one architecture on (x, y) at once; returns `(params, history)`.

    Model m's result equals ``fit(model, params_m, optimizer_m, x, y, key=key_m, l1=l1_m,
    l2=l2_m, …, on_divergence="stop")`` (float64: to 1e-12; the summation order inside
    a vmapped matmul may differ in the last bits).

    Args:
      model: the `MLP` (one architecture for all).
      params: the M models' parameters stacked on a leading model axis (W (M, n_out,
        n_in), b (M, n_out)): `init_many(jax.random.split(key, M), model)`, or
        `stack([...])` of M params lists.  M ≥ 1 is this axis' length.
      optimizer: one `GradientTransformation` for all, or a list of M of one structure
        (the same factory and options; numbers may differ, e.g. ``[adam(r) for r in
        (1e-3, 3e-3)]``): their states are stacked, so one compiled epoch serves all.
      x, y, epochs, batch_size, validation: as for `fit`, shared by all models.
      patience, min_delta, grad, unroll, checkpoint_every, keep: as for `fit`, shared.
      key: one key (model m uses ``jax.random.split(key, M)[m]``) or an array of M keys;
        with ``shuffle="shared"``, one key that every model uses.
      callback: called after every epoch as callback(epoch, logs), logs a dict of (M,)
        NumPy arrays `train_loss`, `val_loss`, `learning_rate` (NaN for a model that no
        longer trains) and `active` (bool), and the float `epoch_time`; returning True
        stops every model.
      state: batch-norm running statistics every model starts from (default
        `init_state(model)`).
      workers: how many groups of models train concurrently, each in its own thread
        (and on its own device when JAX has several): None for every usable CPU core
        (every device on an accelerator), 1 for a single program; see `workers`.
      checkpoint_dir: a folder for resumable sweeps, as in `fit`: the whole sweep (every
        model's params, optimizer state, best params, history) is saved atomically; called
        again with the same arguments, `sweep` resumes and ends bitwise equal to an
        uninterrupted sweep; another sweep's folder is refused, naming what differs.
      l1, l2: penalty weights overriding the model's: None (the model's), one number for
        all, or M numbers (each finite and ≥ 0), passed to the compiled epoch as data.
      shuffle: "per_model" (each model its own key: its own minibatch order and dropout
        masks) or "shared" (every model trains with `key` itself: the same minibatches
        in the same order, so model m equals ``fit(…, key=key)``; the first layer's
        matmuls of all models become one wide matmul).

    Returns:
      (params, history): params stacked (model axis first): each model's best epoch's
      with `patience`, else its last (after a divergence, its last finite ones).
      history: `train_loss`, `val_loss`, `learning_rate`: float arrays (M, E), E the
      number of epochs the sweep ran, NaN after a model stopped (`val_loss` (M, 0)
      without validation); `epochs_run`, `best_epoch` (int (M,)), `stopped_early` (bool
      (M,)), `diverged` (a list of M: None, or fit's dict with epoch, step, cause and
      what), `epoch_time` (E floats: the sweep's wall time per epoch), `models` (M) and
      `state` (final batch-norm statistics, stacked, or None).  `member(params,
      history, m)` gives model m's in fit's form; `best_model` picks the best.
    """
    check_model(model, where=_WHERE)
    n = _n_models(model, params)
    opts = _optimizers(optimizer, n)
    _v.one_of(shuffle, "shuffle", ("per_model", "shared"), where=_WHERE)
    if shuffle == "shared":
        keys = _check_key(key, "key", where=_WHERE)
    else:
        keys = _keys(key, n, "key", where=_WHERE)
    pen = (_penalties(l1, "l1", n), _penalties(l2, "l2", n))
    first = [{k: v[0] for k, v in layer.items()} for layer in params]
    plan = _train._prepare(model, first, opts[0], x, y, epochs=epochs, batch_size=batch_size,
                           key=keys[0] if keys.ndim else keys, validation=validation,
                           patience=patience,
                           min_delta=min_delta, grad=grad, state=state, on_divergence="stop",
                           unroll=unroll, checkpoint_every=checkpoint_every, keep=keep,
                           l1=None, l2=None, where=_WHERE)
    dtype = first[0]["W"].dtype
    for m, opt in enumerate(opts[1:], 1):
        _train._check_hyperparameters(opt, dtype, fn=f"{_WHERE}: model {m}")
    groups = _groups(n, workers)
    states = None if plan.state is None else stack([plan.state] * n)
    opt_state = stack([opt.init(p) for opt, p in zip(opts, unstack(params))])
    runs = [_train._new_run(None, None, None) for _ in range(n)]
    whole = (params, opt_state, states, params, states, np.ones(n, bool), np.zeros(n, bool),
             [])
    save = None
    if checkpoint_dir is not None:
        signature = dict(_signature(plan, opts, grad, pen, n), shuffle=shuffle)
        whole, runs = _resume(whole, runs, checkpoint_dir, keys, signature)
        save = lambda sw, e: _save(sw, e, directory=checkpoint_dir, keys=keys,  # noqa: E731
                                   keep=plan.keep, signature=signature)
    p, o, st, bp, bs, active, has_best, times = whole
    sw = _Sweep(_split(p, groups), _split(o, groups), _split(st, groups), _split(bp, groups),
                _split(bs, groups), runs, active, has_best, times)
    data = [jax.device_put((plan.x, plan.y, plan.xv, plan.yv), g.device) for g in groups]
    ctx = _Context(
        groups, data,
        [jax.device_put(keys[g.lo:g.hi] if keys.ndim else keys, g.device) for g in groups],
        [jax.device_put(tuple(None if v is None else v[g.lo:g.hi] for v in pen), g.device)
         for g in groups],
        dict(model=model, optimizer=opts[0], grad=grad, batch_size=plan.batch_size,
             n_batches=plan.n_batches, unroll=plan.unroll, mesh=None),
        # 2k threads: k run epoch e while k wait on them with epoch e + 1 (the look-ahead)
        ThreadPoolExecutor(2 * len(groups)) if len(groups) > 1 else None, _settings())
    try:
        sw = _loop(sw, ctx, plan, callback=callback, min_delta=min_delta, save=save)
    finally:
        if ctx.pool is not None:
            ctx.pool.shutdown()
    return _finish(sw, plan.patience)


def _loop(sw: _Sweep, ctx: _Context, plan, *, callback, min_delta, save) -> _Sweep:
    """fit's loop for M models, with fit's look-ahead: when epochs are short, epoch
    e + 1 starts (dispatched, or queued in the worker threads behind epoch e) before
    epoch e is read, so the cores do not wait for the host's bookkeeping; a model that
    stops meanwhile has its look-ahead result replaced by what it stopped with."""
    epoch, ahead, pending = len(sw.epoch_time), False, None
    t0 = time.perf_counter()
    while epoch < plan.epochs and sw.active.any():
        jobs = pending if pending is not None else _launch(
            ctx, sw.active, (sw.params, sw.opt_state, sw.state), epoch)
        pending = None
        if ahead and epoch + 1 < plan.epochs:
            pending = _launch(ctx, sw.active, None, epoch + 1, after=jobs)
        outs, bad, cause, train_loss, val, rate, rerun = _read(ctx, jobs, sw)
        t1 = time.perf_counter()
        elapsed, t0 = t1 - t0, t1
        ahead = elapsed < _train._AHEAD_S
        keep = lambda new, old: [o if n is None else n for n, o in zip(new, old)]  # noqa
        sw = sw._replace(params=keep([o and o.params for o in outs], sw.params),
                         opt_state=keep([o and o.opt_state for o in outs], sw.opt_state),
                         state=keep([None if o is None else o.state for o in outs],
                                    sw.state))
        sw.epoch_time.append(elapsed)
        improved, stopped = _book(sw, epoch, bad, cause, train_loss, val, rate, elapsed,
                                  validated=plan.xv is not None, min_delta=min_delta,
                                  patience=plan.patience)
        if improved.any():
            sw = _keep_best(sw, ctx.groups, improved)
        active = sw.active & ~stopped
        if callback is not None:
            logs = _logs(sw, epoch, train_loss, val, rate, elapsed)
            if callback(epoch, logs):
                for m in np.flatnonzero(active):
                    sw.runs[m].history["stopped_early"] = True
                active = np.zeros_like(active)
        sw = sw._replace(active=active)
        if rerun or not active.any():  # the look-ahead ran from the fast path's results
            _drop(pending)
            pending = None
        elif pending is not None and stopped.any():  # it ran them on: undo it for them
            pending = _unrun(ctx, pending, outs, stopped, active)
        epoch += 1
        if save is not None and (epoch % plan.checkpoint_every == 0 or epoch == plan.epochs
                                 or not active.any()):
            save(sw, epoch)
    return sw


def _unrun(ctx: _Context, pending, outs, stopped, active) -> list:
    """The look-ahead jobs with the models that stopped at this epoch put back to what
    they stopped with (their look-ahead epoch is discarded); waits for those groups'."""
    fixed = []
    for g, (grp, job) in enumerate(zip(ctx.groups, pending)):
        mask = stopped[grp.lo:grp.hi]
        if job is None or not mask.any():
            fixed.append(job)
            continue
        args, out = _result(job)
        out = _select_jit(jax.device_put(mask, grp.device), outs[g], out)
        fixed.append((args[:-1] + (jax.device_put(active[grp.lo:grp.hi], grp.device),),
                      out))
    return fixed


def _keep_best(sw: _Sweep, groups, improved) -> _Sweep:
    """The improved models' params and state become their best (group by group)."""
    best_params, best_state = list(sw.best_params), list(sw.best_state)
    for g, grp in enumerate(groups):
        mask = improved[grp.lo:grp.hi]
        if mask.any():
            best_params[g], best_state[g] = _select_jit(
                jax.device_put(mask, grp.device), (sw.params[g], sw.state[g]),
                (best_params[g], best_state[g]))
    return sw._replace(best_params=best_params, best_state=best_state,
                       has_best=sw.has_best | improved)


def _logs(sw: _Sweep, epoch, train_loss, val, rate, elapsed) -> dict:
    """The callback's logs: (M,) arrays with NaN for models that did not train."""
    act = sw.active
    nan = np.full(act.shape, np.nan)
    r = nan if rate is None else np.where(act, np.asarray(rate, float), np.nan)
    return {"train_loss": np.where(act, train_loss, np.nan), "val_loss":
            np.where(act, val, np.nan), "learning_rate": r, "active": act.copy(),
            "epoch_time": elapsed}


def _finish(sw: _Sweep, patience):
    """sweep's return value: per model, fit's choice of parameters (the best epoch's
    with patience unless it diverged, else the last) and the history arrays."""
    runs = sw.runs
    diverged = [r.history.get("diverged") for r in runs]
    use_best = np.asarray([patience is not None and sw.has_best[m] and diverged[m] is None
                           for m in range(len(runs))])
    params, state = _join(sw.params), _join(sw.state)
    if use_best.any():
        params, state = _select_jit(jnp.asarray(use_best),
                                    (_join(sw.best_params), _join(sw.best_state)),
                                    (params, state))
    n, e = len(runs), max(r.history["epochs_run"] for r in runs)

    def table(key, width):
        out = np.full((n, width), np.nan)
        for m, r in enumerate(runs):
            vals = [np.nan if v is None else v for v in r.history[key]]
            out[m, :len(vals)] = vals
        return out

    validated = any(r.history["val_loss"] for r in runs)
    best_epoch = [r.history["best_epoch"] if r.history["best_epoch"] is not None
                  else max(r.history["epochs_run"] - 1, 0) for r in runs]
    history = {
        "train_loss": table("train_loss", e),
        "val_loss": table("val_loss", e) if validated else np.empty((n, 0)),
        "learning_rate": table("learning_rate", e),
        "epochs_run": np.asarray([r.history["epochs_run"] for r in runs]),
        "best_epoch": np.asarray(best_epoch),
        "stopped_early": np.asarray([r.history["stopped_early"] for r in runs]),
        "diverged": diverged,
        "epoch_time": list(sw.epoch_time),
        "models": n,
        "state": state,
    }
    return params, history


# --------------------------------------------------------------------------- results

def _sweep_history(history, where: str) -> int:
    """M, after checking that `history` is the one `sweep` returns (a TypeError
    otherwise: `fit`'s history has no model axis)."""
    if not isinstance(history, dict) or "models" not in history:
        raise TypeError(f"{where}: history must be the history jaxmlp.sweep returns (a dict "
                        f"with 'models'), got "
                        + (f"a dict with keys {sorted(history)}" if isinstance(history, dict)
                           else type(history).__name__))
    return history["models"]


def member(params, history: dict, m: int):
    """Model m of a sweep in `fit`'s form: (params_m, history_m), history_m with lists
    `train_loss`, `val_loss`, `learning_rate`, `epoch_time` (the sweep's epoch times),
    `best_epoch`, `stopped_early`, `epochs_run`, `state` and, after a divergence,
    `diverged`."""
    n = _sweep_history(history, "member")
    m = _v.integer(m, "m", where="member", low=0)
    if m >= n:
        raise ValueError(f"member: m must be a model index in [0, {n}), got {m}")
    return _take(params, m), _member_history(history, m)


def _take(tree, m, where: str = "unstack"):
    """Slice m of every leaf of `tree` (model axis first): `unstack(tree)[m]`, with its
    check of the model axis, without slicing the other M − 1 models."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    if leaves:
        _model_axis(leaves, where)
    return jax.tree_util.tree_unflatten(treedef, [a[m] for a in leaves])


def _member_history(history: dict, m: int) -> dict:
    """Model m's history in fit's form (see `member`); m already checked."""
    e = int(history["epochs_run"][m])
    rates = history["learning_rate"][m, :e]
    out = {"train_loss": history["train_loss"][m, :e].tolist(),
           "val_loss": history["val_loss"][m, :e].tolist(),
           "epoch_time": list(history["epoch_time"][:e]),
           "learning_rate": [None if np.isnan(r) else float(r) for r in rates],
           "best_epoch": int(history["best_epoch"][m]),
           "stopped_early": bool(history["stopped_early"][m]),
           "epochs_run": e,
           "state": None if history["state"] is None else _take(history["state"], m)}
    if history["diverged"][m] is not None:
        out["diverged"] = history["diverged"][m]
    return out


def best_model(params, history: dict):
    """The model with the lowest validation loss at its best epoch (without validation:
    the lowest last training loss), among those that did not diverge.

    Out: (m, params_m).  ValueError when every model diverged."""
    n = _sweep_history(history, "best_model")
    score = np.full(n, np.inf)
    for m in range(n):
        e = int(history["epochs_run"][m])
        if history["diverged"][m] is not None or e == 0:
            continue
        if history["val_loss"].shape[1]:
            score[m] = history["val_loss"][m, int(history["best_epoch"][m])]
        else:
            score[m] = history["train_loss"][m, e - 1]
    if not np.isfinite(score).any():
        raise ValueError("best_model: every model of the sweep diverged (or none trained); "
                         "there is no best model")
    m = int(np.argmin(score))
    return m, _take(params, m)


# --------------------------------------------------------------------------- checkpoints

def _signature(plan, opts, grad, pen, n) -> dict:
    """fit's fingerprint with one optimizer description per model, M and the penalty
    vectors."""
    sig = _train._signature(plan._replace(pen=(None, None)), opts[0], grad)
    sig["optimizer"] = [_optim.describe(o) for o in opts]
    sig["models"] = n
    sig["penalties"] = {name: None if v is None else np.asarray(v, float).tolist()
                        for name, v in zip(("l1", "l2"), pen)}
    return sig


def _save(sw: _Sweep, epoch, *, directory, keys, keep, signature):
    from jaxmlp import checkpoint
    if jax.process_index() != 0:
        return
    runs = [{"history": {k: v for k, v in r.history.items() if k != "state"},
             "best_val": None if math.isinf(r.best_val) else r.best_val,
             "since_best": r.since_best} for r in sw.runs]
    extra = {"sweep": signature, "runs": runs, "active": sw.active.tolist(),
             "has_best": sw.has_best.tolist(), "epoch_time": list(sw.epoch_time)}
    path = checkpoint.checkpoint_path(directory, epoch)
    checkpoint.save(path, params=_join(sw.params), opt_state=_join(sw.opt_state),
                    state=_join(sw.state), step=epoch, key=keys, extra=extra,
                    aux={"params": _join(sw.best_params), "state": _join(sw.best_state)})
    checkpoint.prune(directory, keep)


def _resume(whole, runs, directory, keys, signature):
    """The newest valid checkpoint of `directory` as (whole, runs), `whole` = (params,
    opt_state, state, best_params, best_state, active, has_best, epoch_time) with the
    model axis whole; the given (whole, runs) if there is none.  Another sweep's
    (settings, data, keys or optimizer state) is refused."""
    ckpt = _train._latest_matching(directory, signature, keys, whole[1], where=_WHERE,
                                   noun="key" if keys.ndim == 0 else "set of keys")
    if ckpt is None:
        return whole, runs
    runs = []
    for r in ckpt.extra["runs"]:
        history = dict(r["history"], state=None)
        runs.append(_train._Run(None, None, None, history,
                                math.inf if r["best_val"] is None else r["best_val"],
                                None, None, r["since_best"]))
    aux = ckpt.aux or {}
    return (ckpt.params, ckpt.opt_state, ckpt.state, aux.get("params"), aux.get("state"),
            np.asarray(ckpt.extra["active"], bool), np.asarray(ckpt.extra["has_best"], bool),
            list(ckpt.extra["epoch_time"])), runs
