"""`jaxmlp check`: the oracle from the command line, for people and for autograders.

    jaxmlp check grads.npz --output sigmoid --loss bce --activation relu [--convention …]
    jaxmlp check student.py:forward_backward --output sigmoid --loss bce --activation relu
    jaxmlp check layers.py:affine_forward,affine_backward --layer affine --convention cs231n

An `.npz` target is one dump of weights, data and your gradients (format below); a Python
target `FILE.py:FUNCTION` (or `package.module:FUNCTION`) is probed: called on many
generated configurations (`probe`, `check_layer`).  `--json` prints the report as one JSON
object; `--junit FILE` writes JUnit XML (one test case per configuration and layer) for
nbgrader, Gradescope or GitHub Classroom.  Exit status: 0 everything matches, 1 something
does not, 2 unusable input (with the reason on stderr).

The `.npz` format (names are 1-based, layer l of the file is layer l − 1 of the Python
API):

    W1 … WL    weights, each (n_out, n_in) (or (n_in, n_out) for an in_out convention)  required
    b1 … bL    biases, (n_out,) or (n_out, 1)                     required
    X, Y       data in the convention's layout: X (m, n_x) or (n_x, m);   required
               Y (m, n_y) or (n_y, m), or (m,) when n_y == 1 or for cce's integer labels
    dW1 … dWL  your weight gradients, shaped like the weights     required
    db1 … dbL  your bias gradients, shaped like the reference db  required
    delta1 … deltaL   your δ = ∂L/∂z per layer, (m, n_out) or (n_out, m)   optional
    loss       your loss value, a scalar                           optional

`jaxmlp check` reads only these keys (other members are named, never read), each at most
512 MiB and 1 GiB in all as declared uncompressed in the zip, refused before decompressing;
a path that is not a regular file (a directory, a FIFO, ``/dev/zero``) is not opened.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import zipfile

from jaxmlp import checkpoint as _ck
from jaxmlp._validate import regular_file
from jaxmlp.oracle import junit as _junit
from jaxmlp.oracle.conventions import CONVENTIONS
from jaxmlp.oracle.layers import KINDS as LAYER_KINDS   # the kinds --layer takes
from jaxmlp.oracle.reference import LAYOUTS, reference_gradients
from jaxmlp.oracle.rules import compare


__all__ = ["add_check_arguments", "run_check", "main"]


_NPZ_HELP = """\
The .npz file (np.savez) holds, with 1-based layer numbers l = 1 … L:
  W1..WL    weights (n_out, n_in)          b1..bL    biases (n_out,) or (n_out, 1)
  X, Y      data in the convention's layout   dW1..dWL, db1..dbL   your gradients
  optional: delta1..deltaL (your δ = dL/dz per layer), loss (your loss value)
A Python target FILE.py:FUNC is called as FUNC(weights, biases, x, y, **kw) on generated
networks (jaxmlp.oracle.probe); with --layer, FILE.py:FORWARD,BACKWARD is one layer's pair
(jaxmlp.oracle.check_layer).
Exit status: 0 all match, 1 something does not, 2 unusable input."""


class _InputError(Exception):
    """Unusable input to `jaxmlp check` (exit status 2)."""


def add_check_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the arguments of `jaxmlp check` to `parser` (a parser or a subparser)."""
    parser.add_argument("target", metavar="TARGET",
                        help="an .npz dump (W1..WL, b1..bL, X, Y, dW1..dWL, db1..dbL: see "
                             "below), or a Python function FILE.py:FUNC / package.module:FUNC "
                             "to probe (with --layer: FILE.py:FORWARD,BACKWARD)")
    parser.add_argument("--activation", default=None,
                        help=".npz: the hidden activation, one name or a comma list with one "
                             "per hidden layer (required when there are hidden layers); "
                             "Python target: the activations your function supports, each "
                             "probed (default relu)")
    parser.add_argument("--output", default=None,
                        help="output activation, e.g. sigmoid (required but with --layer)")
    parser.add_argument("--loss", default=None,
                        help="mse, sse, bce or cce (required but with --layer)")
    parser.add_argument("--convention", default=None,
                        help="your convention: " + ", ".join(CONVENTIONS) + " (default "
                             "jaxmlp: W (n_out, n_in), rows are examples, mean loss)")
    parser.add_argument("--layout", default=None, choices=LAYOUTS,
                        help="older spelling of the data layout: batch_first X (m, n_x); "
                             "features_first X (n_x, m), b (n_out, 1)")
    parser.add_argument("--l2", type=float, default=0.0,
                        help="the L2 strength as your code names it (λ, reg, lambd, alpha); "
                             "its form is the convention's (default 0)")
    parser.add_argument("--n-train", type=_positive_int, default=None, metavar="N",
                        help="the n of an L2 penalty λ/(2n)ΣW² (a convention with "
                             "l2='half_m': deeplearning_ai, nielsen, sklearn) when your code "
                             "divides by the training-set size n, not the batch's m")
    parser.add_argument("--layer", default=None, choices=LAYER_KINDS,
                        help="check one CS231n-style layer: TARGET is FILE.py:FORWARD,BACKWARD "
                             "(FILE.py:FUNC for softmax_loss and svm_loss)")
    parser.add_argument("--depths", default="1,2,3",
                        help="Python target: numbers of layers to probe (default 1,2,3)")
    parser.add_argument("--batch-sizes", default="1,7,64",
                        help="Python target: batch sizes to probe (default 1,7,64)")
    parser.add_argument("--seed", type=int, default=0, help="Python target: the seed")
    parser.add_argument("--rtol", type=float, default=1e-6, help="default 1e-6")
    parser.add_argument("--atol", type=float, default=1e-9, help="default 1e-9")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="Python target: the time one configuration (or one layer "
                             "check) may take before it fails, so that code that never "
                             "returns does not hang the grader (default 10; 0: no limit)")
    parser.add_argument("--json", action="store_true",
                        help="print the report as one JSON object instead of a table")
    parser.add_argument("--junit", default=None, metavar="FILE",
                        help="also write the result as JUnit XML to FILE (one test case per "
                             "configuration and layer), for autograders")
    if parser.epilog is None:
        parser.epilog = _NPZ_HELP
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


