"""The static architecture `MLP`, parameter initialisation and the forward pass.

Notation (dense layer l = 0 … L−1, batch-first, N examples):

    z⁽ˡ⁾ = a⁽ˡ⁻¹⁾ W⁽ˡ⁾ᵀ + b⁽ˡ⁾          (N, n_l)        a⁽⁻¹⁾ = x (N, n_in)
    u⁽ˡ⁾ = γ⁽ˡ⁾ ⊙ norm(z⁽ˡ⁾) + β⁽ˡ⁾      hidden layers with `norm`, else u = z
    a⁽ˡ⁾ = m⁽ˡ⁾ ⊙ f(u⁽ˡ⁾)               hidden layers; m the inverted-dropout mask (1 if off)
    ŷ = f_out(z⁽ᴸ⁻¹⁾)                   the output layer: no norm, no dropout

W⁽ˡ⁾ has shape (n_l, n_{l−1}) (the math's W ∈ ℝ^{n_out×n_in}); so z = x @ W.T + b.
Parameters are a list with one dict per dense layer, `{"W": (n_out, n_in), "b": (n_out,)}`,
plus `"gamma"`, `"beta"` (n_out,) on normalised hidden layers.  Batch-norm running
statistics are a separate pytree (`init_state`), never part of the parameters.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import activations as _act
from jaxmlp import init as _init
from jaxmlp import layers as _layers
from jaxmlp import _validate as _v
from jaxmlp._validate import as_array, check_finite, check_finite_leaves, is_concrete

Array = jax.Array
Params = list  # [{"W": (n_out, n_in), "b": (n_out,), ["gamma", "beta": (n_out,)]}, ...]

__all__ = ["MLP", "init_params", "init_state", "forward", "forward_pass", "Cache",
           "LayerCache", "LOSSES", "NORMS", "affine"]

#: Losses and the output activation each one requires (None: any output).
LOSSES = {"mse": None, "sse": None, "bce": "sigmoid", "cce": "softmax"}
NORMS = (None, "batch", "layer")
INIT_CHOICES = ("auto",) + tuple(_init.SCHEMES)


@dataclasses.dataclass(frozen=True)
class MLP:
    """The static architecture of a multi-layer perceptron: frozen, hashable, validated.

    It holds no arrays, so it can be a static argument of `jax.jit`
    (`jax.jit(f, static_argnums=0)`); changing any field compiles a new program.

    Args:
      sizes: layer widths (n_in, n_1, …, n_out); at least two positive ints.
      activation: the hidden activation, one for every hidden layer or a tuple with one
        per hidden layer (len(sizes) − 2 of them). Each is a name (identity, sigmoid,
        tanh, relu, leaky_relu, elu, gelu, or one registered with
        `jaxmlp.activations.register`) or an `Activation` from
        `jaxmlp.activations.custom`.
      output: the output activation: any hidden activation or `softmax`.
      loss: `mse`, `sse`, `bce` (needs `sigmoid` output) or `cce` (needs `softmax`).
      init: `auto` or a scheme of `jaxmlp.init` (used by `init_params`).
      l1: weight of the penalty l1·Σ|W| (weights only, never biases or γ/β); ≥ 0.
      l2: weight of the penalty (l2/2)·Σ‖W‖² (gradient l2·W); ≥ 0.
      norm: None, `"batch"` or `"layer"`: normalise each hidden layer's z before its
        activation, γ·(z − μ)/√(σ² + 1e-5) + β, σ² the biased variance.
      dropout: fraction of hidden activations set to zero in training (inverted dropout,
        kept units scaled by 1/(1 − dropout)); in [0, 1).
      norm_momentum: batch-norm running statistics are updated as
        running ← norm_momentum·running + (1 − norm_momentum)·batch (Keras convention;
        PyTorch's momentum=0.1 is the same rule as 0.9 here); in [0, 1).

    Each activation is resolved when the model is built and kept with it (not in `repr`,
    but in `==` and `hash`): a model named "swish" goes on computing the swish it was
    built with after the registry changes, and a model built after
    `register("swish", ..., overwrite=True)` is another model, so jit caches never mix
    the two. Fields hold names where a name stands for the activation (built-in or
    registered) and the `Activation` object otherwise.
    """

    sizes: tuple
    activation: Union[str, tuple] = "relu"
    output: str = "identity"
    loss: str = "mse"
    init: str = "auto"
    l1: float = 0.0
    l2: float = 0.0
    norm: Optional[str] = None
    dropout: float = 0.0
    norm_momentum: float = 0.9
    # ((Activation per hidden layer), output Activation), resolved at construction
    _fns: tuple = dataclasses.field(default=(), init=False, repr=False)

    def __post_init__(self):
        sizes = self.sizes
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
            raise TypeError(f"MLP: sizes must be a sequence of positive ints, got {sizes!r}")
        sizes = tuple(sizes)
        if len(sizes) < 2:
            raise ValueError(
                f"MLP: sizes must have at least two entries (n_in, n_out), got {sizes!r}")
        sizes = tuple(_v.positive_int(s, f"sizes[{i}]", where="MLP") for i, s in enumerate(sizes))
        object.__setattr__(self, "sizes", sizes)
        n_hidden = len(sizes) - 2

        act = self.activation
        if isinstance(act, (str, _act.Activation)):
            act, fn = _hidden(act)
            fns = (fn,) * n_hidden
        elif isinstance(act, (list, tuple)):
            act = tuple(act)
            if len(act) != n_hidden:
                raise ValueError(
                    f"MLP: activation must have one name per hidden layer "
                    f"({n_hidden} for sizes {sizes}), got {len(act)}: {act!r}")
            act, fns = zip(*map(_hidden, act)) if act else ((), ())
            act, fns = tuple(act), tuple(fns)
        else:
            raise TypeError(
                f"MLP: activation must be a name, an Activation or a tuple of them, "
                f"got {act!r}")
        object.__setattr__(self, "activation", act)

        output = self.output
        if not isinstance(output, (str, _act.Activation)):
            raise TypeError(f"MLP: output must be an activation name or an Activation, "
                            f"got {output!r}")
        if not isinstance(output, _act.Activation) and not _act.is_known(output):
            raise ValueError(
                f"MLP: output must be one of {list(_act.ACTIVATIONS)}"
                + (f" or a registered one {list(_act.registered())}"
                   if _act.registered() else "") + f", got {output!r}")
        output, out_fn = _canonical(output)
        object.__setattr__(self, "output", output)
        object.__setattr__(self, "_fns", (fns, out_fn))
        _v.one_of(self.loss, "loss", LOSSES, where="MLP")
        needed = LOSSES[self.loss]
        if needed is not None and self.output != needed:
            raise ValueError(
                f"MLP: loss={self.loss!r} needs output={needed!r}, got output={self.output!r}")
        if self.output == "softmax" and sizes[-1] < 2:
            raise ValueError(
                f"MLP: output='softmax' needs at least 2 outputs, got sizes[-1]={sizes[-1]}")
        _v.one_of(self.init, "init", INIT_CHOICES, where="MLP")
        object.__setattr__(self, "l1", _v.nonneg_real(self.l1, "l1", where="MLP"))
        object.__setattr__(self, "l2", _v.nonneg_real(self.l2, "l2", where="MLP"))
        _v.one_of(self.norm, "norm", NORMS, where="MLP")
        for field in ("dropout", "norm_momentum"):
            value = _v.probability(getattr(self, field), field, where="MLP", high_open=True)
            object.__setattr__(self, field, value)

    @property
    def n_layers(self) -> int:
        """Number of dense layers L (= len(sizes) − 1)."""
        return len(self.sizes) - 1

    @property
    def n_in(self) -> int:
        return self.sizes[0]

    @property
    def n_out(self) -> int:
        return self.sizes[-1]

    @property
    def hidden_activations(self) -> tuple:
        """One activation name per hidden layer."""
        return tuple(a.name for a in self._fns[0])

    @property
    def activation_fns(self) -> tuple:
        """One `jaxmlp.activations.Activation` per hidden layer, as resolved at
        construction."""
        return self._fns[0]

    @property
    def output_fn(self):
        """The output `jaxmlp.activations.Activation`, as resolved at construction."""
        return self._fns[1]

    def layer_shapes(self) -> list:
        """The expected params shapes: one dict of name -> shape per dense layer."""
        shapes = []
        for l in range(self.n_layers):
            n_in, n_out = self.sizes[l], self.sizes[l + 1]
            layer = {"W": (n_out, n_in), "b": (n_out,)}
            if self.norm is not None and l < self.n_layers - 1:
                layer["gamma"] = (n_out,)
                layer["beta"] = (n_out,)
            shapes.append(layer)
        return shapes

    def to_dict(self) -> dict:
        """A JSON-serialisable description; `MLP(**d)` rebuilds the model.

        Activations appear by name, so a model with a custom (non-built-in) activation is
        rebuilt from `d` only while that name is registered, with whatever is registered
        under it then; `jaxmlp.checkpoint` records the function's values too and refuses
        a mismatch."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        d["sizes"] = list(self.sizes)
        if isinstance(self.activation, tuple):
            d["activation"] = [_name(a) for a in self.activation]
        else:
            d["activation"] = _name(self.activation)
        d["output"] = _name(self.output)
        return d


def _name(spec) -> str:
    return spec.name if isinstance(spec, _act.Activation) else spec


def _canonical(spec):
    """(what the model's field holds, the Activation): the name when the name alone
    stands for the activation (built-in or registered), else the Activation itself."""
    fn = _act.resolve(spec, where="MLP")
    return (fn.name if _act.is_named(fn) else fn), fn


def _hidden(spec):
    """_canonical for a hidden layer: softmax (or any non-elementwise one) refused."""
    if not isinstance(spec, (str, _act.Activation)):
        raise TypeError(f"MLP: activation must be a name or an Activation, got {spec!r}")
    if not isinstance(spec, _act.Activation) and spec not in _act.hidden_names():
        raise ValueError(
            f"MLP: activation must be one of {list(_act.hidden_names())} (softmax is "
            f"output-only) or a name registered with jaxmlp.activations.register(name, f, "
            f"df), got {spec!r}")
    value, fn = _canonical(spec)
    if fn.df is None:
        raise ValueError(f"MLP: activation {fn.name!r} is not elementwise: softmax is "
                         f"output-only")
    return value, fn


# --------------------------------------------------------------------------- params

def _default_dtype():
    return jnp.zeros(()).dtype  # float32, or float64 with jax_enable_x64


def auto_scheme(model: MLP, layer: int) -> str:
    """The scheme `init="auto"` uses for dense layer `layer`: by the activation its input
    went through (the first hidden activation for layer 0, the output for no hidden layer)."""
    acts = model.activation_fns
    act = acts[max(layer - 1, 0)] if acts else model.output_fn
    return "he_normal" if act.relu_like else "xavier_uniform"


def init_params(key: Array, model: MLP, scheme: Optional[str] = None, *, dtype=None) -> Params:
    """Initial parameters: weights from `scheme`, biases 0, γ = 1 and β = 0 (norm).

    Args:
      key: a `jax.random.key`; layer l uses the l-th key of `jax.random.split(key, L)`.
      model: the `MLP`.
      scheme: overrides `model.init`; one of `jaxmlp.init.SCHEMES` or `"auto"`.
      dtype: float dtype of every leaf; default float32 (float64 when x64 is enabled).

    Returns:
      A list with one dict per dense layer: W (n_out, n_in), b (n_out,), and
      gamma/beta (n_out,) on hidden layers when `model.norm` is set.
    """
    check_model(model, where="init_params")
    scheme = model.init if scheme is None else scheme
    _v.one_of(scheme, "scheme", INIT_CHOICES, where="init_params")
    dtype = _check_dtype(dtype, where="init_params")
    key = _check_key(key, "key", where="init_params")
    _check_fits_in_memory(model, dtype)
    keys = jax.random.split(key, model.n_layers)
    params = []
    for l, shapes in enumerate(model.layer_shapes()):
        n_out, n_in = shapes["W"]
        s = auto_scheme(model, l) if scheme == "auto" else scheme
        layer = {"W": _init.init_weight(keys[l], s, n_out, n_in, dtype),
                 "b": jnp.zeros((n_out,), dtype)}
        if "gamma" in shapes:
            layer["gamma"] = jnp.ones((n_out,), dtype)
            layer["beta"] = jnp.zeros((n_out,), dtype)
        params.append(layer)
    return params


def param_bytes(model: MLP, dtype=None) -> int:
    """The bytes that `init_params(…, model, dtype=dtype)` allocates (all leaves)."""
    check_model(model, where="param_bytes")
    itemsize = _check_dtype(dtype, where="param_bytes").itemsize
    return itemsize * sum(math.prod(shape) for layer in model.layer_shapes()
                          for shape in layer.values())


def _available_bytes(device) -> Optional[int]:
    """Memory free for new arrays on `device`: its allocator's limit minus what is in
    use (GPU, TPU), or the host's available memory (CPU: MemAvailable of /proc/meminfo,
    else the physical memory); None when unknown."""
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory statistics
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_fits_in_memory(model: MLP, dtype) -> None:
    """ValueError, before any allocation, when the parameters alone exceed the memory
    available on the default device (an (10⁶, 10⁶) layer would otherwise hang or be
    killed while it draws 10¹² random numbers)."""
    need = param_bytes(model, dtype)
    device = jax.devices()[0]
    free = _available_bytes(device)
    if free is not None and need > free:
        raise ValueError(
            f"init_params: the parameters of sizes={model.sizes} need {need:,} bytes "
            f"({need / 2**30:.1f} GiB as {jnp.dtype(dtype).name}), more than the {free:,} "
            f"bytes ({free / 2**30:.1f} GiB) available on {device.platform}; use smaller "
            f"layers")


def init_state(model: MLP, *, dtype=None):
    """Batch-norm running statistics: one {"mean": 0, "var": 1} dict (each (n_l,)) per
    hidden layer, or None when the model has no batch norm."""
    check_model(model, where="init_state")
    if model.norm != "batch":
        return None
    dtype = _check_dtype(dtype, where="init_state")
    return [{"mean": jnp.zeros((n,), dtype), "var": jnp.ones((n,), dtype)}
            for n in model.sizes[1:-1]]


def _prefix(where) -> str:
    return f"{where}: " if where else ""


def check_model(model, *, where: str) -> None:
    """TypeError "<where>: model must be a jaxmlp.MLP, got ..." unless `model` is one."""
    if not isinstance(model, MLP):
        raise TypeError(f"{_prefix(where)}model must be a jaxmlp.MLP, got {type(model).__name__}")


def _check_dtype(dtype, *, where: str):
    """The float dtype to create arrays in; None means JAX's default float."""
    try:
        dtype = _default_dtype() if dtype is None else jnp.dtype(dtype)
    except TypeError:
        raise TypeError(f"{_prefix(where)}dtype must be a float dtype, got {dtype!r}") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{_prefix(where)}dtype must be a float dtype, got {dtype}")
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            f"{_prefix(where)}dtype float64 needs 64-bit JAX: call "
            f"jax.config.update('jax_enable_x64', True) "
            "at start-up (or use `with jax.enable_x64(True):`), else use float32")
    return dtype


