"""Helpers shared by the experiment scripts: arguments, data folder, tables, figures.

Not part of the package.  Every script takes ``--out DIR`` (default ``runs/<name>``),
``--quick`` (a smoke run of a few seconds) and ``--seed``; scripts that read the shared
data sets also take ``--data DIR``.  Tables print as Markdown so they can be pasted into the
README unchanged.  matplotlib is optional: without it a script prints
"matplotlib not installed: no PNG written" and still prints its tables.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # so `python scripts/x.py` finds jaxmlp without installing it
    sys.path.insert(0, str(REPO))

NO_MATPLOTLIB = "matplotlib not installed: no PNG written"


def parser(name: str, doc: str, *, data: bool = False) -> argparse.ArgumentParser:
    """The common command line: --out, --quick, --seed (and --data)."""
    p = argparse.ArgumentParser(
        prog=f"scripts/{name}.py", description=(doc or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "runs" / name,
                   help=f"folder for the PNG (default runs/{name})")
    p.add_argument("--quick", action="store_true", help="a fast smoke run (a few seconds)")
    p.add_argument("--seed", type=int, default=0, help="base random seed (default 0)")
    if data:
        p.add_argument("--data", type=Path, default=None,
                       help="folder with the data files (default $JAXMLP_DATA, else "
                            "../shared/data next to the repository if it exists, else "
                            "jaxmlp.data's own search and download)")
    return p


def data_dir(arg=None):
    """--data, else $JAXMLP_DATA, else <repo>/../shared/data if it exists, else None
    (None lets `jaxmlp.data` search its cache and, for Wine Quality, download)."""
    if arg is not None:
        return Path(arg)
    env = os.environ.get("JAXMLP_DATA")
    if env:
        return Path(env)
    shared = REPO.parent / "shared" / "data"
    return shared if shared.is_dir() else None


def table(headers, rows, floatfmt: str = ".4f") -> str:
    """A Markdown table; floats formatted with `floatfmt`, None as "–"."""
    def cell(v):
        if v is None:
            return "–"
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v)

    body = [[cell(v) for v in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in body)) if body else len(str(h))
              for i, h in enumerate(headers)]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line([str(h) for h in headers]), sep] + [line(r) for r in body])


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend, or None when not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, out: Path, filename: str) -> Path:
    """Writes `fig` to out/filename (creating out), closes it, prints and returns the path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / filename
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    fig.clf()
    import matplotlib.pyplot as plt
    plt.close(fig)
    print(f"wrote {path}")
    return path
