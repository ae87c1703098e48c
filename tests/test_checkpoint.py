"""checkpoint: bitwise round trips, resumed training, corruption, versions, atomicity, no pickle,
bounded reads."""
import contextlib
import io
import json
import os
import re
import signal
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp as jm
from jaxmlp import checkpoint as ckpt
from jaxmlp import optim
from jaxmlp.checkpoint import CheckpointError

# ---------------------------------------------------------------------------- the matrix

# Every leaf is (4, 4) or (4,): un-jitted ops compile once per shape, so shared shapes keep
# the matrix fast.
MODELS = {
    "plain": dict(sizes=(4, 4, 4), activation="tanh"),
    "batchnorm": dict(sizes=(4, 4, 4, 4), norm="batch"),
    "dropout": dict(sizes=(4, 4, 4), activation=("gelu",), dropout=0.25),
}
OPTIMIZERS = {
    "adam": lambda: optim.adam(1e-2),
    "sgd_momentum": lambda: optim.sgd(0.1, momentum=0.9),
    "rmsprop_centered_momentum": lambda: optim.rmsprop(1e-2, centered=True, momentum=0.5),
    "chain_clip_adamw": lambda: optim.chain(optim.clip_by_global_norm(1.0), optim.adamw(1e-2)),
}
DTYPES = {"f32": jnp.float32, "f64": jnp.float64}


def saved_params(model, dtype=jnp.float64, seed=0):
    """Random params of the right shapes, drawn by NumPy (nothing to compile)."""
    rng = np.random.default_rng(seed)
    return [{k: jnp.asarray(rng.standard_normal(shape), dtype) for k, shape in layer.items()}
            for layer in model.layer_shapes()]


def make_run(model_name, opt_name, dtype, n_updates=3):
    """A model, its params, an optimizer and its state after a few (eager) updates."""
    model = jm.MLP(**MODELS[model_name])
    opt = OPTIMIZERS[opt_name]()
    rng = np.random.default_rng(100)
    normal = lambda p: jnp.asarray(rng.standard_normal(p.shape), p.dtype)  # noqa: E731
    params = saved_params(model, dtype)
    opt_state = opt.init(params)
    for _ in range(n_updates):
        updates, opt_state = opt.update(jax.tree.map(normal, params), opt_state, params)
        params = optim.apply_updates(params, updates)
    state = jm.init_state(model, dtype=dtype)
    if state is not None:
        state = jax.tree.map(lambda s: s + jnp.arange(s.shape[0], dtype=s.dtype) / 7, state)
    return model, opt, params, opt_state, state


def assert_bitwise_equal(a, b):
    """Same tree structure (NamedTuple classes included), dtypes and bits on every leaf."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    chex.assert_trees_all_equal_structs(a, b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert isinstance(y, jax.Array)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def node_types(tree):
    """Every node's type, depth first: NamedTuple classes, tuple vs list, dict, None."""
    if isinstance(tree, (list, tuple)):
        return [type(tree)] + [t for v in tree for t in node_types(v)]
    if isinstance(tree, dict):
        return [dict] + [t for k in tree for t in node_types(tree[k])]
    return [type(tree) if tree is None else jax.Array]


def data(n=16, n_in=4, n_out=4, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, n_in)).astype(dtype),
            rng.standard_normal((n, n_out)).astype(dtype))


