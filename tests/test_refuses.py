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
    Row("fit", "a learning rate that makes the loss explode",
        lambda t: jm.fit(jm.MLP((3, 1)), [{"W": jnp.ones((1, 3)), "b": jnp.zeros(1)}],
                         optim.sgd(1e30), XR * np.arange(8)[:, None], YR, epochs=10,
                         batch_size=4, key=jax.random.key(0)), jm.DivergenceError,
        r"non-finite loss or gradient at epoch \d+, step \d+"),
    # files
    Row("CSV", "a ragged row", lambda t: jm.data.load_csv(_write(t, "r.csv", "a,b,c\n1,2,3\n4,5\n")),
        ValueError, "line 3"),
    Row("CSV", "a cell that is not a number",
        lambda t: jm.data.load_csv(_write(t, "n.csv", "a,b,c\n1,2,3\n4,x,6\n")), ValueError,
        "'x'"),
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
    Row("checkpoint", "a truncated file", lambda t: jm.checkpoint.load(_truncated(t)),
        jm.checkpoint.CheckpointError, "truncated or corrupted"),
    Row("checkpoint", "a flipped byte", lambda t: jm.checkpoint.load(_flipped(t)),
        jm.checkpoint.CheckpointError, "corrupted"),
    Row("checkpoint", "another format version", lambda t: jm.checkpoint.load(_other_version(t)),
        jm.checkpoint.CheckpointError, "version 99"),
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
