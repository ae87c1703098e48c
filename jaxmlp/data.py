r"""Data: synthetic sets, CSV loading, Wine Quality and digits, standardisation, splits, one-hot.

Everything here is NumPy in, NumPy out (no JAX), deterministic given its ``seed``, and
float32 by default (every loader takes ``dtype``).  Integer class labels are ``int32``.

Synthetic sets (``seed`` → ``numpy.random.default_rng(seed)``, rows shuffled)::

    spirals  k interleaved spiral arms: r ∈ [0, 1], θ = 2πj/k + 2πr,  x = r(cos θ, sin θ) + ε
    moons    two interleaving half circles (as in scikit-learn's make_moons)  + ε
    xor      x uniform in one of the four unit quadrants, y = [x₀x₁ < 0]     + ε
    sine     x ~ U(−π, π),  y = sin x + ε                                    (regression)

with ε ~ N(0, noise²) on every coordinate (on y for ``sine``).  Classes get ⌊n/k⌋ or
⌈n/k⌉ examples each, so the sets are balanced to within one example.

Standardisation, fitted on the training split only (N rows, column j)::

    μⱼ = (1/N) Σᵢ xᵢⱼ,    σⱼ = √((1/N) Σᵢ (xᵢⱼ − μⱼ)²)   (biased),   σⱼ := 1 where σⱼ = 0
    x̃ = (x − μ) / σ,      x = x̃ σ + μ                    (``apply`` / ``inverse``)

Splits.  With fractions f = (f_train, f_val, f_test), f_train = 1 − val − test, a plain
split shuffles the rows and cuts ⌊n·f_test + ½⌋ test rows, ⌊n·f_val + ½⌋ validation rows
and leaves the rest for training.  A stratified split allocates every class c (n_c rows)
separately: the table q_cs = n_c·f_s is rounded to integers n_cs such that

    n_cs ∈ {⌊q_cs⌋, ⌈q_cs⌉},    Σ_s n_cs = n_c,    Σ_c n_cs ∈ {⌊n·f_s⌋, ⌈n·f_s⌉}

(a *controlled rounding*, computed exactly with rational arithmetic by a small max-flow:
each class hands out its leftover examples, one per split whose quota is fractional, and
each split accepts up to its rounded size).  So every split holds each class within one
example of its exact proportional share, and split sizes are within one of n·f_s.

Files.  :func:`load_csv` reads any delimited table (``,`` ``;`` or tab, detected), plain or
gzip-compressed.  :func:`wine_quality` and :func:`digits` look for their file in ``path``,
then in the folder ``$JAXMLP_DATA``, then in the cache folder ``$JAXMLP_CACHE`` (default
``~/.cache/jaxmlp``); Wine Quality is downloaded from UCI into the cache when absent (and
its SHA-256 checked), digits never is.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import http.client
import io
import math
import numbers
import os
import tempfile
import urllib.error
import urllib.request
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "Table",
    "Standardizer",
    "spirals",
    "moons",
    "xor",
    "sine",
    "load_csv",
    "wine_quality",
    "digits",
    "fit_standardizer",
    "standardize",
    "train_val_test_split",
    "one_hot",
    "labels_to_int",
    "encode_labels",
    "cache_dir",
    "WINE_URLS",
    "WINE_SHA256",
    "DIGITS_SHA256",
    "DIGITS_URL",
    "DOWNLOAD_TIMEOUT",
]

_UCI = "https://archive.ics.uci.edu/ml/machine-learning-databases/wine-quality"
WINE_URLS = {
    "red": f"{_UCI}/winequality-red.csv",
    "white": f"{_UCI}/winequality-white.csv",
}
WINE_SHA256 = {
    "red": "4a402cf041b025d4566d954c3b9ba8635a3a8a01e039005d97d6a710278cf05e",
    "white": "76c3f809815c17c07212622f776311faeb31e87610d52c26d87d6e361b169836",
}
DIGITS_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
DIGITS_URL = (
    "https://github.com/scikit-learn/scikit-learn/raw/main/sklearn/datasets/data/digits.csv.gz"
)
DOWNLOAD_TIMEOUT = 30.0
"""Seconds urllib waits on the network before a download counts as failed."""

_LABEL_DTYPE = np.int32


class Table(NamedTuple):
    """A loaded table: features, target and their column names.

    Attributes:
        x: (n, d) features, in the requested float dtype.
        y: (n,) target column, same dtype as ``x`` (see :func:`labels_to_int`).
        feature_names: d column names (``"col0"``, ``"col1"``, … for a file without header,
            numbered by position in the file).
        target_name: name of the target column.
    """

    x: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    target_name: str


# --------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def _nonneg_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number >= 0, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _seed(value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"seed must be an int >= 0, got {value!r}")
    return int(value)


def _float_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be a floating dtype, got {dtype!r}") from None
    if dt.kind != "f":
        raise ValueError(f"dtype must be a floating dtype such as np.float32, got {dt}")
    return dt


def _class_sizes(n: int, k: int) -> np.ndarray:
    """(k,) sizes ⌊n/k⌋ or ⌈n/k⌉ summing to n, the larger ones first."""
    return np.full(k, n // k) + (np.arange(k) < n % k)


# --------------------------------------------------------------------------------------
# synthetic sets
# --------------------------------------------------------------------------------------


def spirals(n=300, classes=3, noise=0.05, seed=0, *, dtype=np.float32):
    """k interleaved spiral arms in the plane, one per class.

    Arm j has points r(cos θ, sin θ) with r evenly spaced in [0, 1] and θ = 2πj/k + 2πr
    (one full turn), plus N(0, noise²) on each coordinate.

    Args:
        n: total number of examples (≥ 1), split as evenly as possible over the classes.
        classes: number of arms k (≥ 2).
        noise: standard deviation of the Gaussian noise on each coordinate (≥ 0).
        seed: seed of ``numpy.random.default_rng``.
        dtype: float dtype of ``x``.

    Returns:
        ``(x, y)``: x (n, 2) float, y (n,) int32 labels in [0, classes), rows shuffled.
    """
    n = _positive_int(n, "n")
    k = _positive_int(classes, "classes")
    if k < 2:
        raise ValueError(f"classes must be >= 2, got {classes!r}")
    noise = _nonneg_float(noise, "noise")
    dt = _float_dtype(dtype)
    rng = np.random.default_rng(_seed(seed))
    sizes = _class_sizes(n, k)
    r = np.concatenate([np.linspace(0.0, 1.0, m) for m in sizes])
    y = np.repeat(np.arange(k), sizes)
    theta = 2.0 * np.pi * y / k + 2.0 * np.pi * r
    x = r[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    x = x + noise * rng.standard_normal(x.shape)
    order = rng.permutation(n)
    return x[order].astype(dt), y[order].astype(_LABEL_DTYPE)


def moons(n=200, noise=0.1, seed=0, *, dtype=np.float32):
    """Two interleaving half circles (scikit-learn's ``make_moons`` geometry).

    Class 0: (cos t, sin t); class 1: (1 − cos t, ½ − sin t); t evenly spaced in [0, π];
    plus N(0, noise²) on each coordinate.

    Args:
        n: total number of examples (≥ 1); class 0 gets ⌈n/2⌉, class 1 ⌊n/2⌋.
        noise: standard deviation of the Gaussian noise on each coordinate (≥ 0).
        seed: seed of ``numpy.random.default_rng``.
        dtype: float dtype of ``x``.

    Returns:
        ``(x, y)``: x (n, 2) float, y (n,) int32 labels in {0, 1}, rows shuffled.
    """
    n = _positive_int(n, "n")
    noise = _nonneg_float(noise, "noise")
    dt = _float_dtype(dtype)
    rng = np.random.default_rng(_seed(seed))
    n0, n1 = _class_sizes(n, 2)
    t0, t1 = np.linspace(0.0, np.pi, n0), np.linspace(0.0, np.pi, n1)
    x = np.concatenate(
        [
            np.stack([np.cos(t0), np.sin(t0)], axis=1),
            np.stack([1.0 - np.cos(t1), 0.5 - np.sin(t1)], axis=1),
        ]
    )
    y = np.repeat(np.arange(2), [n0, n1])
    x = x + noise * rng.standard_normal(x.shape)
    order = rng.permutation(n)
    return x[order].astype(dt), y[order].astype(_LABEL_DTYPE)


def xor(n=200, noise=0.1, seed=0, *, dtype=np.float32):
    """The XOR problem: points in the four unit quadrants, label 1 where the signs differ.

    Example i lies in quadrant i mod 4 with coordinates of magnitude U(0, 1), so the
    quadrants (and hence the two classes) are balanced; y = [x₀x₁ < 0] is taken before the
    N(0, noise²) noise is added to each coordinate.

    Args:
        n: total number of examples (≥ 1).
        noise: standard deviation of the Gaussian noise on each coordinate (≥ 0).
        seed: seed of ``numpy.random.default_rng``.
        dtype: float dtype of ``x``.

    Returns:
        ``(x, y)``: x (n, 2) float in about [−1, 1]², y (n,) int32 labels in {0, 1},
        rows shuffled.
    """
    n = _positive_int(n, "n")
    noise = _nonneg_float(noise, "noise")
    dt = _float_dtype(dtype)
    rng = np.random.default_rng(_seed(seed))
    quadrant = np.arange(n) % 4
    signs = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0], [-1.0, 1.0]])[quadrant]
    x = signs * rng.uniform(0.0, 1.0, size=(n, 2))
    y = (signs[:, 0] != signs[:, 1]).astype(_LABEL_DTYPE)
    x = x + noise * rng.standard_normal(x.shape)
    order = rng.permutation(n)
    return x[order].astype(dt), y[order]


def sine(n=200, noise=0.1, seed=0, *, dtype=np.float32):
    """1-D regression: y = sin x + ε with x ~ U(−π, π) and ε ~ N(0, noise²).

    Args:
        n: number of examples (≥ 1).
        noise: standard deviation of the Gaussian noise on y (≥ 0).
        seed: seed of ``numpy.random.default_rng``.
        dtype: float dtype of ``x`` and ``y``.

    Returns:
        ``(x, y)``: x (n, 1) and y (n, 1), both float.
    """
    n = _positive_int(n, "n")
    noise = _nonneg_float(noise, "noise")
    dt = _float_dtype(dtype)
    rng = np.random.default_rng(_seed(seed))
    x = rng.uniform(-np.pi, np.pi, size=(n, 1))
    y = np.sin(x) + noise * rng.standard_normal((n, 1))
    return x.astype(dt), y.astype(dt)


# --------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------

_DELIMITERS = ("\t", ";", ",")  # in order of preference when several fit
_SNIFF_LINES = 50


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {str(path)!r}") from None
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: not a valid gzip file ({e})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e}); is it a CSV file?") from None


def _is_blank(row: list[str]) -> bool:
    return all(not cell.strip() for cell in row)


def _sniff_delimiter(text: str) -> str:
    """The first of tab, ';', ',' that splits the first lines into one same number (> 1)
    of fields; failing that, the one most frequent in the first line; failing that, ','."""
    sample = "\n".join(text.splitlines()[:_SNIFF_LINES])
    for d in _DELIMITERS:
        rows = csv.reader(io.StringIO(sample, newline=""), delimiter=d, skipinitialspace=True)
        widths = {len(r) for r in rows if not _is_blank(r)}
        if len(widths) == 1 and widths.pop() > 1:
            return d
    first = next((line for line in text.splitlines() if line.strip()), "")
    counts = [first.count(d) for d in _DELIMITERS]
    return _DELIMITERS[int(np.argmax(counts))] if max(counts) > 0 else ","


def load_csv(path, target=-1, *, delimiter=None, header="auto", dtype=np.float32) -> Table:
    """Reads a numeric delimited table (plain or gzip) into features and a target column.

    Args:
        path: file to read; gzip is recognised by a ``.gz`` suffix or by its magic bytes.
        target: the target column, by name (str, needs a header) or by position (int,
            negative counts from the end).  Every other column is a feature.
        delimiter: field separator; None detects tab, ``;`` or ``,`` from the first lines.
        header: True (first row holds the names), False (no names: columns are called
            ``col0``, ``col1``, …) or ``"auto"``: a header when any cell of the first row
            is not a number.  Names may be double-quoted; surrounding spaces are dropped.
        dtype: float dtype of ``x`` and ``y``.

    Cells are parsed with Python's ``float`` (so ``1e-3``, ``nan`` and ``inf`` are read);
    blank lines are skipped; missing values are not supported.

    Returns:
        :class:`Table` ``(x, y, feature_names, target_name)`` with x (n, d) and y (n,).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: empty file or no data rows; a row whose number of fields differs from
            the first row's (line number and both counts); a cell that is not a number
            (line, column, cell); an unknown target name (the available names); a target
            index out of range; bad ``delimiter``/``header``/``dtype``.
    """
    dt = _float_dtype(dtype)
    if header not in (True, False, "auto"):
        raise ValueError(f"header must be True, False or 'auto', got {header!r}")
    if delimiter is not None and not (isinstance(delimiter, str) and len(delimiter) == 1):
        raise ValueError(f"delimiter must be one character or None, got {delimiter!r}")
    if isinstance(target, bool) or not isinstance(target, (str, numbers.Integral)):
        raise ValueError(f"target must be a column name (str) or index (int), got {target!r}")
    path = Path(os.fspath(path))
    text = _read_text(path)
    delim = _sniff_delimiter(text) if delimiter is None else delimiter

    rows, lines = [], []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim, skipinitialspace=True)
    try:
        for row in reader:
            if not _is_blank(row):
                rows.append([cell.strip() for cell in row])
                lines.append(reader.line_num)
    except csv.Error as e:
        raise ValueError(f"{path}: line {reader.line_num}: {e}") from None
    if not rows:
        raise ValueError(f"{path}: the file is empty")

    width = len(rows[0])
    for row, line in zip(rows, lines):
        if len(row) != width:
            raise ValueError(
                f"{path}: line {line} has {len(row)} fields, expected {width} "
                f"(as on line {lines[0]}; delimiter {delim!r})"
            )

    has_header = header
    if header == "auto":
        has_header = not all(_is_number(cell) for cell in rows[0])
    if has_header:
        names, rows, lines = tuple(rows[0]), rows[1:], lines[1:]
    else:
        names = tuple(f"col{j}" for j in range(width))
    if not rows:
        raise ValueError(f"{path}: the file has a header line but no data rows")

    if isinstance(target, str):
        if not has_header:
            raise ValueError(
                f"target={target!r} is a column name but {path} has no header; "
                f"pass the column index instead (an int in [-{width}, {width}))"
            )
        hits = [j for j, name in enumerate(names) if name == target]
        if not hits:
            raise ValueError(
                f"{path}: no column named {target!r}; available: {', '.join(map(repr, names))}"
            )
        if len(hits) > 1:
            raise ValueError(f"{path}: several columns are named {target!r} (at {hits})")
        t = hits[0]
    else:
        if not -width <= target < width:
            raise ValueError(
                f"target index {target} is out of range for {path}, which has {width} "
                f"columns (valid: -{width} .. {width - 1})"
            )
        t = int(target) % width

    try:
        values = np.array([[float(cell) for cell in row] for row in rows], dtype=np.float64)
    except ValueError:
        for row, line in zip(rows, lines):
            for j, cell in enumerate(row):
                if not _is_number(cell):
                    what = "an empty cell" if cell == "" else repr(cell)
                    raise ValueError(
                        f"{path}: line {line}, column {j + 1} ({names[j]!r}): "
                        f"{what} is not a number"
                    ) from None
        raise  # pragma: no cover - float() failed on some cell, so the loop raised
    values = values.reshape(len(rows), width)
    features = [j for j in range(width) if j != t]
    return Table(
        x=values[:, features].astype(dt),
        y=values[:, t].astype(dt),
        feature_names=tuple(names[j] for j in features),
        target_name=names[t],
    )


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------
# real data sets: lookup, cache, download
# --------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """The download cache folder: ``$JAXMLP_CACHE``, else ``~/.cache/jaxmlp``."""
    env = os.environ.get("JAXMLP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "jaxmlp"


def _find(filenames: tuple[str, ...], path) -> tuple[Path | None, list[Path]]:
    """The first existing candidate, and every folder/file looked at.

    An explicit ``path`` (a file, or a folder holding one of ``filenames``) is the only
    place looked at; otherwise ``$JAXMLP_DATA`` and then :func:`cache_dir`.
    """
    if path is not None:
        p = Path(os.fspath(path)).expanduser()
        if p.is_file():
            return p, [p]
        if not p.is_dir():
            raise FileNotFoundError(f"no such file or folder: {str(p)!r}")
        folders = [p]
    else:
        env = os.environ.get("JAXMLP_DATA")
        folders = ([Path(env).expanduser()] if env else []) + [cache_dir()]
    for folder in folders:
        for name in filenames:
            if (folder / name).is_file():
                return folder / name, folders
    return None, folders


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, dest: Path, sha256: str, what: str) -> Path:
    """Fetches ``url`` into ``dest`` atomically (temp file + ``os.replace``) after checking
    its SHA-256; a failed or corrupt download leaves nothing behind."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(
                url, timeout=DOWNLOAD_TIMEOUT
            ) as response:
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    h.update(chunk)
                    out.write(chunk)
        except (OSError, http.client.HTTPException) as e:
            raise FileNotFoundError(
                f"{what} is not available locally and could not be downloaded from {url} "
                f"({type(e).__name__}: {e}).\nTo use it offline, download that file yourself "
                f"and put it in {dest.parent} (the cache, set by $JAXMLP_CACHE), or in a "
                f"folder named by $JAXMLP_DATA, or pass path= (the file or its folder)."
            ) from e
        digest = h.hexdigest()
        if digest != sha256:
            raise ValueError(
                f"SHA-256 mismatch for {url}: expected {sha256}, got {digest}; the download "
                f"was discarded.  Try again, or fetch the file yourself and pass path=."
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def wine_quality(color="red", path=None, *, dtype=np.float32, download=True) -> Table:
    """UCI Wine Quality (Cortez et al., 2009; CC BY 4.0): 11 lab measurements → quality.

    The file ``winequality-{color}.csv`` is looked for in ``path`` (the file itself or its
    folder), else in ``$JAXMLP_DATA``, else in :func:`cache_dir`; when it is nowhere and
    ``download`` is true it is fetched from :data:`WINE_URLS` into the cache, and its
    SHA-256 must equal :data:`WINE_SHA256` (a mismatch deletes it and raises ValueError).
    Local files are read as they are.

    Args:
        color: ``"red"`` (1599 rows) or ``"white"`` (4898 rows).
        path: a file, or a folder holding ``winequality-{color}.csv`` (or ``.csv.gz``).
        dtype: float dtype of ``x`` and ``y``.
        download: allow the download when the file is not found locally.

    Returns:
        :class:`Table`: x (n, 11), y (n,) the quality score 3..9 as floats (see
        :func:`labels_to_int` / :func:`encode_labels` to treat it as classes), the 11
        feature names and ``"quality"``.

    Raises:
        FileNotFoundError: not found locally and the download failed (offline) or was not
            allowed; the message says where to put the file.
    """
    if color not in WINE_URLS:
        raise ValueError(f"color must be 'red' or 'white', got {color!r}")
    name = f"winequality-{color}.csv"
    found, looked = _find((name, name + ".gz"), path)
    if found is None:
        if path is not None or not download:
            raise FileNotFoundError(
                f"{name} not found in {', '.join(map(str, looked))}. Download it from "
                f"{WINE_URLS[color]} and put it there (or in $JAXMLP_DATA)."
            )
        found = _download(
            WINE_URLS[color], cache_dir() / name, WINE_SHA256[color], f"Wine Quality ({color})"
        )
    return load_csv(found, target="quality", dtype=dtype)


def digits(path=None, *, dtype=np.float32):
    """Optical handwritten digits (UCI test split, as shipped by scikit-learn): 8×8 → 0..9.

    Reads ``digits.csv.gz`` (comma-separated, gzip, no header, 64 pixel intensities 0..16
    then the label) from ``path`` (the file or its folder), else ``$JAXMLP_DATA``, else
    :func:`cache_dir`.  It is never downloaded: it ships inside scikit-learn
    (``sklearn/datasets/data/digits.csv.gz``, see :data:`DIGITS_URL`;
    SHA-256 :data:`DIGITS_SHA256`).

    Args:
        path: the file, or a folder holding ``digits.csv.gz`` (or ``digits.csv``).
        dtype: float dtype of ``x``.

    Returns:
        ``(x, y)``: x (1797, 64) float pixel intensities, y (1797,) int32 labels 0..9.
    """
    found, looked = _find(("digits.csv.gz", "digits.csv"), path)
    if found is None:
        raise FileNotFoundError(
            f"digits.csv.gz not found in {', '.join(map(str, looked))}. It ships with "
            f"scikit-learn (sklearn/datasets/data/digits.csv.gz in its package or its "
            f"repository, {DIGITS_URL}); copy it into one of those folders, set "
            f"JAXMLP_DATA to its folder, or pass path=."
        )
    table = load_csv(found, target=-1, header=False, dtype=np.float64)
    return table.x.astype(_float_dtype(dtype)), labels_to_int(table.y)


# --------------------------------------------------------------------------------------
# standardisation
# --------------------------------------------------------------------------------------


class Standardizer(NamedTuple):
    """Per-column affine map x̃ = (x − mean) / std, fitted by :func:`fit_standardizer`.

    Attributes:
        mean: (*features) column means μ of the training data.
        std: (*features) biased column standard deviations σ, with 0 replaced by 1.
    """

    mean: np.ndarray
    std: np.ndarray

    def _check(self, x, name: str) -> np.ndarray:
        x = np.asarray(x)
        if x.shape[1:] != self.mean.shape:
            raise ValueError(
                f"{name} must have shape (n, {', '.join(map(str, self.mean.shape))}) like "
                f"the training data, got {x.shape}"
            )
        return x

    def _out_dtype(self, x) -> np.dtype:
        return x.dtype if x.dtype.kind == "f" else self.mean.dtype

    def apply(self, x, *, name: str = "x") -> np.ndarray:
        """(n, *features) → (n, *features): (x − mean) / std, in x's float dtype."""
        x = self._check(x, name)
        return ((x - self.mean) / self.std).astype(self._out_dtype(x), copy=False)

    def inverse(self, x) -> np.ndarray:
        """(n, *features) → (n, *features): x · std + mean, undoing :meth:`apply`."""
        x = self._check(x, "x")
        return (x * self.std + self.mean).astype(self._out_dtype(x), copy=False)


def fit_standardizer(x_train) -> Standardizer:
    """Column means and (biased) standard deviations of the training data.

    Args:
        x_train: (n, *features) with n ≥ 1, finite.  A 1-D array is one feature column
            per example (features = ()).

    Returns:
        :class:`Standardizer` with mean and std of shape (*features), in x_train's float
        dtype (float32 for integer input); columns with σ = 0 get std 1, so they map to 0.
    """
    x = np.asarray(x_train)
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x_train must have shape (n, ...) with n >= 1, got {x.shape}")
    if x.dtype.kind not in "biuf":
        raise ValueError(f"x_train must be numeric, got dtype {x.dtype}")
    x64 = x.astype(np.float64)
    if not np.isfinite(x64).all():
        raise ValueError("x_train contains NaN or Inf values")
    mean = x64.mean(axis=0)
    std = x64.std(axis=0)
    std = np.where(std == 0.0, 1.0, std)
    dt = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
    return Standardizer(mean=mean.astype(dt), std=std.astype(dt))


def standardize(x_train, *others):
    """Fits a :class:`Standardizer` on ``x_train`` only and applies it to every array.

    ``x_tr, x_va, x_te, scaler = standardize(x_tr, x_va, x_te)``

    Args:
        x_train: (n, *features) training data (the only data the statistics come from).
        *others: (m, *features) arrays (validation, test), transformed with x_train's μ, σ.

    Returns:
        ``(x_traiñ, *others̃, scaler)``: the transformed arrays in the order given, then the
        fitted scaler (``scaler.inverse`` maps back, e.g. for standardised targets).
    """
    scaler = fit_standardizer(x_train)
    transformed = [scaler.apply(o, name=f"others[{i}]") for i, o in enumerate(others)]
    return (scaler.apply(x_train, name="x_train"), *transformed, scaler)


# --------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------


def _fraction(value, name: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a fraction in [0, 1), got {value!r}")
    # repr gives the shortest decimal of the float, so 0.3 is 3/10, not 0.299999…
    return Fraction(repr(float(value)))


def _round_half_up(q: Fraction) -> int:
    return math.floor(q + Fraction(1, 2))


def _controlled_rounding(quota: list[list[Fraction]]) -> list[list[int]]:
    """Rounds a K × S table whose row sums are integers to n_cs ∈ {⌊q_cs⌋, ⌈q_cs⌉} with the
    same row sums and column sums in {⌊Σ_c q_cs⌋, ⌈Σ_c q_cs⌉}.

    Flow network: class c supplies r_c = Σ_s (q_cs − ⌊q_cs⌋) extra units, one at most per
    split with a fractional quota, and split s accepts them up to a capacity.  The
    fractional parts themselves are a feasible fractional flow, so an integral one exists.
    Augmenting paths are found first with capacities ⌊·⌋ of the split totals, then ⌈·⌉:
    augmenting never lowers a split's intake, so every split ends within [⌊·⌋, ⌈·⌉].
    """
    k, s_count = len(quota), len(quota[0])
    counts = [[math.floor(q) for q in row] for row in quota]
    frac = [[quota[c][s] != counts[c][s] for s in range(s_count)] for c in range(k)]
    supply = [int(sum(quota[c]) - sum(counts[c])) for c in range(k)]
    col_extra = [sum(quota[c][s] - counts[c][s] for c in range(k)) for s in range(s_count)]
    extra = [[0] * s_count for _ in range(k)]  # 1 where class c gives its ⌈q⌉ to split s
    intake = [0] * s_count
    for caps in ([math.floor(e) for e in col_extra], [math.ceil(e) for e in col_extra]):
        while True:
            # BFS over the residual graph: class → split along unused fractional edges,
            # split → class along used ones (undoing them), ending at a split with room.
            parent: dict = {("c", c): None for c in range(k) if supply[c] > 0}
            queue, end = list(parent), None
            while queue and end is None:
                node = queue.pop(0)
                kind, i = node
                if kind == "c":
                    for s in range(s_count):
                        if frac[i][s] and not extra[i][s] and ("s", s) not in parent:
                            parent[("s", s)] = node
                            if intake[s] < caps[s]:
                                end = ("s", s)
                                break
                            queue.append(("s", s))
                else:
                    for c in range(k):
                        if extra[c][i] and ("c", c) not in parent:
                            parent[("c", c)] = node
                            queue.append(("c", c))
            if end is None:
                break
            intake[end[1]] += 1
            node = end
            while parent[node] is not None:
                prev = parent[node]
                if node[0] == "s":  # forward edge class prev → split node
                    extra[prev[1]][node[1]] = 1
                else:  # backward edge: split prev gives up class node's extra unit
                    extra[node[1]][prev[1]] = 0
                node = prev
            supply[node[1]] -= 1
    if any(supply):  # pragma: no cover - impossible by the argument above
        raise RuntimeError("stratified allocation failed; please report this as a bug")
    return [[counts[c][s] + extra[c][s] for s in range(s_count)] for c in range(k)]


def train_val_test_split(x, y, *, val=0.1, test=0.2, seed=0, stratify=False):
    """Shuffles the examples and cuts them into training, validation and test splits.

    Plain split: ⌊n·test + ½⌋ test and ⌊n·val + ½⌋ validation examples, the rest for
    training.  ``stratify=True`` allocates each class (each distinct row of y) on its own
    so that every split holds n_c·f ± 1 of class c's n_c examples (module docstring).

    Args:
        x: (n, *features) examples.
        y: (n, *targets) targets; for stratification, class labels (n,) or one-hot (n, K).
        val: validation fraction, ≥ 0 (0 gives empty validation arrays).
        test: test fraction, > 0, with val + test < 1.
        seed: seed of ``numpy.random.default_rng`` for the shuffle.
        stratify: keep the class proportions of y in every split.

    Returns:
        ``((x_tr, y_tr), (x_va, y_va), (x_te, y_te))``, each x (m, *features) and
        y (m, *targets), rows in shuffled order.

    Raises:
        ValueError: bad fractions, x and y of different lengths, or a split that would be
            empty (too few examples for the fractions asked for).
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 1 or y.ndim < 1:
        raise ValueError(f"x and y must have a leading batch axis, got {x.shape} and {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must have the same number of examples, got {x.shape[0]} and {y.shape[0]}"
        )
    f_val, f_test = _fraction(val, "val"), _fraction(test, "test")
    if f_val < 0:
        raise ValueError(f"val must be >= 0, got {val!r}")
    if f_test <= 0:
        raise ValueError(f"test must be > 0, got {test!r}")
    if f_val + f_test >= 1:
        raise ValueError(f"val + test must be < 1 to leave training data, got {val!r} + {test!r}")
    rng = np.random.default_rng(_seed(seed))
    n = x.shape[0]
    fractions = (1 - f_val - f_test, f_val, f_test)

    if stratify:
        if y.ndim > 2:
            raise ValueError(f"stratify needs labels (n,) or one-hot (n, K), got y {y.shape}")
        _, labels = np.unique(y.reshape(n, -1), axis=0, return_inverse=True)
        labels = labels.reshape(n)
        members = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)]
        quota = [[len(m) * f for f in fractions] for m in members]
        alloc = _controlled_rounding(quota)
        parts: list[list[np.ndarray]] = [[], [], []]
        for m, counts in zip(members, alloc):
            m = rng.permutation(m)
            cuts = np.cumsum(counts)[:-1]
            for s, idx in enumerate(np.split(m, cuts)):
                parts[s].append(idx)
        splits = [rng.permutation(np.concatenate(p)) for p in parts]
    else:
        n_test, n_val = _round_half_up(n * f_test), _round_half_up(n * f_val)
        order = rng.permutation(n)
        test_idx, val_idx = order[:n_test], order[n_test : n_test + n_val]
        splits = [order[n_test + n_val :], val_idx, test_idx]

    for name, idx, f in zip(("training", "validation", "test"), splits, fractions):
        if f > 0 and idx.size == 0:
            raise ValueError(
                f"the {name} split would be empty: n={n} examples are too few for "
                f"val={val!r}, test={test!r}"
            )
    return tuple((x[idx], y[idx]) for idx in splits)


# --------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------


def labels_to_int(y) -> np.ndarray:
    """Integer-valued labels (any int dtype, or floats such as 5.0) as int32.

    Args:
        y: (n, ...) labels whose values are whole numbers.

    Returns:
        int32 array of the same shape and values.  ValueError for non-whole values,
        NaN/Inf, or values outside the int32 range.
    """
    y = np.asarray(y)
    if y.dtype.kind in "iu":
        if y.size and (y.min() < np.iinfo(np.int32).min or y.max() > np.iinfo(np.int32).max):
            raise ValueError("labels do not fit in int32")
        return y.astype(_LABEL_DTYPE)
    if y.dtype.kind != "f":
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    bad = ~np.isfinite(y) | (y != np.round(y))
    if bad.any():
        i = np.flatnonzero(bad.ravel())[0]
        raise ValueError(
            f"labels must be whole numbers, got {y.ravel()[i]!r} at flat index {i}"
        )
    if y.size and (y.min() < np.iinfo(np.int32).min or y.max() > np.iinfo(np.int32).max):
        raise ValueError("labels do not fit in int32")
    return y.astype(_LABEL_DTYPE)


def encode_labels(y):
    """Maps arbitrary class values to 0 … K−1 (sorted order), e.g. wine quality 3..8 → 0..5.

    Args:
        y: (n,) class values (ints, whole floats or strings).

    Returns:
        ``(codes, classes)``: codes (n,) int32 in [0, K), classes (K,) the sorted distinct
        values, so ``classes[codes] == y``.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must have shape (n,), got {y.shape}")
    classes, codes = np.unique(y, return_inverse=True)
    return codes.reshape(-1).astype(_LABEL_DTYPE), classes


def one_hot(labels, num_classes=None, dtype=np.float32) -> np.ndarray:
    """One-hot encoding: out[..., k] = 1 where labels == k, else 0.

    Args:
        labels: (...) integer class labels in [0, num_classes) (whole floats accepted).
        num_classes: K; None infers max(labels) + 1.
        dtype: dtype of the result.

    Returns:
        (..., K) array of ``dtype``.

    Raises:
        ValueError: negative labels, labels ≥ num_classes, non-whole labels, a bad
            num_classes, or empty labels without num_classes.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind == "b":
        raise ValueError("labels must be integers, got booleans")
    try:
        ints = labels_to_int(labels)
    except ValueError as e:
        raise ValueError(f"one_hot: {e}") from None
    if ints.size and ints.min() < 0:
        raise ValueError(f"labels must be >= 0, got {int(ints.min())}")
    if num_classes is None:
        if ints.size == 0:
            raise ValueError("num_classes is needed for empty labels")
        k = int(ints.max()) + 1
    else:
        k = _positive_int(num_classes, "num_classes")
        if ints.size and ints.max() >= k:
            raise ValueError(f"labels must be < num_classes={k}, got {int(ints.max())}")
    return (ints[..., None] == np.arange(k)).astype(dtype)
