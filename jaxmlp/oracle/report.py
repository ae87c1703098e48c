"""The oracle's verdicts: `Entry` (one compared array), `OracleReport` (a whole network).

An array c matches its reference r when the shapes are equal and every element has
|c − r| ≤ atol + rtol·|r| (`numpy.allclose` semantics).  The errors reported are
max |c − r| and the normwise max |c − r| / max |r|.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import numpy as np

__all__ = ["Entry", "OracleReport", "Measure", "measure", "tolerance", "summary", "sup"]

class Entry(NamedTuple):
    """One compared array: `quantity` ("dW", "db", "delta" or "loss") of 0-based `layer`
    (None for the loss).

    expected_shape, shape: the reference's and the candidate's shapes.
    max_abs_err: max |c − r|; max_rel_err: max |c − r| / max |r| (normwise; inf when the
      reference is all zeros and the candidate is not); both NaN when the shapes differ.
    status: "ok", "mismatch" (values), "shape" (shapes differ) or "error" (your function
      raised or returned something that is not an array).
    diagnosis: the likely mistake, "" when ok.
    rule: the name of the diagnosis rule that fired (`jaxmlp.oracle.rules`), "" when ok.
    """

    quantity: str
    layer: Optional[int]
    expected_shape: tuple
    shape: tuple
    max_abs_err: float
    max_rel_err: float
    status: str
    diagnosis: str
    rule: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        d = self._asdict()
        d["expected_shape"], d["shape"] = list(self.expected_shape), list(self.shape)
        for k in ("max_abs_err", "max_rel_err"):
            d[k] = d[k] if math.isfinite(d[k]) else None  # JSON has no NaN/Inf
        return d


class OracleReport(NamedTuple):
    """The result of `compare`.

    ok: every compared array matches (numpy.allclose semantics, shapes equal).
    first_bad_layer: the 0-based layer where the error *enters*: walking backwards from
      the output layer (the order backprop computes δ), the first layer with any
      mismatching array, i.e. the highest-index bad layer.  A mistake in layer l's δ
      spreads to every layer below l, so the layers under it are usually wrong too; fix
      this one first.  None when every layer matches.
    dW, db: one `Entry` per layer (index = layer).
    delta: one `Entry` per layer, or () when the candidate has no "delta".
    loss: an `Entry` for the loss, or None when the candidate has no "loss".
    diagnosis: the summary, one line per finding.
    reference_loss: the reference's loss (NaN if it has none).
    rtol, atol: the tolerances used.
    convention: the declared convention, as you would pass it ('jaxmlp', Convention(...)).
    convention_match: when every array matches under another convention (so your code is
      right and only the declaration is not), how to pass that one; else None.
    """

    ok: bool
    first_bad_layer: Optional[int]
    dW: tuple
    db: tuple
    delta: tuple
    loss: Optional[Entry]
    diagnosis: str
    reference_loss: float
    rtol: float
    atol: float
    convention: str = "'jaxmlp'"
    convention_match: Optional[str] = None

    @property
    def entries(self) -> tuple:
        """Every layer entry, output layer first (backprop order), then the loss entry."""
        rows = []
        for l in reversed(range(len(self.dW))):
            rows += [q[l] for q in (self.dW, self.db, self.delta) if q]
        return tuple(rows) + ((self.loss,) if self.loss is not None else ())

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (NaN/Inf errors become None)."""
        return {
            "ok": self.ok,
            "first_bad_layer": self.first_bad_layer,
            "rtol": self.rtol,
            "atol": self.atol,
            "convention": self.convention,
            "convention_match": self.convention_match,
            "reference_loss": (self.reference_loss if math.isfinite(self.reference_loss)
                               else None),
            "entries": [e.to_dict() for e in self.entries],
            "diagnosis": self.diagnosis,
        }

    def __str__(self) -> str:
        return self.format()

    def format(self, file_keys: bool = False) -> str:
        """The table and the diagnosis; `file_keys` adds the 1-based `.npz` key of each row
        (dW1 is layer 0), as `jaxmlp check` prints it."""
        L = len(self.dW)
        head = "OK" if self.ok else "MISMATCH"
        if self.convention_match is not None:
            head += f" (but right under convention={self.convention_match})"
        lines = [f"jaxmlp oracle: {head}  (convention={self.convention}, rtol={self.rtol:g}, "
                 f"atol={self.atol:g}; "
                 f"{L} layer{'s' if L > 1 else ''}, 0-based, output layer {L - 1} first as "
                 f"backprop runs)"]
        key_col = f"{'key':<8}" if file_keys else ""
        lines.append(f"{'layer':>5}  {'grad':<6} {key_col}{'shape':<14} {'max abs err':>11} "
                     f"{'max rel err':>11}  status")
        for e in self.entries:
            layer = "-" if e.layer is None else str(e.layer)
            key = ("loss" if e.layer is None else f"{e.quantity}{e.layer + 1}")
            key = f"{key:<8}" if file_keys else ""
            errs = [("n/a" if math.isnan(v) else f"{v:.3e}") for v in
                    (e.max_abs_err, e.max_rel_err)]
            status = {"ok": "ok", "mismatch": "MISMATCH", "shape": "SHAPE"}[e.status]
            lines.append(f"{layer:>5}  {e.quantity:<6} {key}{str(e.shape):<14} {errs[0]:>11} "
                         f"{errs[1]:>11}  {status}")
        lines += ["", "diagnosis:"] + ["  " + s for s in self.diagnosis.splitlines()]
        return "\n".join(lines)