# ---------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_round_trip_is_bitwise(tmp_path, model_name, opt_name, dtype):
    model, _, params, opt_state, state = make_run(model_name, opt_name, DTYPES[dtype])
    key = jax.random.key(42)
    extra = {"epoch": 3, "history": [1.5, 0.25], "note": "ünïcode", "cfg": {"lr": 1e-2},
             "flag": True, "nothing": None}
    path = ckpt.save(tmp_path / "a.npz", params=params, opt_state=opt_state, state=state,
                     model=model, step=1234, key=key, extra=extra)
    assert path == str(tmp_path / "a.npz")
    out = ckpt.load(path, model=model)
    assert isinstance(out, ckpt.Checkpoint)
    assert_bitwise_equal(params, out.params)
    assert_bitwise_equal(opt_state, out.opt_state)
    assert node_types(opt_state) == node_types(out.opt_state)
    assert_bitwise_equal(state, out.state)
    assert out.model == model and out.step == 1234 and type(out.step) is int
    assert out.extra == extra
    np.testing.assert_array_equal(jax.random.normal(out.key, (5,)), jax.random.normal(key, (5,)))
    assert out.opt_state is not None and jax.tree.leaves(out.opt_state)
    has_count = lambda s: "count" in getattr(s, "_fields", ())  # noqa: E731
    counts = [s.count for s in jax.tree.leaves(out.opt_state, is_leaf=has_count) if has_count(s)]
    assert counts and all(c.dtype == jnp.int32 and int(c) == 3 for c in counts)
    # without model=, the saved model comes back
    assert ckpt.load(path).model == model


def test_minimal_checkpoint_and_defaults(tmp_path):
    model = jm.MLP((2, 1))
    params = saved_params(model)
    path = ckpt.save(tmp_path / "p.npz", params=params)
    out = ckpt.load(path)
    assert_bitwise_equal(params, out.params)
    assert out.opt_state is None and out.state is None and out.model is None
    assert out.step == 0 and out.key is None and out.extra is None
    # a model given at load time is checked against the params and handed back
    assert ckpt.load(path, model=model).model is model


def test_key_kinds_and_other_dtypes_round_trip(tmp_path):
    params = [{"W": jnp.ones((2, 3), jnp.bfloat16), "b": jnp.zeros((2,), jnp.float16)}]
    tree = {"ints": jnp.arange(4, dtype=jnp.int64), "flags": jnp.array([True, False]),
            "u8": jnp.array([1, 255], jnp.uint8), "scalar": jnp.float32(2.5),
            "nested": ((), [None, {"a/b": jnp.zeros((0, 3))}]), "empty": optim.EmptyState()}
    for key in (jax.random.key(7, impl="rbg"), jax.random.split(jax.random.key(3), 4),
                jax.random.PRNGKey(5)):
        path = ckpt.save(tmp_path / "k.npz", params=params, opt_state=tree, key=key)
        out = ckpt.load(path)
        assert_bitwise_equal(params, out.params)
        assert_bitwise_equal(tree, out.opt_state)
        assert node_types(tree) == node_types(out.opt_state)
        assert type(out.opt_state["empty"]) is optim.EmptyState
        assert out.key.dtype == key.dtype and out.key.shape == key.shape
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            assert jax.random.key_impl(out.key) == jax.random.key_impl(key)
            np.testing.assert_array_equal(jax.random.key_data(out.key), jax.random.key_data(key))
        else:  # a raw uint32 key comes back raw
            np.testing.assert_array_equal(out.key, key)


def test_file_is_a_plain_npz_without_pickles(tmp_path):
    model, _, params, opt_state, _ = make_run("plain", "adam", jnp.float32)
    path = ckpt.save(tmp_path / "a.npz", params=params, opt_state=opt_state, model=model, step=5)
    with np.load(path, allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["params/0/W"], params[0]["W"])
        np.testing.assert_array_equal(npz["opt_state/mu/1/b"], opt_state.mu[1]["b"])
        assert npz["opt_state/count"].dtype == np.int32
        meta = json.loads(npz["meta.json"])
    assert meta["format"] == "jaxmlp.checkpoint" and meta["version"] == ckpt.FORMAT_VERSION
    assert meta["model"] == model.to_dict() and meta["step"] == 5
    assert jm.MLP(**meta["model"]) == model


# ---------------------------------------------------------------------------- resuming

