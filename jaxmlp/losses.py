"""Losses, averaged over the batch (N examples, K outputs), and the output error δ⁽ᴸ⁾.

    mse = (1/(N·K)) Σᵢ Σₖ (ŷᵢₖ − yᵢₖ)²
    sse = (1/N) Σᵢ ½ Σₖ (ŷᵢₖ − yᵢₖ)²
    bce = −(1/(N·K)) Σ [y log ŷ + (1 − y) log(1 − ŷ)],  from logits: log σ(z) = −softplus(−z)
    cce = −(1/N) Σᵢ Σₖ yᵢₖ log ŷᵢₖ,                     from logits: log_softmax(z)

δ⁽ᴸ⁾ = ∂L/∂z⁽ᴸ⁾ holds the batch mean's 1/N, the only place it lives.  The canonical pairs
give it directly; every other pair goes through ∂L/∂ŷ and the output activation's
derivative (softmax: its Jacobian-vector product):

| output, loss       | δ⁽ᴸ⁾                        |
| ------------------ | --------------------------- |
| identity, mse      | 2(ŷ − y)/(N·K)              |
| identity, sse      | (ŷ − y)/N                   |
| sigmoid, bce       | (ŷ − y)/(N·K)               |
| softmax, cce       | (ŷ·Σₖyₖ − y)/N  (= (ŷ − y)/N for one-hot or probability rows) |
| f, mse / sse       | ∂L/∂ŷ ⊙ f′(z)               |

Penalties act on weights W only: `l2` adds (l2/2)·Σ‖W‖² (gradient l2·W), `l1` adds
l1·Σ|W| (gradient l1·sign W, 0 at W = 0).

Targets: y is (N, K); a 1-D y of shape (N,) is accepted when K == 1; for cce, integer
class labels of shape (N,) are accepted and one-hot encoded, and (N, K) targets must be
one-hot or probability rows (entries ≥ 0 summing to 1; checked when y is concrete).
Complex x or y are refused.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import _validate as _v
from jaxmlp._validate import as_array, check_finite, is_concrete
from jaxmlp.model import MLP, check_mode, check_model, check_params, check_x, forward_pass

Array = jax.Array

__all__ = ["loss", "data_loss", "output_delta", "penalty", "penalty_grad", "prepare_targets"]

# Penalties as data: `loss`, `backprop`, `value_and_grad`, `check_gradients`, the train step
# and `fit` take keyword-only `l1=None, l2=None`.  None means the model's own value, a
# static number (a concrete 0 adds no work to the step); a given value overrides it and
# reaches the jitted code as an array argument, so other values reuse the compiled
# program and a vector of values can be vmapped.  `pen`, below, is the pair (l1, l2) of
# overrides, each None or a scalar array.


def _mean_scale(model: MLP, n: int) -> float:
    """The factor that turns a sum over the batch into the loss's mean."""
    if model.loss in ("mse", "bce"):
        return 1.0 / (n * model.n_out)
    return 1.0 / n


def data_loss(model: MLP, z: Array, yhat: Array, y: Array) -> Array:
    """The loss of logits z and outputs ŷ = f_out(z) (both (N, K)) against y (N, K)."""
    scale = _mean_scale(model, y.shape[0])
    if model.loss == "mse":
        r = yhat - y
        return scale * jnp.sum(r * r)
    if model.loss == "sse":
        r = yhat - y
        return scale * 0.5 * jnp.sum(r * r)
    if model.loss == "bce":
        # −[y log σ(z) + (1 − y) log(1 − σ(z))] = y·softplus(−z) + (1 − y)·softplus(z)
        return scale * jnp.sum(y * jax.nn.softplus(-z) + (1 - y) * jax.nn.softplus(z))
    # cce
    return -scale * jnp.sum(y * jax.nn.log_softmax(z, axis=-1))


def output_delta(model: MLP, z: Array, yhat: Array, y: Array) -> Array:
    """δ⁽ᴸ⁾ = ∂L/∂z⁽ᴸ⁾, shape (N, K), fused for the canonical pairs (see module doc)."""
    scale = _mean_scale(model, y.shape[0])
    if model.loss == "bce":  # needs sigmoid output
        return scale * (yhat - y)
    if model.loss == "cce":  # needs softmax output: ŷ = e / s, e = exp(z − max z), s = Σₖ e
        # ŷ·Σy − y written as e·(Σy / s) − y: the row factor Σy/s is one reduction, and e
        # and s are the forward pass's own (the compiler merges the identical expressions),
        # so this costs one kernel fewer per step than reading ŷ back
        e = jnp.exp(z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True)))
        s = jnp.sum(e, axis=-1, keepdims=True)
        return scale * (e * (jnp.sum(y, axis=-1, keepdims=True) / s) - y)
    g = (2.0 if model.loss == "mse" else 1.0) * scale * (yhat - y)  # ∂L/∂ŷ
    if model.output == "identity":
        return g
    return model.output_fn.vjp(z, yhat, g)


