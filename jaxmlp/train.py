"""Training: one pure step, and `fit`, whose every epoch is a single compiled `lax.scan`.

    (L, g) = value_and_grad(model, θ, x_b, y_b)       manual δ (or `grad="autodiff"`)
    (u, s) = optimizer.update(g, s, θ)
    θ ← θ + u

`fit` shuffles the training set every epoch with `fold_in(key, epoch)`, cuts it into
⌊N / batch_size⌋ minibatches and runs them through one jitted `lax.scan`: the device never
waits for Python inside an epoch.  **The last partial batch is dropped** (N mod batch_size
examples, a different random subset every epoch), which keeps every step the same shape
and the epoch one compiled program; `batch_size=None` (or ≥ N) is full-batch gradient
descent.

Per epoch the history records:
- `train_loss`: the mean over the epoch's minibatches of the training objective
  (data loss + penalties, training mode: what the optimizer minimised);
- `val_loss`: the data loss on `validation` in inference mode (no dropout, batch-norm
  running statistics, no penalty term: the fit to held-out data), or nothing without
  validation.

Divergence: after every epoch `fit` checks that the epoch's losses, its parameters, the
optimizer state and the batch-norm statistics are finite; if not, it re-runs that epoch
(deterministically, from the same start) with a check at every step of the loss, the
gradient, the update, and the parameters, optimizer state and statistics *after* the
update.  The first step where any of them is non-finite is not applied (nor any after it),
so the parameters handed back are the last finite ones, from before that step (the fast
path pays nothing per step for this).  A finite loss, however large, is not divergence.
`fit` then raises `DivergenceError` naming the epoch, the step and what was non-finite
(`CAUSES`; it carries `params`, `opt_state`, `state` and `history`), or with
`on_divergence="stop"` returns them with `history["diverged"] = {"epoch": e, "step": s,
"cause": c, "what": CAUSES[c]}`.  Parameters that are not finite to begin with are refused
before training (`params[0]['W'] contains NaN`), as are hyperparameters that overflow the
parameters' dtype and schedules that return NaN, Inf, a negative rate or a vector at
count 0; a traced schedule's bad rate later becomes a NaN update, caught as above.
"""
from __future__ import annotations

import functools
import hashlib
import math
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import optim as _optim
from jaxmlp import parallel as _parallel
from jaxmlp._validate import check_finite
from jaxmlp import _validate as _v
from jaxmlp.backprop import backprop_pass
from jaxmlp.losses import check_inputs, check_penalties, data_loss, objective, prepare_targets
from jaxmlp.model import (MLP, _check_key, check_mode, check_model, check_params, check_x,
                          forward_pass, init_state)

Array = jax.Array

__all__ = ["make_train_step", "fit", "DivergenceError", "GRADS", "CAUSES"]

GRADS = ("manual", "autodiff")


#: What `fit`'s guard found non-finite at the first bad step, by code (0: nothing).
CAUSES = {
    1: "non-finite loss",
    2: "non-finite gradient",
    3: "non-finite update (the learning rate times the step overflows the parameters' "
       "dtype, or a schedule returned NaN, Inf or a negative rate)",
    4: "non-finite parameters after the update (they overflowed)",
    5: "non-finite optimizer state after the update (a moment overflowed)",
    6: "non-finite batch-norm running statistics",
}


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss, gradient, update, parameter or state.

    Attributes: epoch and step (0-based) of the first bad step, the step whose loss or
    gradient was non-finite or whose update made something non-finite; `cause`, what
    was (one of `CAUSES`); `params`, `opt_state` and `state`, the last finite ones (from
    before that step: it is not applied); `history` up to that epoch.
    """

    def __init__(self, epoch, step, params, opt_state, state, history, cause=1, note=""):
        what = CAUSES.get(cause, "non-finite value")
        super().__init__(
            f"training diverged at epoch {epoch}, step {step}: {what}; "
            f"the last finite parameters (before that step) are kept (this error's "
            f".params). Try a smaller learning rate or gradient clipping "
            f"(jaxmlp.optim.clip_by_global_norm).{note}")
        self.epoch, self.step, self.cause = epoch, step, what
        self.params, self.opt_state, self.state, self.history = params, opt_state, state, history


def _check_optimizer(optimizer, where: str):
    if not isinstance(optimizer, _optim.GradientTransformation):
        raise TypeError(
            f"{where}: optimizer must be a jaxmlp.optim.GradientTransformation (e.g. "
            f"jaxmlp.optim.adam(1e-3)), got {type(optimizer).__name__}")


def _check_opt_state(optimizer, params, opt_state, name="opt_state", *, where: str):
    """TypeError unless `opt_state` has the structure, shapes and dtypes of
    `optimizer.init(params)` (checked on abstract values: no compute)."""
    name = f"{where}: {name}"
    expected = jax.eval_shape(optimizer.init, params)
    got_def = jax.tree_util.tree_structure(opt_state)
    want_def = jax.tree_util.tree_structure(expected)
    if got_def != want_def:
        raise TypeError(
            f"{name} does not belong to this optimizer: expected the structure of "
            f"optimizer.init(params), {_short(want_def)}, got {_short(got_def)} (an "
            f"opt_state of another optimizer, or of other params?)")
    for got, want in zip(jax.tree_util.tree_leaves(opt_state),
                         jax.tree_util.tree_leaves(expected)):
        if jnp.shape(got) != want.shape or jnp.result_type(got) != want.dtype:
            raise TypeError(
                f"{name} does not belong to these params: a leaf of shape "
                f"{jnp.shape(got)} and dtype {jnp.result_type(got)} where "
                f"optimizer.init(params) has {want.shape} {want.dtype}")


def _short(treedef, limit=160) -> str:
    text = str(treedef)
    return text if len(text) <= limit else text[:limit] + "…"


#: The `where` of the messages of the step that `make_train_step` returns.
_STEP = "make_train_step's step"


def _check_grad(grad, where: str):
    _v.one_of(grad, "grad", GRADS, where=where)


def _grad_fn(model: MLP, grad: str) -> Callable:
    """(params, x, y, key, state, pen) -> (loss, grads, new_state), for prepared x and y;
    `pen` the (l1, l2) penalty overrides (`losses.check_penalties`), None for the model's."""
    if grad == "manual":
        def f(params, x, y, key, state, pen=None):
            out = backprop_pass(model, params, x, y, key=key, state=state, pen=pen)
            return out.loss, out.grads, out.state
    else:
        def f(params, x, y, key, state, pen=None):
            (loss, new_state), g = jax.value_and_grad(objective, argnums=1, has_aux=True)(
                model, params, x, y, True, key, state, pen)
            return loss, g, new_state
    return f