RESUME = [("plain", "rmsprop_centered_momentum"), ("batchnorm", "adam"),
          ("dropout", "chain_clip_adamw"), ("batchnorm", "sgd_momentum")]


@pytest.mark.parametrize("model_name,opt_name", RESUME, ids=[f"{m}-{o}" for m, o in RESUME])
def test_resumed_training_equals_uninterrupted(tmp_path, model_name, opt_name):
    model, opt, params, _, _ = make_run(model_name, opt_name, jnp.float64, n_updates=0)
    opt_state = opt.init(params)
    state = jm.init_state(model, dtype=jnp.float64)
    step_fn = jm.make_train_step(model, opt, donate=False)
    x, y = data()
    key = jax.random.key(9)

    def run(params, opt_state, state, key, start, stop):
        for t in range(start, stop):
            kw = {}
            if model.dropout > 0:
                kw["key"] = jax.random.fold_in(key, t)
            if state is not None:
                params, opt_state, _, state = step_fn(params, opt_state, x, y, state=state, **kw)
            else:
                params, opt_state, _ = step_fn(params, opt_state, x, y, **kw)
        return params, opt_state, state

    params, opt_state, state = run(params, opt_state, state, key, 0, 3)
    path = ckpt.save(ckpt.checkpoint_path(tmp_path, 3), params=params, opt_state=opt_state,
                     state=state, model=model, step=3, key=key)
    straight = run(params, opt_state, state, key, 3, 6)

    loaded = ckpt.load(ckpt.latest(tmp_path), model=model)
    assert loaded.step == 3
    resumed = run(loaded.params, loaded.opt_state, loaded.state, loaded.key, loaded.step, 6)
    assert_bitwise_equal(straight, resumed)
    assert path == ckpt.checkpoint_path(tmp_path, 3)


# ---------------------------------------------------------------------------- bad files

def saved(tmp_path, name="a.npz", step=1, **kw):
    model, _, params, opt_state, _ = make_run("plain", "adam", jnp.float32)
    return ckpt.save(tmp_path / name, params=params, opt_state=opt_state, model=model,
                     step=step, key=jax.random.key(0), **kw)


def rewrite(path, meta_fn=None, members=None, fix_checksum=False):
    """Re-zips a checkpoint with its meta.json edited and/or members replaced (bytes)."""
    with zipfile.ZipFile(path) as zf:
        contents = {n: zf.read(n) for n in zf.namelist()}
    if meta_fn is not None:
        meta = json.loads(contents["meta.json"])
        meta_fn(meta)
        contents["meta.json"] = json.dumps(meta).encode()
    contents.update(members or {})
    if fix_checksum:
        meta = json.loads(contents["meta.json"])
        arrays = [np.load(io.BytesIO(contents[e["name"] + ".npy"])) for e in meta["arrays"]]
        contents["checksum.sha256"] = ckpt._digest(contents["meta.json"], arrays).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in contents.items():
            zf.writestr(n, b)


def npy_bytes(arr, allow_pickle=False):
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ckpt.load(tmp_path / "nope.npz")


def test_flipped_byte_in_the_middle_is_corrupted(tmp_path):
    path = saved(tmp_path)
    blob = bytearray(Path(path).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    Path(path).write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="corrupted"):
        ckpt.load(path)


def test_no_flipped_byte_anywhere_gives_wrong_data(tmp_path):
    """Every 7th byte flipped in turn: load raises CheckpointError or returns the original
    checkpoint exactly (a flip in a zip timestamp changes no data)."""
    model = jm.MLP((2, 1))
    params = saved_params(model)
    path = ckpt.save(tmp_path / "a.npz", params=params, opt_state=optim.sgd(0.1).init(params),
                     model=model, step=3, key=jax.random.key(1), extra={"a": [1]})
    good = ckpt.load(path)
    blob = Path(path).read_bytes()
    damaged = tmp_path / "b.npz"
    caught = 0
    for i in range(0, len(blob), 7):
        damaged.write_bytes(blob[:i] + bytes([blob[i] ^ 0x24]) + blob[i + 1:])
        try:
            out = ckpt.load(damaged)
        except CheckpointError:
            caught += 1
            continue
        assert_bitwise_equal(good.params, out.params)
        assert_bitwise_equal(good.opt_state, out.opt_state)
        assert (out.model, out.step, out.extra) == (good.model, good.step, good.extra)
        np.testing.assert_array_equal(jax.random.key_data(out.key), jax.random.key_data(good.key))
    assert caught > 0.8 * len(range(0, len(blob), 7))


