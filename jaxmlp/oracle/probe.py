"""`probe`: your whole forward/backward function, on configurations chosen to expose bugs.

One array dump can hide a mistake: a transposed dW has the right shape when the matrix is
square, a missing Σ over the batch is right for one example, m read from the wrong axis
is right when n_x = m.  `probe` calls your function on networks jaxmlp builds so that
none of that can hide, and compares each result with `reference_gradients`:

- every dimension distinct: the input width, each hidden width and the output width are
  all different, and none equals a batch size (nor is twice or half of one);
- each batch size you ask for (default 1, an odd 7 and a large 64);
- each depth (number of dense layers, default 1, 2 and 3) and each hidden activation
  your function supports;
- one "saturating" configuration per depth with weights ×2 and inputs ×2, so sigmoid and
  tanh hidden units sit near their flat ends and ReLUs are dead for part of the batch;
  the output layer is scaled so |z| ≤ 12 there (near saturation, not past it: textbook
  log(σ(z)) is still finite).

The configurations are tried smallest first (depth, then batch size) and the report
shows the smallest failing one with the usual layer-by-layer table and diagnosis.

Your function is called as ``fn(weights, biases, x, y, **kw)`` with the arrays in the
convention's layout:

| convention's | weights | biases | x | y |
| --- | --- | --- | --- | --- |
| weights="out_in" / "in_out" | (n_out, n_in) / (n_in, n_out) | | | |
| data="batch_first" | | (n_out,) | (m, n_x) | (m, K); cce with labels="index": (m,) ints |
| data="features_first" | | (n_out, 1) | (n_x, m) | (K, m); labels="index": (m,) ints |
| data="per_example" | | (n_out, 1) | (n_x, 1), once per example | (K, 1) |

``kw`` holds ``activation=<name>`` when ``fn`` has a parameter called ``activation``
(pass ``activations={"sigmoid": "logistic"}`` to send your own spelling), and the L2
strength, when ``l2`` is not 0, under the name your function uses: the first of
``l2``, ``reg``, ``lambd``, ``lambda_``, ``alpha``, ``weight_decay`` among its
parameters.  For data="per_example" the per-example gradients (and losses) are summed,
as Nielsen's ``update_mini_batch`` does.  ``fn`` may return any form `gradients_from`
reads; NumPy or JAX arrays alike.
"""
from __future__ import annotations

import inspect
import math
import numbers
from typing import Callable, NamedTuple, Optional

import numpy as np

from jaxmlp.oracle.conventions import base_loss, resolve
from jaxmlp.oracle.limits import TimeLimitExceeded, time_limit
from jaxmlp.oracle.reference import (_check_l2, _check_n_train, _check_names,
                                      reference_gradients)
from jaxmlp import _validate as _v
from jaxmlp.oracle.report import OracleReport
from jaxmlp.oracle.rules import compare, gradients_from

__all__ = ["probe", "ProbeReport", "ProbeResult", "L2_NAMES"]

#: The parameter names under which `probe` passes the L2 strength, first match wins.
L2_NAMES = ("l2", "reg", "lambd", "lambda_", "alpha", "weight_decay")

#: Widths `probe` draws layer sizes from, in order (those clashing with a batch size are
#: skipped).
_MAX_LOGIT = 12.0  # the saturating configurations' largest |z| at the output

_WIDTHS = (5, 6, 4, 9, 11, 13, 10, 12, 3, 14, 15, 17)


class ProbeResult(NamedTuple):
    """One configuration: the network, the batch, and what came of it.

    `report` is the `OracleReport` (None when your function raised or returned
    something `gradients_from` cannot read: then `error` says what happened)."""

    depth: int
    batch_size: int
    activation: Optional[str]
    sizes: tuple
    saturated: bool
    report: Optional[OracleReport]
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.report is not None and self.report.ok

    def describe(self) -> str:
        act = f", activation={self.activation!r}" if self.activation is not None else ""
        sat = ", saturating (large weights and inputs)" if self.saturated else ""
        return (f"depth {self.depth} (layer sizes {self.sizes}), batch size "
                f"{self.batch_size}{act}{sat}")

    def to_dict(self) -> dict:
        return {"depth": self.depth, "batch_size": self.batch_size,
                "activation": self.activation, "sizes": list(self.sizes),
                "saturated": self.saturated, "ok": self.ok, "error": self.error,
                "report": None if self.report is None else self.report.to_dict()}