def check_penalties(l1, l2, *, where: str):
    """The overrides (l1, l2) of a public call, each None (the model's value) or a scalar
    array.  A concrete value must be a finite number >= 0, as the model checks it
    ("loss: l2 must be a finite number >= 0, got -1.0"; TypeError for a str, a bool or
    a non-real dtype; ValueError for an array that is not a scalar); a traced one is
    taken as it is (it may be anything: NaN or a negative weight is not caught)."""
    return tuple(_penalty_value(v, name, where) for v, name in ((l1, "l1"), (l2, "l2")))


def _penalty_value(value, name: str, where: str):
    if value is None:
        return None
    if isinstance(value, (jax.Array, np.ndarray)) and not isinstance(value, np.bool_):
        dtype = value.dtype
        if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
            raise TypeError(f"{where}: {name} must be a finite number >= 0 or a scalar float "
                            f"array, got an array of dtype {dtype}")
        if jnp.ndim(value) != 0:
            hint = (" (for one value per model, jm.sweep takes a list)"
                    if jnp.ndim(value) == 1 and where != "sweep" else "")
            raise ValueError(f"{where}: {name} must be a scalar, got an array of shape "
                             f"{tuple(jnp.shape(value))}{hint}")
        if is_concrete(value):
            _v.nonneg_real(np.asarray(value).item(), name, where=where)
        return jnp.asarray(value, jnp.result_type(float))
    return jnp.asarray(_v.nonneg_real(value, name, where=where), jnp.result_type(float))


def _weights(model: MLP, pen, dtype):
    """(l1, l2) in effect: an override as an array of the params' dtype, else the model's
    static number."""
    l1, l2 = pen if pen is not None else (None, None)
    return (model.l1 if l1 is None else jnp.asarray(l1, dtype),
            model.l2 if l2 is None else jnp.asarray(l2, dtype))


def _active(w) -> bool:
    """A penalty weight that needs computing: an array (an override, any value), or a
    non-zero static number."""
    return not isinstance(w, (int, float)) or w != 0


def penalty(model: MLP, params, pen=None) -> Array:
    """(l2/2)·Σ‖W‖² + l1·Σ|W| over the dense weights; a 0 of the params' dtype if none.
    `pen`: the pair (l1, l2) of overrides (None entries: the model's values)."""
    dtype = params[0]["W"].dtype
    l1, l2 = _weights(model, pen, dtype)
    total = jnp.zeros((), dtype)
    for layer in params:
        W = layer["W"]
        if _active(l2):
            total = total + 0.5 * l2 * jnp.sum(W * W)
        if _active(l1):
            total = total + l1 * jnp.sum(jnp.abs(W))
    return total


def penalty_grad(model: MLP, W: Array, pen=None) -> Array:
    """∂penalty/∂W = l2·W + l1·sign W (shape of W); None when both are static zeros."""
    l1, l2 = _weights(model, pen, W.dtype)
    if not (_active(l1) or _active(l2)):
        return None
    g = jnp.zeros_like(W)
    if _active(l2):
        g = g + l2 * W
    if _active(l1):
        g = g + l1 * jnp.sign(W)
    return g


def prepare_targets(model: MLP, y, n: int, dtype, name: str = "y", *,
                    where: Optional[str] = None) -> Array:
    """Checks y against the model and batch size n; returns it as (n, K) of `dtype`.

    Integer labels (cce, shape (n,)) become one-hot; labels outside [0, K) are refused
    when y is concrete (under a trace the values are unknown, and out-of-range labels
    would give an all-zero row).  `where`, the public function called, starts every
    message ("loss: y must have shape ...")."""
    shown = name  # as the user wrote it, for the messages' rest
    name = f"{where}: {name}" if where else name
    y = as_array(y, name)
    K = model.n_out
    if y.ndim == 0 or y.ndim > 2:
        raise ValueError(f"{name} must have shape ({n}, {K}), got {tuple(y.shape)}")
    if y.shape[0] != n:
        raise ValueError(
            f"{name} has batch {y.shape[0]} but x has batch {n}: "
            f"expected shape ({n}, {K}), got {tuple(y.shape)}")
    if not (jnp.issubdtype(y.dtype, jnp.number) or y.dtype == jnp.bool_):
        raise TypeError(f"{name} must be a numeric array, got dtype {y.dtype}")
    if model.loss == "cce" and y.ndim == 1:
        if not jnp.issubdtype(y.dtype, jnp.integer):
            raise TypeError(
                f"{where + ': ' if where else ''}for loss='cce', a 1-D {shown} must hold "
                f"integer class labels in [0, {K}), "
                f"got dtype {y.dtype}; pass one-hot targets of shape ({n}, {K}) otherwise")
        if is_concrete(y):
            # the range is read in y's own dtype (NumPy for host arrays): an int64 label
            # 2³² must not wrap to 0 in a cast to int32 before it is checked
            if isinstance(y, np.ndarray):
                lo, hi = int(y.min()), int(y.max())
            else:
                with jax.ensure_compile_time_eval():
                    lo, hi = int(jnp.min(y)), int(jnp.max(y))
            if lo < 0 or hi >= K:
                raise ValueError(
                    f"{name} holds class labels outside [0, {K}): min {lo}, max {hi}")
        return jax.nn.one_hot(jnp.asarray(y, jnp.int32), K, dtype=dtype)
    if y.ndim == 1:
        if K != 1:
            raise ValueError(
                f"{name} must have shape ({n}, {K}), got {tuple(y.shape)}"
                + (" (1-D integer labels are accepted only for loss='cce')" if K > 1 else ""))
        y = y[:, None]
    if y.shape[1] != K:
        raise ValueError(f"{name} must have shape ({n}, {K}), got {tuple(y.shape)}")
    check_finite(y, name)
    if model.loss == "bce" and is_concrete(y):
        with jax.ensure_compile_time_eval():
            outside = bool(jnp.any((y < 0) | (y > 1)))
        if outside:
            raise ValueError(f"{where + ': ' if where else ''}for loss='bce', {shown} must lie "
                             f"in [0, 1]")
    if model.loss == "cce" and is_concrete(y):
        _check_distributions(y, shown, where)
    return jnp.asarray(y, dtype)


