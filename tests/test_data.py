"""Tests for jaxmlp.data: synthetic sets, CSV loading and its errors, the real data sets
(skipped without /work/shared/data), the download path with a fake urlopen (nothing here
touches the network), standardisation, splits and one-hot."""
from __future__ import annotations

import gzip
import io
import os
import shutil
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxmlp import data

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

WINE_RED_MEANS = {
    "fixed acidity": 8.319637,
    "volatile acidity": 0.527821,
    "citric acid": 0.270976,
    "residual sugar": 2.538806,
    "chlorides": 0.087467,
    "free sulfur dioxide": 15.874922,
    "total sulfur dioxide": 46.467792,
    "density": 0.996747,
    "pH": 3.311113,
    "sulphates": 0.658149,
    "alcohol": 10.422983,
}
WINE_RED_QUALITY_MEAN = 5.636023
WINE_RED_COUNTS = {3: 10, 4: 53, 5: 681, 6: 638, 7: 199, 8: 18}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test: empty cache in tmp_path, no $JAXMLP_DATA, and any download fails."""
    monkeypatch.setenv("JAXMLP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("JAXMLP_DATA", raising=False)

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)


@pytest.fixture
def shared():
    if not (SHARED / "winequality-red.csv").is_file():
        pytest.skip(f"real data folder {SHARED} is absent")
    return SHARED


# --------------------------------------------------------------------------------------
# synthetic sets
# --------------------------------------------------------------------------------------

CLASSIFIERS = {
    "spirals": (lambda **kw: data.spirals(**kw), 3),
    "spirals5": (lambda **kw: data.spirals(classes=5, **kw), 5),
    "moons": (lambda **kw: data.moons(**kw), 2),
    "xor": (lambda **kw: data.xor(**kw), 2),
}


@pytest.mark.parametrize("name", CLASSIFIERS)
@pytest.mark.parametrize("n", [1, 7, 301])
def test_classification_sets_shapes_balance(name, n):
    make, k = CLASSIFIERS[name]
    x, y = make(n=n)
    assert x.shape == (n, 2) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int32
    counts = np.bincount(y, minlength=k)
    assert counts.sum() == n and counts.max() - counts.min() <= 1
    assert np.isfinite(x).all()


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classification_sets_deterministic(name):
    make, _ = CLASSIFIERS[name]
    x1, y1 = make(n=100, seed=3)
    x2, y2 = make(n=100, seed=3)
    x3, _ = make(n=100, seed=4)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)


def test_noise_free_geometry():
    x, y = data.xor(n=200, noise=0.0)
    np.testing.assert_array_equal(y, (x[:, 0] * x[:, 1] < 0).astype(np.int32))
    x, y = data.moons(n=100, noise=0.0)
    np.testing.assert_allclose(np.hypot(x[y == 0, 0], x[y == 0, 1]), 1.0, atol=1e-6)
    x, y = data.spirals(n=90, classes=3, noise=0.0)
    assert np.hypot(x[:, 0], x[:, 1]).max() <= 1.0 + 1e-6
    x, y = data.sine(n=50, noise=0.0)
    np.testing.assert_allclose(y, np.sin(x), atol=1e-6)


def test_sine():
    x, y = data.sine(n=64, dtype=np.float64)
    assert x.shape == y.shape == (64, 1) and x.dtype == y.dtype == np.float64
    assert (np.abs(x) <= np.pi).all()
    x1, y1 = data.sine(n=64, seed=1)
    x2, y2 = data.sine(n=64, seed=1)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, data.sine(n=64, seed=2)[0])


@pytest.mark.parametrize(
    "call, error, word",
    [
        (lambda: data.spirals(n=0), ValueError, "spirals: n must be a positive int, got 0"),
        (lambda: data.moons(n=2.5), TypeError, "moons: n must be a positive int, got 2.5"),
        (lambda: data.xor(n=True), TypeError, "xor: n must be a positive int, got True"),
        (lambda: data.sine(noise=-0.1), ValueError, "sine: noise must be a finite number >= 0"),
        (lambda: data.moons(noise=float("nan")), ValueError, "moons: noise"),
        (lambda: data.spirals(classes=1), ValueError, "spirals: classes"),
        (lambda: data.xor(seed=-1), ValueError, "xor: seed must be an int >= 0, got -1"),
        (lambda: data.sine(dtype=np.int32), ValueError, "sine: dtype"),
        (lambda: data.sine(dtype="no such"), TypeError, "sine: dtype"),
    ],
)
def test_synthetic_validation(call, error, word):
    with pytest.raises(error, match=word):
        call()


# --------------------------------------------------------------------------------------
# load_csv
# --------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("sep", [";", ",", "\t"])
def test_load_csv_detects_delimiter_and_quoted_header(tmp_path, sep):
    text = sep.join(['"a b"', '"c"', '"target"']) + "\n"
    text += "\n".join(sep.join(map(str, r)) for r in [(1, 2.5, 3), (4, 5, 6e-1)]) + "\n"
    t = data.load_csv(write(tmp_path / "t.csv", text))
    assert t.feature_names == ("a b", "c") and t.target_name == "target"
    np.testing.assert_array_equal(t.x, np.array([[1, 2.5], [4, 5]], np.float32))
    np.testing.assert_array_equal(t.y, np.array([3, 0.6], np.float32))
    assert t.x.dtype == t.y.dtype == np.float32


def test_load_csv_semicolon_beats_commas_in_names(tmp_path):
    # ';' is preferred to ',' whenever it splits the lines consistently.
    t = data.load_csv(write(tmp_path / "t.csv", '"x, mg/l";"y, %"\n1;2\n3;4\n'))
    assert t.feature_names == ("x, mg/l",) and t.target_name == "y, %"
    t = data.load_csv(write(tmp_path / "c.csv", '"a;b",c\n1,2\n'), delimiter=",")
    assert t.feature_names == ("a;b",)


def test_load_csv_target_by_name_and_index(tmp_path):
    p = write(tmp_path / "t.csv", "x,y,z\n1,2,3\n4,5,6\n\n")
    t = data.load_csv(p, target="y")
    assert t.target_name == "y" and t.feature_names == ("x", "z")
    np.testing.assert_array_equal(t.y, [2, 5])
    np.testing.assert_array_equal(t.x, [[1, 3], [4, 6]])
    for idx, name in [(0, "x"), (-1, "z"), (-3, "x"), (2, "z")]:
        assert data.load_csv(p, target=idx).target_name == name
    t64 = data.load_csv(p, target=0, dtype=np.float64)
    assert t64.x.dtype == t64.y.dtype == np.float64


def test_load_csv_no_header_and_gzip(tmp_path):
    text = "1,2,0\n3,4,1\n5,6,2\n"
    t = data.load_csv(write(tmp_path / "plain.csv", text))
    assert t.feature_names == ("col0", "col1") and t.target_name == "col2"
    np.testing.assert_array_equal(t.y, [0, 1, 2])
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    np.testing.assert_array_equal(data.load_csv(gz).x, t.x)
    # gzip recognised by its magic bytes, without the suffix
    hidden = tmp_path / "t.dat"
    hidden.write_bytes(gzip.compress(text.encode()))
    np.testing.assert_array_equal(data.load_csv(hidden).x, t.x)


def test_load_csv_header_forced(tmp_path):
    p = write(tmp_path / "t.csv", "1,2\n3,4\n")
    t = data.load_csv(p, header=True)
    assert t.feature_names == ("1",) and t.target_name == "2" and t.x.shape == (1, 1)
    with pytest.raises(ValueError, match=r"line 1, column 1 \('col0'\): 'a' is not a number"):
        data.load_csv(write(tmp_path / "h.csv", "a,b\n1,2\n"), header=False)


def test_load_csv_crlf_bom_and_spaces(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes(b'\xef\xbb\xbf"a" ; "b"\r\n 1 ; 2 \r\n3;4\r\n')
    t = data.load_csv(p, target="b")
    assert t.feature_names == ("a",)
    np.testing.assert_array_equal(t.y, [2, 4])


def test_load_csv_ragged_row(tmp_path):
    p = write(tmp_path / "t.csv", "a;b;c\n1;2;3\n\n4;5\n6;7;8\n")
    with pytest.raises(ValueError, match=r"line 4 has 2 fields, expected 3"):
        data.load_csv(p)


def test_load_csv_non_numeric_cell(tmp_path):
    p = write(tmp_path / "t.csv", "a,b,c\n1,2,3\n4,oops,6\n")
    with pytest.raises(ValueError, match=r"line 3, column 2 \('b'\): 'oops' is not a number"):
        data.load_csv(p)
    p = write(tmp_path / "e.csv", "a,b\n1,\n")
    with pytest.raises(ValueError, match=r"line 2, column 2.*empty cell"):
        data.load_csv(p)


def test_load_csv_target_errors(tmp_path):
    p = write(tmp_path / "t.csv", '"alpha";"beta"\n1;2\n')
    with pytest.raises(ValueError, match=r"no column named 'gamma'; available: 'alpha', 'beta'"):
        data.load_csv(p, target="gamma")
    for bad in (2, -3):
        with pytest.raises(ValueError, match=rf"target index {bad} is out of range.*2 columns"):
            data.load_csv(p, target=bad)
    with pytest.raises(ValueError, match="has no header"):
        data.load_csv(write(tmp_path / "n.csv", "1,2\n"), target="alpha")
    with pytest.raises(TypeError, match="load_csv: target"):
        data.load_csv(p, target=True)


def test_load_csv_empty_and_missing(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        data.load_csv(write(tmp_path / "empty.csv", ""))
    with pytest.raises(ValueError, match="empty"):
        data.load_csv(write(tmp_path / "blank.csv", "\n  \n"))
    with pytest.raises(ValueError, match="no data rows"):
        data.load_csv(write(tmp_path / "header.csv", "a,b\n"))
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        data.load_csv(missing)


def test_load_csv_argument_errors(tmp_path):
    p = write(tmp_path / "t.csv", "1,2\n")
    with pytest.raises(ValueError, match="header"):
        data.load_csv(p, header="yes")
    with pytest.raises(ValueError, match="delimiter"):
        data.load_csv(p, delimiter=";;")
    with pytest.raises(ValueError, match="gzip"):
        (tmp_path / "bad.gz").write_bytes(b"\x1f\x8bnot gzip")
        data.load_csv(tmp_path / "bad.gz")


def test_load_csv_refuses_what_is_not_a_regular_file(tmp_path):
    with pytest.raises(ValueError, match=r"is a directory, not a regular file"):
        data.load_csv(tmp_path)
    if hasattr(os, "mkfifo"):  # opening a FIFO would block: refused from its stat alone
        fifo = tmp_path / "pipe.csv"
        os.mkfifo(fifo)
        with pytest.raises(ValueError, match=r"pipe.csv is a FIFO"):
            data.load_csv(fifo)
    if os.path.exists("/dev/zero"):
        with pytest.raises(ValueError, match="/dev/zero is a character device"):
            data.load_csv("/dev/zero")


def _gzip_bomb(path: Path, megabytes: int) -> Path:
    """A gzip file of ``megabytes`` MiB of "0,0" rows (~1000× smaller), written a chunk at
    a time, never held whole."""
    chunk = b"0,0\n" * (1 << 18)  # 1 MiB
    with gzip.open(path, "wb") as f:
        for _ in range(megabytes):
            f.write(chunk)
    return path


def test_load_csv_refuses_a_gzip_bomb(tmp_path, monkeypatch):
    bomb = _gzip_bomb(tmp_path / "bomb.csv.gz", 4)
    assert bomb.stat().st_size < 40_000
    with pytest.raises(ValueError, match=r"bomb.csv.gz: the gzip data expands past 1,048,576 "
                                         r"bytes \(\d[\d,]* bytes compressed\).*gzip bomb"):
        data.load_csv(bomb, max_bytes=1 << 20)
    # "auto": past 64 MiB, at most GZIP_MAX_RATIO × the compressed size (floor made 1 MiB)
    monkeypatch.setattr(data, "_GZIP_FLOOR", 1 << 20)
    with pytest.raises(ValueError, match="expands past"):
        data.load_csv(bomb)
    t = data.load_csv(bomb, max_bytes=None)  # no limit: read as it streams
    assert t.x.shape == (1 << 20, 1) and not t.x.any() and t.feature_names == ("col0",)
    with pytest.raises(ValueError, match="max_bytes must be"):
        data.load_csv(bomb, max_bytes=0)


def test_load_csv_truncated_gzip(tmp_path):
    payload = gzip.compress(b"a,b\n" + b"1,2\n" * 10000)
    (tmp_path / "cut.csv.gz").write_bytes(payload[: len(payload) // 2])
    with pytest.raises(ValueError, match=r"cut.csv.gz: not a valid gzip file"):
        data.load_csv(tmp_path / "cut.csv.gz")


def test_load_csv_wide_rows(tmp_path):
    # 200,000 columns: lines of 1.2 million characters (csv's field limit is 131,072)
    d = 200_000
    row = np.arange(d) % 7 * 0.25
    text = ",".join(f"c{j}" for j in range(d)) + "\n"
    text += "\n".join(",".join(f"{v:.3f}" for v in row + i) for i in range(3)) + "\n"
    assert min(map(len, text.splitlines())) > 1_000_000
    t = data.load_csv(write(tmp_path / "wide.csv", text), target="c0")
    assert t.x.shape == (3, d - 1) and t.target_name == "c0" and len(t.feature_names) == d - 1
    np.testing.assert_array_equal(t.x[2], (row + 2)[1:].astype(np.float32))
    np.testing.assert_array_equal(t.y, [0, 1, 2])


def test_load_csv_only_the_target_column(tmp_path):
    with pytest.raises(ValueError, match=r"y.csv: no feature columns: the only column \('y', "
                                         r"line 1\) is the target"):
        data.load_csv(write(tmp_path / "y.csv", "y\n1\n2\n"))


def test_load_csv_errors_name_file_line_and_column(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_BLOCK_BYTES", 64)  # many blocks: line numbers carry over
    rows = [f"{i},{i * 0.5},{-i}" for i in range(1, 100)]
    rows[75] = "76,x7,-76"  # line 77: the header is line 1
    p = tmp_path / "many.csv"
    p.write_bytes(("a,b,c\r\n" + "\r\n".join(rows) + "\r\n").encode())
    with pytest.raises(ValueError, match=r"many.csv: line 77, column 2 \('b'\): 'x7' is not a "
                                         r"number"):
        data.load_csv(p)
    rows[75] = "76,38"
    p.write_text("a,b,c\n\n" + "\n".join(rows) + "\n")  # a blank line 2
    with pytest.raises(ValueError, match=r"many.csv: line 78 has 2 fields, expected 3 \(as on "
                                         r"line 1; delimiter ','\): column 3 \('c'\) is missing"):
        data.load_csv(p)
    p.write_bytes(b"a,b\n1,2\n3,\xff4\n")
    with pytest.raises(ValueError, match=r"many.csv: line 3, character 3: not UTF-8 text"):
        data.load_csv(p)


def test_load_csv_memory_stays_near_the_result(tmp_path, monkeypatch):
    """Peak traced memory (NumPy reports its arrays to tracemalloc) within 3× the float32
    result; the csv-module reader it replaced used ~20×.  Small blocks keep the fixed
    per-block working memory small next to this small file."""
    import tracemalloc
    monkeypatch.setattr(data, "_BLOCK_BYTES", 1 << 16)
    rng = np.random.default_rng(0)
    p = tmp_path / "big.csv"
    with open(p, "w") as f:
        f.write(",".join(f"x{j}" for j in range(20)) + ",label\n")
        table = np.column_stack([rng.standard_normal((15000, 20)), rng.integers(0, 9, 15000)])
        np.savetxt(f, table, fmt=["%.6g"] * 20 + ["%d"], delimiter=",")
    tracemalloc.start()
    try:
        t = data.load_csv(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert t.x.shape == (15000, 20) and t.x.flags.c_contiguous
    assert peak <= 3 * (t.x.nbytes + t.y.nbytes), peak / (t.x.nbytes + t.y.nbytes)


_CELL_FORMATS = [repr, "{:.6g}".format, "{:.18e}".format, "{:.3E}".format, "{:.9f}".format,
                 lambda v: f"{v:.0f}" if abs(v) < 1e15 else "7", lambda v: f"+{abs(v):.4f}",
                 lambda v: repr(float(np.float32(v))) if abs(v) < 3e38 else repr(v)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(allow_nan=False, allow_infinity=False, width=64),
                          st.integers(0, len(_CELL_FORMATS) - 1)),
                min_size=2, max_size=120))
def test_load_csv_values_are_floats_of_the_cells(tmp_path_factory, cells):
    """The vectorised reader equals Python's float (then the cast) on every cell, whatever
    the notation: exponents, 17 or 19 digits, signs; a finite cell that the cast would
    overflow to inf in float32 is refused, naming its line and column."""
    text = [_CELL_FORMATS[f](v) for v, f in cells]
    if len(text) % 2:
        text.append("0")
    lines = [f"{a},{b}" for a, b in zip(text[::2], text[1::2])]
    p = tmp_path_factory.mktemp("cells") / "cells.csv"
    p.write_text("\n".join(lines) + "\n")
    expect = np.array([float(c) for c in text]).reshape(-1, 2)
    for dtype in (np.float64, np.float32):
        with np.errstate(over="ignore"):
            want = expect.astype(dtype)
        overflow = np.isfinite(expect) & np.isinf(want)
        if overflow.any():
            r, j = np.argwhere(overflow)[0]
            with pytest.raises(ValueError, match=rf"line {r + 1}, column {j + 1} .* does not "
                                                 rf"fit in float32"):
                data.load_csv(p, header=False, dtype=dtype)
            continue
        t = data.load_csv(p, header=False, dtype=dtype)
        np.testing.assert_array_equal(t.x[:, 0], want[:, 0])
        np.testing.assert_array_equal(t.y, want[:, 1])


# --------------------------------------------------------------------------------------
# real data
# --------------------------------------------------------------------------------------


def test_wine_red_reference_statistics(shared):
    t = data.wine_quality("red", path=shared, dtype=np.float64)
    assert t.x.shape == (1599, 11) and t.y.shape == (1599,)
    assert t.feature_names == tuple(WINE_RED_MEANS) and t.target_name == "quality"
    np.testing.assert_allclose(t.x.mean(axis=0), list(WINE_RED_MEANS.values()), atol=1e-5)
    assert abs(t.y.mean() - WINE_RED_QUALITY_MEAN) < 1e-5
    assert dict(Counter(data.labels_to_int(t.y).tolist())) == WINE_RED_COUNTS
    codes, classes = data.encode_labels(t.y)
    np.testing.assert_array_equal(classes, [3, 4, 5, 6, 7, 8])
    np.testing.assert_array_equal(classes[codes], t.y)
    # the file itself works as path too, and float32 is the default
    t32 = data.wine_quality("red", path=shared / "winequality-red.csv")
    assert t32.x.dtype == np.float32
    np.testing.assert_allclose(t32.x.mean(axis=0), list(WINE_RED_MEANS.values()), rtol=1e-5)


def test_wine_white(shared):
    t = data.wine_quality("white", path=shared)
    assert t.x.shape == (4898, 11)
    assert abs(float(t.y.astype(np.float64).mean()) - 5.877909) < 1e-5
    assert abs(float(t.x[:, 10].astype(np.float64).mean()) - 10.514267) < 1e-5


def test_digits(shared):
    x, y = data.digits(shared)
    assert x.shape == (1797, 64) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int32
    assert set(np.unique(y)) == set(range(10)) and x.min() == 0 and x.max() == 16


def test_real_data_via_environment(shared, monkeypatch):
    monkeypatch.setenv("JAXMLP_DATA", str(shared))
    assert data.wine_quality("red").x.shape == (1599, 11)
    assert data.digits()[0].shape == (1797, 64)


def test_cache_folder_is_used(shared, tmp_path):
    data.cache_dir().mkdir(parents=True)
    shutil.copy(shared / "winequality-white.csv", data.cache_dir())
    assert data.wine_quality("white").x.shape == (4898, 11)


def test_not_found_messages(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        data.wine_quality("red", path=tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"winequality-red.csv not found.*archive.ics"):
        data.wine_quality("red", path=tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        data.wine_quality("red", download=False)
    monkeypatch.setenv("JAXMLP_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"scikit-learn.*JAXMLP_DATA") as e:
        data.digits()
    assert str(tmp_path) in str(e.value) and str(data.cache_dir()) in str(e.value)
    with pytest.raises(ValueError, match="color"):
        data.wine_quality("rose")


# --------------------------------------------------------------------------------------
# download (fake urlopen; never the network)
# --------------------------------------------------------------------------------------


def fake_urlopen(payload: bytes, seen: list):
    def urlopen(url, *args, timeout=None, **kwargs):
        seen.append((url, timeout))
        return io.BytesIO(payload)

    return urlopen


def test_download_and_checksum_ok(shared, monkeypatch):
    seen: list = []
    payload = (shared / "winequality-red.csv").read_bytes()
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen(payload, seen))
    t = data.wine_quality("red")
    assert t.x.shape == (1599, 11)
    assert seen == [(data.WINE_URLS["red"], data.DOWNLOAD_TIMEOUT)]
    cached = data.cache_dir() / "winequality-red.csv"
    assert cached.read_bytes() == payload
    assert sorted(p.name for p in data.cache_dir().iterdir()) == ["winequality-red.csv"]
    data.wine_quality("red")  # second call reads the cache
    assert len(seen) == 1


def test_download_corrupted_is_discarded(shared, monkeypatch):
    payload = bytearray((shared / "winequality-red.csv").read_bytes())
    payload[100] ^= 1
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen(bytes(payload), []))
    with pytest.raises(ValueError, match=r"SHA-256 mismatch.*expected 4a402cf0"):
        data.wine_quality("red")
    assert list(data.cache_dir().iterdir()) == []


def test_download_offline_message():
    with pytest.raises(FileNotFoundError) as e:
        data.wine_quality("white")
    msg = str(e.value)
    assert data.WINE_URLS["white"] in msg and "URLError" in msg
    assert str(data.cache_dir()) in msg and "JAXMLP_DATA" in msg and "path=" in msg
    assert list(data.cache_dir().iterdir()) == []


# --------------------------------------------------------------------------------------
# standardisation
# --------------------------------------------------------------------------------------


def test_standardize_fits_on_train_only():
    rng = np.random.default_rng(0)
    x_tr = rng.normal(3.0, 2.0, size=(200, 4)).astype(np.float32)
    x_tr[:, 2] = 7.0  # zero variance
    x_te = rng.normal(-1.0, 5.0, size=(50, 4)).astype(np.float32)
    x_te[:, 2] = 0.0
    z_tr, z_te, scaler = data.standardize(x_tr, x_te)
    assert z_tr.dtype == z_te.dtype == np.float32 and scaler.mean.shape == (4,)
    np.testing.assert_allclose(z_tr.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z_tr.std(axis=0)[[0, 1, 3]], 1.0, rtol=1e-5)
    assert scaler.std[2] == 1.0 and (z_tr[:, 2] == 0).all() and (z_te[:, 2] == -7.0).all()
    cols = [0, 1, 3]
    mu, sd = x_tr[:, cols].astype(np.float64).mean(0), x_tr[:, cols].astype(np.float64).std(0)
    np.testing.assert_allclose(z_te[:, cols], (x_te[:, cols] - mu) / sd, rtol=1e-5)
    np.testing.assert_allclose(scaler.inverse(z_te), x_te, rtol=1e-5, atol=1e-5)
    refit = data.fit_standardizer(x_tr)
    np.testing.assert_array_equal(refit.mean, scaler.mean)
    np.testing.assert_array_equal(refit.std, scaler.std)


def test_standardize_shapes_and_errors():
    z, scaler = data.standardize(np.arange(5))  # 1-D, integer input → float32
    assert z.dtype == np.float32 and scaler.mean.shape == ()
    np.testing.assert_allclose(z, (np.arange(5) - 2) / np.sqrt(2), rtol=1e-6)
    with pytest.raises(ValueError, match=r"standardize: others\[1\].*\(n, 3\).*\(4, 2\)"):
        data.standardize(np.ones((4, 3)), np.ones((4, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="fit_standardizer: x_train must be finite, got an array "
                                         "with NaN"):
        data.fit_standardizer(np.array([[1.0], [np.nan]]))
    with pytest.raises(ValueError, match=r"fit_standardizer: x_train must have at least 1 "
                                         r"row\(s\), got shape \(0, 3\)"):
        data.fit_standardizer(np.zeros((0, 3)))


# --------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------


def _check_partition(splits, x, n):
    ids = np.concatenate([xs[:, 0] for xs, _ in splits]).astype(int)
    assert sorted(ids.tolist()) == list(range(n))  # disjoint and covering


def test_split_sizes_disjoint_deterministic():
    n = 103
    x = np.stack([np.arange(n), np.arange(n) * 2], axis=1).astype(np.float32)
    y = np.arange(n) % 3
    splits = data.train_val_test_split(x, y, val=0.1, test=0.2, seed=1)
    (xtr, ytr), (xva, yva), (xte, yte) = splits
    assert (len(xtr), len(xva), len(xte)) == (72, 10, 21)
    _check_partition(splits, x, n)
    for xs, ys in splits:
        np.testing.assert_array_equal(ys, xs[:, 0].astype(int) % 3)  # rows stay paired
    again = data.train_val_test_split(x, y, val=0.1, test=0.2, seed=1)
    for (a, b), (c, d) in zip(splits, again):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    other = data.train_val_test_split(x, y, val=0.1, test=0.2, seed=2)
    assert not np.array_equal(other[2][0], xte)


def test_split_val_zero_gives_empty_arrays():
    x, y = np.zeros((10, 3, 2)), np.zeros((10, 1))
    (xtr, _), (xva, yva), (xte, _) = data.train_val_test_split(x, y, val=0, test=0.3)
    assert xva.shape == (0, 3, 2) and yva.shape == (0, 1)
    assert len(xtr) == 7 and len(xte) == 3


def test_stratified_wine_like_proportions():
    y = np.repeat([3, 4, 5, 6, 7, 8], [10, 53, 681, 638, 199, 18]).astype(np.float32)
    x = np.arange(len(y), dtype=np.float32)[:, None]
    splits = data.train_val_test_split(x, y, val=0.1, test=0.2, seed=0, stratify=True)
    _check_partition(splits, x, len(y))
    classes, totals = np.unique(y, return_counts=True)
    for (_, ys), f in zip(splits, (0.7, 0.1, 0.2)):
        counts = np.array([(ys == c).sum() for c in classes])
        assert np.all(np.abs(counts - totals * f) < 1)
        assert abs(len(ys) - len(y) * f) < 1


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=2, max_size=7),
    val=st.sampled_from([0.0, 0.1, 0.15, 0.25]),
    test=st.sampled_from([0.1, 0.2, 0.3, 0.5]),
    seed=st.integers(0, 2**16),
)
def test_stratified_within_one_per_class(sizes, val, test, seed):
    y = np.repeat(np.arange(len(sizes)), sizes)
    n = len(y)
    x = np.arange(n, dtype=np.float64)[:, None]
    try:
        splits = data.train_val_test_split(x, y, val=val, test=test, seed=seed, stratify=True)
    except ValueError as e:  # only for tiny n, where a split would be empty
        # sizes are within one of n·f, so a split can only be empty when n·f < 1
        smallest = min(f for f in (1 - val - test, val, test) if f > 0)
        assert "would be empty" in str(e) and n * smallest < 1
        return
    _check_partition(splits, x, n)
    for (_, ys), f in zip(splits, (1 - val - test, val, test)):
        counts = np.bincount(ys, minlength=len(sizes))
        assert np.all(np.abs(counts - np.array(sizes) * f) < 1 + 1e-9)
        assert abs(len(ys) - n * f) < 1 + 1e-9


def test_stratified_one_hot_labels():
    y = np.eye(3)[np.arange(30) % 3]
    splits = data.train_val_test_split(np.zeros((30, 1)), y, val=0.2, test=0.2, stratify=True)
    for ys, m in zip((s[1] for s in splits), (6, 2, 2)):
        np.testing.assert_array_equal(ys.sum(axis=0), [m, m, m])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(val=-0.1), "val"),
        (dict(test=0.0), "test"),
        (dict(val=0.5, test=0.5), "val \\+ test"),
        (dict(test=float("nan")), "test"),
        (dict(seed=-2), "seed"),
    ],
)
def test_split_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.train_val_test_split(np.zeros((10, 2)), np.zeros(10), **kwargs)


def test_split_length_mismatch_and_tiny():
    with pytest.raises(ValueError, match="same number of examples, got 10 and 9"):
        data.train_val_test_split(np.zeros((10, 2)), np.zeros(9))
    with pytest.raises(ValueError, match="would be empty"):
        data.train_val_test_split(np.zeros((2, 2)), np.zeros(2), val=0.1, test=0.2)


# --------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------


def test_one_hot():
    out = data.one_hot(np.array([0, 2, 1, 2]))
    np.testing.assert_array_equal(out, np.eye(3, dtype=np.float32)[[0, 2, 1, 2]])
    assert out.dtype == np.float32
    assert data.one_hot([1.0, 0.0], num_classes=4, dtype=np.float64).shape == (2, 4)
    assert data.one_hot(np.zeros((2, 3), int), 2).shape == (2, 3, 2)
    assert data.one_hot(np.zeros(0, int), 5).shape == (0, 5)


@pytest.mark.parametrize(
    "labels, k, error, match",
    [
        ([0, -1], None, ValueError, "one_hot: labels must be >= 0"),
        ([0, 3], 3, ValueError, "one_hot: labels must be < num_classes=3"),
        ([0.5, 1.0], None, ValueError, "one_hot: labels must be whole numbers"),
        ([0.0, np.nan], None, ValueError, "one_hot: labels must be whole numbers"),
        ([True, False], None, TypeError, "one_hot: labels must be integers, got booleans"),
        (["a"], None, TypeError, "one_hot: labels must be integers"),
        ([0, 1], 0, ValueError, "one_hot: num_classes"),
        (np.zeros(0, int), None, ValueError, "one_hot: num_classes"),
    ],
)
def test_one_hot_errors(labels, k, error, match):
    with pytest.raises(error, match=match):
        data.one_hot(np.asarray(labels), k)


def test_labels_to_int():
    out = data.labels_to_int(np.array([3.0, 5.0, -1.0]))
    assert out.dtype == np.int32 and out.tolist() == [3, 5, -1]
    with pytest.raises(ValueError, match="whole"):
        data.labels_to_int([1.5])


def test_a_value_beyond_float32_is_refused_with_its_line_and_column(tmp_path):
    """A cast to float32 would make 5e39 Inf with only a warning (and 3.4028236e38, just
    past the largest float32 once rounded, too); float64 reads both."""
    path = tmp_path / "o.csv"
    path.write_text("a,b,c\n1,2,3\n\n4,3.4028236e38,6\n")
    with pytest.raises(ValueError, match=r"line 4, column 2 \('b'\): 3.4028236e\+38 does not fit "
                                         r"in float32"):
        data.load_csv(path)
    assert data.load_csv(path, dtype=np.float64).x[1, 1] == 3.4028236e38
    path.write_text("a,b,c\n1,2,3\n4,3.4028234e38,6\n")  # rounds to float32's largest
    assert data.load_csv(path).x[1, 1] == np.finfo(np.float32).max