class ProbeReport(NamedTuple):
    """All configurations `probe` ran, smallest first; `ok` only when every one matched."""

    ok: bool
    results: tuple
    convention: str

    @property
    def failing(self) -> Optional[ProbeResult]:
        """The smallest failing configuration, or None."""
        return next((r for r in self.results if not r.ok), None)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "convention": self.convention,
                "configurations": len(self.results),
                "failed": sum(not r.ok for r in self.results),
                "results": [r.to_dict() for r in self.results]}

    def __str__(self) -> str:
        n = len(self.results)
        if self.ok:
            return (f"jaxmlp probe: OK: {n} configuration{'s' if n != 1 else ''} match "
                    f"the reference (convention={self.convention})")
        bad = [r for r in self.results if not r.ok]
        f = bad[0]
        lines = [f"jaxmlp probe: MISMATCH in {len(bad)} of {n} configurations "
                 f"(convention={self.convention}); the smallest failing one is",
                 f"  {f.describe()}"]
        passed = [r for r in self.results if r.ok]
        if passed:
            lines.append(f"  (it passes {len(passed)}, e.g. {passed[0].describe()})")
        lines.append("")
        lines.append(f"your function raised or returned junk: {f.error}" if f.error
                     else str(f.report))
        return "\n".join(lines)


# --------------------------------------------------------------------------- validation

def _activations(activations) -> list:
    """[(jaxmlp name, the value passed to fn)]."""
    if isinstance(activations, str):
        pairs = [(activations, activations)]
    elif isinstance(activations, dict):
        pairs = list(activations.items())
    elif isinstance(activations, (list, tuple)):
        pairs = [(a, a) for a in activations]
    else:
        raise TypeError(f"activations must be a name, a tuple of names or a dict "
                        f"{{jaxmlp name: your name}}, got {type(activations).__name__}")
    if not pairs:
        raise ValueError("activations must name at least one hidden activation")
    for name, _ in pairs:
        _check_names(name, "identity", "mse")
    return pairs


def _parameters(fn) -> tuple:
    """(names of fn's parameters, whether it takes **kwargs)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return (), True
    names = tuple(sig.parameters)
    var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    positional = [p for p in sig.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    var_pos = any(p.kind is p.VAR_POSITIONAL for p in sig.parameters.values())
    if len(positional) < 4 and not var_pos:
        raise TypeError(
            f"fn must take (weights, biases, x, y, ...) positionally; {_name(fn)} has "
            f"signature {sig}")
    return names, var_kw


def _name(fn) -> str:
    inner = getattr(fn, "func", fn)
    return getattr(inner, "__qualname__", None) or repr(fn)


# --------------------------------------------------------------------------- configurations

def _sizes(depth: int, K: int, batch_sizes: tuple) -> tuple:
    """Layer sizes (n_x, hidden…, K): all distinct, none equal to (or ×2, ×½ of) a batch
    size or to K."""
    clash = set(batch_sizes) | {2 * m for m in batch_sizes} | {m / 2 for m in batch_sizes}
    pool = [w for w in _WIDTHS if w not in clash and w != K]
    if len(pool) < depth:  # absurd batch sizes: fall back to any distinct widths
        pool = [w for w in range(3, 64) if w != K and w not in batch_sizes]
    return tuple(pool[:depth]) + (K,)


def _n_outputs(output: str, loss: str, batch_sizes: tuple) -> int:
    for K in (3, 2, 4):
        if K not in batch_sizes:
            return K
    return 3


def _problem(sizes, m, output, loss, rng, saturated):
    """jaxmlp-layout W (n_out, n_in), b (n_out,), x (m, n_x), y (m, K) or labels (m,)."""
    scale = 2.5 if saturated else 1.2
    W = [rng.normal(size=(o, i)) * scale / math.sqrt(i) for i, o in zip(sizes, sizes[1:])]
    b = [rng.normal(size=o) * 0.5 for o in sizes[1:]]
    x = rng.normal(size=(m, sizes[0])) * (2.0 if saturated else 1.0)
    K = sizes[-1]
    labels = None
    if loss == "cce":
        labels = rng.integers(0, K, size=m)
        y = np.eye(K)[labels]
    elif loss == "bce":
        y = rng.integers(0, 2, size=(m, K)).astype(float)
    elif output in ("sigmoid",):
        y = rng.uniform(0.05, 0.95, size=(m, K))
    else:
        y = rng.normal(size=(m, K))
    return W, b, x, y, labels


def _in_layout(conv, W, b, x, y, labels):
    """The problem in the convention's layout: (weights, biases, X, Y)."""
    weights = [w.T.copy() for w in W] if conv.weights == "in_out" else [w.copy() for w in W]
    if conv.data == "batch_first":
        biases = [v.copy() for v in b]
        X = x.copy()
        Y = labels.copy() if labels is not None and conv.labels == "index" else y.copy()
    else:
        biases = [v.reshape(-1, 1).copy() for v in b]
        X = x.T.copy()
        Y = (labels.copy() if labels is not None and conv.labels == "index"
             and conv.data == "features_first" else y.T.copy())
    return weights, biases, X, Y


