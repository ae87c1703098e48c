"""What jaxmlp refuses: one declared row per bad input, each tested, and the README table.

`python -m tests.test_refuses` prints the Markdown table that README.md's section
"What jaxmlp refuses" holds; `test_readme_lists_every_row` keeps the two in step.
"""
import io
import zipfile
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp as jm
from jaxmlp import optim

README = Path(__file__).resolve().parents[1] / "README.md"

M = jm.MLP((3, 4, 2), output="softmax", loss="cce")
P = jm.init_params(jax.random.key(0), M, dtype=jnp.float32)
X = jnp.ones((5, 3))
Y = jnp.array([0, 1, 1, 0, 1])
REG = jm.MLP((3, 4, 1))
PR = jm.init_params(jax.random.key(0), REG, dtype=jnp.float32)
XR, YR = np.ones((8, 3), np.float32), np.ones((8, 1), np.float32)


class Row(NamedTuple):
    area: str
    bad_input: str
    call: Callable  # call(tmp_path) must raise
    error: type
    message: str   # a regex the message must match; shown in the README table


def _with(params, layer, key, value):
    out = [dict(p) for p in params]
    out[layer][key] = value
    return out


def _without_x64(f):
    with jax.enable_x64(False):
        return f()


def _write(tmp, name, text):
    path = tmp / name
    path.write_text(text)
    return path


def _ckpt(tmp):
    path = tmp / "c.npz"
    jm.checkpoint.save(path, params=PR, model=REG, step=3)
    return path


def _truncated(tmp):
    path = _ckpt(tmp)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _flipped(tmp):
    path = _ckpt(tmp)
    data = bytearray(path.read_bytes())
    at = bytes(data).find(np.asarray(PR[0]["W"]).tobytes())  # a byte of the weights themselves
    assert at > 0
    data[at + 3] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def _other_version(tmp):
    path = _ckpt(tmp)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["meta.json"] = members["meta.json"].replace(b'"version": 1', b'"version": 99')
    with zipfile.ZipFile(path, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    return path


def _npz(tmp, **arrays):
    path = tmp / "g.npz"
    np.savez(path, **arrays)
    return str(path)


def _oracle_cli(tmp, argv_of):
    import contextlib
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = jm.oracle.main(argv_of(tmp))
    raise SystemExit(f"exit {code}: {err.getvalue().strip()}")


def _fifo(tmp):
    import os
    path = tmp / "pipe.npz"
    os.mkfifo(path)
    return str(path)


def _within(seconds, f):
    """f(), ended by TimeoutError after `seconds` instead of hanging (a FIFO opened for
    reading blocks until a writer comes)."""
    import signal

    def timeout(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, timeout)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return f()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _bomb_zip(path, members, bombs):
    """A zip of `members` ({name: bytes}, stored), except that each name in `bombs` is
    deflated as its bytes followed by 2 GiB of zeros, in about 2 MB: after a full flush one
    compressed MiB of zeros is the same bytes every time, so it is repeated, not recomputed.
    Written by hand, as zipfile would spend seconds compressing 2 GiB."""
    import struct
    import zlib
    body, central = bytearray(), bytearray()
    for name, data in members.items():
        if name in bombs:
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            head = c.compress(data) + c.flush(zlib.Z_FULL_FLUSH)
            mib = c.compress(bytes(2**20)) + c.flush(zlib.Z_FULL_FLUSH)
            payload, size, crc, method = head + mib * 2048 + c.flush(), len(data) + 2**31, 0, 8
        else:
            payload, size, crc, method = data, len(data), zlib.crc32(data), 0
        n = name.encode()
        common = (0, method, 0, 0x21, crc, len(payload), size, len(n))
        central += struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 0, 20, 0, *common,
                               0, 0, 0, 0, 0, len(body)) + n
        body += struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, *common, 0) + n + payload
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members),
                      len(central), len(body), 0)
    path.write_bytes(bytes(body + central + end))
    return path


def _bomb_ckpt(tmp, member):
    """_ckpt's file with `member` inflating to 2 GiB more than its manifest entry allows."""
    with zipfile.ZipFile(_ckpt(tmp)) as z:
        members = {n: z.read(n) for n in z.namelist()}
    return _bomb_zip(tmp / "bomb.npz", members, {member})


