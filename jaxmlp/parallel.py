"""Data-parallel training over a `jax.sharding.Mesh`, on JAX's own SPMD machinery.

The mesh is 1-D with the axis name `"data"`.  A minibatch (B, n) is split along its batch
axis into B/D rows per device; parameters, optimizer state and batch-norm statistics are
replicated.  Every per-example quantity (z, a, δ) then lives sharded, and the batch sums
in the gradient, ∂L/∂W⁽ˡ⁾ = δ⁽ˡ⁾ᵀa⁽ˡ⁻¹⁾ and ∂L/∂b⁽ˡ⁾ = Σ_batch δ⁽ˡ⁾, contract over the
sharded axis, so XLA's SPMD partitioner inserts one all-reduce per gradient; nothing is
hand-written.  The loss's 1/B uses the global batch size, so results equal single-device
training up to the order of floating-point additions.

The batch size must be a multiple of the device count: `check_mesh` raises a `ValueError`
otherwise (no padding, which would need masking to keep the loss exact).
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = ["data_mesh", "check_mesh", "replicate", "shard_batch", "shard_constraint", "AXIS"]

AXIS = "data"


def data_mesh(devices: Optional[Sequence] = None) -> Mesh:
    """A 1-D mesh named "data" over `devices` (default: all of `jax.devices()`)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices must not be empty")
    return Mesh(np.asarray(devices), (AXIS,))


def check_mesh(mesh, batch_size: int) -> int:
    """ValueError unless `mesh` has a "data" axis whose size divides `batch_size`;
    returns the number of devices on that axis."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if AXIS not in mesh.axis_names:
        raise ValueError(
            f"mesh must have an axis named {AXIS!r} (jaxmlp.parallel.data_mesh() makes one), "
            f"got axes {mesh.axis_names}")
    n = mesh.shape[AXIS]
    if batch_size % n:
        raise ValueError(
            f"batch size {batch_size} is not divisible by the {n} devices of the mesh's "
            f"{AXIS!r} axis; use a batch size that is a multiple of {n}")
    return n


def replicate(mesh: Mesh, tree):
    """Puts every array of `tree` on all devices of `mesh` (None leaves stay None)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(mesh: Mesh, tree):
    """Puts every array of `tree` on `mesh`, split along its first (batch) axis."""
    return jax.device_put(tree, NamedSharding(mesh, P(AXIS)))


def shard_constraint(mesh: Mesh, tree):
    """Inside jit: asks the compiler to split each array's first axis over "data"."""
    return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, P(AXIS)))