def _call(fn, conv, weights, biases, X, Y, kw):
    """fn's gradients in `gradients_from` form; per-example calls are summed."""
    if conv.data != "per_example":
        return gradients_from(fn(weights, biases, X, Y, **kw), weights, biases)
    total = None
    for i in range(X.shape[1]):
        g = gradients_from(fn(weights, biases, X[:, i:i + 1], Y[:, i:i + 1], **kw),
                           weights, biases)
        if total is None:
            total = {k: (list(v) if isinstance(v, list) else v) for k, v in g.items()}
            continue
        for q in ("dW", "db"):
            total[q] = [t + np.asarray(a, np.float64) for t, a in zip(total[q], g[q])]
        total.pop("delta", None)  # per-example δs do not add up to the batch's
        if "loss" in total:
            total["loss"] = (total["loss"] + g["loss"]) if "loss" in g else None
    if total is not None and total.get("loss") is None:
        total.pop("loss", None)
    return total


# --------------------------------------------------------------------------- probe

def probe(fn: Callable, *, output: str, loss: str, activations="relu", convention="jaxmlp",
          depths=(1, 2, 3), batch_sizes=(1, 7, 64), l2: float = 0.0, seed: int = 0,
          rtol: float = 1e-6, atol: float = 1e-9, saturate: bool = True,
          n_train=None, timeout: Optional[float] = None) -> ProbeReport:
    """Runs your forward/backward `fn` on generated networks and checks every result.

    Args:
      fn: ``fn(weights, biases, x, y, **kw)`` returning your gradients in any form
        `gradients_from` reads ({"dW": […], "db": […]}, dW1/db1 dicts, CS231n's
        (loss, {"W1": …}), Nielsen's (nabla_b, nabla_w), sklearn's (loss, coef_grads,
        intercept_grads)…), arrays in the convention's layout (see the module docstring).
      output, loss: the output activation and loss your function implements (as for
        `reference_gradients`).
      activations: the hidden activations your function supports: a name, a tuple of
        names, or a dict {jaxmlp name: the name your function expects}.  Passed as
        ``activation=`` only when `fn` has that parameter.
      convention: a preset name or a `Convention` (layout, scale, L2 form).
      depths: numbers of dense layers to try (≥ 1).
      batch_sizes: batch sizes m to try (≥ 1).
      l2: the L2 strength, as your code names it; 0 passes none.
      seed: seeds the generated weights, inputs and targets.
      rtol, atol: as for `compare` (float32 code needs about 1e-4, 1e-6).
      saturate: also run one configuration per depth with large weights and inputs.
      n_train: the n of an L2 penalty λ/(2n)ΣW² (l2="half_m") when your `fn` divides by a
        training-set size n of its own rather than the batch size (as for
        `reference_gradients`); default each configuration's m.
      timeout: seconds one configuration's calls of `fn` may run (None: no limit).  A
        configuration past it fails with a TimeLimitExceeded error, and the ones after it
        are not run (each would wait as long): they fail as "not run".  See
        `jaxmlp.oracle.limits` (POSIX, main thread).

    Returns:
      A `ProbeReport`: `.ok` (every configuration matched), `.results` (one
      `ProbeResult` per configuration, smallest first), `.failing` (the smallest failing
      one or None); `str()` shows the failing configuration and its `OracleReport`.

    Raises:
      TypeError: `fn` is not callable or cannot take (weights, biases, x, y); l2 ≠ 0 and
        `fn` has none of the parameters in `L2_NAMES`; malformed arguments.
      ValueError: unknown names or convention, non-positive depths or batch sizes,
        negative l2 or tolerances, an n_train that is not a positive integer.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function fn(weights, biases, x, y, **kw), got "
                        f"{type(fn).__name__}")
    conv = resolve(convention)
    _check_names("relu", output, loss)
    pairs = _activations(activations)
    depths = _v.positive_ints(depths, "depths", where="probe")
    batch_sizes = _v.positive_ints(batch_sizes, "batch_sizes", where="probe")
    l2 = _check_l2(l2, "probe")
    n_train = _check_n_train(n_train, None, "probe")
    rtol = _v.nonneg_real(rtol, "rtol", where="probe")
    atol = _v.nonneg_real(atol, "atol", where="probe")
    seed = _v.integer(seed, "seed", where="probe")
    if timeout is not None:
        timeout = _v.positive_real(timeout, "timeout", where="probe")
    names, var_kw = _parameters(fn)
    takes_activation = "activation" in names
    kw_l2 = {}
    if l2:
        name = next((n for n in L2_NAMES if n in names), "l2" if var_kw else None)
        if name is None:
            raise TypeError(f"l2={l2} but {_name(fn)} has no parameter for the L2 strength "
                            f"(expected one of {list(L2_NAMES)})")
        kw_l2 = {name: l2}

    K = _n_outputs(output, base_loss(loss), batch_sizes)
    configs = []
    for depth in depths:
        acts = pairs if depth > 1 else pairs[:1]  # one layer has no hidden activation
        for m in batch_sizes:
            for jm_name, user_name in acts:
                configs.append((depth, m, jm_name, user_name, False))
        if saturate:
            m = max(batch_sizes)
            for jm_name, user_name in acts:
                configs.append((depth, m, jm_name, user_name, True))

    results, timed_out = [], None
    for i, (depth, m, jm_name, user_name, saturated) in enumerate(configs):
        rng = np.random.default_rng([seed, i])
        sizes = _sizes(depth, K, batch_sizes)
        if timed_out is not None:
            results.append(ProbeResult(depth, m, jm_name if depth > 1 else None, sizes,
                                       saturated, None, f"not run: {timed_out}"))
            continue
        W, b, x, y, labels = _problem(sizes, m, output, base_loss(loss), rng, saturated)
        weights, biases, X, Y = _in_layout(conv, W, b, x, y, labels)
        ref = reference_gradients(weights, biases, X, Y, activation=jm_name, output=output,
                                  loss=loss, convention=conv, l2=l2, n_train=n_train)
        z_out = float(np.max(np.abs(ref["internals"].z[-1])))
        if saturated and z_out > _MAX_LOGIT:
            # near saturation, not past it: σ(z) rounds to 1 in float64 from z ≈ 37, and
            # log(1 − σ(z)) of correct textbook code is then −inf
            W[-1], b[-1] = W[-1] * (_MAX_LOGIT / z_out), b[-1] * (_MAX_LOGIT / z_out)
            weights, biases, X, Y = _in_layout(conv, W, b, x, y, labels)
            ref = reference_gradients(weights, biases, X, Y, activation=jm_name,
                                      output=output, loss=loss, convention=conv, l2=l2,
                                      n_train=n_train)
        kw = dict(kw_l2)
        if takes_activation:
            kw["activation"] = user_name
        act = jm_name if depth > 1 else None
        try:
            with time_limit(timeout, _name(fn)):
                cand = _call(fn, conv, [w.copy() for w in weights],
                             [v.copy() for v in biases], X.copy(), Y.copy(), kw)
            report = compare(cand, ref, rtol=rtol, atol=atol)
        except TimeLimitExceeded as e:
            timed_out = (f"an earlier configuration (depth {depth}, batch size {m}) ran past "
                         f"the time limit of {timeout:g} s")
            results.append(ProbeResult(depth, m, act, sizes, saturated, None,
                                       f"{type(e).__name__}: {e}"))
            continue
        except Exception as e:  # the user's code: report it, do not crash
            results.append(ProbeResult(depth, m, act, sizes, saturated, None,
                                       f"{type(e).__name__}: {e}"))
            continue
        results.append(ProbeResult(depth, m, act, sizes, saturated, report))
    results = tuple(results)
    return ProbeReport(all(r.ok for r in results), results, conv.call())
