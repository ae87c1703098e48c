"""Atomic, checksummed, pickle-free checkpoints of params, optimizer state and config.

    save(path, params=θ, opt_state=s, state=bn, model=model, step=t, key=k, extra={...})
    ckpt = load(path, model=model)   # Checkpoint(params, opt_state, state, model, step, key, extra)

Format (version 1).  A checkpoint is one uncompressed zip archive (an ``.npz``: numpy's
``np.load`` reads it, with ``allow_pickle=False``) holding:

- one ``.npy`` member per array leaf, named by its place in the tree, e.g.
  ``params/0/W.npy``, ``opt_state/1/mu/0/W.npy``, ``state/0/mean.npy``, ``key.npy``
  (list and tuple entries by index, NamedTuple entries by field name, dict keys
  percent-encoded), written with ``allow_pickle=False``, little-endian, C order;
- ``meta.json``, UTF-8 JSON: ``format`` ("jaxmlp.checkpoint") and ``version`` (1); ``step``
  (int ≥ 0); ``model`` (``MLP.to_dict()``, or null; ``MLP(**model)`` rebuilds it);
  ``activations``, only when the model has custom (non-built-in) activations: for each
  name, ``jaxmlp.activations.fingerprint`` of the function it had (f and f′ on the
  check grid, float64);
  ``extra`` (the caller's JSON document, or null); ``arrays``, the manifest: one
  ``{"name", "dtype", "shape"}`` per array member, in checksum order (dtypes numpy has no
  native ``.npy`` code for, such as bfloat16, are stored as same-width unsigned ints with
  ``"stored_as"`` naming that type); ``trees``, the structure of ``params``,
  ``opt_state`` and ``state`` (nodes ``{"type": "array", "name"}``, ``"none"``,
  ``"list"``/``"tuple"`` with ``items``, ``"dict"`` with ``[key, node]`` pairs and
  ``"namedtuple"`` with a ``class`` and its ``fields``); ``key``, the PRNG key as its
  ``jax.random.key_data`` array plus the implementation's name (``"impl"``), or null;
- ``checksum.sha256``: the hex SHA-256 of ``meta.json``'s bytes followed by every array's
  stored bytes, in manifest order.

Guarantees:
- **No pickle, no code from the file.**  Arrays are read with ``allow_pickle=False``; a
  member holding a pickled object array is refused.  NamedTuple states are rebuilt from a
  whitelist of the state classes of :mod:`jaxmlp.optim` (``AdamState``, ``SgdState``, …),
  looked up by name; nothing else is ever imported or called.  Plain lists, tuples, dicts
  (string keys) and None round-trip as themselves.
- **Atomic write.**  ``save`` writes a temporary file in the target's folder, flushes and
  ``fsync``s it, then ``os.replace``s it onto ``path`` (and ``fsync``s the folder where the
  platform allows): after a crash ``path`` holds either the old checkpoint or the new
  one, never a torn file.  On any error the temporary file is removed.
- **Verified read.**  ``load`` checks the format and version first, then the manifest
  (every member present with its declared dtype and shape), then the checksum, and raises
  :class:`CheckpointError` (a ``ValueError``) saying "truncated or corrupted" on any
  mismatch.  Loaded arrays are jax arrays with the saved dtypes (int32 counts stay
  int32); float64 arrays need ``jax_enable_x64``, and ``load`` says so rather than
  silently rounding them.
- **Bounded read.**  ``load`` opens only a regular file (a directory, a FIFO, a device such
  as ``/dev/zero`` or a socket, also behind a symlink, is refused before it is opened for
  reading) and reads the zip from the file, never the whole file at once.  Before a member
  is decompressed, its declared uncompressed size is compared with what the manifest
  allows: an array member must hold exactly its .npy header (at most 64 KiB) plus
  ``itemsize × prod(shape)`` bytes of the manifest's dtype and shape, ``meta.json`` at
  most 64 MiB, ``checksum.sha256`` at most 4 KiB.  Only stored and deflated members are
  read, a member whose sizes are impossible (more compressed bytes than the file has, a
  stored member whose two sizes differ, more than deflate's 1032:1 expansion) is
  refused, every read is bounded by the declared size, and members outside the manifest
  are never read.  So memory stays within what the manifest declares, however the zip lies.

Resuming a run::

    path = checkpoint.latest("runs/a")                     # newest checkpoint that loads
    if path is None:
        params, opt_state, step = jm.init_params(key, model), opt.init(params), 0
    else:
        ckpt = checkpoint.load(path, model=model)            # refuses a different model
        params, opt_state, step, key = ckpt.params, ckpt.opt_state, ckpt.step, ckpt.key
    for t in range(step, n_steps):
        params, opt_state, loss = train_step(params, opt_state, x, y)
        if (t + 1) % 100 == 0:
            checkpoint.save(checkpoint.checkpoint_path("runs/a", t + 1), params=params,
                            opt_state=opt_state, model=model, step=t + 1, key=key)
            checkpoint.prune("runs/a", keep=3)

Training resumed from a loaded checkpoint is bit-for-bit the run that never stopped: the
arrays, their dtypes and the tree structure come back unchanged.  The optimizer itself
(its hyperparameters, a schedule) is code, not data: rebuild it the same way on resume,
and record its settings in ``extra`` if you want them on file.
"""
from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import json
import math
import operator
import os
import re
from pathlib import Path
import secrets
import zipfile
from typing import Any, NamedTuple, Optional
from urllib.parse import quote

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import activations as _act
from jaxmlp import optim as _optim
from jaxmlp import _validate as _v
from jaxmlp._validate import regular_file
from jaxmlp.model import MLP, _check_state, check_params

