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
gzip-compressed, streaming: blocks of whole lines, plain decimals parsed by vectorised
integer arithmetic (exactly as ``float`` parses them), memory near the result's size, gzip
output bounded (``max_bytes``).  :func:`wine_quality` and :func:`digits` look for their
file in ``path``, then in the folder ``$JAXMLP_DATA``, then in the cache folder
``$JAXMLP_CACHE`` (default ``~/.cache/jaxmlp``); Wine Quality is downloaded from UCI into
the cache when absent (and its SHA-256 checked), digits never is.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import http.client
import io
import itertools
import math
import numbers
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxmlp import _validate as _v
from jaxmlp._validate import regular_file

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
    "GZIP_MAX_BYTES",
    "GZIP_MAX_RATIO",
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


def _float_dtype(dtype, where: str) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{where}: dtype must be a floating dtype such as np.float32, got "
                        f"{dtype!r}") from None
    if dt.kind != "f":
        raise ValueError(f"{where}: dtype must be a floating dtype such as np.float32, got "
                         f"{dt}")
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
    n = _v.positive_int(n, "n", where="spirals")
    k = _v.integer(classes, "classes", where="spirals", low=2)
    noise = _v.nonneg_real(noise, "noise", where="spirals")
    dt = _float_dtype(dtype, "spirals")
    rng = np.random.default_rng(_v.integer(seed, "seed", where="spirals", low=0))
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
    n = _v.positive_int(n, "n", where="moons")
    noise = _v.nonneg_real(noise, "noise", where="moons")
    dt = _float_dtype(dtype, "moons")
    rng = np.random.default_rng(_v.integer(seed, "seed", where="moons", low=0))
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
    n = _v.positive_int(n, "n", where="xor")
    noise = _v.nonneg_real(noise, "noise", where="xor")
    dt = _float_dtype(dtype, "xor")
    rng = np.random.default_rng(_v.integer(seed, "seed", where="xor", low=0))
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
    n = _v.positive_int(n, "n", where="sine")
    noise = _v.nonneg_real(noise, "noise", where="sine")
    dt = _float_dtype(dtype, "sine")
    rng = np.random.default_rng(_v.integer(seed, "seed", where="sine", low=0))
    x = rng.uniform(-np.pi, np.pi, size=(n, 1))
    y = np.sin(x) + noise * rng.standard_normal((n, 1))
    return x.astype(dt), y.astype(dt)


# --------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------

_DELIMITERS = ("\t", ";", ",")  # in order of preference when several fit
_SNIFF_LINES = 50
_BLOCK_BYTES = 1 << 19  # read and parsed at a time (extended to the end of its last line)

GZIP_MAX_BYTES = 4 << 30
"""The most bytes a gzip CSV may expand to under ``load_csv(max_bytes="auto")``."""
GZIP_MAX_RATIO = 500
"""Past 64 MiB, a gzip CSV may expand at most this many times its compressed size under
``max_bytes="auto"``.  Deflate's ceiling is about 1032×; gzip bombs (runs of one byte or
of ``0,``) reach 600–1000×; numeric tables compress 2–50× and even one-hot ones ~400×."""
_GZIP_FLOOR = 64 << 20


def _gzip_limit(max_bytes, compressed: int):
    if max_bytes is None:
        return None
    if max_bytes == "auto":
        return min(GZIP_MAX_BYTES, max(_GZIP_FLOOR, GZIP_MAX_RATIO * compressed))
    return max_bytes


