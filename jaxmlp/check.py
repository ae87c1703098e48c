"""Gradient checking: manual δ backprop against `jax.grad` and finite differences.

For each parameter leaf θ (layer l, name W/b/gamma/beta) with manual gradient g and
reference r:

    abs_err = max |g − r|
    rel_err = abs_err / max |r|           (normwise, robust to near-zero entries)
    ok      ⇔ abs_err ≤ atol + rtol · max |r|

The reference is `jax.grad` of `jaxmlp.loss` with the same key and state.  With
`finite_differences=True`, each leaf is also checked by a central difference along a
random unit direction v of that leaf:

    (L(θ + εv) − L(θ − εv)) / 2ε  ≈  ⟨g, v⟩,    ε = 1e-6 (float64) or 1e-2 (float32)

which checks the whole leaf with two loss evaluations.  Its error is O(ε²) (truncation)
plus about u·|L|/ε (round-off, u the unit round-off), so it gets its own tolerance:

    ok ⇔ |fd − ⟨g, v⟩| ≤ fd_rtol · max(‖g‖, |fd|) + 10·u·max(|L|, 1)/ε

The second term keeps a leaf whose true gradient is exactly 0 (a bias before batch norm)
from failing on round-off alone.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import _validate as _v
from jaxmlp.backprop import _value_and_grad_jit
from jaxmlp.losses import _loss_impl, _loss_jit, check_inputs, check_penalties
from jaxmlp.model import MLP

__all__ = ["check_gradients", "GradientReport", "LeafError", "default_tolerances"]


class LeafError(NamedTuple):
    """One row of a gradient report: `layer`, leaf `name`, its `shape`, the largest
    absolute error, the normwise relative error, the reference's scale max|r| and
    whether the leaf passed."""

    layer: int
    name: str
    shape: tuple
    abs_err: float
    rel_err: float
    scale: float
    ok: bool


class GradientReport(NamedTuple):
    """The result of `check_gradients`.

    ok: every leaf passed both comparisons.
    loss_manual, loss_autodiff: the two loss values.
    autodiff: one LeafError per leaf, manual vs jax.grad.
    finite_differences: one LeafError per leaf (directional), or () when not run.
    rtol, atol, fd_rtol: the tolerances used.
    """

    ok: bool
    loss_manual: float
    loss_autodiff: float
    autodiff: tuple
    finite_differences: tuple
    rtol: float
    atol: float
    fd_rtol: float

    @property
    def max_rel_err(self) -> float:
        """The largest manual-vs-jax.grad relative error over all leaves."""
        return max((e.rel_err for e in self.autodiff), default=0.0)

    @property
    def max_abs_err(self) -> float:
        return max((e.abs_err for e in self.autodiff), default=0.0)

    def __str__(self) -> str:
        lines = [f"gradient check: {'OK' if self.ok else 'MISMATCH'}  "
                 f"(rtol={self.rtol:g}, atol={self.atol:g}; "
                 f"loss manual={self.loss_manual:.10g}, jax.grad={self.loss_autodiff:.10g})"]
        header = f"{'layer':>5}  {'leaf':<6} {'shape':<14} {'max abs err':>12} {'rel err':>10}  "
        for title, rows in (("manual vs jax.grad", self.autodiff),
                            ("manual vs finite differences", self.finite_differences)):
            if not rows:
                continue
            lines += ["", title, header + "ok"]
            for e in rows:
                lines.append(f"{e.layer:>5}  {e.name:<6} {str(e.shape):<14} "
                             f"{e.abs_err:>12.3e} {e.rel_err:>10.3e}  {'yes' if e.ok else 'NO'}")
        return "\n".join(lines)


def default_tolerances(dtype) -> tuple:
    """(rtol, atol, fd_rtol) for a float dtype: tight in float64, honest in float32."""
    if jnp.dtype(dtype) == jnp.float64:
        return 1e-9, 1e-12, 1e-5
    return 1e-4, 1e-6, 5e-2


def _leaf_rows(params, grads, refs, rtol, atol):
    rows = []
    for l, (layer, g_layer, r_layer) in enumerate(zip(params, grads, refs)):
        for name in layer:
            g = np.asarray(g_layer[name], np.float64)
            r = np.asarray(r_layer[name], np.float64)
            abs_err = float(np.max(np.abs(g - r))) if g.size else 0.0
            scale = float(np.max(np.abs(r))) if r.size else 0.0
            rel = abs_err / scale if scale > 0 else (0.0 if abs_err == 0 else np.inf)
            ok = bool(np.isfinite(abs_err) and abs_err <= atol + rtol * scale)
            rows.append(LeafError(l, name, tuple(g.shape), abs_err, rel, scale, ok))
    return tuple(rows)


@functools.partial(jax.jit, static_argnums=0)
def _autodiff_value_and_grad(model, params, x, y, key, state, pen=None):
    return jax.value_and_grad(_loss_impl, argnums=1)(model, params, x, y, True, key, state, pen)


def _finite_difference_rows(model, params, grads, x, y, key, state, fd_rtol, seed, pen=None):
    # Central differences in float64 when x64 is on (much smaller error), else as given.
    wide = jnp.float64 if jax.config.jax_enable_x64 else params[0]["W"].dtype
    eps = 1e-6 if wide == jnp.float64 else 1e-2
    p = jax.tree_util.tree_map(lambda a: a.astype(wide), params)
    s = None if state is None else jax.tree_util.tree_map(lambda a: a.astype(wide), state)
    xw, yw = x.astype(wide), y.astype(wide)
    rng = np.random.default_rng(seed)
    L0 = abs(float(_loss_jit(model, p, xw, yw, True, key, s, pen)))
    floor = 10 * float(jnp.finfo(wide).eps) * max(L0, 1.0) / eps
    rows = []
    for l, layer in enumerate(p):
        for name, leaf in layer.items():
            v = rng.standard_normal(leaf.shape)
            v /= np.linalg.norm(v)
            v = jnp.asarray(v, wide)

            def at(sign):
                q = [dict(d) for d in p]
                q[l][name] = leaf + sign * eps * v
                return float(_loss_jit(model, q, xw, yw, True, key, s, pen))

            fd = (at(1.0) - at(-1.0)) / (2 * eps)
            g = np.asarray(grads[l][name], np.float64)
            analytic = float(np.sum(g * np.asarray(v)))
            scale = max(float(np.linalg.norm(g)), abs(fd))
            err = abs(fd - analytic)
            rel = err / scale if scale > 0 else 0.0
            ok = bool(np.isfinite(err) and err <= fd_rtol * scale + floor)
            rows.append(LeafError(l, name, tuple(leaf.shape), err, rel, scale, ok))
    return tuple(rows)


def check_gradients(model: MLP, params, x, y, *, key=None, state=None,
                    rtol: Optional[float] = None, atol: Optional[float] = None,
                    finite_differences: bool = False, fd_rtol: Optional[float] = None,
                    seed: int = 0, l1=None, l2=None) -> GradientReport:
    """Compares `jaxmlp.value_and_grad` (manual δ) with `jax.grad` of `jaxmlp.loss`.

    Args:
      model, params, x, y, key, state: as for `jaxmlp.value_and_grad`.
      rtol, atol: tolerances of the autodiff comparison; default by the params' dtype:
        1e-9 and 1e-12 in float64, 1e-4 and 1e-6 in float32.
      finite_differences: also compare each leaf with a central difference along a
        random direction (two extra loss evaluations per leaf).
      fd_rtol: tolerance of that comparison (default 1e-5 in float64, 5e-2 in float32).
      seed: seed of the random directions.
      l1, l2: penalty weights overriding the model's, as in `jaxmlp.loss`.

    Returns:
      A `GradientReport`: `.ok`, per-leaf errors, and a readable table via `str()`.
    """
    x, y, key = check_inputs(model, params, x, y, train=True, key=key, state=state,
                             where="check_gradients")
    d_rtol, d_atol, d_fd = default_tolerances(params[0]["W"].dtype)
    rtol = d_rtol if rtol is None else _v.nonneg_real(rtol, "rtol", where="check_gradients")
    atol = d_atol if atol is None else _v.nonneg_real(atol, "atol", where="check_gradients")
    fd_rtol = (d_fd if fd_rtol is None
               else _v.nonneg_real(fd_rtol, "fd_rtol", where="check_gradients"))
    _v.flag(finite_differences, "finite_differences", where="check_gradients")
    seed = _v.integer(seed, "seed", where="check_gradients", low=0)
    pen = check_penalties(l1, l2, where="check_gradients")

    L_m, g_m = _value_and_grad_jit(model, params, x, y, key, state, pen)
    L_a, g_a = _autodiff_value_and_grad(model, params, x, y, key, state, pen)
    rows = _leaf_rows(params, g_m, g_a, rtol, atol)
    fd_rows = ()
    if finite_differences:
        fd_rows = _finite_difference_rows(model, params, g_m, x, y, key, state, fd_rtol, seed,
                                          pen)
    ok = all(r.ok for r in rows + fd_rows)
    return GradientReport(ok, float(L_m), float(L_a), rows, fd_rows, rtol, atol, fd_rtol)