def _check_key(key, name, *, where: str):
    name = _prefix(where) + name
    if key is None:
        raise TypeError(f"{name} must be a jax.random.key, got None")
    if not isinstance(key, (jax.Array, jax.core.Tracer)):
        raise TypeError(
            f"{name} must be a jax.random.key (e.g. jax.random.key(0)), got {type(key).__name__}")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"{name} must be a single key of shape (), got shape {key.shape}")
        return key
    if key.dtype == jnp.uint32 and key.shape == (2,):  # legacy jax.random.PRNGKey
        return jax.random.wrap_key_data(key)
    raise TypeError(
        f"{name} must be a jax.random.key (e.g. jax.random.key(0)), "
        f"got an array of dtype {key.dtype} and shape {key.shape}")


# --------------------------------------------------------------------------- checks

def check_params(model: MLP, params, name: str = "params", *, where: str) -> None:
    """ValueError unless `params` has exactly the structure and shapes `model` expects.

    `params` must be a list (as `init_params` returns: a tuple would be another pytree,
    whose optimizer state and checkpoints no longer match), one dict per dense layer.
    Concrete leaves must hold no NaN or Inf: a non-finite parameter is refused here,
    before any compute, rather than blamed later on the learning rate."""
    expected = model.layer_shapes()
    name = _prefix(where) + name
    if not isinstance(params, list):
        raise TypeError(
            f"{name} must be a list of {len(expected)} dicts (one per dense layer, as from "
            f"jaxmlp.init_params), got {type(params).__name__}")
    if len(params) != len(expected):
        raise ValueError(
            f"{name} has {len(params)} layers but the model {model.sizes} has {len(expected)}")
    for l, (layer, shapes) in enumerate(zip(params, expected)):
        if not isinstance(layer, dict):
            raise TypeError(f"{name}[{l}] must be a dict, got {type(layer).__name__}")
        if set(layer) != set(shapes):
            raise ValueError(
                f"{name}[{l}] must have keys {sorted(shapes)}, got {sorted(layer)}")
        for k, shape in shapes.items():
            leaf = layer[k]
            if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
                raise TypeError(f"{name}[{l}][{k!r}] must be an array, got {type(leaf).__name__}")
            if tuple(leaf.shape) != shape:
                raise ValueError(
                    f"{name}[{l}][{k!r}] must have shape {shape}, got {tuple(leaf.shape)}")
            if not jnp.issubdtype(leaf.dtype, jnp.floating):
                raise TypeError(
                    f"{name}[{l}][{k!r}] must be a float array, got dtype {leaf.dtype}")
    check_finite_leaves(
        ((f"{name}[{l}][{k!r}]", leaf) for l, layer in enumerate(params)
         for k, leaf in layer.items()),
        hint="; parameters must be finite: start from jaxmlp.init_params or a checkpoint")