def _apply(optimizer, params, opt_state, grads):
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return _optim.apply_updates(params, updates), opt_state


# --------------------------------------------------------------------------- one step

def make_train_step(model: MLP, optimizer, *, grad: str = "manual", donate: bool = True,
                    mesh=None):
    """The jitted single training step, for users' own loops.

        step(params, opt_state, x, y, *, key=None, state=None, l1=None, l2=None)
            -> (params, opt_state, loss)               (+ new state with batch norm)

    Args:
      model: the `MLP`.
      optimizer: a `jaxmlp.optim.GradientTransformation`.
      grad: `"manual"` (the δ recursion) or `"autodiff"` (`jax.value_and_grad` of the
        same loss), for side-by-side checks.
      donate: donate the params and opt_state buffers to the step (saves a copy; the
        arrays passed in are invalid afterwards, so always use the returned ones).
      mesh: a `jax.sharding.Mesh` with an axis "data": x and y are sharded along their
        batch axis over it (the batch must divide evenly), params are expected replicated
        (`jaxmlp.parallel.replicate`); the result equals the single-device step.

    The step checks shapes when it traces (once per new shape: no cost per call); x is
    (batch, n_in), y as for `jaxmlp.loss`; `key` is needed when the model has dropout,
    `state` (from `jaxmlp.init_state`) when it has batch norm.

    The optimizer's numbers (learning rate, b1, eps, weight decay, a schedule's values)
    are read from `opt_state` (`optimizer.init(params)` puts them there): two calls with
    optimizers that differ only in their numbers, e.g. `adam(1e-3)` and `adam(3e-3)`,
    return the same jitted step, compiled once.  A rate that is only known at run time
    (traced) and is NaN, Inf or negative gives a NaN update; the step does not check
    (`fit` does, see its divergence guard).

    `l1`, `l2` override the model's penalty weights for one call (None: the model's):
    the step takes them as data, so other values reuse its compiled program, and under
    `jax.vmap` a vector of them trains one model per value.  Concrete values must be
    finite and >= 0; traced ones are not checked.
    """
    check_model(model, where="make_train_step")
    _check_optimizer(optimizer, "make_train_step")
    _check_grad(grad, "make_train_step")
    try:
        return _train_step(model, optimizer, grad, bool(donate), mesh)
    except TypeError as e:  # something unhashable (a mesh?): a step of its own
        if "unhashable" not in str(e):
            raise
        return _train_step.__wrapped__(model, optimizer, grad, bool(donate), mesh)


@functools.lru_cache(maxsize=64)
def _train_step(model: MLP, optimizer, grad: str, donate: bool, mesh):
    """make_train_step's step, one per (model, optimizer structure, grad, donate, mesh):
    optimizers that differ only in their numbers are equal (the numbers are in
    opt_state), so they share the step and its compiled programs."""
    grads_of = _grad_fn(model, grad)
    batch_norm = model.norm == "batch"

    def step(params, opt_state, x, y, *, key=None, state=None, pen=None):
        if batch_norm and state is None:
            raise ValueError(
                f"{_STEP}: the model has batch norm: pass state=jaxmlp.init_state(model) to "
                f"the step "
                "and use the state it returns next time")
        x, y, key = check_inputs(model, params, x, y, train=True, key=key, state=state,
                                 where=_STEP)
        _check_opt_state(optimizer, params, opt_state, where=_STEP)
        if mesh is not None:
            _parallel.check_mesh(mesh, x.shape[0])
            x, y = _parallel.shard_constraint(mesh, (x, y))
        loss, g, new_state = grads_of(params, x, y, key, state, pen)
        params, opt_state = _apply(optimizer, params, opt_state, g)
        if batch_norm:
            return params, opt_state, loss, new_state
        return params, opt_state, loss

    return _Step(jax.jit(step, donate_argnums=(0, 1) if donate else ()))


class _Step:
    """The step `make_train_step` returns: checks concrete `l1`/`l2` overrides (a traced
    one, under the caller's own jit or vmap, goes through as it is), then calls the jitted
    step with them as data.  Attributes (`lower`, `trace`, ...) are the jitted step's."""

    def __init__(self, jitted):
        self._jitted = jitted
        functools.update_wrapper(self, jitted)

    def __call__(self, params, opt_state, x, y, *, key=None, state=None, l1=None, l2=None):
        pen = check_penalties(l1, l2, where=_STEP)
        return self._jitted(params, opt_state, x, y, key=key, state=state, pen=pen)

    def lower(self, params, opt_state, x, y, *, key=None, state=None, l1=None, l2=None):
        pen = check_penalties(l1, l2, where=_STEP)
        return self._jitted.lower(params, opt_state, x, y, key=key, state=state, pen=pen)

    def __getattr__(self, name):
        return getattr(self._jitted, name)