def test_truncated_file(tmp_path):
    path = saved(tmp_path)
    blob = Path(path).read_bytes()
    Path(path).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        ckpt.load(path)
    Path(path).write_bytes(b"")
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        ckpt.load(path)


def test_checksum_catches_consistent_zip_with_changed_array(tmp_path):
    path = saved(tmp_path)
    with np.load(path) as npz:
        w = npz["params/0/W"].copy()
    w[0, 0] += 1.0
    rewrite(path, members={"params/0/W.npy": npy_bytes(w)})   # fresh, valid zip CRCs
    with pytest.raises(CheckpointError, match="corrupted: SHA-256 checksum mismatch"):
        ckpt.load(path)
    rewrite(path, members={"params/0/W.npy": npy_bytes(w.astype(np.float64))})
    with pytest.raises(CheckpointError, match="corrupted: .*manifest says float32"):
        ckpt.load(path)
    rewrite(path, members={"params/0/W.npy": npy_bytes(w - 1.0)})
    rewrite(path, meta_fn=lambda m: m.update(step=99))         # meta edited, same arrays
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        ckpt.load(path)


def test_missing_member_is_truncated(tmp_path):
    path = saved(tmp_path)
    with zipfile.ZipFile(path) as zf:
        contents = {n: zf.read(n) for n in zf.namelist() if n != "params/1/b.npy"}
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in contents.items():
            zf.writestr(n, b)
    with pytest.raises(CheckpointError, match=r"truncated or corrupted: array member 'params/1/b"):
        ckpt.load(path)


def test_other_format_version(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt, "FORMAT_VERSION", 2)
    path = saved(tmp_path)
    monkeypatch.undo()
    with pytest.raises(CheckpointError,
                       match=r"format version 2, but this jaxmlp supports version 1 only.*newer"):
        ckpt.load(path)
    rewrite(path, meta_fn=lambda m: m.update(version=0))
    with pytest.raises(CheckpointError, match="format version 0, but .* supports version 1"):
        ckpt.load(path)
    rewrite(path, meta_fn=lambda m: m.update(format="something-else"))
    with pytest.raises(CheckpointError, match="not a jaxmlp checkpoint: format 'something-else'"):
        ckpt.load(path)
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a jaxmlp checkpoint: it has no meta.json"):
        ckpt.load(tmp_path / "plain.npz")


def test_mismatched_model(tmp_path):
    path = saved(tmp_path)                     # MLP((4, 4, 4), activation="tanh")
    with pytest.raises(CheckpointError, match=r"different model; differing fields: "
                                              r"sizes: saved \[4, 4, 4\], given \[4, 16, 4\]"):
        ckpt.load(path, model=jm.MLP((4, 16, 4), activation="tanh"))
    with pytest.raises(CheckpointError, match=r"activation: saved 'tanh', given 'relu'; "
                                              r"l2: saved 0.0, given 0.1"):
        ckpt.load(path, model=jm.MLP((4, 4, 4), activation="relu", l2=0.1))
    # no model on file: the params are checked against the one given
    model = jm.MLP((4, 4, 4))
    bare = ckpt.save(tmp_path / "bare.npz", params=saved_params(model))
    with pytest.raises(CheckpointError, match=r"does not fit the model \(4, 16, 4\): "
                                              r"params\[0\]\['W'\] must have shape \(16, 4\)"):
        ckpt.load(bare, model=jm.MLP((4, 16, 4)))
    with pytest.raises(CheckpointError, match=r"does not fit.*params has 2 layers but the "
                                              r"model \(4, 4, 4, 4\) has 3"):
        ckpt.load(bare, model=jm.MLP((4, 4, 4, 4)))