class _Source:
    """A file's bytes as blocks of whole lines, each ending in ``\\n``.

    gzip (``.gz`` suffix or magic bytes) is decompressed as it is read, and its output is
    counted against ``limit``; ``\\r\\n`` and ``\\r`` line ends become ``\\n``; a leading
    UTF-8 byte-order mark is dropped.
    """

    def __init__(self, path: Path, max_bytes):
        try:  # a directory, FIFO or device is refused from its stat (opening a FIFO blocks)
            self._file = regular_file(path, str(path), ValueError)
        except FileNotFoundError:
            raise FileNotFoundError(f"no such file: {str(path)!r}") from None
        except OSError as e:
            raise ValueError(f"{path}: cannot read it ({e.strerror})") from None
        st = os.fstat(self._file.fileno())
        self.path = path
        self.gzip = path.suffix == ".gz" or self._file.read(2) == b"\x1f\x8b"
        self._file.seek(0)
        self._stream = gzip.GzipFile(fileobj=self._file, mode="rb") if self.gzip else self._file
        self.compressed = st.st_size
        self.limit = _gzip_limit(max_bytes, st.st_size) if self.gzip else None
        self.read_bytes = 0

    def expected_bytes(self) -> float:
        """The file's size, or for gzip an estimate from the ratio so far."""
        if not self.gzip:
            return self.compressed
        return self.compressed * self.read_bytes / max(1, self._file.tell())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stream.close()
        self._file.close()

    def _read(self, size: int) -> bytes:
        try:
            data = self._stream.read(size)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{self.path}: not a valid gzip file ({e})") from None
        self.read_bytes += len(data)
        if self.limit is not None and self.read_bytes > self.limit:
            raise ValueError(
                f"{self.path}: the gzip data expands past {self.limit:,} bytes "
                f"({self.compressed:,} bytes compressed), which looks like a gzip bomb; "
                f"pass load_csv(max_bytes=...) a larger limit, or None, to read it anyway"
            )
        return data

    def blocks(self, size: int | None = None):
        """Yields ``(block, line)``: about ``size`` bytes of whole lines, and the 1-based
        number of the block's first line."""
        size = size or _BLOCK_BYTES
        parts, held, line, first = [], b"", 1, True
        while True:
            data = self._read(size)
            if not data:
                break
            data = held + data
            if first:
                data, first = (data[3:] if data.startswith(b"\xef\xbb\xbf") else data), False
            held = b""
            if data.endswith(b"\r"):  # its "\n" may start the next read
                data, held = data[:-1], b"\r"
            if b"\r" in data:
                data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # a line longer than the block: keep reading
                parts.append(data)
                continue
            parts.append(data[:cut])
            block = b"".join(parts)
            parts = [data[cut:]] if cut < len(data) else []
            yield block, line
            line += block.count(b"\n")
        tail = b"".join(parts) + (b"\n" if held else b"")
        if tail:
            yield (tail if tail.endswith(b"\n") else tail + b"\n"), line


def _decode(block: bytes, path: Path, line: int) -> str:
    try:
        return block.decode("utf-8")
    except UnicodeDecodeError as e:
        at = line + block.count(b"\n", 0, e.start)
        column = e.start - (block.rfind(b"\n", 0, e.start) + 1) + 1
        raise ValueError(
            f"{path}: line {at}, character {column}: not UTF-8 text ({e.reason}); "
            f"is it a CSV file?"
        ) from None


def _is_blank(row: list[str]) -> bool:
    return all(not cell.strip() for cell in row)


def _sniff_delimiter(text: str) -> str:
    """The first of tab, ';', ',' that splits the first lines into one same number (> 1)
    of fields; failing that, the one most frequent in the first line; failing that, ','."""
    sample = "\n".join(text.splitlines()[:_SNIFF_LINES])
    for d in _DELIMITERS:
        rows = csv.reader(io.StringIO(sample, newline=""), delimiter=d, skipinitialspace=True)
        try:
            widths = {len(r) for r in rows if not _is_blank(r)}
        except csv.Error:  # e.g. a field past csv's size limit: d does not split this file
            continue
        if len(widths) == 1 and widths.pop() > 1:
            return d
    first = next((line for line in text.splitlines() if line.strip()), "")
    counts = [first.count(d) for d in _DELIMITERS]
    return _DELIMITERS[int(np.argmax(counts))] if max(counts) > 0 else ","


class _Layout(NamedTuple):
    """What every data row is checked against: the file, its delimiter and its columns."""

    path: Path
    delim: str
    names: tuple[str, ...]
    first_line: int  # the line whose width every row must have


def _ragged(layout: _Layout, line: int, fields: int) -> ValueError:
    width = len(layout.names)
    where = (f"column {fields + 1} ({layout.names[fields]!r}) is missing" if fields < width
             else f"column {width + 1} is one too many")
    return ValueError(
        f"{layout.path}: line {line} has {fields} fields, expected {width} "
        f"(as on line {layout.first_line}; delimiter {layout.delim!r}): {where}"
    )


def _parse_exact(text: str, line: int, layout: _Layout) -> np.ndarray:
    """Rows of ``text`` (first line number ``line``) → (r, width) float64 with Python's
    csv module and ``float``: the reference semantics, and the error for the first bad
    row or cell."""
    width = len(layout.names)
    rows = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=layout.delim,
                        skipinitialspace=True)
    try:
        for row in reader:
            if _is_blank(row):
                continue
            at = line + reader.line_num - 1
            if len(row) != width:
                raise _ragged(layout, at, len(row))
            values = []
            for j, cell in enumerate(row):
                cell = cell.strip()
                try:
                    values.append(float(cell))
                except ValueError:
                    what = "an empty cell" if cell == "" else repr(cell)
                    raise ValueError(
                        f"{layout.path}: line {at}, column {j + 1} ({layout.names[j]!r}): "
                        f"{what} is not a number"
                    ) from None
            rows.append(values)
    except csv.Error as e:
        raise ValueError(f"{layout.path}: line {line + reader.line_num - 1}: {e}") from None
    return np.array(rows, dtype=np.float64).reshape(len(rows), width)


