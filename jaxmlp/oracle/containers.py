"""Students' own parameter containers: read them as they are, and give the reference back in
the same form, so nothing is converted by hand.

| what you have (course) | read as | reference gradients given back as |
| --- | --- | --- |
| `params = {"W1", "b1", "W2", …}` (CS231n) | 1-based layers | `{"W1": dW1, "b1": db1, …}` (CS231n's `grads`) |
| `parameters = {"W1", "b1", …}` (deeplearning.ai) | 1-based layers | `{"dW1": …, "db1": …}` (the course's `grads`) |
| an object with `.params` (CS231n's `TwoLayerNet`) | its dict | as for the dict |
| an object with `.weights`, `.biases` (Nielsen's `Network`) | the lists | `(nabla_b, nabla_w)`, Nielsen's order |
| an object with `.coefs_`, `.intercepts_` (scikit-learn) | the lists | `(coef_grads, intercept_grads)` |
| `(weights, biases)`, a pair of lists | the lists | as for the object of the convention's course, else `{"dW": […], "db": […]}` |

Which dict keys mean gradients follows the convention: `deeplearning_ai` names them `dW1`,
`db1`; every other convention uses the parameters' own keys.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

__all__ = ["Container", "unpack", "pack", "check_numbered"]

_NUMBERED = re.compile(r"^([Wb])(\d+)$")


class Container(NamedTuple):
    """How a student's parameters were held: `kind` is "dict" (1-based keys, `keys` the
    (W key, b key) per layer), "nielsen", "sklearn" or "lists"."""

    kind: str
    keys: tuple = ()


def _numbered_layers(params: Mapping, name: str) -> tuple:
    """((W1, b1), (W2, b2), …) from a 1-based dict; ValueError naming a missing, extra or
    unexpected key."""
    found = {"W": {}, "b": {}}
    others = []
    for key in params:
        m = _NUMBERED.match(key) if isinstance(key, str) else None
        if m is None or int(m.group(2)) < 1:
            others.append(key)
        else:
            found[m.group(1)][int(m.group(2))] = key
    if not found["W"]:
        raise ValueError(f"{name} has no weights: expected 1-based keys 'W1', 'b1', 'W2', … "
                         f"(CS231n's params, deeplearning.ai's parameters), got keys "
                         f"{sorted(map(str, params))}")
    if others:
        norm = [k for k in others if isinstance(k, str) and re.match(r"(gamma|beta)\d+$", k)]
        extra = (" (batch/layer-norm parameters: the network check covers dense layers; "
                 "check a norm layer with oracle.check_layer('batchnorm', …))" if norm else "")
        top = max(found["W"])
        want = "'W1', 'b1'" + (f", …, 'W{top}', 'b{top}'" if top > 1 else "")
        raise ValueError(f"{name} has keys the oracle does not know: "
                         f"{sorted(map(str, others))}; expected only {want}{extra}")
    check_numbered(params, "W", "b", name)  # no gaps, both keys of every layer
    return tuple((found["W"][l], found["b"][l]) for l in range(1, max(found["W"]) + 1))


def unpack(params, name: str = "params"):
    """(weights, biases, Container) from a student's container (see the module table).

    Raises:
      ValueError: a dict with a missing, extra or unknown key (named).
      TypeError: anything that is not one of the containers above.
    """
    if isinstance(params, Mapping):
        keys = _numbered_layers(params, name)
        return ([params[w] for w, _ in keys], [params[b] for _, b in keys],
                Container("dict", keys))
    if isinstance(getattr(params, "params", None), Mapping):          # CS231n's nets
        return unpack(params.params, f"{name}.params")
    if hasattr(params, "coefs_") and hasattr(params, "intercepts_"):   # scikit-learn
        return list(params.coefs_), list(params.intercepts_), Container("sklearn")
    if hasattr(params, "weights") and hasattr(params, "biases"):       # Nielsen's Network
        return list(params.weights), list(params.biases), Container("nielsen")
    if isinstance(params, (list, tuple)) and len(params) == 2 and all(
            isinstance(p, (list, tuple)) for p in params):
        return list(params[0]), list(params[1]), Container("lists")
    raise TypeError(
        f"{name} must be your parameter container: a dict with 'W1', 'b1', … (CS231n, "
        f"deeplearning.ai), an object with .params, .weights/.biases (Nielsen) or "
        f".coefs_/.intercepts_ (scikit-learn), or a pair (weights, biases) of lists; got "
        f"{type(params).__name__}")


def pack(dW: list, db: list, container: Container, convention):
    """The reference's dW, db (already in the convention's shapes) in the student's form."""
    if container.kind == "dict":
        prefix = "d" if convention.name == "deeplearning_ai" else ""
        out = {}
        for (w, b), gW, gb in zip(container.keys, dW, db):
            out[prefix + w] = gW
            out[prefix + b] = gb
        return out
    kind = container.kind
    if kind == "lists":
        kind = {"nielsen": "nielsen", "sklearn": "sklearn"}.get(convention.name, "lists")
    if kind == "nielsen":
        return list(db), list(dW)
    if kind == "sklearn":
        return list(dW), list(db)
    return {"dW": list(dW), "db": list(db)}


def check_numbered(grads: Mapping, w: str, b: str, name: str = "your gradient dict") -> None:
    """A 1-based gradient dict (w, b the key prefixes: "dW"/"db" or "W"/"b") numbers its
    layers 1 … L without gaps and has both keys of every layer; other keys ("dA1", "cost")
    are ignored.  ValueError naming the key otherwise."""
    pattern = re.compile(rf"^({re.escape(w)}|{re.escape(b)})(\d+)$")
    found = {w: set(), b: set()}
    for key in grads:
        m = pattern.match(key) if isinstance(key, str) else None
        if m:
            found[m.group(1)].add(int(m.group(2)))
    L = max(found[w] | found[b], default=0)
    for l in range(1, L + 1):
        for kind, other in ((w, b), (b, w)):
            if l not in found[kind]:
                where = f"it has {other + str(l)!r}" if l in found[other] else \
                    f"it has layers up to {L}"
                raise ValueError(f"{name} has no {kind + str(l)!r}: {where}; the layers must "
                                 f"be numbered 1, 2, … without gaps, each with {w}<l> and {b}<l>")