def test_save_validates_its_arguments(tmp_path):
    model = jm.MLP((3, 8, 2))
    params = saved_params(model)
    p = tmp_path / "x.npz"
    bad_extras = [
        ({"a": np.float32(1.0)}, TypeError,
         r"save: extra must be JSON-serialisable: extra\['a'\] is a float32 \(convert"),
        ({"a": [1, {"b": object()}]}, TypeError,
         r"save: extra must be JSON-serialisable: extra\['a'\]\[1\]\['b'\] is a object"),
        ({"a": float("nan")}, ValueError,
         r"save: extra must be JSON-serialisable: extra\['a'\] is nan"),
        ({1: 2}, TypeError, r"save: extra must be JSON-serialisable: extra has the key 1 of type int"),
        ([1, 2], TypeError, r"save: extra must be a dict"),
    ]
    for extra, error, match in bad_extras:
        with pytest.raises(error, match=match):
            ckpt.save(p, params=params, extra=extra)
    with pytest.raises(ValueError, match="save: step must be an int >= 0, got -1"):
        ckpt.save(p, params=params, step=-1)
    with pytest.raises(TypeError, match="save: step must be an int >= 0, got 1.5"):
        ckpt.save(p, params=params, step=1.5)
    with pytest.raises(TypeError, match="save: step must be an int >= 0, got True"):
        ckpt.save(p, params=params, step=True)
    with pytest.raises(TypeError, match="save: params must be a params pytree, got None"):
        ckpt.save(p, params=None)
    with pytest.raises(ValueError,
                       match=r"save: params\[0\]\['W'\] must have shape \(8, 3\)"):
        ckpt.save(p, params=saved_params(jm.MLP((3, 4, 2))), model=model)
    with pytest.raises(TypeError, match="save: opt_state/lr is a float; checkpoint trees hold arrays"):
        ckpt.save(p, params=params, opt_state={"lr": 0.1})
    with pytest.raises(TypeError, match="checkpoint dict keys must be strings"):
        ckpt.save(p, params=params, opt_state={1: jnp.zeros(2)})
    Foreign = __import__("collections").namedtuple("AdamState", ["count", "mu", "nu"])
    with pytest.raises(TypeError, match="rebuild only the state NamedTuples of jaxmlp.optim"):
        ckpt.save(p, params=params, opt_state=Foreign(jnp.zeros(()), (), ()))
    with pytest.raises(TypeError, match="PRNG key array; pass the key as save"):
        ckpt.save(p, params=params, opt_state=jax.random.key(0))
    with pytest.raises(TypeError, match="save: key must be a jax.random.key"):
        ckpt.save(p, params=params, key=3)
    assert os.listdir(tmp_path) == []            # nothing written by any failed save


def test_integer_step_types(tmp_path):
    params = saved_params(jm.MLP((2, 1)))
    for step in (np.int64(7), jnp.int32(7), 7):
        assert ckpt.load(ckpt.save(tmp_path / "s.npz", params=params, step=step)).step == 7


# ---------------------------------------------------------------------------- no pickle, no imports

def test_pickled_object_array_is_refused(tmp_path):
    evil = np.array([{"a": 1}, None], dtype=object)
    np.savez(tmp_path / "evil.npz", x=evil)      # np.savez pickles object arrays
    with pytest.raises(CheckpointError, match="holds a pickled object array.*refused"):
        ckpt.load(tmp_path / "evil.npz")
    path = saved(tmp_path)
    rewrite(path, members={"params/0/W.npy": npy_bytes(evil, allow_pickle=True)})
    with pytest.raises(CheckpointError, match=r"member 'params/0/W.npy' holds a pickled object"):
        ckpt.load(path)