# The arrays `jaxmlp check` reads: W1, b1, dW1, db1, delta1, …, X, Y and loss; any other
# member of the file is only named in the "ignoring keys" note, never read.
_CHECK_KEY = re.compile(r"(?:W|b|dW|db|delta)[1-9]\d*|X|Y|loss")
_CHECK_MEMBER_MAX = 512 * 2**20   # bytes, one array's declared uncompressed .npy size
_CHECK_TOTAL_MAX = 2**30          # bytes, all the arrays read together


def _load_npz(path: str) -> dict:
    """{key: array} of the `.npz` at `path`, read with bounded memory; a key that
    `jaxmlp check` does not use maps to None and is never read.

    Refused (as _InputError, exit status 2), each before the data in question is read:
    a `path` that is not a regular file (a directory, a FIFO, ``/dev/zero``, a socket:
    not even opened); a member declaring more than 512 MiB uncompressed
    (``_CHECK_MEMBER_MAX``), or members declaring more than 1 GiB together
    (``_CHECK_TOTAL_MAX``); a member whose zip sizes are impossible (only stored and
    deflated members, at most deflate's 1032:1 expansion, as for checkpoints); a member
    whose .npy header disagrees with its declared size, or that holds a pickled object
    array.  Every read is bounded by the member's declared size.
    """
    try:
        f = regular_file(path, path, _InputError)
    except FileNotFoundError:
        raise _InputError(f"no such file: {path}") from None
    except OSError as e:
        raise _InputError(f"cannot open {path}: {e}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if f.read(6) == b"\x93NUMPY":
            raise _InputError(f"{path} holds a single array (.npy); save the arrays with "
                              f"np.savez(path, W1=..., b1=..., ...)")
        f.seek(0)
        try:
            zf = zipfile.ZipFile(f)
        except Exception as e:  # zipfile raises many kinds on a damaged archive
            raise _InputError(f"cannot read {path} as an .npz file: {e}") from None
        with zf:
            return _read_npz_members(zf, size, path)


def _read_npz_members(zf: zipfile.ZipFile, size: int, path: str) -> dict:
    """The arrays of `_load_npz`, from the open archive of a `size`-byte file: every size
    is checked first, then the members are read."""
    arrays, wanted, total = {}, [], 0
    for info in {info.filename: info for info in zf.infolist()}.values():  # last of a name
        name = info.filename
        key = name[:-4] if name.endswith(".npy") else name
        if not _CHECK_KEY.fullmatch(key):
            arrays[key] = None
            continue
        if not name.endswith(".npy"):
            raise _member_error(path, name, "is not a .npy array (np.savez names its "
                                            "members KEY.npy)")
        why = _ck._sizes_problem(info, size)
        if why is not None:
            raise _member_error(path, name, why)
        if info.file_size > _CHECK_MEMBER_MAX:
            raise _member_error(path, name, f"declares {info.file_size} bytes uncompressed, "
                                            f"more than the 512 MiB jaxmlp check reads for "
                                            f"one array; nothing is read")
        total += info.file_size
        if total > _CHECK_TOTAL_MAX:
            raise _member_error(path, name, f"brings the arrays' declared uncompressed size "
                                            f"to {total} bytes, more than the 1 GiB jaxmlp "
                                            f"check reads in all; nothing is read")
        wanted.append((key, info))
    for key, info in wanted:
        try:
            with zf.open(info) as m:
                dtype, shape, fortran, offset = _ck._npy_header(m, info)
                arrays[key] = _ck._npy_data(m, info, dtype, shape, fortran, offset)
        except _ck._Pickled:
            raise _member_error(path, info.filename, "holds a pickled object array, which "
                                                     "is never loaded (allow_pickle=False)"
                                ) from None
        except Exception as e:  # a bad header, a CRC mismatch, a cut-off stream…
            raise _member_error(path, info.filename, f"is not a readable .npy array "
                                                     f"({type(e).__name__}: {e})") from None
    return arrays


def _member_error(path: str, member: str, why: str) -> _InputError:
    return _InputError(f"cannot read {path}: member {member!r} {why}")


def _layers_from(arrays: dict) -> int:
    numbers_ = sorted(int(m.group(1)) for k in arrays if (m := re.fullmatch(r"W(\d+)", k)))
    if not numbers_:
        raise _InputError(f"no weights found: expected keys W1..WL; the file has "
                          f"{sorted(arrays)}")
    L = len(numbers_)
    if numbers_ != list(range(1, L + 1)):
        raise _InputError(f"weight keys must be W1..W{L} without gaps, got "
                          f"{['W%d' % n for n in numbers_]}")
    required = ["X", "Y"] + [f"{p}{l}" for p in ("b", "dW", "db") for l in range(1, L + 1)]
    missing = [k for k in required if k not in arrays]
    if missing:
        raise _InputError(f"missing keys {missing} (the file has {sorted(arrays)})")
    deltas = [f"delta{l}" for l in range(1, L + 1)]
    present = [k for k in deltas if k in arrays]
    if present and len(present) != L:
        raise _InputError(f"give all of delta1..delta{L} or none, got {present}")
    return L


def _positive_int(text: str) -> int:
    """argparse type of --n-train: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}")
    return value


def _cli_names(message: str) -> str:
    """Python-API names in a message → the file's keys (weights[0] → W1, …); the API
    function's name in front is dropped (the file is the argument here)."""
    message = re.sub(r"^(reference_gradients|compare): ", "", message)
    for api, key in (("weights", "W"), ("biases", "b")):
        message = re.sub(api + r"\[(\d+)\]", lambda m: f"{key}{int(m.group(1)) + 1}", message)
    message = re.sub(r"^(x|y)\b", lambda m: m.group(1).upper(), message)
    message = re.sub(r"candidate\['(dW|db|delta)'\]\[(\d+)\]",
                     lambda m: f"{m.group(1)}{int(m.group(2)) + 1}", message)
    return message


def _emit(text: str, stream) -> None:
    try:
        print(text, file=stream)
    except UnicodeEncodeError:  # a terminal that cannot print δ, ½, ′
        print(text.encode("ascii", "backslashreplace").decode("ascii"), file=stream)


_IDENT = re.compile(r"[A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*")
_MODULE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def _python_target(target: str):
    """(where, [function names]) when `target` is FILE.py:F[,G] or package.module:F[,G],
    else None (an .npz path; `C:\\x.npz` is a path, not a target)."""
    where, sep, funcs = target.rpartition(":")
    if not sep or not _IDENT.fullmatch(funcs.strip()):
        return None
    if where.endswith(".py") or (_MODULE.fullmatch(where) and not os.path.exists(target)):
        return where, [f.strip() for f in funcs.split(",")]
    return None


def _import(where: str):
    """The module of FILE.py or package.module; _InputError with the reason otherwise."""
    import importlib
    import importlib.util
    import traceback
    if where.endswith(".py"):
        path = os.path.abspath(where)
        if not os.path.isfile(path):
            raise _InputError(f"cannot import {where}: no such file")
        name = "_jaxmlp_check_" + re.sub(r"\W", "_", os.path.basename(path)[:-3])
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        folder = os.path.dirname(path)
        sys.path.insert(0, folder)  # the student's own helper modules next to the file
        try:
            spec.loader.exec_module(module)
        except BaseException as e:  # SyntaxError, ImportError, SystemExit, anything
            if isinstance(e, KeyboardInterrupt):
                raise
            where_ = traceback.extract_tb(e.__traceback__)[-1:] if e.__traceback__ else []
            line = f" (line {where_[0].lineno})" if where_ else ""
            if isinstance(e, SyntaxError):
                line = f" (line {e.lineno})"
            raise _InputError(f"cannot import {where}: {type(e).__name__}: {e}{line}") from None
        finally:
            if sys.path and sys.path[0] == folder:
                sys.path.pop(0)
        return module
    try:
        return importlib.import_module(where)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        raise _InputError(f"cannot import module {where}: {type(e).__name__}: {e}") from None


def _function(module, where: str, name: str):
    fn = getattr(module, name, None)
    if fn is None:
        defined = sorted(k for k, v in vars(module).items()
                         if callable(v) and not k.startswith("_")
                         and getattr(v, "__module__", None) == module.__name__)
        raise _InputError(f"{where} has no function {name!r}; it defines {defined}")
    if not callable(fn):
        raise _InputError(f"{where}:{name} is a {type(fn).__name__}, not a function")
    return fn


def _int_list(text: str, flag: str) -> tuple:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise _InputError(f"{flag} must be a comma list of positive integers, got "
                          f"{text!r}") from None
    if not values or min(values) < 1:
        raise _InputError(f"{flag} must be a comma list of positive integers, got {text!r}")
    return values


def _convention(args):
    conv = args.convention if args.convention is not None else "jaxmlp"
    if conv not in CONVENTIONS:
        raise _InputError(f"--convention must be one of {list(CONVENTIONS)}, got {conv!r}")
    return conv


def _need(args, *flags):
    for flag in flags:
        if getattr(args, flag) is None:
            raise _InputError(f"--{flag} is required for this target")


def _timeout(args):
    """--timeout in seconds, None for 0 (no limit)."""
    t = args.timeout
    if not (isinstance(t, float) and math.isfinite(t) and t >= 0):
        raise _InputError(f"--timeout must be a number of seconds >= 0 (0: no limit), got {t}")
    return t or None


def _check_python(args, where: str, names: list):
    """(ok, text, json dict, junit cases) of probing / layer-checking a Python target."""
    conv = _convention(args)
    if args.layout is not None:
        raise _InputError("--layout applies to .npz files; for a Python target give "
                          "--convention")
    module = _import(where)
    fns = [_function(module, where, n) for n in names]
    if args.layer is not None:
        if args.n_train is not None:
            raise _InputError("--n-train applies to a whole network (FILE.py:FUNC), not to "
                              "--layer")
        from jaxmlp.oracle.layers import check_layer
        loss_kind = args.layer in ("softmax_loss", "svm_loss")
        if len(fns) != (1 if loss_kind else 2):
            want = "FILE.py:FUNC" if loss_kind else "FILE.py:FORWARD,BACKWARD"
            raise _InputError(f"--layer {args.layer} takes {want}, got {len(fns)} "
                              f"function(s) {names}")
        report = check_layer(args.layer, fns[0], None if loss_kind else fns[1],
                             convention=conv, rtol=args.rtol, atol=args.atol,
                             seed=args.seed, timeout=_timeout(args))
        return report.ok, str(report), report.to_dict(), _junit.cases_from_layer(report)
    if len(fns) != 1:
        raise _InputError(f"a whole-network target is one function FILE.py:FUNC, got "
                          f"{names} (for a layer's FORWARD,BACKWARD pass --layer KIND)")
    _need(args, "output", "loss")
    from jaxmlp.oracle.probe import probe
    acts = ("relu",) if args.activation is None else tuple(
        a.strip() for a in args.activation.split(","))
    fn = fns[0]
    report = probe(fn, output=args.output, loss=args.loss, activations=acts,
                   convention=conv, depths=_int_list(args.depths, "--depths"),
                   batch_sizes=_int_list(args.batch_sizes, "--batch-sizes"), l2=args.l2,
                   n_train=args.n_train, seed=args.seed, rtol=args.rtol, atol=args.atol,
                   timeout=_timeout(args))
    errors = [r.error for r in report.results if r.error is not None]
    if errors and len(errors) == len(report.results) and errors[0].startswith("TypeError"):
        # never once callable as fn(weights, biases, x, y, **kw): the wrong function
        raise _InputError(f"{where}:{names[0]} cannot be called as "
                          f"{names[0]}(weights, biases, x, y, **kw): {errors[0]}")
    return report.ok, str(report), report.to_dict(), _junit.cases_from_probe(report)


def _check_npz(args):
    """(ok, text, json dict, junit cases) of one .npz dump."""
    for flag in ("depths", "batch_sizes"):
        if getattr(args, flag) != {"depths": "1,2,3", "batch_sizes": "1,7,64"}[flag]:
            raise _InputError(f"--{flag.replace('_', '-')} applies to Python targets only")
    if args.layer is not None:
        raise _InputError("--layer needs a Python target FILE.py:FORWARD,BACKWARD")
    _need(args, "output", "loss")
    conv = _convention(args) if args.convention is not None else "jaxmlp"
    arrays = _load_npz(args.target)
    L = _layers_from(arrays)
    if args.activation is None:
        if L > 1:
            raise _InputError(f"--activation is required: the network has {L - 1} hidden "
                              f"layer(s) (one name, or a comma list with one per layer)")
        activation = "identity"  # unused without hidden layers
    else:
        names = [s.strip() for s in args.activation.split(",")]
        activation = names[0] if len(names) == 1 else tuple(names)
    ix = range(1, L + 1)
    ref = reference_gradients([arrays[f"W{l}"] for l in ix], [arrays[f"b{l}"] for l in ix],
                              arrays["X"], arrays["Y"], activation=activation,
                              output=args.output, loss=args.loss, layout=args.layout,
                              convention=conv, l2=args.l2, n_train=args.n_train)
    candidate = {"dW": [arrays[f"dW{l}"] for l in ix], "db": [arrays[f"db{l}"] for l in ix]}
    if "delta1" in arrays:
        candidate["delta"] = [arrays[f"delta{l}"] for l in ix]
    if "loss" in arrays:
        candidate["loss"] = arrays["loss"]
    report = compare(candidate, ref, rtol=args.rtol, atol=args.atol)
    ignored = sorted(set(arrays) - {"X", "Y", "loss"} - {
        f"{p}{l}" for p in ("W", "b", "dW", "db", "delta") for l in range(1, L + 1)})
    if ignored and not args.json:
        _emit(f"jaxmlp check: note: ignoring keys {ignored}", sys.stderr)
    out = report.to_dict()
    for e in out["entries"]:  # the file's 1-based key of each row
        e["key"] = "loss" if e["layer"] is None else f"{e['quantity']}{e['layer'] + 1}"
    return report.ok, report.format(file_keys=True), out, _junit.cases_from_report(report)


def run_check(args: argparse.Namespace) -> int:
    """`jaxmlp check`: an `.npz` dump compared with the reference, or a Python target
    probed (`probe`) or layer-checked (`check_layer`).

    Prints the report (a table, or JSON with `args.json`) on stdout, writes JUnit XML to
    `args.junit` when given, and returns 0 when everything matches, 1 when something
    does not (your function raising on a configuration included), 2 for unusable input
    (a missing or unreadable file, a target that does not import, a function that is not
    there or cannot take the arguments, missing keys, inconsistent shapes, NaN/Inf, bad
    flag values), with the reason on stderr.
    """
    target = getattr(args, "target", None) or getattr(args, "npz", None)
    args.target = target
    try:
        for name in ("rtol", "atol", "l2"):
            value = getattr(args, name)
            if not (math.isfinite(value) and value >= 0):
                raise _InputError(f"--{name} must be a finite number >= 0, got {value}")
        if args.junit is not None:
            folder = os.path.dirname(os.path.abspath(args.junit))
            if not os.path.isdir(folder):
                raise _InputError(f"--junit {args.junit}: no such folder {folder}")
        python = _python_target(target)
        if python is not None:
            ok, text, out, cases = _check_python(args, *python)
        else:
            ok, text, out, cases = _check_npz(args)
    except (_InputError, ValueError, TypeError) as e:
        _emit(f"jaxmlp check: error: {_cli_names(str(e))}", sys.stderr)
        return 2
    if args.junit is not None:
        try:
            _junit.write(args.junit, f"jaxmlp check {target}", cases)
        except OSError as e:
            _emit(f"jaxmlp check: error: cannot write --junit {args.junit}: {e}", sys.stderr)
            return 2
    if args.json:
        _emit(json.dumps(out, indent=2, ensure_ascii=False), sys.stdout)
    else:
        _emit(text, sys.stdout)
    return 0 if ok else 1


def main(argv=None) -> int:
    """`python -m jaxmlp.oracle TARGET …` (the same as `jaxmlp check`)."""
    parser = argparse.ArgumentParser(
        prog="jaxmlp check",
        description="Check your own MLP backprop against jaxmlp's reference gradients.")
    add_check_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: 2 for bad flags, 0 for --help
        return e.code if isinstance(e.code, int) else 2
    return run_check(args)