# --------------------------------------------------------------------------- fit

class _EpochOut(NamedTuple):
    params: Any
    opt_state: Any
    state: Any
    train_loss: Array   # scalar: the mean of the epoch's minibatch losses
    bad_step: Array     # int32: first non-finite step of the epoch, −1 if none, or −2 when
                        # the unguarded program saw something non-finite (re-run guarded)
    cause: Array        # int32: what was non-finite at bad_step (a key of CAUSES), 0 if none
    val_loss: Array     # scalar (NaN without validation)


def _tree_finite(tree) -> Array:
    """True when every float leaf of `tree` is finite (integer leaves, e.g. counts, and
    an empty tree count as finite)."""
    leaves = [a for a in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.result_type(a), jnp.inexact)]
    if not leaves:
        return jnp.bool_(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in leaves]))


def _permutation(key: Array, n: int) -> Array:
    """A uniformly random permutation of 0 … n−1 (int32, n ≥ 1), by sorting random keys.

    Each round draws a random uint32 per position and sorts; a stable sort by random
    keys shuffles, and ties keep the previous round's (already random) order, so after r
    rounds a pair of positions is still tied with probability 2^(−r·b) for b-bit keys.
    `jax.random.permutation` sorts (32-bit key, index) pairs; here the index is packed
    into the low ⌈log₂ n⌉ bits of the key itself (b = 32 − ⌈log₂ n⌉ random high bits),
    so each round is a sort of one uint32 array, which XLA runs several times faster
    than a key-value sort, and the low bits read off the winning positions (on a 2-core
    CPU, all rounds included: 3.4 ms instead of 11 ms at n = 16384).  Rounds: as many as
    make r·b ≥ 3·log₂ n (jax.random.permutation's rule: a tie surviving all rounds has
    probability ≲ 1/n).  Beyond 2²⁴ rows the packed keys get short and it falls back to
    `jax.random.permutation`.
    """
    bits = max(1, math.ceil(math.log2(n)))
    free = 32 - bits
    if free < 8:
        return jax.random.permutation(key, n)
    rounds = max(1, math.ceil(3 * bits / free))
    r = jax.random.bits(key, (rounds, n), jnp.uint32)
    pos = jnp.arange(n, dtype=jnp.uint32)
    low = jnp.uint32((1 << bits) - 1)
    perm = None
    for i in range(rounds):
        order = (jnp.sort((r[i] & ~low) | pos) & low).astype(jnp.int32)
        perm = order if perm is None else perm[order]
    return perm


def _epoch(params, opt_state, state, x, y, xv, yv, key, epoch, pen=None, *, model,
           optimizer, grad, batch_size, n_batches, unroll, mesh, guarded=False):
    """One epoch: shuffle, n_batches steps in a lax.scan, then the validation loss.

    The scan runs over the (n_batches, batch_size) index matrix of the epoch's
    permutation and each step gathers its own minibatch: the shuffled data set is never
    materialised (at 16384 × 784 that copy alone cost more than the permutation).

    Unguarded (the fast path) the steps run as written and finiteness is checked once,
    after the scan, on the per-step losses and the final parameters: bad_step is −2 if
    anything is non-finite.  Guarded, every step checks its loss and gradients and the
    first bad step and all after it are not applied: `fit` re-runs an epoch that way, from
    the same inputs (the epoch is deterministic), only when the fast path reported −2.
    """
    grads_of = _grad_fn(model, grad)
    k_perm, k_drop = jax.random.split(jax.random.fold_in(key, epoch))
    idx = _permutation(k_perm, x.shape[0])[: n_batches * batch_size]
    idx = idx.reshape(n_batches, batch_size)
    # per-step dropout keys, only when there is dropout (else nothing extra to scan over)
    step_keys = jax.random.split(k_drop, n_batches) if model.dropout > 0 else None

    def grads(params, state, batch):
        ib, kb = batch
        xb, yb = x[ib], y[ib]
        if mesh is not None:  # the batch axis over the devices; the compiler adds the all-reduce
            xb, yb = _parallel.shard_constraint(mesh, (xb, yb))
        return grads_of(params, xb, yb, kb, state, pen)

    def fast_body(carry, batch):
        params, opt_state, state = carry
        loss, g, state = grads(params, state, batch)
        params, opt_state = _apply(optimizer, params, opt_state, g)
        return (params, opt_state, state), loss

    def guarded_body(carry, batch):
        params, opt_state, state, bad, cause, i = carry
        loss, g, new_state = grads(params, state, batch)
        updates, new_opt = optimizer.update(g, opt_state, params)
        new_params = _optim.apply_updates(params, updates)
        # what is finite, in the order of CAUSES: a step is applied only when all are
        finite = jnp.stack([jnp.isfinite(loss), _tree_finite(g), _tree_finite(updates),
                            _tree_finite(new_params), _tree_finite(new_opt),
                            _tree_finite(new_state)])
        first = (jnp.argmin(finite) + 1).astype(jnp.int32)  # the first False, 1-based
        ok = jnp.all(finite) & (bad < 0)
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)
        now_bad = (bad < 0) & ~ok
        carry = (keep(new_params, params), keep(new_opt, opt_state), keep(new_state, state),
                 jnp.where(now_bad, i, bad), jnp.where(now_bad, first, cause), i + 1)
        return carry, loss

    if guarded:
        init = (params, opt_state, state, jnp.int32(-1), jnp.int32(0), jnp.int32(0))
        (params, opt_state, state, bad, cause, _), losses = jax.lax.scan(
            guarded_body, init, (idx, step_keys), unroll=unroll)
    else:
        (params, opt_state, state), losses = jax.lax.scan(
            fast_body, (params, opt_state, state), (idx, step_keys), unroll=unroll)
        # after the scan, not per step: a non-finite loss, or anything the epoch's updates
        # made non-finite, sends `fit` to the guarded re-run, which finds the step
        finite = (jnp.all(jnp.isfinite(losses)) & _tree_finite(params)
                  & _tree_finite(opt_state) & _tree_finite(state))
        bad = jnp.where(finite, jnp.int32(-1), jnp.int32(-2))
        cause = jnp.int32(0)
    if xv is None:
        val = jnp.array(jnp.nan, losses.dtype)
    else:
        yhat, cache, _ = forward_pass(model, params, xv, train=False, state=state)
        val = data_loss(model, cache.z, yhat, yv)
    return _EpochOut(params, opt_state, state, jnp.mean(losses), bad, cause, val)