def test_only_whitelisted_state_classes_are_rebuilt(tmp_path):
    path = saved(tmp_path)

    def smuggle(meta):
        meta["trees"]["opt_state"]["class"] = "os.system"
    rewrite(path, meta_fn=smuggle, fix_checksum=True)
    with pytest.raises(CheckpointError, match="state class 'os.system' .* not one of"):
        ckpt.load(path)

    def wrong_fields(meta):
        meta["trees"]["opt_state"]["class"] = "SgdState"
    rewrite(path, meta_fn=wrong_fields, fix_checksum=True)
    with pytest.raises(CheckpointError, match=r"stores SgdState .* fields \['count', 'mu', 'nu', 'hyperparams'\]"):
        ckpt.load(path)

    def object_dtype(meta):
        meta["arrays"][0]["dtype"] = "O"
    rewrite(path, meta_fn=object_dtype, fix_checksum=True)
    with pytest.raises(CheckpointError, match="corrupted: dtype 'O' is not numeric"):
        ckpt.load(path)


def test_float64_needs_x64(tmp_path):
    params = saved_params(jm.MLP((2, 1)), jnp.float64)
    path = ckpt.save(tmp_path / "f64.npz", params=params)
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(CheckpointError, match=r"float64, which jax would round.*x64"):
            ckpt.load(path)
    finally:
        jax.config.update("jax_enable_x64", True)


# ---------------------------------------------------------------------------- bounded reads

def npy_header(dtype, shape) -> bytes:
    """The .npy header of an array of `dtype` and `shape` (its data would follow)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": tuple(shape)})
    return buf.getvalue()


def deflated_zeros(prefix: bytes, n_mib: int) -> bytes:
    """A raw deflate stream of `prefix` followed by `n_mib` MiB of zeros, about 1 KiB per MiB.

    After a full flush the compressor starts afresh, so one MiB of zeros compresses to the
    same bytes every time: they are repeated, not recomputed (2 GiB cost 2 MB and ~10 ms).
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    mib = c.compress(bytes(2**20)) + c.flush(zlib.Z_FULL_FLUSH)
    return head + mib * n_mib + c.flush()


def write_zip(path, members) -> str:
    """A zip written by hand, so that a member can declare any uncompressed size.

    `members`: (name, data) for a stored member, or (name, deflate_stream, declared_size,
    crc[, method]) for one (deflated unless `method` says otherwise) whose entry claims
    `declared_size` uncompressed bytes.
    """
    body, central = bytearray(), bytearray()
    for name, payload, *declared in members:
        size, crc, method = (*declared, 8)[:3] if declared else (len(payload),
                                                                 zlib.crc32(payload), 0)
        n = name.encode()
        common = (0, method, 0, 0x21, crc, len(payload), size, len(n))  # flags … name length
        central += struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 0, 20, 0, *common,
                               0, 0, 0, 0, 0, len(body)) + n
        body += struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, *common, 0) + n + payload
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members),
                      len(central), len(body), 0)
    Path(path).write_bytes(bytes(body + central + end))
    return str(path)


@contextlib.contextmanager
def bounded(seconds: float = 10.0, mib: int = 64):
    """Fails the block unless it ends within `seconds` (SIGALRM, so a blocking open of a
    FIFO cannot hang the suite) having allocated at most `mib` MiB at its peak (tracemalloc:
    Python objects and numpy arrays)."""
    def timeout(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, timeout)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    tracemalloc.start()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < mib * 2**20, f"allocated {peak / 2**20:.0f} MiB"