def _parse_loadtxt(text: str, width: int, delim: str):
    """NumPy's C reader (quotes, spaces, nan/inf): (r, width) float64, or None when it
    refuses the text (then :func:`_parse_exact` finds the error).  It parses each cell
    with the same correctly rounded decimal → float64 conversion as ``float``."""
    if not text.strip():
        return np.empty((0, width))
    try:
        values = np.loadtxt(io.StringIO(text), delimiter=delim, comments=None, quotechar='"',
                            ndmin=2, dtype=np.float64)
    except ValueError:
        return None
    return values if values.shape[1] == width else None


# Word-parallel decimal parsing: 8 characters of a field per uint64 (little-endian, so the
# field's first character is the word's lowest byte), the classic SWAR tricks.
_U = np.uint64
_PAIR = _U(0x000000FF000000FF)
_MUL1 = _U(100 + (1000000 << 32))
_MUL2 = _U(1 + (10000 << 32))
_KEEP = np.array([(2**64 - 1) ^ (2 ** (8 * (8 - n)) - 1) for n in range(9)], _U)  # top n bytes
_HEAD = np.array([int(_KEEP[s]) & ~int(_KEEP[a]) & (2**64 - 1) for s in range(9) for a in range(9)],
                 _U)  # [9·s + a]: of the top s bytes, all but the top a
_LOW_NIBBLES = _U(0x0F0F0F0F0F0F0F0F)
_POW10 = 10.0 ** np.arange(40)  # exact up to 10^22, within an ulp beyond
_EXACT_INT = 2.0**53
_MAX_REDO = 1 / 16  # the share of cells the fast path may leave to float()
_BLANK_LINES = re.compile(rb"\n\n+")
_LITTLE = sys.byteorder == "little"


class _Scratch:
    """Byte-sized work arrays reused from block to block (fresh memory costs page faults)."""

    def __init__(self):
        self._arrays = {}

    def get(self, size: int, name: str, dtype) -> np.ndarray:
        a = self._arrays.get(name)
        if a is None or a.size < size:
            a = self._arrays[name] = np.empty(max(size, _BLOCK_BYTES + (1 << 16)), dtype)
        return a[:size]


def _eight_digits(w: np.ndarray) -> np.ndarray:
    """uint64 words of 8 digit values 0..9 (lowest byte most significant) → their value,
    computed in place in ``w``."""
    t = w >> _U(8)
    w *= _U(10)
    w += t
    np.right_shift(w, _U(16), out=t)
    t &= _PAIR
    t *= _MUL2
    w &= _PAIR
    w *= _MUL1
    w += t
    w >>= _U(32)
    return w


def _digits(words, end, count, n_words) -> np.ndarray:
    """float64 value of the digit strings of ``count`` ≤ 8·n_words characters ending at
    byte offsets ``end`` of ``words`` (exact below 2^53)."""
    value = np.zeros(end.size)
    for k in range(n_words):
        w = words[end - 8 * (k + 1)]
        w &= _KEEP[np.clip(count - 8 * k, 0, 8)]
        w &= _LOW_NIBBLES
        value += _eight_digits(w) * 1e8**k
    return value