#: `_epoch` compiled; the keyword arguments are static (`jaxmlp.sweep` vmaps `_epoch`).
_STATIC = ("model", "optimizer", "grad", "batch_size", "n_batches", "unroll", "mesh", "guarded")
_run_epoch = jax.jit(_epoch, static_argnames=_STATIC)


def _prepare_data(model, x, y, dtype, name, *, where: str):
    x = check_x(model, x, f"{name} x" if name else "x", where=where)
    y = prepare_targets(model, y, x.shape[0], dtype, f"{name} y" if name else "y",
                        where=where)
    check_finite(y, f"{where}: {name} y" if name else f"{where}: y")
    return jnp.asarray(x, dtype), y


_AHEAD_S = 0.05  # seconds: after an epoch this short, fit runs one epoch ahead (see there)


class _Plan(NamedTuple):
    """`fit`'s checked arguments and prepared data (made by `_prepare`)."""

    x: Array
    y: Array
    xv: Any             # validation inputs, or None
    yv: Any
    key: Array
    state: Any          # batch-norm statistics to start from (None without batch norm)
    pen: tuple          # (l1, l2) overrides as data, (None, None) for the model's
    epochs: int
    batch_size: int     # clipped to N
    n_batches: int      # ⌊N / batch_size⌋
    unroll: int
    checkpoint_every: int
    keep: int
    patience: Optional[int]


def _prepare(model, params, optimizer, x, y, *, epochs, batch_size, key, validation,
             patience, min_delta, grad, state, on_divergence, unroll, checkpoint_every,
             keep, l1, l2, where="fit") -> _Plan:
    """Checks `fit`'s arguments and prepares its data.

    In: fit's arguments as given.  Out: a `_Plan`: x, y (and the validation pair, or
    None) as arrays of the parameters' dtype, checked finite; the checked key; the
    batch-norm state to start from (`init_state` when batch norm and none given); the
    penalties as data; the integer settings.  Raises fit's TypeError/ValueError, in
    the order fit always checked them.
    """
    check_model(model, where=where)
    _check_optimizer(optimizer, where)
    _check_grad(grad, where)
    check_params(model, params, where=where)
    epochs = _v.positive_int(epochs, "epochs", where=where)
    unroll = _v.positive_int(unroll, "unroll", where=where)
    checkpoint_every = _v.positive_int(checkpoint_every, "checkpoint_every", where=where)
    keep = _v.positive_int(keep, "keep", where=where)
    if patience is not None:
        patience = _v.positive_int(patience, "patience", where=where)
        if validation is None:
            raise ValueError(f"{where}: patience (early stopping) needs validation=(x_val, y_val)")
    _v.nonneg_real(min_delta, "min_delta", where=where)
    _v.one_of(on_divergence, "on_divergence", ("raise", "stop"), where=where)
    key = _check_key(key, "key", where=where)
    dtype = params[0]["W"].dtype
    x, y = _prepare_data(model, x, y, dtype, "", where=where)
    n = x.shape[0]
    if batch_size is None:
        batch_size = n
    batch_size = min(_v.positive_int(batch_size, "batch_size", where=where), n)
    xv = yv = None
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise TypeError(f"{where}: validation must be a pair (x_val, y_val), got "
                            f"{type(validation).__name__}")
        xv, yv = _prepare_data(model, validation[0], validation[1], dtype, "validation",
                               where=where)
    if model.norm == "batch":
        state = init_state(model, dtype=dtype) if state is None else state
    check_mode(model, train=True, key=key, state=state, where=where)
    _check_hyperparameters(optimizer, dtype, fn=where)
    pen = check_penalties(l1, l2, where=where)
    return _Plan(x, y, xv, yv, key, state, pen, epochs, batch_size, n // batch_size, unroll,
                 checkpoint_every, keep, patience)


def _signature(plan: _Plan, optimizer, grad) -> dict:
    """The run's fingerprint that a checkpoint holds and a resume must match: n,
    batch_size, grad, epochs, the optimizer (`optim.describe`), the data
    (`_data_fingerprint`) and, only when given, the penalties."""
    signature = dict(n=plan.x.shape[0], batch_size=plan.batch_size, grad=grad,
                     epochs=plan.epochs, optimizer=_optim.describe(optimizer),
                     data=_data_fingerprint(plan.x, plan.y, plan.xv, plan.yv))
    if plan.pen != (None, None):  # only when given: older checkpoints still resume
        signature["penalties"] = {
            n_: (None if v is None else float(v)) for n_, v in zip(("l1", "l2"), plan.pen)}
    return signature