def not_regular(tmp_path, kind) -> str:
    """A path that is not a regular file: a folder, a FIFO, /dev/zero, or a link to it."""
    if kind == "fifo" and not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    if kind in ("dev_zero", "link_to_dev_zero") and not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero here")
    path = tmp_path / "ckpt-00000007.npz"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "link_to_dev_zero":
        path.symlink_to("/dev/zero")
    else:
        return "/dev/zero"
    return str(path)


NOT_REGULAR = {"directory": "a directory", "fifo": r"a FIFO \(named pipe\)",
               "dev_zero": "a character device", "link_to_dev_zero": "a character device"}


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs SIGALRM")
@pytest.mark.parametrize("kind", list(NOT_REGULAR))
def test_only_regular_files_are_opened(tmp_path, kind):
    path = not_regular(tmp_path, kind)
    with bounded(seconds=2), pytest.raises(
            CheckpointError, match=re.escape(f"checkpoint {path!r} is ") + NOT_REGULAR[kind]
            + ", not a regular file"):
        ckpt.load(path)
    with bounded(seconds=2):           # the folder functions skip it, and never open it
        assert ckpt.latest(tmp_path) is None and ckpt.prune(tmp_path, keep=1) == []


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs SIGALRM")
def test_zip_bombs_are_refused_before_they_are_read(tmp_path):
    """2 MB files whose deflated members expand to 2 GiB: refused from the sizes the zip
    declares, compared with the manifest's dtype × shape, before anything is inflated."""
    path = saved(tmp_path)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    w = members["params/0/W.npy"]                      # float32 (4, 4): a header + 64 bytes
    header = w[:-64]
    two_gib = deflated_zeros(header, 2048)
    bomb = (two_gib, len(header) + 2**31, 0)
    cases = [
        ({"params/0/W.npy": bomb}, r"corrupted: member 'params/0/W.npy' declares 2147483776 "
         r"bytes uncompressed, but the manifest's float32 \(4, 4\) is 64 bytes"),
        ({"meta.json": (deflated_zeros(b"", 2048), 2**31, 0)},
         r"member 'meta.json' declares 2147483648 bytes uncompressed, more than the 64 MiB"),
        # a lying entry: it declares the manifest's size, the stream inflates to 2 GiB;
        # reading stops at the declared size and the CRC gives it away
        ({"params/0/W.npy": (two_gib, len(w), zlib.crc32(w))},
         r"truncated or corrupted: cannot read member 'params/0/W.npy' \(BadZipFile: Bad CRC"),
    ]
    for replaced, match in cases:
        bad = write_zip(tmp_path / "bomb.npz", [(n, *replaced[n]) if n in replaced else (n, b)
                                                for n, b in members.items()])
        with bounded(), pytest.raises(CheckpointError, match=match):
            ckpt.load(bad)
    # no meta.json: only the .npy header of each member is read, to look for pickles
    big = npy_header(np.float32, (2**29,))
    plain = write_zip(tmp_path / "plain.npz", [("x.npy", deflated_zeros(big, 2048),
                                                len(big) + 2**31, 0)])
    with bounded(), pytest.raises(CheckpointError, match="not a jaxmlp checkpoint: it has no"):
        ckpt.load(plain)
    # a member outside the manifest is never read
    extra = write_zip(tmp_path / "extra.npz", list(members.items()) + [("junk.npy", *bomb)])
    with bounded():
        out = ckpt.load(extra)
    np.testing.assert_array_equal(np.asarray(out.params[0]["W"]), np.load(io.BytesIO(w)))
    # a checkpoint re-zipped with deflated members (as np.savez_compressed does) still loads
    with zipfile.ZipFile(tmp_path / "deflated.npz", "w", zipfile.ZIP_DEFLATED) as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    assert ckpt.load(tmp_path / "deflated.npz").step == 1