__all__ = ["Checkpoint", "CheckpointError", "save", "load", "latest", "checkpoint_path",
           "prune", "FORMAT", "FORMAT_VERSION"]

FORMAT = "jaxmlp.checkpoint"
FORMAT_VERSION = 1
META = "meta.json"
CHECKSUM = "checksum.sha256"
_TREES = ("params", "opt_state", "state", "aux")
_REQUIRED_TREES = ("params", "opt_state", "state")  # "aux" is optional in a file
_NODE_TYPES = ("array", "none", "list", "tuple", "dict", "namedtuple")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: truncated or corrupted, another format version,
    a pickled member, or a model or params that do not match the ones asked for."""


class Checkpoint(NamedTuple):
    """What :func:`load` returns.

    Attributes:
      params: the params pytree (a list of per-layer dicts of jax arrays).
      opt_state: the optimizer state (NamedTuples from :mod:`jaxmlp.optim`, tuples for a
        ``chain``), or None if none was saved.
      state: batch-norm running statistics, or None.
      model: the `MLP` saved with the checkpoint (or the one passed to ``load``), or None.
      step: int, the step number saved.
      key: the PRNG key saved (a typed ``jax.random.key``, or the raw uint32 array when a
        raw key was saved), or None.
      extra: the JSON document saved (a dict), or None.
      aux: any other pytree of arrays saved with ``aux=`` (``fit`` keeps its best-so-far
        parameters there), or None.
    """

    params: Any
    opt_state: Any
    state: Any
    model: Optional[MLP]
    step: int
    key: Any
    extra: Optional[dict]
    aux: Any = None


# --------------------------------------------------------------------------- save

def save(path, *, params, opt_state=None, state=None, model: Optional[MLP] = None,
         step: int = 0, key=None, extra: Optional[dict] = None, aux=None) -> str:
    """Writes a checkpoint to `path` atomically (see the module docstring for the format).

    Args:
      path: the file to write (conventionally ``checkpoint_path(folder, step)``); an
        existing file is replaced only once the new one is completely on disk. Missing
        parent folders are created.
      params: the params pytree; with `model`, checked against ``model.layer_shapes()``.
      opt_state: the optimizer state (any mix of lists, tuples, string-keyed dicts, None
        and the state NamedTuples of :mod:`jaxmlp.optim`, with array leaves), or None.
      state: batch-norm running statistics (``jaxmlp.init_state``), or None.
      model: the `MLP`, stored as ``model.to_dict()``, or None.  A custom activation is
        stored by name with its values on the check grid (``activations`` in the format):
        `load` needs it registered under that name (or the same `model` passed), and
        refuses one whose values differ.
      step: int ≥ 0, e.g. the number of updates applied so far.
      key: a ``jax.random.key`` (or a raw uint32 key array) to store, or None.
      extra: a JSON document (a dict with string keys; values dicts, lists, tuples,
        strings, bools, None and finite ints/floats) saved alongside; tuples come back as
        lists.
      aux: any other pytree of arrays (same rules as ``opt_state``), e.g. the best
        parameters so far; returned as ``Checkpoint.aux``.

    Returns:
      `path`, as a string.

    Raises:
      ValueError: a negative `step`, a NaN or infinity in `extra`, params/state that do
        not match `model`, or a model with two different custom activations of the same
        name.
      TypeError: a `step` that is not an int, `params` None, an `extra` that is not a
        dict of plain JSON values, a leaf that is not an array, a dict key that is not a
        string, or a node type outside the whitelist (a custom class, a foreign
        NamedTuple).
    """
    path = os.fspath(path)
    _check_model_arg(model, "save")
    if params is None:
        raise TypeError("save: params must be a params pytree, got None")
    step = _check_step(step, "save")
    if extra is not None:
        if not isinstance(extra, dict):
            raise TypeError(f"save: extra must be a dict (a JSON object), got "
                            f"{type(extra).__name__}")
        _check_json(extra, "extra")
    if model is not None:
        check_params(model, params, where="save")
        if state is not None:
            if model.norm != "batch":
                raise ValueError(
                    f"save: state is only for models with norm='batch'; this model has "
                    f"norm={model.norm!r}")
            _check_state(model, state, where="save")

    arrays = {}     # name -> little-endian C-order numpy array, in manifest order
    manifest = []
    trees = {}
    for tree_name, tree in zip(_TREES, (params, opt_state, state, aux)):
        trees[tree_name] = _encode(tree, tree_name, arrays, manifest)
    meta_key = None
    if key is not None:
        meta_key = _encode_key(key, arrays, manifest)
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "step": step,
        "model": None if model is None else model.to_dict(),
        "extra": extra,
        "key": meta_key,
        "arrays": manifest,
        "trees": trees,
    }
    custom = {} if model is None else _custom_activations(model)
    if custom:
        meta["activations"] = {name: _act.fingerprint(a) for name, a in custom.items()}
    meta_bytes = json.dumps(meta, indent=1, allow_nan=False).encode("utf-8")
    digest = _digest(meta_bytes, (arrays[m["name"]] for m in manifest))
    _atomic_write(path, lambda f: _write_zip(f, meta_bytes, arrays, digest))
    return path


def _check_model_arg(model, where: str) -> None:
    if model is not None and not isinstance(model, MLP):
        raise TypeError(f"{where}: model must be a jaxmlp.MLP or None, got "
                        f"{type(model).__name__}")


def _check_step(step, where: str) -> int:
    """`step` as an int >= 0 (anything with ``__index__``, such as a 0-d integer array,
    counts as an int): TypeError for another type, ValueError when negative."""
    if not isinstance(step, (bool, np.bool_)):
        with contextlib.suppress(TypeError):
            step = operator.index(step)
    return _v.integer(step, "step", where=where, low=0)


def _check_json(value, where: str) -> None:
    """save's error naming the first place in `value` that is not plain JSON: ValueError
    for a NaN or infinity, TypeError for a key that is not a str or a value of another
    type."""
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(
                f"save: extra must be JSON-serialisable: {where} is {value!r} (JSON has no NaN or "
                f"infinity)")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(
                    f"save: extra must be JSON-serialisable: {where} has the key {k!r} of type "
                    f"{type(k).__name__}; JSON object keys are strings")
            _check_json(v, f"{where}[{k!r}]")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_json(v, f"{where}[{i}]")
        return
    hint = " (convert it with float()/int()/.tolist())" if hasattr(value, "dtype") else ""
    raise TypeError(
        f"save: extra must be JSON-serialisable: {where} is a {type(value).__name__}{hint}")


def _state_classes() -> dict:
    """The whitelist: every NamedTuple class named *State in jaxmlp.optim, by name."""
    return {name: obj for name, obj in vars(_optim).items()
            if isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields")
            and name.endswith("State")}


def _storage_dtype(dtype: np.dtype) -> Optional[np.dtype]:
    """The unsigned int a dtype with no native .npy code (bfloat16, float8…) is stored as."""
    if dtype.kind in "biufc":
        return None
    if jnp.issubdtype(dtype, np.floating) or jnp.issubdtype(dtype, np.integer):
        return np.dtype(f"<u{dtype.itemsize}")
    raise TypeError(f"unsupported dtype {dtype}")


def _add_array(value, name: str, arrays: dict, manifest: list) -> dict:
    if isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
        raise TypeError(
            f"save: {name} is a PRNG key array; pass the key as save(..., key=key) instead")
    arr = np.asarray(value)
    try:
        stored_as = _storage_dtype(arr.dtype)
    except TypeError:
        raise TypeError(
            f"save: {name} has dtype {arr.dtype}; checkpoints hold bool, int, uint, float and "
            f"complex arrays only") from None
    entry = {"name": name, "dtype": arr.dtype.name, "shape": list(arr.shape)}
    if stored_as is not None:
        arr = arr.view(stored_as)
        entry["stored_as"] = stored_as.name
    arr = np.asarray(arr, dtype=arr.dtype.newbyteorder("<"), order="C")
    arrays[name] = arr
    manifest.append(entry)
    return {"type": "array", "name": name}


def _encode(tree, name: str, arrays: dict, manifest: list) -> dict:
    """The JSON node for `tree`; its array leaves go into `arrays` under their path name."""
    if tree is None:
        return {"type": "none"}
    if isinstance(tree, (jax.Array, np.ndarray, np.generic)):
        return _add_array(tree, name, arrays, manifest)
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        cls = type(tree)
        if _state_classes().get(cls.__name__) is not cls:
            raise TypeError(
                f"save: {name} is a {cls.__module__}.{cls.__qualname__}; checkpoints rebuild only "
                f"the state NamedTuples of jaxmlp.optim ({sorted(_state_classes())}), plain "
                f"lists, tuples, dicts and None")
        return {"type": "namedtuple", "class": cls.__name__,
                "fields": [[f, _encode(v, f"{name}/{f}", arrays, manifest)]
                           for f, v in zip(cls._fields, tree)]}
    if isinstance(tree, (list, tuple)) and type(tree) in (list, tuple):
        return {"type": type(tree).__name__,
                "items": [_encode(v, f"{name}/{i}", arrays, manifest)
                          for i, v in enumerate(tree)]}
    if type(tree) is dict:
        items = []
        for k, v in tree.items():
            if not isinstance(k, str):
                raise TypeError(f"save: {name} has the key {k!r}; checkpoint dict keys must be "
                                f"strings")
            items.append([k, _encode(v, f"{name}/{quote(k, safe='')}", arrays, manifest)])
        return {"type": "dict", "items": items}
    raise TypeError(
        f"save: {name} is a {type(tree).__name__}; checkpoint trees hold arrays, None, lists, "
        f"tuples, string-keyed dicts and the state NamedTuples of jaxmlp.optim")


def _encode_key(key, arrays: dict, manifest: list) -> dict:
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        impl = str(jax.random.key_impl(key))
        _add_array(jax.random.key_data(key), "key", arrays, manifest)
        return {"name": "key", "typed": True, "impl": impl}
    if isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32:
        _add_array(key, "key", arrays, manifest)
        return {"name": "key", "typed": False, "impl": None}
    raise TypeError(
        f"save: key must be a jax.random.key (or a raw uint32 key array) or None, got "
        f"{type(key).__name__}")


def _digest(meta_bytes: bytes, arrays) -> str:
    h = hashlib.sha256(meta_bytes)
    for arr in arrays:
        h.update(arr.tobytes())
    return h.hexdigest()


def _write_zip(f, meta_bytes: bytes, arrays: dict, digest: str) -> None:
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr(META, meta_bytes)
        for name, arr in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, arr, allow_pickle=False)
        zf.writestr(CHECKSUM, digest.encode("ascii"))


def _atomic_write(path: str, write) -> None:
    """write(f) into a temporary file beside `path`, fsync, then os.replace onto `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: str) -> None:
    """Makes the rename durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- load

def load(path, *, model: Optional[MLP] = None) -> Checkpoint:
    """Reads and verifies a checkpoint written by :func:`save`.

    Args:
      path: the checkpoint file.
      model: optional `MLP` the checkpoint must belong to: its config must equal the saved
        one field by field (when one was saved), and the params' structure and shapes
        must be the ones it expects (``model.layer_shapes()``).

    A saved model with custom activations is rebuilt by name: through `model`'s own
    activations when given, else through the registry (`jaxmlp.activations.register`
    them first).  Either way each one's values on the check grid must equal those saved
    (rtol 1e-9), so a different function under the same name is refused, never used.

    Returns:
      A :class:`Checkpoint`; arrays are jax arrays with the dtypes saved.

    Raises:
      FileNotFoundError: no file at `path`.
      CheckpointError: `path` is not a regular file (a directory, a FIFO, a device such as
        ``/dev/zero``, a socket: refused before it is opened for reading); a truncated or
        corrupted file (not a readable zip, a member missing, with the wrong dtype or
        shape, or declaring another uncompressed size than the manifest's dtype × shape
        plus a .npy header of at most 64 KiB, a ``meta.json`` over 64 MiB, a checksum
        mismatch), a pickled member, another format or format version, float64 arrays
        without ``jax_enable_x64``, a `model` that differs from the saved one or does
        not fit the params, or a custom activation that is not registered or is not the
        function it was saved with.
    """
    path = os.fspath(path)
    _check_model_arg(model, "load")
    try:
        f = regular_file(path, f"checkpoint {path!r}", CheckpointError)
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint at {path!r}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        try:
            zf = zipfile.ZipFile(f)
        except Exception as e:  # zipfile raises many kinds on a damaged archive
            raise CheckpointError(
                f"checkpoint {path!r} is truncated or corrupted: not a readable zip archive "
                f"({e})") from e
        with zf:
            meta, meta_bytes, raw, stored = _read_checkpoint(zf, size, path)
    manifest = meta["arrays"]
    actual = _digest(meta_bytes, (raw[e["name"]] for e in manifest))
    if stored != actual:
        raise CheckpointError(
            f"checkpoint {path!r} is corrupted: SHA-256 checksum mismatch (stored "
            f"{stored[:16]}…, computed {actual[:16]}…)")

    arrays = {e["name"]: _to_jax(raw[e["name"]], e, path) for e in manifest}
    used = set()
    try:
        trees = {t: _decode(meta["trees"][t], arrays, used, path, t) if t in meta["trees"]
                 else None for t in _TREES}
    except RecursionError as e:
        raise _corrupt(path, "its trees are nested too deeply") from e
    key = _decode_key(meta["key"], arrays, used, path)
    if used != set(arrays):
        raise CheckpointError(
            f"checkpoint {path!r} is corrupted: arrays {sorted(set(arrays) - used)} are in "
            f"the manifest but in no tree")

    saved_model = _decode_model(meta["model"], path, like=model)
    if model is not None:
        if saved_model is not None:
            _compare_models(saved_model, model, path)
        _check_fit(model, trees["params"], trees["state"], path)
        saved_model = model
    if saved_model is not None and meta["model"] is not None:
        _check_activations(meta.get("activations"), saved_model, path)
    return Checkpoint(trees["params"], trees["opt_state"], trees["state"], saved_model,
                      meta["step"], key, meta["extra"], trees["aux"])


def _read_checkpoint(zf: zipfile.ZipFile, size: int, path: str):
    """(meta, meta.json's bytes, {name: array} in manifest order, the stored checksum),
    reading only the members the manifest names, each within its declared size."""
    # a name that appears twice means its last entry, as zipfile.getinfo picks
    infos = {info.filename: info for info in zf.infolist()}
    if META not in infos:
        for name in sorted(infos):   # a pickled member is the worse news; say so first
            if name.endswith(".npy"):
                _peek_array(zf, infos[name], size, path)
        raise CheckpointError(
            f"{path!r} is not a jaxmlp checkpoint: it has no {META} member "
            f"(members: {sorted(infos)[:8]})")
    meta_bytes = _read_member(zf, infos[META], size, _META_MAX, path)
    meta = _parse_meta(meta_bytes, path)
    checked = [_check_entry(entry, infos, size, path) for entry in meta["arrays"]]
    if CHECKSUM not in infos:
        raise CheckpointError(
            f"checkpoint {path!r} is truncated or corrupted: no {CHECKSUM} member")
    stored = _read_member(zf, infos[CHECKSUM], size, _CHECKSUM_MAX, path)
    raw = {entry["name"]: _read_entry(zf, entry, info, dtype, path)   # all sizes checked
           for entry, (info, dtype) in zip(meta["arrays"], checked)}
    return meta, meta_bytes, raw, stored.decode("ascii", "replace").strip()


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, size: int, limit: int,
                 path: str) -> bytes:
    """A small member's bytes, refused before reading if it declares more than `limit`."""
    if info.file_size > limit:
        raise _corrupt(path, f"member {info.filename!r} declares {info.file_size} bytes "
                             f"uncompressed, more than the {_mib(limit)} a checkpoint's "
                             f"{info.filename} may hold")
    _check_sizes(info, size, path)
    try:
        with zf.open(info) as m:
            data = m.read(limit + 1)
    except Exception as e:  # BadZipFile, CRC mismatch, EOFError, a password needed…
        raise CheckpointError(
            f"checkpoint {path!r} is truncated or corrupted: cannot read member "
            f"{info.filename!r} ({type(e).__name__}: {e})") from e
    if len(data) != info.file_size:
        raise _corrupt(path, f"member {info.filename!r} holds {len(data)} bytes, its zip "
                             f"entry declares {info.file_size}")
    return data


def _pickle_refused(path: str, member: str) -> CheckpointError:
    return CheckpointError(
        f"{path!r} member {member!r} holds a pickled object array; jaxmlp "
        f"checkpoints never contain pickles and loading one could run arbitrary "
        f"code, so it is refused (allow_pickle=False)")


def _not_npy(path: str, member: str, e: Exception) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path!r} is truncated or corrupted: member {member!r} is not a "
        f"valid .npy array ({type(e).__name__}: {e})")


def _peek_array(zf: zipfile.ZipFile, info: zipfile.ZipInfo, size: int, path: str) -> None:
    """Refuses a member holding a pickled object array, reading only its .npy header."""
    _check_sizes(info, size, path)
    try:
        with zf.open(info) as m:
            _npy_header(m, info)
    except _Pickled:
        raise _pickle_refused(path, info.filename) from None
    except Exception as e:
        raise _not_npy(path, info.filename, e) from e


def _check_entry(entry: dict, infos: dict, size: int, path: str):
    """(ZipInfo, stored dtype) of a manifest entry's member, refused unless it declares
    exactly the manifest's dtype × shape plus a .npy header; nothing is read."""
    member = entry["name"] + ".npy"
    info = infos.get(member)
    if info is None:
        raise CheckpointError(
            f"checkpoint {path!r} is truncated or corrupted: array member {member!r} "
            f"is missing")
    dtype = _dtype(entry["dtype"], path)
    stored = _dtype(entry["stored_as"], path) if "stored_as" in entry else dtype
    if stored.itemsize != dtype.itemsize:
        raise _corrupt(path, f"member {member!r}: {stored.name} cannot hold {dtype.name}")
    shape = tuple(entry["shape"])
    nbytes = stored.itemsize * math.prod(shape)
    if not nbytes + _NPY_HEADER_MIN <= info.file_size <= nbytes + _NPY_HEADER_MAX:
        raise _corrupt(
            path, f"member {member!r} declares {info.file_size} bytes uncompressed, but the "
                  f"manifest's {stored.name} {shape} is {nbytes} bytes plus a .npy header "
                  f"of {_NPY_HEADER_MIN} to {_NPY_HEADER_MAX} bytes; nothing is read")
    _check_sizes(info, size, path)
    return info, stored


def _read_entry(zf: zipfile.ZipFile, entry: dict, info: zipfile.ZipInfo, stored: np.dtype,
                path: str) -> np.ndarray:
    """The manifest entry's array (its member checked by `_check_entry`), little-endian,
    C order, read within the declared size."""
    member, shape = info.filename, tuple(entry["shape"])
    try:
        with zf.open(info) as m:
            try:
                got, got_shape, fortran, offset = _npy_header(m, info)
            except _Pickled:
                raise _pickle_refused(path, member) from None
            except (ValueError, EOFError, OSError, SyntaxError) as e:
                raise _not_npy(path, member, e) from e
            if got.name != stored.name or got_shape != shape:
                raise _corrupt(
                    path, f"member {member!r} has dtype {got} and shape {got_shape}, the "
                          f"manifest says {stored.name} and {shape}")
            try:
                arr = _npy_data(m, info, got, got_shape, fortran, offset)
            except ValueError as e:
                raise _corrupt(path, f"member {member!r}: {e}") from e
    except CheckpointError:
        raise
    except Exception as e:  # BadZipFile, CRC mismatch, EOFError, a password needed…
        raise CheckpointError(
            f"checkpoint {path!r} is truncated or corrupted: cannot read member {member!r} "
            f"({type(e).__name__}: {e})") from e
    return np.asarray(arr, dtype=arr.dtype.newbyteorder("<"), order="C")


# ------------------------------------------------------------------ bounded reading
# Shared with `jaxmlp check` (jaxmlp.oracle): the file and zip members are untrusted, so
# nothing is opened that is not a regular file (`_validate.regular_file`), and no member is decompressed beyond a
# size checked first.

_META_MAX = 64 * 2**20       # meta.json, uncompressed (fit's history: ~75 bytes an epoch)
_CHECKSUM_MAX = 4 * 2**10    # checksum.sha256: 64 hex digits
_NPY_HEADER_MIN = 10         # .npy: magic (6) + version (2) + header length (2 or 4) + dict
_NPY_HEADER_MAX = 64 * 2**10  # numpy writes ≤ a few hundred bytes, and refuses a dict > 10 000
_DEFLATE_MAX_RATIO = 1032     # deflate never expands more than 1032:1 (zlib's tech notes)
_READ_CHUNK = 16 * 2**20


class _Pickled(ValueError):
    """A .npy header with an object dtype: its data is a pickle."""


def _mib(n: int) -> str:
    return f"{n // 2**20} MiB" if n >= 2**20 else f"{n // 2**10} KiB"


def _sizes_problem(info: zipfile.ZipInfo, size: int) -> Optional[str]:
    """Why `info`'s declared sizes cannot be those of a real member of a `size`-byte file."""
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return (f"uses zip compression method {info.compress_type}; only stored (0) and "
                f"deflated (8) members are read")
    if info.compress_size > size:
        return f"declares {info.compress_size} compressed bytes in a {size}-byte file"
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        return (f"is stored uncompressed but declares {info.file_size} bytes for "
                f"{info.compress_size} bytes in the file")
    if info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + _NPY_HEADER_MAX:  # + slack
        return (f"declares {info.file_size} bytes uncompressed from {info.compress_size} "
                f"deflated bytes, more than deflate can expand")
    return None


def _check_sizes(info: zipfile.ZipInfo, size: int, path: str) -> None:
    why = _sizes_problem(info, size)
    if why is not None:
        raise _corrupt(path, f"member {info.filename!r} {why}")


def _npy_header(m, info: zipfile.ZipInfo):
    """(dtype, shape, fortran_order, header size in bytes) of the .npy member open as `m`,
    reading at most _NPY_HEADER_MAX bytes; raises _Pickled for an object dtype and
    ValueError for anything that is not a .npy header."""
    head = m.read(8)
    version = np.lib.format.read_magic(io.BytesIO(head))
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise ValueError(f"unknown .npy format version {version}")
    width = 2 if version == (1, 0) else 4
    length_field = m.read(width)
    if len(length_field) != width:
        raise ValueError("the .npy header is cut off")
    length = int.from_bytes(length_field, "little")
    offset = 8 + width + length
    if offset > min(info.file_size, _NPY_HEADER_MAX):
        raise ValueError(f"the .npy header declares {length} bytes (at most "
                         f"{_NPY_HEADER_MAX - 8 - width} are read)")
    header = m.read(length)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)  # 3.0 differs in encoding only
    shape, fortran, dtype = read_header(io.BytesIO(length_field + header))
    if dtype.hasobject:
        raise _Pickled(f"dtype {dtype} holds Python objects")
    return dtype, tuple(shape), fortran, offset


def _npy_data(m, info: zipfile.ZipInfo, dtype: np.dtype, shape: tuple, fortran: bool,
              offset: int) -> np.ndarray:
    """The array after a header of `offset` bytes: exactly the bytes its dtype and shape
    need, which must be what `info` declares; read in chunks, never past the end."""
    count = math.prod(shape)
    nbytes = dtype.itemsize * count
    if offset + nbytes != info.file_size:
        raise ValueError(f"its .npy header says {dtype} {shape}, {offset + nbytes} bytes with "
                         f"the header, but the zip entry declares {info.file_size}")
    if nbytes == 0:
        return np.zeros(shape, dtype)
    buf = bytearray(nbytes)
    view = memoryview(buf)
    filled = 0
    while filled < nbytes:
        chunk = m.read(min(nbytes - filled, _READ_CHUNK))
        if not chunk:
            raise ValueError(f"it ends after {filled} of its {nbytes} data bytes")
        view[filled:filled + len(chunk)] = chunk
        filled += len(chunk)
    arr = np.frombuffer(buf, dtype=dtype, count=count)
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


def _corrupt(path: str, why: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path!r} is corrupted: {why}")


def _parse_meta(meta_bytes: bytes, path: str) -> dict:
    try:
        meta = json.loads(meta_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _corrupt(path, f"{META} is not valid JSON ({type(e).__name__}: {e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(
            f"{path!r} is not a jaxmlp checkpoint: format {found!r}, expected {FORMAT!r}")
    version = meta.get("version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path!r} has format version {version!r}, but this jaxmlp "
            f"supports version {FORMAT_VERSION} only"
            + (" (it was written by a newer jaxmlp: upgrade to read it)"
               if isinstance(version, int) and version > FORMAT_VERSION else ""))
    for field, kind in (("step", int), ("arrays", list), ("trees", dict)):
        if not isinstance(meta.get(field), kind) or isinstance(meta.get(field), bool):
            raise _corrupt(path, f"{META} field {field!r} is missing or not a {kind.__name__}")
    if meta["step"] < 0:
        raise _corrupt(path, f"step {meta['step']} < 0")
    if not all(t in meta["trees"] for t in _REQUIRED_TREES):
        raise _corrupt(path, f"{META} 'trees' must hold {list(_REQUIRED_TREES)}")
    for field in ("model", "extra", "key"):
        if meta.get(field) is not None and not isinstance(meta[field], dict):
            raise _corrupt(path, f"{META} field {field!r} must be an object or null")
        meta.setdefault(field, None)
    seen = set()
    for entry in meta["arrays"]:
        ok = (isinstance(entry, dict) and isinstance(entry.get("name"), str)
              and isinstance(entry.get("dtype"), str) and isinstance(entry.get("shape"), list)
              and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                      for n in entry["shape"])
              and isinstance(entry.get("stored_as", ""), str))
        if not ok or entry["name"] in seen or entry["name"] in (META, CHECKSUM):
            raise _corrupt(path, f"bad manifest entry {entry!r}")
        seen.add(entry["name"])
    return meta


def _dtype(name: str, path: str) -> np.dtype:
    """The numeric dtype called `name`; never an object, structured or string dtype."""
    try:
        dtype = np.dtype(getattr(jnp, name)) if name in _EXTENDED_DTYPES else np.dtype(name)
    except (TypeError, AttributeError) as e:
        raise _corrupt(path, f"unknown dtype {name!r}") from e
    if dtype.kind not in "biufc" and name not in _EXTENDED_DTYPES:
        raise _corrupt(path, f"dtype {name!r} is not numeric")
    return dtype


# Low-precision float types that numpy has no .npy code for (ml_dtypes, via jax.numpy).
_EXTENDED_DTYPES = tuple(n for n in ("bfloat16", "float8_e4m3fn", "float8_e5m2",
                                     "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e4m3b11fnuz",
                                     "int4", "uint4") if hasattr(jnp, n))


def _to_jax(arr: np.ndarray, entry: dict, path: str) -> jax.Array:
    dtype = _dtype(entry["dtype"], path)
    arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    if "stored_as" in entry:
        arr = arr.view(dtype)
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:
        raise CheckpointError(
            f"checkpoint {path!r} holds {entry['name']!r} as {dtype.name}, which jax "
            f"would round: enable it first with jax.config.update('jax_enable_x64', True)")
    return jnp.asarray(arr)


def _decode(node, arrays: dict, used: set, path: str, where: str):
    if not isinstance(node, dict) or node.get("type") not in _NODE_TYPES:
        raise _corrupt(path, f"bad tree node at {where}: {str(node)[:80]}")
    kind = node["type"]
    if kind == "none":
        return None
    if kind == "array":
        name = node.get("name")
        if name not in arrays or name in used:
            raise _corrupt(path, f"tree node {where} names array {name!r}, which is not "
                                 f"in the manifest or is used twice")
        used.add(name)
        return arrays[name]
    if kind in ("list", "tuple"):
        items = node.get("items")
        if not isinstance(items, list):
            raise _corrupt(path, f"bad {kind} node at {where}")
        out = [_decode(v, arrays, used, path, f"{where}/{i}") for i, v in enumerate(items)]
        return out if kind == "list" else tuple(out)
    pairs = node.get("items") if kind == "dict" else node.get("fields")
    if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in pairs):
        raise _corrupt(path, f"bad {kind} node at {where}")
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _corrupt(path, f"repeated keys {keys} at {where}")
    values = [_decode(v, arrays, used, path, f"{where}/{k}") for k, v in pairs]
    if kind == "dict":
        return dict(zip(keys, values))
    classes = _state_classes()
    cls_name = node.get("class")
    if cls_name not in classes:
        raise CheckpointError(
            f"checkpoint {path!r} needs the state class {cls_name!r} at {where}, which is "
            f"not one of jaxmlp.optim's state classes {sorted(classes)}; was it written by "
            f"another jaxmlp version?")
    cls = classes[cls_name]
    if tuple(keys) != tuple(cls._fields):
        raise CheckpointError(
            f"checkpoint {path!r} stores {cls_name} at {where} with fields {keys}, but "
            f"jaxmlp.optim.{cls_name} has {list(cls._fields)}")
    return cls(*values)


def _decode_key(node, arrays: dict, used: set, path: str):
    if node is None:
        return None
    name = node.get("name")
    if name not in arrays or name in used:
        raise _corrupt(path, f"key names array {name!r}, not in the manifest")
    used.add(name)
    data = arrays[name]
    if not node.get("typed"):
        return data
    impl = node.get("impl")
    if not isinstance(impl, str):
        raise _corrupt(path, f"key impl {impl!r} is not a name")
    try:
        return jax.random.wrap_key_data(data, impl=impl)
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(
            f"checkpoint {path!r}: cannot rebuild its PRNG key of impl {impl!r} ({e})") from e


def _decode_model(d, path: str, like: Optional[MLP] = None) -> Optional[MLP]:
    """MLP(**d); the names of `like`'s unregistered custom activations stand for them."""
    if d is None:
        return None
    own = {} if like is None else {
        n: a for n, a in _custom_activations(like).items() if not _act.is_named(a)}
    if own and isinstance(d, dict):
        d = dict(d)
        for field in ("activation", "output"):
            v = d.get(field)
            if isinstance(v, list):
                d[field] = [own.get(n, n) if isinstance(n, str) else n for n in v]
            elif isinstance(v, str):
                d[field] = own.get(v, v)
    try:
        return MLP(**d)
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint {path!r} holds a model config this jaxmlp cannot build: {e}") from e


def _custom_activations(model: MLP) -> dict:
    """name -> Activation for the model's non-built-in activations (hidden and output);
    ValueError when two different ones share a name (a checkpoint could not tell them
    apart)."""
    out = {}
    for a in model.activation_fns + (model.output_fn,):
        if _act.ACTIVATIONS.get(a.name) == a:
            continue
        if out.setdefault(a.name, a) != a:
            raise ValueError(
                f"the model has two different activations named {a.name!r}; a checkpoint "
                f"stores activations by name: build them with distinct names")
    return out


def _check_activations(saved, model: MLP, path: str) -> None:
    """CheckpointError unless each custom activation of `model` has the values on the
    check grid that the checkpoint recorded for its name."""
    custom = _custom_activations(model)
    if not custom:
        return
    if not isinstance(saved, dict):
        raise _corrupt(path, f"its model has custom activations {sorted(custom)} but "
                             f"{META} has no record of them")
    for name, act in custom.items():
        rec = saved.get(name)
        now = _act.fingerprint(act)
        try:
            ok = (isinstance(rec, dict) and rec.get("z") == now["z"]
                  and all(len(rec[k]) == len(now[k]) for k in ("f", "df")))
            if ok:
                old = {k: np.asarray(rec[k], np.float64) for k in ("f", "df")}
        except (TypeError, ValueError, KeyError):
            ok = False
        if not ok:
            raise _corrupt(path, f"its record of activation {name!r} is missing or "
                                 f"malformed")
        for k, label in (("f", "f"), ("df", "f′")):
            new = np.asarray(now[k], np.float64)
            off = ~np.isclose(old[k], new, rtol=1e-9, atol=1e-12)
            if off.any():
                i = int(np.flatnonzero(off)[0])
                raise CheckpointError(
                    f"checkpoint {path!r} was saved with another activation {name!r} than "
                    f"the one used now: at z = {now['z'][i]:g} its {label} was "
                    f"{old[k][i]:.10g}, now {new[i]:.10g} ({int(off.sum())} of "
                    f"{off.size} grid points differ); register the function it was "
                    f"trained with under that name")


def _compare_models(saved: MLP, given: MLP, path: str) -> None:
    a, b = saved.to_dict(), given.to_dict()
    diff = [f"{k}: saved {a.get(k)!r}, given {b.get(k)!r}"
            for k in list(a) + [k for k in b if k not in a] if a.get(k) != b.get(k)]
    if diff:
        raise CheckpointError(
            f"checkpoint {path!r} was saved for a different model; differing fields: "
            + "; ".join(diff))


def _check_fit(model: MLP, params, state, path: str) -> None:
    try:
        check_params(model, params, where="")
        if state is not None:
            if model.norm != "batch":
                raise ValueError(f"it holds batch-norm state but the model has "
                                 f"norm={model.norm!r}")
            _check_state(model, state, where="")
    except (ValueError, TypeError) as e:
        raise CheckpointError(
            f"checkpoint {path!r} does not fit the model {model.sizes}: {e}") from e


# --------------------------------------------------------------------------- folders

def checkpoint_path(directory, step: int) -> str:
    """``directory/ckpt-{step:08d}.npz``: names that sort by step and match :func:`latest`."""
    step = _v.integer(step, "step", where="checkpoint_path", low=0)
    return os.path.join(os.fspath(directory), f"ckpt-{step:08d}.npz")


_DIGITS = re.compile(r"(\d+)")


def _by_step(directory, pattern: str) -> list:
    """(step, path) for files matching `pattern` whose name holds a number, newest first
    (the step is the last number in the file name)."""
    directory = os.fspath(directory)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        if not fnmatch.fnmatch(name, pattern):
            continue
        numbers_in = _DIGITS.findall(name)
        full = os.path.join(directory, name)
        if numbers_in and os.path.isfile(full):
            found.append((int(numbers_in[-1]), full))
    return sorted(found, key=lambda t: (t[0], t[1]), reverse=True)


def _loads(path: str) -> bool:
    try:
        load(path)
    except (CheckpointError, OSError):
        return False
    return True


def remove_stale_temp_files(directory, pattern: str = "ckpt-*.npz") -> list:
    """Deletes the temp files that a save killed mid-write left in `directory` (the hidden
    ``.<name>.<hex>.tmp`` files of checkpoints matching `pattern`); returns their paths.
    Only call it when no other process is writing checkpoints to `directory`."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    removed = []
    for tmp in folder.glob(f".{pattern}.*.tmp"):
        try:
            tmp.unlink()
            removed.append(str(tmp))
        except OSError:
            pass
    return removed


def latest(directory, pattern: str = "ckpt-*.npz") -> Optional[str]:
    """The newest checkpoint in `directory` that loads, or None.

    Newest means the highest step, read as the last number in the file name (as written
    by :func:`checkpoint_path`); files that fail to load (truncated, corrupted, another
    format version) are skipped. Each candidate is fully verified, newest first, until one
    passes. A missing folder gives None.
    """
    for _, path in _by_step(directory, pattern):
        if _loads(path):
            return path
    return None


def prune(directory, keep: int, pattern: str = "ckpt-*.npz") -> list:
    """Deletes all but the `keep` newest valid checkpoints; returns the paths removed.

    Walking from the highest step down, the first `keep` checkpoints that load are kept,
    and every checkpoint older than the last of them (valid or not) is removed. Invalid
    files newer than that are left alone, so a corrupted newest file never costs the
    last good ones. With fewer than `keep` valid checkpoints nothing is removed.
    """
    keep = _v.positive_int(keep, "keep", where="prune")
    candidates = _by_step(directory, pattern)
    valid = 0
    for i, (_, path) in enumerate(candidates):
        if _loads(path):
            valid += 1
            if valid == keep:
                removed = []
                for _, old in candidates[i + 1:]:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(old)
                        removed.append(old)
                return removed
    return []