def _start(model, params, optimizer, plan: _Plan, *, grad, mesh, checkpoint_dir):
    """The run to train from.

    In: the checked plan; `checkpoint_dir` (or None) and `mesh` (or None).  Out:
    (run, plan, save): `run` a fresh `_Run` (state from `optimizer.init(params)`) or,
    with checkpoint_dir, the newest valid checkpoint's (`_resume`, which refuses another
    run's folder); with a mesh, run and the plan's data replicated over it (after
    `check_mesh`); `save(run)` writes a checkpoint, None without checkpoint_dir.
    """
    run = _new_run(params, optimizer.init(params), plan.state)
    save = None
    if checkpoint_dir is not None:
        signature = _signature(plan, optimizer, grad)
        run = _resume(run, model, checkpoint_dir, plan.key, signature)
        save = functools.partial(_save_run, model=model, directory=checkpoint_dir,
                                 key=plan.key, keep=plan.keep, signature=signature)
    if mesh is not None:
        _parallel.check_mesh(mesh, plan.batch_size)
        x, y, xv, yv = _parallel.replicate(mesh, (plan.x, plan.y, plan.xv, plan.yv))
        plan = plan._replace(x=x, y=y, xv=xv, yv=yv)
        p, o, s, bp, bs = _parallel.replicate(
            mesh, (run.params, run.opt_state, run.state, run.best_params, run.best_state))
        run = run._replace(params=p, opt_state=o, state=s, best_params=bp, best_state=bs)
    return run, plan, save


def _replay_divergence(run: _Run, on_divergence, checkpoint_dir):
    """A run resumed from the checkpoint of a run that diverged ends the same way again:
    raises its `DivergenceError` (on_divergence="raise") or returns (params, history)
    as "stop" did."""
    history = run.history
    d = history["diverged"]
    history["state"] = run.state
    if on_divergence == "raise":
        raise DivergenceError(
            d["epoch"], d["step"], run.params, run.opt_state, run.state, history,
            cause=d.get("cause", 1),
            note=f" (This run diverged before, as recorded in checkpoint_dir "
                 f"{str(checkpoint_dir)!r}; to try again with other settings, use "
                 f"another folder or delete this one.)")
    return run.params, history


def _launch(plan: _Plan, static, params, opt_state, state, epoch):
    """Dispatches epoch `epoch` from (params, opt_state, state) without waiting for it.
    Out: (args, out): `args` the epoch's inputs (for a guarded re-run), `out` its
    `_EpochOut` of device arrays, not read."""
    args = (params, opt_state, state, plan.x, plan.y, plan.xv, plan.yv, plan.key,
            np.int32(epoch), plan.pen)
    return args, _run_epoch(*args, **static)


def _dispatch(pending, ahead, run: _Run, epoch, plan: _Plan, static):
    """The one-epoch look-ahead.

    In: `pending` ((args, out) of `epoch` if it was dispatched ahead, else None),
    `ahead` (whether to run ahead now), the run.  Out: (args, out, pending): epoch
    `epoch`'s (the pending one, or dispatched now from the run) and the new pending:
    epoch + 1 dispatched from out's unread results when `ahead` and there is an
    epoch + 1, else None.
    """
    args, out = pending if pending is not None else _launch(
        plan, static, run.params, run.opt_state, run.state, epoch)
    pending = None
    if ahead and epoch + 1 < plan.epochs:
        pending = _launch(plan, static, out.params, out.opt_state, out.state, epoch + 1)
    return args, out, pending


def _read_epoch(args, out: _EpochOut, static):
    """Reads an epoch's results back and handles the fast path's divergence flag.

    In: the epoch's (args, out) from `_launch`.  One device→host transfer reads the
    step flag, the two losses and the rate of the epoch's last step (read off the
    opt_state it ends with).  When the fast path saw something non-finite (flag −2) the
    epoch re-runs guarded from `args` (a second transfer, only then).  Out: (out, bad,
    cause, train_loss, val, rate, rerun): `out` the guarded one after a re-run, `bad`
    an int (≥ 0: the first non-finite step, not applied; −1: none), `cause` its key in
    CAUSES, the rest host scalars (rate None for an optimizer without one), `rerun`
    True after a re-run (an epoch dispatched ahead from the fast out is then stale).
    """
    rate = _optim.current_learning_rate(out.opt_state)
    bad, train_loss, val, rate = jax.device_get(
        (out.bad_step, out.train_loss, out.val_loss, rate))
    cause, rerun = 0, bad == -2
    if rerun:  # something non-finite: re-run the epoch with per-step guards
        out = _run_epoch(*args, **static, guarded=True)
        bad, cause, train_loss, val = jax.device_get(
            (out.bad_step, out.cause, out.train_loss, out.val_loss))
    return out, int(bad), int(cause), train_loss, val, rate, rerun


def _diverge(run: _Run, epoch, bad, cause, *, on_divergence, save):
    """Records a divergence at step `bad` of epoch `epoch` in run.history (`diverged`,
    `stopped_early`, `state`), saves the run when checkpointing (`save` not None), then
    raises `DivergenceError` with run's last finite params when on_divergence is
    "raise" (else returns, and fit stops)."""
    history = run.history
    history["diverged"] = {"epoch": epoch, "step": bad, "cause": cause, "what": CAUSES[cause]}
    history["stopped_early"] = True
    history["state"] = run.state
    if save is not None:
        save(run)
    if on_divergence == "raise":
        raise DivergenceError(epoch, bad, run.params, run.opt_state, run.state, history,
                              cause=cause)