def test_impossible_zip_sizes_are_refused(tmp_path):
    path = saved(tmp_path)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    w, meta = members["params/0/W.npy"], members["meta.json"]
    cases = [
        ("params/0/W.npy", (w, len(w) + 1, zlib.crc32(w), 0),
         "is stored uncompressed but declares 193 bytes for 192 bytes in the file"),
        ("params/0/W.npy", (w, len(w), zlib.crc32(w), 12),   # bzip2 inflates unbounded
         r"uses zip compression method 12; only stored \(0\) and deflated \(8\)"),
        ("meta.json", (zlib.compress(meta, 9, wbits=-15), 2**25, 0),  # 32 MiB from < 1 KiB
         "deflated bytes, more than deflate can expand"),
    ]
    for name, member, match in cases:
        bad = write_zip(tmp_path / "bad.npz", [(n, *member) if n == name else (n, b)
                                               for n, b in members.items()])
        with pytest.raises(CheckpointError, match=match):
            ckpt.load(bad)


# ---------------------------------------------------------------------------- atomicity

def test_failed_replace_keeps_old_checkpoint(tmp_path, monkeypatch):
    old = saved(tmp_path, step=1)

    def crash(src, dst):
        raise OSError("simulated crash before the rename")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        saved(tmp_path, step=2)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["a.npz"]     # no temporary file left behind
    assert ckpt.load(old).step == 1


def test_failed_write_keeps_old_checkpoint(tmp_path, monkeypatch):
    old = saved(tmp_path, step=1)
    real = ckpt._write_zip

    def torn(f, *args):
        real(f, *args)
        f.truncate(f.tell() // 2)                  # half written, then the process dies
        raise KeyboardInterrupt
    monkeypatch.setattr(ckpt, "_write_zip", torn)
    with pytest.raises(KeyboardInterrupt):
        saved(tmp_path, step=2)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["a.npz"]
    assert ckpt.load(old).step == 1
    saved(tmp_path, step=3)                        # and a later save replaces it
    assert ckpt.load(old).step == 3 and os.listdir(tmp_path) == ["a.npz"]


# ---------------------------------------------------------------------------- folders

def test_latest_skips_corrupted_newer_and_prune(tmp_path):
    assert ckpt.latest(tmp_path) is None
    assert ckpt.latest(tmp_path / "missing") is None
    assert ckpt.checkpoint_path(tmp_path, 12) == os.path.join(tmp_path, "ckpt-00000012.npz")
    params = saved_params(jm.MLP((2, 1)))
    for step in (1, 2, 10, 30):
        ckpt.save(ckpt.checkpoint_path(tmp_path, step), params=params, step=step)
    assert ckpt.latest(tmp_path) == ckpt.checkpoint_path(tmp_path, 30)
    newest = ckpt.checkpoint_path(tmp_path, 30)
    blob = Path(newest).read_bytes()
    Path(newest).write_bytes(blob[:-40])
    (tmp_path / "ckpt-99999999.npz").write_bytes(b"garbage")
    (tmp_path / ".ckpt-00000040.npz.abc.tmp").write_bytes(b"temp")
    (tmp_path / "notes.txt").write_text("x")
    assert ckpt.latest(tmp_path) == ckpt.checkpoint_path(tmp_path, 10)
    assert ckpt.load(ckpt.latest(tmp_path)).step == 10

    removed = ckpt.prune(tmp_path, keep=2)      # keeps 10 and 2, removes the older 1
    assert removed == [ckpt.checkpoint_path(tmp_path, 1)]
    assert sorted(os.listdir(tmp_path)) == [".ckpt-00000040.npz.abc.tmp", "ckpt-00000002.npz",
                                            "ckpt-00000010.npz", "ckpt-00000030.npz",
                                            "ckpt-99999999.npz", "notes.txt"]
    assert ckpt.prune(tmp_path, keep=5) == []
    with pytest.raises(ValueError, match="keep must be a positive int"):
        ckpt.prune(tmp_path, keep=0)
    with pytest.raises(ValueError, match="step must be an int >= 0"):
        ckpt.checkpoint_path(tmp_path, -3)