def check_x(model: MLP, x, name: str = "x", *, where: str):
    name = _prefix(where) + name
    x = as_array(x, name)
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (batch, n_in={model.n_in}), got shape {tuple(x.shape)}")
    if x.shape[1] != model.n_in:
        raise ValueError(
            f"{name} must have shape (batch, {model.n_in}), got {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise ValueError(f"{name} must have at least one row, got shape {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a float array, got dtype {x.dtype}")
    check_finite(x, name)
    return x


def check_mode(model: MLP, *, train: bool, key, state, where: str):
    """Checks the training-mode extras; returns the key as a typed PRNG key (or None)."""
    if model.dropout > 0 and train:
        if key is None:
            raise ValueError(
                f"{_prefix(where)}the model has dropout={model.dropout}, so training mode "
                f"needs a PRNG key: "
                f"pass key=jax.random.key(seed) (a fresh one each step)")
        key = _check_key(key, "key", where=where)
    elif key is not None:
        key = _check_key(key, "key", where=where)
    if model.norm == "batch":
        if state is None and not train:
            raise ValueError(
                f"{_prefix(where)}the model has batch norm, so inference mode needs its "
                f"running statistics: "
                "pass state=jaxmlp.init_state(model) (as updated by training)")
        if state is not None:
            _check_state(model, state, where=where)
    elif state is not None:
        raise ValueError(
            f"{_prefix(where)}state= is only for models with norm='batch'; this model has "
            f"norm={model.norm!r}")
    return key


def _check_state(model: MLP, state, *, where: str):
    sizes = model.sizes[1:-1]
    pre = _prefix(where)
    if not isinstance(state, (list, tuple)) or len(state) != len(sizes):
        raise ValueError(
            f"{pre}state must be a list of {len(sizes)} dicts (one per hidden layer), "
            f"as from jaxmlp.init_state(model)")
    for l, (s, n) in enumerate(zip(state, sizes)):
        if not isinstance(s, dict) or set(s) != {"mean", "var"}:
            raise ValueError(f"{pre}state[{l}] must be a dict with keys 'mean' and 'var'")
        for k in ("mean", "var"):
            if tuple(jnp.shape(s[k])) != (n,):
                raise ValueError(
                    f"{pre}state[{l}][{k!r}] must have shape ({n},), got {tuple(jnp.shape(s[k]))}")
    check_finite_leaves(((f"{pre}state[{l}][{k!r}]", s[k]) for l, s in enumerate(state)
                         for k in ("mean", "var")),
                        hint="; batch-norm running statistics must be finite")
    for l, s in enumerate(state):
        var = s["var"]
        if is_concrete(var) and (not isinstance(var, jax.Array) or var.is_fully_addressable):
            low = float(np.min(np.asarray(var))) if np.size(var) else 0.0
            if low < 0:
                raise ValueError(
                    f"{pre}state[{l}]['var'] holds a negative running variance (min {low!r}); "
                    f"variances must be >= 0 (start from jaxmlp.init_state(model))")


# --------------------------------------------------------------------------- forward

class LayerCache(NamedTuple):
    """What the backward pass of one hidden layer needs (all (N, n_l) unless noted).

    a_in: the layer's input a⁽ˡ⁻¹⁾ (N, n_{l−1}); z: W a + b; norm: the norm's cache
    (None without norm); u: the activation's input; h: f(u); mask: the scaled dropout
    mask m/(1 − p) (None without dropout or in inference mode).
    """

    a_in: Array
    z: Array
    norm: Any
    u: Array
    h: Array
    mask: Optional[Array]


class Cache(NamedTuple):
    """The forward pass kept for backprop: `hidden` (one LayerCache per hidden layer),
    `a_in` the output layer's input (N, n_{L−1}), its logits `z` and `yhat` (N, n_out)."""

    hidden: tuple
    a_in: Array
    z: Array
    yhat: Array


def affine(a: Array, W: Array, b: Array) -> Array:
    """z = a Wᵀ + b for a (N, n_in), W (n_out, n_in), b (n_out,) or (N, n_out).

    The broadcast of b is explicit (implicit rank promotion is an error in the tests);
    a per-example b of shape (N, n_out) makes ∂L/∂b equal δ = ∂L/∂z, which the tests use
    to check the deltas against autodiff."""
    return a @ W.T + jnp.broadcast_to(b, (a.shape[0], W.shape[0]))


def forward_pass(model: MLP, params: Params, x: Array, *, train: bool = False,
                 key: Optional[Array] = None, state=None):
    """The forward pass with its cache; no argument checks (see `forward`).

    Returns:
      (yhat (N, n_out), Cache, new_state): new_state is the updated batch-norm running
      statistics in training mode with a state, else `state` unchanged.
    """
    acts = model.activation_fns
    n_hidden = len(acts)
    drop = train and model.dropout > 0
    keys = jax.random.split(key, n_hidden) if drop and n_hidden else None
    dtype = params[0]["W"].dtype
    a = x.astype(dtype)
    caches, new_state = [], []
    for l in range(n_hidden):
        layer = params[l]
        z = affine(a, layer["W"], layer["b"])
        if model.norm is None:
            u, norm_cache = z, None
        elif model.norm == "layer":
            u, norm_cache = _layers.layer_norm_forward(z, layer["gamma"], layer["beta"])
        else:
            running = None if state is None else state[l]
            u, norm_cache, new_running = _layers.batch_norm_forward(
                z, layer["gamma"], layer["beta"], running=running, train=train,
                momentum=model.norm_momentum)
            new_state.append(new_running)
        h = acts[l].f(u)
        if drop:
            a_next, mask = _layers.dropout_forward(h, keys[l], model.dropout)
        else:
            a_next, mask = h, None
        caches.append(LayerCache(a, z, norm_cache, u, h, mask))
        a = a_next
    last = params[-1]
    z = affine(a, last["W"], last["b"])
    yhat = model.output_fn.f(z)
    if state is None or not train:
        new_state = state
    return yhat, Cache(tuple(caches), a, z, yhat), new_state


def _forward_impl(model, params, x, train, key, state):
    return forward_pass(model, params, x, train=train, key=key, state=state)[0]


_forward_jit = jax.jit(_forward_impl, static_argnums=(0, 3))


def forward(model: MLP, params: Params, x, *, train: bool = False,
            key: Optional[Array] = None, state=None) -> Array:
    """ŷ = f_out(z⁽ᴸ⁻¹⁾), the network's output after the output activation.

    Args:
      model: the `MLP`.
      params: parameters matching `model` (see `init_params`).
      x: inputs, shape (batch, n_in), float; cast to the parameters' dtype.
      train: inference mode (default: no dropout, batch norm uses `state`'s running
        statistics) or training mode (dropout with `key`, batch-norm batch statistics).
      key: PRNG key for dropout; needed when `train` and `model.dropout > 0`.
      state: batch-norm running statistics (`init_state`); needed in inference mode
        when `model.norm == "batch"`.

    Returns:
      ŷ, shape (batch, n_out).
    """
    check_model(model, where="forward")
    check_params(model, params, where="forward")
    x = check_x(model, x, where="forward")
    key = check_mode(model, train=train, key=key, state=state, where="forward")
    return _forward_jit(model, params, x, bool(train), key, state)