def _early_stopping_update(run: _Run, val: float, min_delta) -> _Run:
    """Early-stopping bookkeeping after an epoch with validation loss `val` (the
    epoch just recorded, epochs_run − 1): an improvement below best − min_delta keeps
    the epoch's params and state as the best (and history["best_epoch"]), resetting
    since_best; otherwise since_best grows by one.  Out: the updated run."""
    if val < run.best_val - min_delta:
        run.history["best_epoch"] = run.history["epochs_run"] - 1
        return run._replace(best_val=val, best_params=run.params, best_state=run.state,
                            since_best=0)
    return run._replace(since_best=run.since_best + 1)


def _record_epoch(run: _Run, train_loss, val, rate, elapsed, *, validated, min_delta):
    """Appends a finished epoch to run.history (train_loss, epoch_time, learning_rate,
    epochs_run and, when `validated`, val_loss with early-stopping bookkeeping).  In:
    host scalars from `_read_epoch`.  Out: (run, logs), logs the callback's dict."""
    history = run.history
    train_loss = float(train_loss)
    rate = None if rate is None else float(rate)
    history["train_loss"].append(train_loss)
    history["epoch_time"].append(elapsed)
    history.setdefault("learning_rate", []).append(rate)
    history["epochs_run"] += 1
    logs = {"train_loss": train_loss, "epoch_time": elapsed, "val_loss": None,
            "learning_rate": rate}
    if validated:
        val = float(val)
        history["val_loss"].append(val)
        logs["val_loss"] = val
        run = _early_stopping_update(run, val, min_delta)
    return run, logs


def _check_stop(run: _Run, logs, callback, patience) -> None:
    """Sets history["stopped_early"] when the callback (called as callback(epoch,
    logs) for the epoch just recorded) returns True or patience has run out."""
    epoch = run.history["epochs_run"] - 1
    stop = bool(callback(epoch, logs)) if callback is not None else False
    if stop or (patience is not None and run.since_best >= patience):
        run.history["stopped_early"] = True


def _maybe_checkpoint(run: _Run, plan: _Plan, save) -> None:
    """Saves the run (when checkpointing: `save` not None) every checkpoint_every
    epochs, after the last epoch, and when training stops early."""
    epoch = run.history["epochs_run"]
    if save is not None and (epoch % plan.checkpoint_every == 0 or epoch == plan.epochs
                             or run.history["stopped_early"]):
        save(run)


def _finish(run: _Run, patience):
    """fit's return value (params, history): early stopping hands back the best
    epoch's parameters; without patience the last epoch's, and after a divergence the
    last finite ones.  Fills in best_epoch (the last epoch without validation) and the
    final batch-norm state."""
    history = run.history
    params, state = run.params, run.state
    if patience is not None and run.best_params is not None and "diverged" not in history:
        params, state = run.best_params, run.best_state
    elif history["best_epoch"] is None:
        history["best_epoch"] = max(history["epochs_run"] - 1, 0)
    history["state"] = state
    return params, history