def _split_mantissa(words, dot_pos, frac_end, int_len, frac_len):
    """(mantissa, fits, approx) of fields whose integer digits end at ``dot_pos`` and
    fraction digits at ``frac_end`` (offsets into the block): each part 8 digits per load,
    m = I·10^p + f₁…f_p; ``fits``: both parts at most 32 digits; ``approx``: m may be
    rounded (not an exact double, or p > 22)."""
    fits = (int_len <= 32) & (frac_len <= 32)
    n_int = min(4, (int(int_len.max()) + 7) // 8)
    n_frac = min(4, (int(frac_len.max()) + 7) // 8)
    mantissa = _digits(words, dot_pos + 32, int_len, n_int)
    fraction = _digits(words, frac_end + 32, frac_len, n_frac)
    approx = (mantissa >= _EXACT_INT) | (fraction >= _EXACT_INT) | (frac_len > 22)
    mantissa *= _POW10[np.minimum(frac_len, 39)]
    mantissa += fraction
    return mantissa, fits, approx


def _parse_plain(block: bytes, width: int, delim: bytes, float32: bool, scratch: _Scratch):
    r"""Rows of plain numbers (``[+-]digits[.digits][(e|E)[+-]digits]``, ``\n`` line
    ends, one ASCII delimiter) → (r, width) float64, or None when the block holds anything
    else or rows of another width (then :func:`_parse_block` takes a slower path).

    One vectorised scan finds every delimiter, '.' and 'e'; per field they give the
    integer digits (before the '.'), the fraction digits (after it) and the exponent
    digits.  Up to 8 digits are loaded as one uint64 (an unaligned little-endian load
    ending at the run's last digit), masked to their count and combined with three
    multiplies; a field of at most 8 digits and '.' takes a single load, the '.' squeezed
    out by a shift.  With integer part I, fraction digits f₁…f_p and exponent q:
    m = I·10^p + f₁…f_p and x = ±m · 10^(q − p).

    Exactness: when m < 2^53 and |q − p| ≤ 22, m and 10^|q − p| are exact doubles and one
    IEEE multiply or divide rounds correctly, so x is exactly ``float(cell)`` (Clinger's
    fast path).  Otherwise x is within a few units in the last place: for a float32 result
    it is kept when no float32 rounding boundary lies within 2^-46·|x| of it (then
    float32(x) = float32(float(cell))); every other cell is parsed by ``float`` itself.
    """
    block = block.lstrip(b"\n")
    if not block:
        return np.empty((0, width))
    b = np.frombuffer(block, np.uint8)
    sep = delim[0]
    has_e = b"e" in block or b"E" in block
    marks, flag, byte = (scratch.get(b.size, name, dtype)
                         for name, dtype in (("marks", bool), ("flag", bool), ("byte", np.uint8)))
    np.equal(b, 10, out=marks)
    for c in (sep, 46):
        marks |= np.equal(b, c, out=flag)
    if has_e:
        marks |= np.equal(np.bitwise_or(b, 0x20, out=byte), 101, out=flag)
    pos = np.flatnonzero(marks)  # every delimiter, '.' and 'e', in order
    kind = b[pos]
    newline = kind == 10
    k = np.flatnonzero(newline | (kind == sep))  # the field ends, as indices into pos
    rows = int(np.count_nonzero(newline))
    if k.size != rows * width or not newline[k[width - 1 :: width]].all():
        if b"\n\n" in block:  # blank lines: drop them and look again
            return _parse_plain(_BLANK_LINES.sub(b"\n", block), width, delim, float32, scratch)
        return None  # rows of another width: the exact reader names the line
    del newline
    n_digits = np.count_nonzero(np.less(np.subtract(b, 48, out=byte), 10, out=flag))
    n_signs = sum(np.count_nonzero(np.equal(b, c, out=flag)) for c in (45, 43))
    if n_digits + n_signs + pos.size != b.size:
        return None  # some other character
    n = k.size
    ends = pos[k]
    gaps = np.empty_like(k)  # how many '.' and 'e' each field holds
    gaps[0] = k[0]
    np.subtract(k[1:], k[:-1] + 1, out=gaps[1:])
    dot_at = k - 1
    if has_e:
        last = kind[dot_at]
        last |= 0x20
        e = np.flatnonzero((gaps > 0) & (last == 101))  # the fields with an exponent
        del last
        e_dot = gaps[e] == 2
        if (gaps > 2).any() or np.count_nonzero(gaps == 2) != np.count_nonzero(e_dot):
            return None  # '..', 'ee' or 'e.': not a number anywhere
        if (kind[k[e[e_dot]] - 2] != 46).any():
            return None
        e_pos = pos[k[e] - 1]
        frac_end = ends.copy()
        frac_end[e] = e_pos
        has_dot = gaps > 0
        has_dot[e] = e_dot
        dot_at[e] -= 1
    else:
        if (gaps > 1).any():
            return None
        frac_end, has_dot = ends, gaps == 1
    del gaps, kind, k
    dot_pos = pos[dot_at]
    np.copyto(dot_pos, frac_end, where=~has_dot)
    del pos, dot_at
    starts = np.empty_like(ends)
    starts[0] = 0
    np.add(ends[:-1], 1, out=starts[1:])
    first = b[starts]
    negative = first == 45
    signed = negative | (first == 43)
    del first
    if has_e:
        after_e = b[e_pos + 1]
        e_signed = (after_e == 45) | (after_e == 43)
        n_signs -= np.count_nonzero(e_signed)
    if n_signs != np.count_nonzero(signed):
        return None  # a sign inside a number
    int_len = dot_pos - starts
    int_len -= signed
    del signed, starts
    frac_len = frac_end - dot_pos
    frac_len -= has_dot
    ok = int_len + frac_len >= 1

    buf = scratch.get(32 + b.size + 8, "words", np.uint8)
    buf[:32] = 0
    buf[32 : 32 + b.size] = b
    buf[32 + b.size :] = 0
    words = np.ndarray((buf.size - 7,), _U, buffer=buf, strides=(1,))  # unaligned loads
    span = int_len + frac_len
    span += has_dot  # digits and '.'
    long = np.flatnonzero(span > 8)
    if long.size > n // 4:
        mantissa, fits, approx = _split_mantissa(words, dot_pos, frac_end, int_len, frac_len)
        ok &= fits
    else:  # up to 8 digits and '.': one load, the digits moved up over the '.'
        w = words[frac_end + 24]
        span *= 9
        span += frac_len
        span += has_dot  # now the _HEAD index
        head = _HEAD[np.minimum(span, 80, out=span)]
        head &= w
        head <<= has_dot.astype(_U) << _U(3)
        w &= _KEEP[np.minimum(frac_len, 8)]
        w |= head
        del head
        w &= _LOW_NIBBLES
        mantissa = _eight_digits(w).astype(np.float64)
        del w
        approx = np.zeros(n, bool)
        if long.size:
            mantissa[long], fits, approx[long] = _split_mantissa(
                words, dot_pos[long], frac_end[long], int_len[long], frac_len[long])
            ok[long] &= fits
    del span, long, int_len, dot_pos, frac_end, has_dot
    power = np.negative(frac_len, out=frac_len)
    if has_e:
        e_len = ends[e] - e_pos - 1 - e_signed
        ok[e] &= (e_len >= 1) & (e_len <= 8)
        q = _digits(words, ends[e] + 32, e_len, 1).astype(np.int64)
        power[e] += np.where(after_e == 45, -q, q)
    del words
    scale = _POW10[np.minimum(np.abs(power), 22)]
    values = mantissa * scale
    np.divide(mantissa, scale, out=values, where=power < 0)
    del scale
    far = np.flatnonzero(np.abs(power) > 22)
    if far.size:  # beyond the exact powers of ten: within a few ulp, checked below
        with np.errstate(over="ignore", under="ignore"):
            values[far] = mantissa[far] * np.power(10.0, power[far].astype(np.float64))
        approx[far] = True
    del power
    np.copysign(values, 0.5 - negative, out=values)
    approx |= mantissa >= _EXACT_INT
    del mantissa, negative
    bad = ~ok
    if float32:
        near = np.flatnonzero(ok & approx)
        bad[near[_near_float32_boundary(values[near])]] = True
    else:
        bad |= approx
    redo = np.flatnonzero(bad)
    if redo.size > max(16, _MAX_REDO * n):  # loadtxt is faster then
        return None
    for i in redo:
        start = ends[i - 1] + 1 if i else 0
        try:
            values[i] = float(block[start : ends[i]])
        except ValueError:
            return None
    return values.reshape(rows, width)


def _near_float32_boundary(v: np.ndarray) -> np.ndarray:
    """Where float32 rounding of v could differ from that of a value within 2^-46·|v|."""
    with np.errstate(over="ignore", invalid="ignore"):
        f = v.astype(np.float32)
        g = f.astype(np.float64)
        r = v - g
        toward = np.where(r >= 0, np.float32(np.inf), np.float32(-np.inf))
        half = np.abs(np.nextafter(f, toward).astype(np.float64) - g) * 0.5
        return ~np.isfinite(half) | ~(half - np.abs(r) > np.abs(v) * 2.0**-46)


def _parse_block(block: bytes, line: int, layout: _Layout, float32: bool,
                 scratch: _Scratch) -> np.ndarray:
    """Rows of one block → (r, width) float64: the plain fast path, else NumPy's loadtxt,
    else (and for the error message) the exact csv-module reader."""
    width = len(layout.names)
    delim = layout.delim
    if _LITTLE and len(delim) == 1 and delim.isascii() and delim not in '0123456789.+-eE"\n\r':
        values = _parse_plain(block, width, delim.encode(), float32, scratch)
        if values is not None:
            return values
    text = _decode(block, layout.path, line)
    values = _parse_loadtxt(text, width, delim)
    return values if values is not None else _parse_exact(text, line, layout)


def _first_row(text: str, delim: str):
    """The first non-blank row of ``text`` (its cells stripped) and the number of lines
    up to and including it; (None, 0) when every row is blank."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim, skipinitialspace=True)
    for row in reader:
        if not _is_blank(row):
            return [cell.strip() for cell in row], reader.line_num
    return None, 0


def _target_index(target, names: tuple[str, ...], has_header: bool, path: Path) -> int:
    width = len(names)
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
        return hits[0]
    if not -width <= target < width:
        raise ValueError(
            f"target index {target} is out of range for {path}, which has {width} "
            f"columns (valid: -{width} .. {width - 1})"
        )
    return int(target) % width


def load_csv(path, target=-1, *, delimiter=None, header="auto", dtype=np.float32,
             max_bytes="auto") -> Table:
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
        max_bytes: the most bytes gzip input may expand to.  ``"auto"``: 4 GiB
            (:data:`GZIP_MAX_BYTES`), and past 64 MiB at most :data:`GZIP_MAX_RATIO` (500)
            times the compressed size, which refuses gzip bombs; an int: that many bytes;
            None: no limit.  Plain files are not limited.

    Cells are parsed as Python's ``float`` parses them (so ``1e-3``, ``nan`` and ``inf``
    are read, and every value is the correctly rounded double, then cast to ``dtype``);
    cells may be double-quoted; blank lines are skipped; missing values are not supported.

    The file is streamed in blocks of about 512 KiB of whole lines (a line may be any
    length) into x and y, which grow in place, so memory stays near the result's size
    plus a few MiB; blocks of plain decimals are parsed by vectorised integer arithmetic
    (:func:`_parse_plain`, ~100 MB/s), others (quotes, spaces, ``nan``) by
    ``numpy.loadtxt``, and a block either refuses by Python's csv module and ``float``,
    which give the exact error.

    Returns:
        :class:`Table` ``(x, y, feature_names, target_name)`` with x (n, d) and y (n,).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: each naming the file, and the line and column where there is one:
            ``path`` is a directory, FIFO or device; empty file or no data rows;
            only one column (no feature columns); a row whose number of fields differs from
            the first row's (line number, both counts, the missing column); a cell that is
            not a number (line, column number and name, cell); text that is not UTF-8
            (line); an unknown target name (the available names); a target index out of
            range; not valid gzip, or gzip that expands past ``max_bytes``; bad
            ``delimiter``/``header``/``dtype``/``max_bytes``.
    """
    dt = _float_dtype(dtype, "load_csv")
    _v.one_of(header, "header", (True, False, "auto"), where="load_csv")
    if delimiter is not None and not isinstance(delimiter, str):
        raise TypeError(f"load_csv: delimiter must be one character or None, got "
                        f"{delimiter!r}")
    if delimiter is not None and len(delimiter) != 1:
        raise ValueError(f"load_csv: delimiter must be one character or None, got "
                         f"{delimiter!r}")
    if isinstance(target, bool) or not isinstance(target, (str, numbers.Integral)):
        raise TypeError(f"load_csv: target must be a column name (str) or index (int), "
                        f"got {target!r}")
    if max_bytes is not None and max_bytes != "auto":
        _v.integer(max_bytes, "max_bytes", where="load_csv", low=1)
    path = Path(os.fspath(path))
    float32 = dt == np.float32
    with _Source(path, max_bytes) as source:
        blocks = source.blocks()
        for block, line in blocks:  # find the first non-blank row
            head = 0  # the first _SNIFF_LINES lines suffice, unless they are all blank
            for _ in range(_SNIFF_LINES):
                head = block.find(b"\n", head) + 1 or len(block)
            for text in (_decode(part, path, line) for part in (block[:head], block)):
                delim = delimiter
                if delim is None:
                    delim = _sniff_delimiter(text) if text.strip() else ","
                try:
                    row, lines_used = _first_row(text, delim)
                except csv.Error as e:
                    raise ValueError(f"{path}: line {line}: {e}") from None
                if row is not None or head == len(block):
                    break
            if row is not None:
                break
        else:
            raise ValueError(f"{path}: the file is empty")
        first_line = line + lines_used - 1
        cut = 0  # the byte offset just after that row
        for _ in range(lines_used):
            cut = block.index(b"\n", cut) + 1
        has_header = header
        if header == "auto":
            has_header = not all(_is_number(cell) for cell in row)
        width = len(row)
        if has_header:
            names, rest, rest_line = tuple(row), block[cut:], first_line + 1
        else:
            names = tuple(f"col{j}" for j in range(width))
            start = block.rfind(b"\n", 0, cut - 1) + 1
            rest, rest_line = block[start:], first_line
        t = _target_index(target, names, has_header, path)
        if width == 1:
            raise ValueError(
                f"{path}: no feature columns: the only column ({names[0]!r}, line "
                f"{first_line}) is the target; is the delimiter {delim!r} right?"
            )
        layout = _Layout(path, delim, names, first_line)
        del block, text
        scratch, out = _Scratch(), None
        for block, line in itertools.chain([(rest, rest_line)], blocks):
            part = _parse_block(block, line, layout, float32, scratch)
            _check_fits(part, dt, block, line, layout)
            if out is None and len(part):  # room for the rows the file holds if they are
                per_row = len(block) / len(part)  # as long as these
                out = _Columns(dt, width, t, int(source.expected_bytes() / per_row * 1.02) + 16)
            if out is not None:
                out.add(part)
            del block, part
    if out is None:
        raise ValueError(f"{path}: the file has a header line but no data rows")
    x, y = out.finish()
    return Table(x=x, y=y, feature_names=names[:t] + names[t + 1 :], target_name=names[t])


def _check_fits(part: np.ndarray, dtype: np.dtype, block: bytes, line: int,
                layout: _Layout) -> None:
    """ValueError naming line and column for a finite cell beyond `dtype`'s range (3.4e38
    in float32), which the cast would otherwise turn into Inf with only a warning."""
    limit = np.finfo(dtype).max
    if limit >= np.finfo(np.float64).max:
        return
    with np.errstate(over="ignore", invalid="ignore"):
        over = np.isfinite(part) & np.isinf(part.astype(dtype))
    if not over.any():
        return
    r, j = (int(i) for i in np.argwhere(over)[0])
    reader = csv.reader(io.StringIO(_decode(block, layout.path, line), newline=""),
                        delimiter=layout.delim)
    row = -1
    for cells in reader:
        if not _is_blank(cells):
            row += 1
            if row == r:
                break
    raise ValueError(
        f"{layout.path}: line {line + reader.line_num - 1}, column {j + 1} "
        f"({layout.names[j]!r}): {float(part[r, j])!r} does not fit in {dtype.name} (largest "
        f"finite value {float(limit):.4g}); pass dtype=np.float64")


class _Columns:
    """x (n, width - 1) and y (n,) filled block by block.  Their capacity grows (and
    finally shrinks) by ``ndarray.resize``, a realloc, which moves large arrays without
    copying them, so memory stays near the result's size."""

    def __init__(self, dtype, width: int, target: int, capacity: int):
        self.x = np.empty((capacity, width - 1), dtype)
        self.y = np.empty(capacity, dtype)
        self.t, self.n = target, 0

    def _resize(self, rows: int):
        self.x.resize((rows, self.x.shape[1]), refcheck=False)
        self.y.resize(rows, refcheck=False)

    def add(self, part: np.ndarray):
        """Appends (r, width) rows: the target column to y, the others to x."""
        r0, r1, t = self.n, self.n + len(part), self.t
        if r1 > len(self.y):
            self._resize(max(r1, len(self.y) * 3 // 2))
        self.x[r0:r1, :t] = part[:, :t]
        self.x[r0:r1, t:] = part[:, t + 1 :]
        self.y[r0:r1] = part[:, t]
        self.n = r1

    def finish(self):
        self._resize(self.n)
        return self.x, self.y


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
    _v.one_of(color, "color", tuple(WINE_URLS), where="wine_quality")
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
    return (table.x.astype(_float_dtype(dtype, "digits")),
            _labels_to_int(table.y, "labels", "digits"))


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

    def _check(self, x, name: str, where: str) -> np.ndarray:
        x = _v.array(x, name, where=where)
        if x.shape[1:] != self.mean.shape:
            features = ", ".join(map(str, self.mean.shape))
            raise ValueError(f"{where}: {name} must have shape (n, {features}) like the training "
                             f"data, got {x.shape}")
        return x

    def _out_dtype(self, x) -> np.dtype:
        return x.dtype if x.dtype.kind == "f" else self.mean.dtype

    def apply(self, x, *, name: str = "x") -> np.ndarray:
        """(n, *features) → (n, *features): (x − mean) / std, in x's float dtype."""
        return self._apply(x, name, "Standardizer.apply")

    def _apply(self, x, name: str, where: str) -> np.ndarray:
        x = self._check(x, name, where)
        return ((x - self.mean) / self.std).astype(self._out_dtype(x), copy=False)

    def inverse(self, x) -> np.ndarray:
        """(n, *features) → (n, *features): x · std + mean, undoing :meth:`apply`."""
        x = self._check(x, "x", "Standardizer.inverse")
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
    return _fit_standardizer(x_train, "fit_standardizer")


def _fit_standardizer(x_train, where: str) -> Standardizer:
    x = _v.array(x_train, "x_train", where=where, min_rows=1)
    x64 = x.astype(np.float64)
    if not np.isfinite(x64).all():
        bad = "NaN" if np.isnan(x64).any() else "Inf"
        raise ValueError(f"{where}: x_train must be finite, got an array with {bad} values")
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
    scaler = _fit_standardizer(x_train, "standardize")
    transformed = [scaler._apply(o, f"others[{i}]", "standardize") for i, o in enumerate(others)]
    return (scaler._apply(x_train, "x_train", "standardize"), *transformed, scaler)


# --------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------


def _fraction(value, name: str, where: str) -> Fraction:
    value = _v.real(value, name, where=where, low=0.0, high=1.0, high_open=True)
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
    where = "train_val_test_split"
    x, y = np.asarray(x), np.asarray(y)
    for name, a in (("x", x), ("y", y)):
        if a.ndim < 1:
            raise ValueError(f"{where}: {name} must have a leading batch axis (shape (n, ...)), "
                             f"got shape {a.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{where}: x and y must have the same number of examples, got {x.shape[0]} and "
            f"{y.shape[0]}"
        )
    stratify = _v.flag(stratify, "stratify", where=where)
    f_val = _fraction(val, "val", where)
    f_test = _fraction(test, "test", where)
    if f_test <= 0:
        raise ValueError(f"train_val_test_split: test must be a number in (0, 1), got "
                         f"{test!r}")
    if f_val + f_test >= 1:
        raise ValueError(f"train_val_test_split: val + test must be < 1 to leave training "
                         f"data, got {val!r} + {test!r}")
    rng = np.random.default_rng(_v.integer(seed, "seed", where="train_val_test_split", low=0))
    n = x.shape[0]
    fractions = (1 - f_val - f_test, f_val, f_test)

    if stratify:
        if y.ndim > 2:
            raise ValueError(f"{where}: y must be labels (n,) or one-hot (n, K) for "
                             f"stratify=True, got shape {y.shape}")
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
                f"{where}: the {name} split would be empty: n={n} examples are too few for "
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
        NaN/Inf, or values outside the int32 range; TypeError for a dtype that is neither
        int nor float.
    """
    return _labels_to_int(y, "y", "labels_to_int")


def _labels_to_int(y, name: str, where: str) -> np.ndarray:
    y = np.asarray(y)
    lo, hi = np.iinfo(np.int32).min, np.iinfo(np.int32).max

    def check_range():
        if y.size and (y.min() < lo or y.max() > hi):
            raise ValueError(f"{where}: {name} must fit in int32 ([{lo}, {hi}]), got min "
                             f"{y.min()!r}, max {y.max()!r}")

    if y.dtype.kind in "iu":
        check_range()
        return y.astype(_LABEL_DTYPE)
    if y.dtype.kind != "f":
        raise TypeError(f"{where}: {name} must be integers (an int or whole-float array), "
                        f"got dtype {y.dtype}")
    bad = ~np.isfinite(y) | (y != np.round(y))
    if bad.any():
        i = np.flatnonzero(bad.ravel())[0]
        raise ValueError(
            f"{where}: {name} must be whole numbers, got {y.ravel()[i]!r} at flat index {i}"
        )
    check_range()
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
        raise ValueError(f"encode_labels: y must have shape (n,), got {y.shape}")
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
        ValueError: negative labels, labels ≥ num_classes, non-whole labels, num_classes
            < 1, or empty labels without num_classes.
        TypeError: labels that are not numbers (booleans, strings), a num_classes that
            is not an int.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind == "b":
        raise TypeError("one_hot: labels must be integers, got booleans")
    ints = _labels_to_int(labels, "labels", "one_hot")
    if ints.size and ints.min() < 0:
        raise ValueError(f"one_hot: labels must be >= 0, got {int(ints.min())}")
    if num_classes is None:
        if ints.size == 0:
            raise ValueError("one_hot: num_classes must be given for empty labels, got None")
        k = int(ints.max()) + 1
    else:
        k = _v.positive_int(num_classes, "num_classes", where="one_hot")
        if ints.size and ints.max() >= k:
            raise ValueError(f"one_hot: labels must be < num_classes={k}, got "
                             f"{int(ints.max())}")
    return (ints[..., None] == np.arange(k)).astype(dtype)