def _check_distributions(y, name: str, where: Optional[str] = None) -> None:
    """cce targets (N, K) must be one-hot or probability rows: entries ≥ 0 that sum to 1
    (within 1e-4 in float32, 1e-9 in float64).  Anything else makes −Σ y log ŷ
    unbounded below (a negative entry) or rescales the row's gradient."""
    pre = f"{where}: " if where else ""
    v = np.asarray(y, np.float64)
    if v.size == 0:
        return
    low = v.min()
    if low < 0:
        i, k = np.unravel_index(np.argmin(v), v.shape)
        raise ValueError(
            f"{pre}for loss='cce', {name} must hold one-hot or probability rows (entries >= 0 "
            f"summing to 1); {name}[{i}, {k}] = {float(v[i, k])!r} is negative")
    tol = 1e-9 if np.dtype(y.dtype).itemsize >= 8 else 1e-4
    err = np.abs(v.sum(axis=1) - 1.0)
    if err.max() > tol:
        i = int(np.argmax(err))
        raise ValueError(
            f"{pre}for loss='cce', each row of {name} must sum to 1 (one-hot or probabilities); "
            f"row {i} sums to {float(v[i].sum())!r}. Pass integer class labels of shape (N,), or "
            f"normalise the rows")


def check_inputs(model, params, x, y, *, train, key, state, where: str):
    """All the checks of a (model, params, x, y) call; returns (x, y, key) ready to use.
    `where` is the public function called (it starts every message)."""
    check_model(model, where=where)
    check_params(model, params, where=where)
    x = check_x(model, x, where=where)
    y = prepare_targets(model, y, x.shape[0], params[0]["W"].dtype, where=where)
    key = check_mode(model, train=train, key=key, state=state, where=where)
    return x, y, key


def objective(model, params, x, y, train, key, state, pen=None):
    """(L, new_state): the loss with penalties, and the batch-norm state the forward pass
    updated; no argument checks (x, y prepared).  `jax.value_and_grad(objective, argnums=1,
    has_aux=True)` is the autodiff reference every manual gradient is checked against.
    `pen`: the (l1, l2) overrides (see `check_penalties`), or None for the model's."""
    _, cache, new_state = forward_pass(model, params, x, train=train, key=key, state=state)
    return data_loss(model, cache.z, cache.yhat, y) + penalty(model, params, pen), new_state


def _loss_impl(model, params, x, y, train, key, state, pen=None):
    return objective(model, params, x, y, train, key, state, pen)[0]


_loss_jit = jax.jit(_loss_impl, static_argnums=(0, 4))


def loss(model: MLP, params, x, y, *, key: Optional[Array] = None, state=None,
         train: bool = True, l1=None, l2=None) -> Array:
    """L = data loss of `model.loss` + penalties: a scalar of the params' dtype.

    Runs in training mode by default, like the gradient functions, so that
    `jax.value_and_grad(functools.partial(jaxmlp.loss, model))` and
    `jaxmlp.value_and_grad(model, …)` are interchangeable; `train=False` evaluates in
    inference mode (no dropout, batch norm from `state`).

    Args:
      x: (N, n_in) float.  y: (N, n_out); (N,) when n_out == 1; (N,) int labels for cce.
      key: dropout PRNG key (needed when `model.dropout > 0` and training).
      state: batch-norm running statistics (needed for batch norm in inference mode).
      l1, l2: penalty weights for this call, overriding the model's (None: the model's).
        A Python number or a scalar array; it is passed to the compiled loss as data, so
        other values do not recompile, and a traced value (under `jax.vmap`, `jax.grad`
        or `jax.jit`) is accepted.  Concrete values must be finite and >= 0.
    """
    x, y, key = check_inputs(model, params, x, y, train=train, key=key, state=state,
                             where="loss")
    pen = check_penalties(l1, l2, where="loss")
    return _loss_jit(model, params, x, y, bool(train), key, state, pen)