def fit(model: MLP, params, optimizer, x, y, *, epochs: int, batch_size: Optional[int],
        key: Array, validation=None, patience: Optional[int] = None, min_delta: float = 0.0,
        grad: str = "manual", callback: Optional[Callable] = None, state=None,
        on_divergence: str = "raise", unroll: int = 1, mesh=None,
        checkpoint_dir=None, checkpoint_every: int = 1, keep: int = 2, l1=None, l2=None):
    """Trains `params` with `optimizer` on (x, y); returns `(params, history)`.

    Args:
      model, params: the `MLP` and its initial parameters.
      optimizer: a `jaxmlp.optim.GradientTransformation` (its state starts fresh, from
        `optimizer.init(params)`, which holds its numbers: optimizers that differ only in
        their numbers, e.g. `adam(1e-3)` and `adam(3e-3)`, share one compiled epoch).
      x: (N, n_in) float inputs; y: targets as for `jaxmlp.loss`. NaN/Inf are refused.
      epochs: number of passes over the data (≥ 1).
      batch_size: minibatch size (≥ 1); None or ≥ N for full batch. Each epoch runs
        ⌊N / batch_size⌋ steps; the last partial batch is dropped (a different random
        subset each epoch, since the data are reshuffled).
      key: PRNG key: epoch e shuffles (and draws dropout masks) with fold_in(key, e).
      validation: optional (x_val, y_val), evaluated in inference mode after each epoch.
      patience: early stopping: stop after `patience` epochs without a validation loss
        below best − min_delta, and hand back the best epoch's parameters (needs
        `validation`).
      min_delta: the improvement that counts, ≥ 0.
      grad: "manual" (δ recursion) or "autodiff" (jax.value_and_grad), for comparisons.
      callback: called after every epoch as callback(epoch, logs) with logs a dict of
        `train_loss`, `val_loss`, `epoch_time`, `learning_rate`; returning True stops
        training.
      state: batch-norm running statistics to start from (default `init_state(model)`).
      on_divergence: "raise" (default: `DivergenceError`, carrying the last finite
        params) or "stop" (return them, with `history["diverged"]`).
      unroll: `lax.scan` unroll factor for the minibatch loop.
      mesh: a `jax.sharding.Mesh` with an axis "data": batches are sharded over it,
        parameters and optimizer state replicated (see `jaxmlp.parallel`).
      checkpoint_dir: a folder for resumable training: every `checkpoint_every` epochs
        (and at the end, and on divergence) `fit` saves params, optimizer state,
        batch-norm state, history, epoch, key and the best parameters so far
        (`jaxmlp.checkpoint`, atomic), keeping the `keep` newest. Called again with the
        same arguments, `fit` resumes from the newest valid checkpoint and ends with
        parameters bitwise identical to an uninterrupted run (it also removes the temp
        files of a save that was killed, so one `fit` must own the folder).  Each
        checkpoint holds a fingerprint of the run: n, batch_size, grad, epochs, the
        optimizer (`jaxmlp.optim.describe`: type and every hyperparameter) and the data
        (shape, dtype and SHA-256 of x, y and the validation arrays); a call whose
        fingerprint differs is refused with a ValueError naming what differs, and a
        run that diverged raises its `DivergenceError` again (or returns as
        `on_divergence="stop"` did) instead of returning as if it had trained.
      l1, l2: penalty weights for this run, overriding the model's (None: the model's).
        They reach the compiled epoch as data: fits that differ only in them compile
        the epoch once.  Finite numbers >= 0 (or concrete scalar arrays).  A given
        value is part of a checkpoint's fingerprint.

    Returns:
      (params, history): history has lists `train_loss`, `val_loss`, `epoch_time`,
      `learning_rate` (one float per epoch run; `val_loss` empty without validation;
      `learning_rate` is the rate the epoch's *last* step used, a schedule evaluated
      at that step's count: `jaxmlp.optim.current_learning_rate` of the opt_state the
      epoch ends with, or None for an optimizer whose state holds no rate;
      `epoch_time` is the wall
      time from the previous epoch's results, or from the start of the first epoch, to
      this epoch's, so one epoch's callback and checkpoint time counts toward the next
      and the times add up to the loop's wall time), `best_epoch` (0-based;
      the last epoch without validation), `stopped_early`, `epochs_run`, and `state`
      (the final batch-norm statistics, or None).
    """
    plan = _prepare(model, params, optimizer, x, y, epochs=epochs, batch_size=batch_size,
                    key=key, validation=validation, patience=patience, min_delta=min_delta,
                    grad=grad, state=state, on_divergence=on_divergence, unroll=unroll,
                    checkpoint_every=checkpoint_every, keep=keep, l1=l1, l2=l2)
    run, plan, save = _start(model, params, optimizer, plan, grad=grad, mesh=mesh,
                             checkpoint_dir=checkpoint_dir)
    if "diverged" in run.history:  # resumed from a run that diverged: the same outcome again
        return _replay_divergence(run, on_divergence, checkpoint_dir)
    static = dict(model=model, optimizer=optimizer, grad=grad, batch_size=plan.batch_size,
                  n_batches=plan.n_batches, unroll=plan.unroll, mesh=mesh)
    # One epoch in flight: once an epoch takes less than _AHEAD_S, epoch e + 1 is
    # dispatched from epoch e's outputs before e's flag and losses are read back, so the
    # device does not sit idle through the host's round trip and bookkeeping (W1 of
    # scripts/benchmark.py: ~10 % more samples/s).  Results are unchanged, since an epoch
    # is a deterministic function of its inputs; an epoch dispatched after one that
    # diverged or stopped training is dropped unread.
    epoch, ahead, pending = run.history["epochs_run"], False, None
    t0 = time.perf_counter()
    while epoch < plan.epochs and not run.history["stopped_early"]:
        args, out, pending = _dispatch(pending, ahead, run, epoch, plan, static)
        out, bad, cause, train_loss, val, rate, rerun = _read_epoch(args, out, static)
        pending = None if rerun else pending
        run = run._replace(params=out.params, opt_state=out.opt_state, state=out.state)
        if bad >= 0:  # out holds the last finite params: the bad step was not applied
            _diverge(run, epoch, bad, cause, on_divergence=on_divergence, save=save)
            break
        t1 = time.perf_counter()
        elapsed, t0 = t1 - t0, t1
        ahead = elapsed < _AHEAD_S
        run, logs = _record_epoch(run, train_loss, val, rate, elapsed,
                                  validated=plan.xv is not None, min_delta=min_delta)
        epoch = run.history["epochs_run"]
        _check_stop(run, logs, callback, plan.patience)
        _maybe_checkpoint(run, plan, save)
    return _finish(run, plan.patience)


class _Run(NamedTuple):
    """Everything `fit` carries from epoch to epoch (and saves for a resume)."""

    params: Any
    opt_state: Any
    state: Any
    history: dict = None
    best_val: float = math.inf
    best_params: Any = None
    best_state: Any = None
    since_best: int = 0


def _new_run(params, opt_state, state) -> _Run:
    history = {"train_loss": [], "val_loss": [], "epoch_time": [], "learning_rate": [],
               "best_epoch": None,
               "stopped_early": False, "epochs_run": 0, "state": state}
    return _Run(params, opt_state, state, history)


def _save_run(run: _Run, *, model, directory, key, keep, signature):
    from jaxmlp import checkpoint
    if jax.process_index() != 0:  # several hosts: one writer, the others read on resume
        return
    history = {k: v for k, v in run.history.items() if k != "state"}
    extra = {"fit": signature, "history": history,
             "best_val": None if math.isinf(run.best_val) else run.best_val,
             "since_best": run.since_best}
    path = checkpoint.checkpoint_path(directory, run.history["epochs_run"])
    checkpoint.save(path, params=run.params, opt_state=run.opt_state, state=run.state,
                    model=model, step=run.history["epochs_run"], key=key, extra=extra,
                    aux={"params": run.best_params, "state": run.best_state})
    checkpoint.prune(directory, keep)