def _bomb_npz(tmp):
    """A 2 MB .npz for `jaxmlp check` whose X.npy (float64, 2**28 values) inflates to 2 GiB."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (2**28,)})
    return str(_bomb_zip(tmp / "bomb.npz", {"X.npy": header.getvalue()}, {"X.npy"}))


def _gzip_bomb(tmp):
    """4 MiB of "0,0" rows in a ~4 KB gzip file, written a chunk at a time."""
    import gzip
    path = tmp / "bomb.csv.gz"
    with gzip.open(path, "wb") as f:
        for _ in range(4):
            f.write(b"0,0\n" * (1 << 18))
    return path


def _train_cli(tmp, name, text, *flags):
    """`jaxmlp train --csv tmp/name` (text written there); raises SystemExit with the exit
    code and the error line, as _oracle_cli does."""
    import contextlib
    from jaxmlp import cli
    err = io.StringIO()
    argv = ["train", "--csv", str(_write(tmp, name, text)), "--out", str(tmp / "run"),
            "--epochs", "1", "--quiet", *flags]
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    raise SystemExit(f"exit {code}: {err.getvalue().strip()}")


_ROWS40 = "".join(f"{i % 5},{i % 3},{i % 2}\n" for i in range(40))  # a,b,y


def _diverged_ckpt(tmp):
    call = lambda: jm.fit(REG, PR, optim.sgd(1e36), XR * 100, YR * 1e6, epochs=2,  # noqa: E731
                          batch_size=None, key=jax.random.key(0), checkpoint_dir=tmp)
    with pytest.raises(jm.DivergenceError):
        call()
    return call()


def _registered_twice(tmp):
    jm.activations.register("my_softplus", jax.nn.softplus, jax.nn.sigmoid)
    try:
        jm.activations.register("my_softplus", jax.nn.softplus, jax.nn.sigmoid)
    finally:
        jm.activations.unregister("my_softplus")


def _other_activation(tmp):
    """A checkpoint of a model with a registered activation, loaded after the name was
    registered again with another function."""
    act = jm.activations.register("my_act", jax.nn.softplus, jax.nn.sigmoid)
    try:
        model = jm.MLP((3, 4, 1), activation="my_act")
        path = jm.checkpoint.save(tmp / "a.npz", model=model,
                                  params=jm.init_params(jax.random.key(0), model))
        jm.activations.register("my_act", jnp.tanh, lambda z, a: 1 - a * a, overwrite=True)
        return jm.checkpoint.load(path)
    finally:
        jm.activations.unregister("my_act")
        del act


def _resume_other(tmp, **change):
    args = dict(opt=optim.adam(1e-3), y=YR)
    jm.fit(REG, PR, args["opt"], XR, args["y"], epochs=1, batch_size=4, key=jax.random.key(0),
           checkpoint_dir=tmp)
    args.update(change)
    return jm.fit(REG, PR, args["opt"], XR, args["y"], epochs=1, batch_size=4,
                  key=jax.random.key(0), checkpoint_dir=tmp)


ROWS = [
    # model configuration
    Row("MLP", "`sizes=(3,)`: fewer than two sizes", lambda t: jm.MLP((3,)), ValueError,
        "sizes needs at least two entries"),
    Row("MLP", "`sizes=(3, 0, 1)`: a size that is not a positive int", lambda t: jm.MLP((3, 0, 1)),
        ValueError, r"sizes\[1\] must be a positive int"),
    Row("MLP", "`activation=\"swish\"`: unknown name", lambda t: jm.MLP((3, 4, 1), activation="swish"),
        ValueError, "unknown hidden activation 'swish'"),
    Row("MLP", "`activation=\"softmax\"` on a hidden layer",
        lambda t: jm.MLP((3, 4, 1), activation="softmax"), ValueError, "softmax is output-only"),
    Row("MLP", "activation tuple of the wrong length",
        lambda t: jm.MLP((3, 4, 4, 1), activation=("relu",)), ValueError,
        "one name per hidden layer"),
    Row("activations", "`register(name, f, df)` with a wrong f′ (`jnp.tanh` with df = 1 − a)",
        lambda t: jm.activations.register("my_tanh", jnp.tanh, lambda z, a: 1 - a), ValueError,
        r"df is not the derivative of f: it differs from jax.grad\(f\) at \d+ of the 21 grid "
        r"points"),
    Row("activations", "`register(\"relu\", f, df)`: a built-in name",
        lambda t: jm.activations.register("relu", jax.nn.relu, lambda z: (z > 0) * 1.0),
        ValueError, "'relu' is a built-in activation and cannot be replaced"),
    Row("activations", "a name registered twice without `overwrite=True`", _registered_twice,
        ValueError, "'my_softplus' is already registered; pass overwrite=True"),
    Row("MLP", "an `Activation` built by hand (its f′ never checked)",
        lambda t: jm.MLP((3, 4, 1), activation=jm.activations.Activation(
            "mine", jnp.tanh, lambda z, a: a, lambda z, a, g: g * a)), ValueError,
        "was not built by jaxmlp.activations.custom or register"),
    Row("MLP", "`loss=\"bce\"` with an identity output", lambda t: jm.MLP((3, 4, 1), loss="bce"),
        ValueError, "loss='bce' needs output='sigmoid'"),
    Row("MLP", "`loss=\"cce\"` with a sigmoid output",
        lambda t: jm.MLP((3, 4, 2), output="sigmoid", loss="cce"), ValueError,
        "loss='cce' needs output='softmax'"),
    Row("MLP", "`l2=-0.1`", lambda t: jm.MLP((3, 4, 1), l2=-0.1), ValueError,
        "l2 must be a finite number >= 0"),
    Row("MLP", "`dropout=1.0`", lambda t: jm.MLP((3, 4, 1), dropout=1.0), ValueError,
        r"dropout must be in \[0, 1\)"),
    Row("MLP", "`norm=\"group\"`", lambda t: jm.MLP((3, 4, 1), norm="group"), ValueError,
        "unknown norm 'group'"),
    Row("init_params", "`scheme=\"kaiming\"`", lambda t: jm.init_params(jax.random.key(0), M, "kaiming"),
        ValueError, "unknown init scheme 'kaiming'"),
    Row("init_params", "`dtype=float64` while 64-bit JAX is off",
        lambda t: _without_x64(lambda: jm.init_params(jax.random.key(0), M, dtype=jnp.float64)),
        ValueError, "dtype float64 needs 64-bit JAX"),
    Row("init_params", "an int seed instead of a key", lambda t: jm.init_params(0, M), TypeError,
        r"key must be a jax.random.key \(e.g. jax.random.key\(0\)\)"),
    # parameters
    Row("params", "a transposed weight matrix", lambda t: jm.loss(M, _with(P, 0, "W", P[0]["W"].T), X, Y),
        ValueError, r"params\[0\]\['W'\] must have shape \(4, 3\), got \(3, 4\)"),
    Row("params", "a layer missing", lambda t: jm.loss(M, P[:1], X, Y), ValueError,
        "params has 1 layers but the model"),
    Row("params", "an integer weight matrix",
        lambda t: jm.loss(M, _with(P, 1, "W", P[1]["W"].astype(jnp.int32)), X, Y), TypeError,
        r"params\[1\]\['W'\] must be a float array"),
    Row("params", "a tuple of layers instead of a list", lambda t: jm.loss(M, tuple(P), X, Y),
        TypeError, "params must be a list of 2 dicts .* got tuple"),
    Row("params", "NaN in a weight matrix (initial params of `fit`, or any call)",
        lambda t: jm.fit(REG, _with(PR, 0, "W", PR[0]["W"].at[1, 2].set(jnp.nan)), optim.sgd(0.1),
                         XR, YR, epochs=1, batch_size=4, key=jax.random.key(0)),
        ValueError, r"params\[0\]\['W'\] contains NaN"),
    Row("params", "Inf in a bias", lambda t: jm.forward(M, _with(P, 1, "b", P[1]["b"].at[0].set(jnp.inf)), X),
        ValueError, r"params\[1\]\['b'\] contains Inf"),
    Row("init_params", "a model whose weights do not fit in memory (`sizes=(10**6, 10**6)`)",
        lambda t: jm.init_params(jax.random.key(0), jm.MLP((10**6, 10**6)), dtype=jnp.float32),
        ValueError,
        "need 4,000,004,000,000 bytes"),
    Row("params", "an unexpected leaf (`gamma` without `norm`)",
        lambda t: jm.loss(M, _with(P, 0, "gamma", P[0]["b"]), X, Y), ValueError,
        r"params\[0\] must have keys \['W', 'b'\]"),
    # data
    Row("x", "x of the wrong width", lambda t: jm.forward(M, P, jnp.ones((5, 4))), ValueError,
        r"x must have shape \(batch, 3\), got \(5, 4\)"),
    Row("x", "a 1-D x", lambda t: jm.forward(M, P, jnp.ones(3)), ValueError,
        r"x must be 2-D \(batch, n_in=3\)"),
    Row("x", "an integer x", lambda t: jm.forward(M, P, jnp.ones((5, 3), jnp.int32)), TypeError,
        "x must be a float array"),
    Row("x", "complex x", lambda t: jm.forward(M, P, X.astype(jnp.complex64)), TypeError,
        "x must be a real array, got dtype complex64"),
    Row("x", "NaN in x", lambda t: jm.forward(M, P, X.at[1, 1].set(jnp.nan)), ValueError,
        "x contains NaN or Inf"),
    Row("y", "y with another batch size than x", lambda t: jm.loss(M, P, X, Y[:4]), ValueError,
        "y has batch 4 but x has batch 5"),
    Row("y", "y of the wrong width", lambda t: jm.loss(M, P, X, jnp.ones((5, 3))), ValueError,
        r"y must have shape \(5, 2\), got \(5, 3\)"),
    Row("y", "cce labels outside [0, K)", lambda t: jm.loss(M, P, X, Y.at[0].set(2)), ValueError,
        r"class labels outside \[0, 2\)"),
    Row("y", "float 1-D labels for cce", lambda t: jm.loss(M, P, X, Y.astype(jnp.float32)),
        TypeError, "must hold integer class labels"),
    Row("y", "bce targets outside [0, 1]",
        lambda t: jm.loss(jm.MLP((3, 1), output="sigmoid", loss="bce"),
                          jm.init_params(jax.random.key(0), jm.MLP((3, 1), output="sigmoid", loss="bce")),
                          X, jnp.full((5, 1), 2.0)), ValueError, r"y must lie in \[0, 1\]"),
    Row("y", "cce int64 label 2³² (would wrap to 0 as int32)",
        lambda t: _without_x64(lambda: jm.loss(M, P, np.ones((3, 3), np.float32),
                                               np.array([0, 1, 2**32], np.int64))),
        ValueError, r"class labels outside \[0, 2\): min 0, max 4294967296"),
    Row("y", "cce one-hot targets with a negative entry",
        lambda t: jm.loss(M, P, X, np.array([[2.0, -1.0]] + [[1.0, 0.0]] * 4)), ValueError,
        r"y\[0, 1\] = -1.0 is negative"),
    Row("y", "cce probability rows that do not sum to 1",
        lambda t: jm.loss(M, P, X, np.array([[0.5, 0.4]] + [[1.0, 0.0]] * 4)), ValueError,
        "row 0 sums to 0.9"),
    Row("y", "complex y", lambda t: jm.loss(REG, PR, XR, YR.astype(np.complex64)), TypeError,
        "y must be a real array, got dtype complex64"),
    Row("inference mode", "NaN in batch-norm running variance",
        lambda t: jm.forward(jm.MLP((3, 4, 1), norm="batch"),
                             jm.init_params(jax.random.key(0), jm.MLP((3, 4, 1), norm="batch")), XR,
                             state=[{"mean": jnp.zeros(4), "var": jnp.full(4, jnp.nan)}]),
        ValueError, r"state\[0\]\['var'\] contains NaN"),
    Row("inference mode", "a negative batch-norm running variance",
        lambda t: jm.forward(jm.MLP((3, 4, 1), norm="batch"),
                             jm.init_params(jax.random.key(0), jm.MLP((3, 4, 1), norm="batch")), XR,
                             state=[{"mean": jnp.zeros(4), "var": -jnp.ones(4)}]),
        ValueError, r"state\[0\]\['var'\] holds a negative running variance"),
    Row("training mode", "dropout > 0 and no key",
        lambda t: jm.value_and_grad(jm.MLP((3, 4, 1), dropout=0.5), PR, XR, YR), ValueError,
        r"needs a PRNG key: pass key=jax.random.key\(seed\)"),
    Row("inference mode", "batch norm and no state",
        lambda t: jm.forward(jm.MLP((3, 4, 1), norm="batch"),
                             jm.init_params(jax.random.key(0), jm.MLP((3, 4, 1), norm="batch")), XR),
        ValueError, "inference mode needs its running statistics"),
    # optimizers
    Row("optim", "`adam(0.0)`: learning rate ≤ 0", lambda t: optim.adam(0.0), ValueError,
        "learning_rate"),
    Row("optim", "`adam(1e-3, b2=1.0)`", lambda t: optim.adam(1e-3, b2=1.0), ValueError,
        r"b2 must be in \[0, 1\), got 1.0"),
    Row("optim", "`sgd(0.1, momentum=1.5)`", lambda t: optim.sgd(0.1, momentum=1.5), ValueError,
        "momentum must be in"),
    Row("optim", "`rmsprop(0.1, eps=-1.0)`", lambda t: optim.rmsprop(0.1, eps=-1.0), ValueError,
        "eps must be"),
    Row("optim", "`adamw(1e-3, weight_decay=-1.0)`", lambda t: optim.adamw(1e-3, weight_decay=-1.0),
        ValueError, "weight_decay must be"),
    Row("optim", "a schedule returning a vector", lambda t: optim.adam(lambda c: jnp.ones(3)),
        ValueError, r"schedule must return a scalar rate, got an array of shape \(3,\)"),
    Row("optim", "a schedule returning NaN, Inf or a negative rate",
        lambda t: optim.sgd(lambda c: -0.1), ValueError,
        "schedule returned -0.1 at count 0: rates must be finite and >= 0"),
    Row("optim", "an opt_state of another optimizer",
        lambda t: optim.adam(1e-3).update(PR, optim.sgd(0.1).init(PR), PR), TypeError,
        "adam's update needs the AdamState .* got SgdState"),
    Row("optim", "`make_train_step`'s step given another optimizer's opt_state",
        lambda t: jm.make_train_step(REG, optim.adam(1e-3), donate=False)(
            PR, optim.sgd(0.1).init(PR), XR, YR), TypeError,
        "opt_state does not belong to this optimizer"),
    Row("optim", "`clip_by_global_norm(0.0)`", lambda t: optim.clip_by_global_norm(0.0), ValueError,
        "max_norm"),
    # training
    Row("fit", "NaN in y", lambda t: jm.fit(REG, PR, optim.sgd(0.1), XR, np.full((8, 1), np.nan),
                                            epochs=1, batch_size=4, key=jax.random.key(0)),
        ValueError, "y contains NaN or Inf"),
    Row("fit", "`batch_size=0`", lambda t: jm.fit(REG, PR, optim.sgd(0.1), XR, YR, epochs=1,
                                                  batch_size=0, key=jax.random.key(0)),
        ValueError, "batch_size must be a positive int, got 0"),
    Row("fit", "`patience` without validation",
        lambda t: jm.fit(REG, PR, optim.sgd(0.1), XR, YR, epochs=1, batch_size=4, patience=3,
                         key=jax.random.key(0)), ValueError, "patience .* needs validation"),
    Row("fit", "a mesh without a \"data\" axis",
        lambda t: jm.fit(REG, PR, optim.sgd(0.1), XR, YR, epochs=1, batch_size=4,
                         key=jax.random.key(0),
                         mesh=jax.sharding.Mesh(np.array(jax.devices()[:1]), ("batch",))),
        ValueError, "mesh must have an axis named 'data'"),
    Row("fit", "a learning rate that overflows the params' dtype (`sgd(1e39)`, float32)",
        lambda t: jm.fit(REG, PR, optim.sgd(1e39), XR, YR, epochs=1, batch_size=4,
                         key=jax.random.key(0)), ValueError,
        "sgd's learning_rate = .* overflows the parameters' dtype float32"),
    Row("fit", "one full-batch update that overflows (`sgd(1e36)`, epochs=1)",
        lambda t: jm.fit(REG, PR, optim.sgd(1e36), XR * 100, YR * 1e6, epochs=1,
                         batch_size=None, key=jax.random.key(0)), jm.DivergenceError,
        r"training diverged at epoch 0, step 0: non-finite update"),
    Row("fit", "a resume with another optimizer or hyperparameters",
        lambda t: _resume_other(t, opt=optim.adam(3e-3)), ValueError,
        r"optimizer: adam\(learning_rate=0.001, .* in the checkpointed run, "
        r"adam\(learning_rate=0.003, .* now"),
    Row("fit", "a resume with other data of the same shape",
        lambda t: _resume_other(t, y=YR + 1), ValueError,
        "y: same shape and dtype, other values"),
    Row("fit", "a second call on the folder of a run that diverged", _diverged_ckpt,
        jm.DivergenceError, "diverged before, as recorded in checkpoint_dir"),
    Row("fit", "a learning rate that makes the loss explode",
        lambda t: jm.fit(jm.MLP((3, 1)), [{"W": jnp.ones((1, 3)), "b": jnp.zeros(1)}],
                         optim.sgd(1e30), XR * np.arange(8)[:, None], YR, epochs=10,
                         batch_size=4, key=jax.random.key(0)), jm.DivergenceError,
        r"training diverged at epoch \d+, step \d+: non-finite loss"),
    # files
    Row("CSV", "a ragged row", lambda t: jm.data.load_csv(_write(t, "r.csv", "a,b,c\n1,2,3\n4,5\n")),
        ValueError, "line 3"),
    Row("CSV", "a gzip CSV that expands past `max_bytes` (a gzip bomb; default: 4 GiB, or 500× "
        "its compressed size past 64 MiB)",
        lambda t: jm.data.load_csv(_gzip_bomb(t), max_bytes=1 << 20), ValueError,
        r"the gzip data expands past 1,048,576 bytes"),
    Row("CSV", "a directory (or FIFO, device) as the path",
        lambda t: jm.data.load_csv(t), ValueError, "is a directory, not a regular file"),
    Row("CSV", "only the target column", lambda t: jm.data.load_csv(_write(t, "y.csv", "y\n1\n2\n")),
        ValueError, "no feature columns"),
    Row("CSV", "a non-number cell: its line, column number and name",
        lambda t: jm.data.load_csv(_write(t, "c.csv", "a,b,c\n1,2,3\n4,x,6\n")), ValueError,
        r"line 3, column 2 \('b'\): 'x' is not a number"),
    Row("jaxmlp train", "`--csv` with NaN in the target column",
        lambda t: _train_cli(t, "n.csv", "a,b,y\n" + _ROWS40 + "1,2,nan\n"), SystemExit,
        r"exit 2: .*the target \(y\) column 'y' holds nan in data row 41"),
    Row("jaxmlp train", "`--csv` whose target holds a single class",
        lambda t: _train_cli(t, "one.csv", "a,y\n" + "".join(f"{i},1\n" for i in range(40))),
        SystemExit, "exit 2: .*holds only one class"),
    Row("jaxmlp train", "`--out` naming an existing file",
        lambda t: _train_cli(t, "ok.csv", "a,b,y\n" + _ROWS40, "--out", str(_write(t, "f", "x"))),
        SystemExit, "exit 2: .*exists and is not a folder"),
    Row("CSV", "a value beyond float32's range (`5e39`)",
        lambda t: jm.data.load_csv(_write(t, "o.csv", "a,b\n1,2\n5e39,3\n")), ValueError,
        r"line 3, column 1 \('a'\): 5e\+39 does not fit in float32"),
    Row("CSV", "an unknown target column",
        lambda t: jm.data.load_csv(_write(t, "t.csv", "a,b,c\n1,2,3\n"), target="price"),
        ValueError, "price"),
    Row("labels", "`one_hot([0, -1])`", lambda t: jm.data.one_hot([0, -1], 3), ValueError,
        "labels must be >= 0, got -1"),
    Row("npz (jaxmlp check)", "a file without the candidate gradients",
        lambda t: _oracle_cli(t, lambda d: [_npz(d, W1=np.ones((2, 3)), b1=np.zeros(2),
                                                 X=np.ones((4, 3)), Y=np.ones((4, 2))),
                                            "--output", "identity", "--loss", "mse"]),
        SystemExit, "exit 2: .*dW1"),
    Row("npz (jaxmlp check)", "NaN in X",
        lambda t: _oracle_cli(t, lambda d: [_npz(d, W1=np.ones((2, 3)), b1=np.zeros(2),
                                                 X=np.full((4, 3), np.nan), Y=np.ones((4, 2)),
                                                 dW1=np.ones((2, 3)), db1=np.ones(2)),
                                            "--output", "identity", "--loss", "mse"]),
        SystemExit, "exit 2: .*NaN"),
    Row("npz (jaxmlp check)", "a 2 MB file whose X.npy inflates to 2 GiB",
        lambda t: _oracle_cli(t, lambda d: [_bomb_npz(d), "--output", "identity",
                                            "--loss", "mse"]),
        SystemExit, r"exit 2: .*member 'X.npy' declares \d+ bytes uncompressed, more than "
                    r"the 512 MiB"),
    Row("npz (jaxmlp check)", "a FIFO (named pipe) as the file",
        lambda t: _within(2, lambda: _oracle_cli(t, lambda d: [_fifo(d), "--output",
                                                               "identity", "--loss", "mse"])),
        SystemExit, r"exit 2: .*is a FIFO \(named pipe\), not a regular file"),
    Row("checkpoint", "a directory as the path", lambda t: jm.checkpoint.load(t),
        jm.checkpoint.CheckpointError, "is a directory, not a regular file"),
    Row("checkpoint", "a FIFO (named pipe) as the path",
        lambda t: _within(2, lambda: jm.checkpoint.load(_fifo(t))),
        jm.checkpoint.CheckpointError, r"is a FIFO \(named pipe\), not a regular file"),
    Row("checkpoint", "an array member that inflates to 2 GiB (a 2 MB zip bomb)",
        lambda t: jm.checkpoint.load(_bomb_ckpt(t, "params/0/W.npy")),
        jm.checkpoint.CheckpointError,
        r"member 'params/0/W.npy' declares \d+ bytes uncompressed, but the manifest's "
        r"float32 \(4, 3\) is 48 bytes"),
    Row("checkpoint", "a `meta.json` that inflates to 2 GiB",
        lambda t: jm.checkpoint.load(_bomb_ckpt(t, "meta.json")),
        jm.checkpoint.CheckpointError, r"member 'meta.json' declares \d+ bytes uncompressed, "
                                       r"more than the 64 MiB"),
    Row("checkpoint", "a truncated file", lambda t: jm.checkpoint.load(_truncated(t)),
        jm.checkpoint.CheckpointError, "truncated or corrupted"),
    Row("checkpoint", "a flipped byte", lambda t: jm.checkpoint.load(_flipped(t)),
        jm.checkpoint.CheckpointError, "corrupted"),
    Row("checkpoint", "another format version", lambda t: jm.checkpoint.load(_other_version(t)),
        jm.checkpoint.CheckpointError, "version 99"),
    Row("checkpoint", "a custom activation now registered with another function",
        _other_activation, jm.checkpoint.CheckpointError,
        "saved with another activation 'my_act' than the one used now"),
    Row("checkpoint", "a model that does not match",
        lambda t: jm.checkpoint.load(_ckpt(t), model=jm.MLP((3, 8, 1))),
        jm.checkpoint.CheckpointError, "sizes"),
]


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.area}: {r.bad_input}" for r in ROWS])
def test_refused(row, tmp_path):
    with pytest.raises(row.error, match=row.message):
        row.call(tmp_path)


def test_at_least_30_rows():
    assert len(ROWS) >= 30


def markdown_table() -> str:
    lines = ["| area | bad input | error |", "| --- | --- | --- |"]
    for r in ROWS:
        lines.append(f"| {r.area} | {r.bad_input} | `{r.error.__name__}`: {_shown(r.message)} |")
    return "\n".join(lines)


def _shown(regex: str) -> str:
    text = regex.replace("\\(", "(").replace("\\)", ")").replace("\\[", "[").replace("\\]", "]")
    text = text.replace(r"\d+", "N").replace(".*", "…").replace("|", "\\|")
    return f"“{text}”"


def test_readme_lists_every_row():
    text = README.read_text(encoding="utf-8")
    missing = [line for line in markdown_table().splitlines()[2:] if line not in text]
    assert not missing, "README is out of date; run python -m tests.test_refuses:\n" + "\n".join(missing)


if __name__ == "__main__":
    print(markdown_table())