def real_array(value, name: str) -> np.ndarray:
    """`np.asarray(value)`, or a TypeError naming `name` unless it is a real numeric array."""
    try:
        arr = np.asarray(value)
    except Exception as e:  # ragged lists and the like
        raise TypeError(
            f"{name} must be a numeric array, got {type(value).__name__}: {e}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return arr


class Measure(NamedTuple):
    ok: bool
    shape_ok: bool
    abs_err: float
    rel_err: float


def measure(c: np.ndarray, r: np.ndarray, rtol: float, atol: float) -> Measure:
    if c.shape != r.shape:
        return Measure(False, False, math.nan, math.nan)
    c = c.astype(np.float64)
    diff = np.abs(c - r)
    with np.errstate(invalid="ignore"):
        ok = bool(np.all(diff <= atol + rtol * np.abs(r)))  # NaN compares False
    if c.size == 0:
        return Measure(True, True, 0.0, 0.0)
    abs_err = float(np.max(diff)) if np.all(np.isfinite(diff)) else math.inf
    scale = float(np.max(np.abs(r)))
    rel = abs_err / scale if scale > 0 else (0.0 if abs_err == 0 else math.inf)
    return Measure(ok, True, abs_err, rel)


_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def sup(n: int) -> str:
    """Layer index as a math superscript: 2 → ⁽²⁾."""
    return f"⁽{str(n).translate(_SUPERSCRIPT)}⁾"


def summary(ok, first_bad, entries_by_q, loss_entry, L) -> str:
    if ok:
        return "all gradients match the reference"
    lines = []
    if first_bad is not None:
        where = "the output layer" if first_bad == L - 1 else f"the output layer is {L - 1}"
        lines.append(
            f"the error enters at layer {first_bad} (0-based; {where}): the first mismatch "
            f"walking back from the output, as backprop computes δ; a wrong δ spreads to "
            f"every layer below")
        for l in reversed(range(L)):
            groups: dict = {}
            for q, entries in entries_by_q.items():
                e = entries[l]
                if not e.ok:
                    groups.setdefault(e.diagnosis, []).append(q)
            for text, qs in groups.items():
                lines.append(f"layer {l} {', '.join(qs)}: {text}")
    else:
        lines.append("the gradients match; the loss does not")
    if loss_entry is not None and not loss_entry.ok:
        lines.append(f"loss: {loss_entry.diagnosis}")
    return "\n".join(lines)