def _check_hyperparameters(optimizer, dtype, fn="fit") -> None:
    """ValueError when a numeric hyperparameter of `optimizer` overflows the parameters'
    dtype (e.g. sgd(1e39) with float32 params: η·g would be Inf at the first step)."""
    limit = float(jnp.finfo(dtype).max)

    def walk(desc, where):
        if isinstance(desc, dict) and "args" in desc:
            for k, v in desc["args"].items():
                nested = isinstance(v, list) or (isinstance(v, dict) and "args" in v)
                walk(v, f"{where}{desc['name']} → " if nested else f"{where}{desc['name']}'s {k}")
        elif isinstance(desc, list):
            for v in desc:
                walk(v, where)
        elif isinstance(desc, float) and abs(desc) > limit:
            raise ValueError(
                f"{fn}: optimizer must have hyperparameters that fit the parameters' dtype "
                f"{jnp.dtype(dtype).name}, got {where} = {desc!r}: it overflows the parameters' "
                f"dtype {jnp.dtype(dtype).name} (largest finite value {limit:.3g}); use a "
                f"smaller value, or float64 parameters")

    walk(_optim.describe(optimizer), "")


def _data_fingerprint(x, y, xv, yv) -> dict:
    """Shape, dtype and SHA-256 of the training (and validation) arrays, as `fit` has
    prepared them: a resume refuses data that differ from the checkpointed run's."""
    def one(a):
        out = {"shape": list(a.shape), "dtype": str(a.dtype)}
        if getattr(a, "is_fully_addressable", True):
            out["sha256"] = hashlib.sha256(np.ascontiguousarray(
                jax.device_get(a)).tobytes()).hexdigest()
        return out

    out = {"x": one(x), "y": one(y)}
    if xv is not None:
        out["validation x"], out["validation y"] = one(xv), one(yv)
    return out


def _differences(saved: dict, now: dict) -> list:
    """'what: saved … vs now …' for each key of two fit signatures that differs."""
    out = []
    for k in sorted(set(saved) | set(now), key=str):
        a, b = saved.get(k, "(not recorded)"), now.get(k, "(not recorded)")
        if a == b:
            continue
        if k == "data" and isinstance(a, dict) and isinstance(b, dict):
            for part in sorted(set(a) | set(b)):
                pa, pb = a.get(part), b.get(part)
                if pa == pb:
                    continue
                if pa is None or pb is None:
                    out.append(f"{part}: {'absent' if pa is None else 'given'} in the "
                               f"checkpointed run, {'absent' if pb is None else 'given'} now")
                elif pa.get("shape") != pb.get("shape") or pa.get("dtype") != pb.get("dtype"):
                    out.append(f"{part}: {pa.get('dtype')} {tuple(pa.get('shape', ()))} in the "
                               f"checkpointed run, {pb.get('dtype')} "
                               f"{tuple(pb.get('shape', ()))} now")
                else:
                    out.append(f"{part}: same shape and dtype, other values (SHA-256 "
                               f"{str(pa.get('sha256'))[:12]}… vs {str(pb.get('sha256'))[:12]}…)")
        elif k == "optimizer":
            out.append(f"optimizer: {_optimizer_text(a)} in the checkpointed run, "
                       f"{_optimizer_text(b)} now")
        else:
            out.append(f"{k}: {a!r} in the checkpointed run, {b!r} now")
    return out


def _optimizer_text(desc) -> str:
    if isinstance(desc, dict) and "args" in desc:
        args = ", ".join(f"{k}={_optimizer_text(v)}" for k, v in desc["args"].items())
        return f"{desc['name']}({args})"
    if isinstance(desc, dict) and "callable" in desc:
        return f"<{desc['callable']} code {desc.get('code', '')[:8]}>"
    if isinstance(desc, dict) and "array" in desc:
        return f"<array {tuple(desc['array'])} {desc.get('dtype')}>"
    if isinstance(desc, list):
        return "(" + ", ".join(_optimizer_text(v) for v in desc) + ")"
    return repr(desc)


def _latest_matching(directory, signature, key, opt_state, *, model=None, where="fit",
                     noun="key"):
    """The newest valid checkpoint in `directory` (after removing a killed save's temp
    files), or None when there is none.  ValueError when it belongs to another run:
    another fingerprint (`signature`, stored under extra[where]; the message names each
    difference), another `key`, or an optimizer state of another structure."""
    from jaxmlp import checkpoint
    checkpoint.remove_stale_temp_files(directory)  # left by a save that was killed
    path = checkpoint.latest(directory)
    if path is None:
        return None
    ckpt = checkpoint.load(path, model=model)
    saved_sig = (ckpt.extra or {}).get(where) or {}
    if saved_sig != signature:
        diffs = _differences(saved_sig, signature)
        raise ValueError(
            f"{where}: checkpoint_dir {str(directory)!r} holds a run with other settings than "
            f"this call, so resuming it would silently change the run: " + "; ".join(diffs)
            + f". Pass the same settings and data to resume, or start afresh with another "
              f"checkpoint_dir (or delete {str(directory)!r})")
    if ckpt.key is None or not np.array_equal(jax.random.key_data(ckpt.key),
                                              jax.random.key_data(key)):
        raise ValueError(
            f"{where}: checkpoint_dir {str(directory)!r} holds a run started with another "
            f"{noun}; pass the same {noun} to resume, or use another folder")
    if jax.tree_util.tree_structure(ckpt.opt_state) != jax.tree_util.tree_structure(opt_state):
        raise ValueError(
            f"{where}: checkpoint_dir {str(directory)!r} holds a different optimizer's state")
    return ckpt


def _resume(run: _Run, model, directory, key, signature) -> _Run:
    """The newest valid checkpoint in `directory` as a _Run, or `run` if there is none."""
    ckpt = _latest_matching(directory, signature, key, run.opt_state, model=model)
    if ckpt is None:
        return run
    history = dict(ckpt.extra["history"], state=ckpt.state)
    best_val = ckpt.extra["best_val"]
    aux = ckpt.aux or {}
    return _Run(ckpt.params, ckpt.opt_state, ckpt.state, history,
                math.inf if best_val is None else best_val, aux.get("params"),
                aux.get("state"), ckpt.extra["since_best"])
