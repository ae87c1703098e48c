"""The documentation runs: every Python block of README.md and docs/*.md is a test.

Snippets are collected with Sybil (a maintained, pytest-integrated document tester that
reads Markdown fences, runs a page's blocks in order in one namespace and has a skip
directive with a reason), one test per page, so a page reads like a session a user types:

- each ```python block runs, in order, in a fresh namespace per page, in the environment a
  newcomer has: JAX's defaults, so 64-bit off and rank promotion allowed (a page that needs float64 says
  ``jax.config.update("jax_enable_x64", True)`` itself, and the setting is undone after
  the page);
- a ```text block that directly follows a Python block is that block's whole output
  (numbers at rounding level, 1e-12 and below, compare equal);
- ``print(...)  # X`` and a comment line ``# jaxmlp …`` just after a print are lines it must
  print;
- ``<!-- skip: next "reason" -->`` before a block skips it, with the reason shown; at most
  one block in ten may be skipped.

`python -m tests.test_docs --regen [PAGE ...]` rewrites the ```text output blocks from a fresh run
(then read the diff: the prose around them may need the same change).

The strict MkDocs build (`mkdocs build --strict`) runs when the docs extra is installed;
the link check needs nothing.
"""
import contextlib
import io
import os
import pathlib
import re
import shutil
import subprocess
import sys
import unittest

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = ["README.md", "CONTRIBUTING.md"] + sorted(str(p.relative_to(ROOT)) for p in DOCS.rglob("*.md"))

sybil = pytest.importorskip("sybil", reason="the docs snippets need sybil (the test extra)")
from sybil import Sybil  # noqa: E402
from sybil.evaluators.python import PythonEvaluator  # noqa: E402
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser  # noqa: E402

_TINY = re.compile(r"\d\.\d+e-(1[2-9]|[2-9]\d|\d{3})")
_OUT = "__docs_output__"
_REGEN = []   # non-empty while --regen runs the pages: output blocks are not compared


def _normal(text: str) -> str:
    """Rounding-level errors (1e-12 and below) differ between BLAS builds: "tiny"."""
    return _TINY.sub("tiny", text.rstrip("\n"))


def _claimed_lines(code: str) -> list:
    """The lines a block says it prints: ``print(...)  # X`` and ``# jaxmlp …`` after a print."""
    lines, out = code.splitlines(), []
    for k, line in enumerate(lines):
        m = re.match(r"\s*print\(.*\)\s+# (.+)$", line)
        if m:
            out.append(m.group(1).strip())
        m = re.match(r"# (jaxmlp .+)$", line)
        if m and k and any("print(" in lines[j] for j in range(max(0, k - 3), k)):
            out.append(m.group(1).strip())
    return out


class _Capturing(PythonEvaluator):
    """Runs a Python block with its stdout captured; checks the lines it claims to print
    and leaves the output for a ```text block that may follow."""

    def __call__(self, example):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            super().__call__(example)
        out = buf.getvalue()
        example.namespace[_OUT] = (example.end, out)
        printed = [line.rstrip() for line in out.splitlines()]
        missing = [line for line in _claimed_lines(str(example.parsed)) if line not in printed]
        if missing:
            return f"the block does not print {missing!r}; it printed:\n{out}"


def _check_output(example):
    """A ```text block directly after a Python block must be that block's output."""
    previous = example.namespace.pop(_OUT, None)
    if previous is None:
        return None
    end, out = previous
    if _REGEN or example.document.text[end:example.start].strip():
        return None  # prose in between: an illustration, not this block's output
    if _normal(out) != _normal(str(example.parsed)):
        return ("the text block differs from the output of the Python block before it "
                "(`python -m tests.test_docs --regen` rewrites it); the output was:\n" + out)
    return None


class _Parser(PythonCodeBlockParser):
    def __init__(self):
        super().__init__()
        self.codeblock_parser = self.codeblock_parser_class("python", _Capturing())


SYBIL = Sybil(parsers=[SkipParser(), _Parser(), CodeBlockParser("text", _check_output)])


@contextlib.contextmanager
def _newcomer():
    """JAX's defaults, as on a fresh install (64-bit off, rank promotion allowed, as a user's
    `a @ W.T + b` needs); whatever a page sets is undone after it."""
    before = jax.config.jax_enable_x64, jax.config.jax_numpy_rank_promotion
    jax.config.update("jax_enable_x64", False)
    jax.config.update("jax_numpy_rank_promotion", "allow")
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before[0])
        jax.config.update("jax_numpy_rank_promotion", before[1])


def _examples(page):
    return list(SYBIL.parse(ROOT / page).examples())


def _run(page):
    """Runs a page's blocks in order: (number of Python blocks, skipped, [(code, output)])."""
    document = SYBIL.parse(ROOT / page)
    ran, skipped, outputs = 0, [], []
    with _newcomer():
        for example in document.examples():
            is_python = isinstance(example.region.evaluator, _Capturing)
            try:
                example.evaluate()
            except unittest.SkipTest as why:
                skipped.append(f"line {example.line}: {why}")
                continue
            except Exception as exc:
                raise AssertionError(f"{page}, the block at line {example.line} failed: "
                                     f"{type(exc).__name__}: {exc}") from exc
            if is_python:
                ran += 1
                outputs.append((example, document.namespace.get(_OUT, (0, ""))[1]))
    return ran, skipped, outputs


def _python_blocks(page) -> int:
    return sum(isinstance(e.region.evaluator, _Capturing) for e in _examples(page))


@pytest.mark.parametrize("page", PAGES)
def test_page_snippets_run(page):
    """Every Python block of the page runs and prints what the page says it prints."""
    ran, skipped, _ = _run(page)
    assert ran + len(skipped) == _python_blocks(page)


def test_at_most_one_block_in_ten_skipped():
    total = sum(_python_blocks(p) for p in PAGES)
    skips = sum(len(re.findall(r"<!--\s*skip:\s*next", (ROOT / p).read_text(encoding="utf-8")))
                for p in PAGES)
    assert total >= 20, total
    assert skips * 10 <= total, f"{skips} of {total} Python blocks are skipped"
    for p in PAGES:   # a skip always says why
        for m in re.finditer(r"<!--\s*skip:\s*(\w+)(.*?)-->", (ROOT / p).read_text("utf-8")):
            assert m.group(1) != "next" or m.group(2).strip(), (p, m.group(0))


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, len(lines)
    head = "\n".join(lines[:30])
    assert 'pip install . && jaxmlp train' in head
    assert 'pip install ".[test,docs]" && python -m pytest' in head
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install ".[test,docs]" && python -m pytest' in ci


# ---------------------------------------------------------------------- links

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")
_FENCED = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def _anchors(path: pathlib.Path) -> set:
    """The heading anchors MkDocs (Python-Markdown's toc) makes for a page."""
    text = _FENCED.sub("", path.read_text(encoding="utf-8"))
    out = set()
    for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M):
        title = re.sub(r"`|\*|_{2,}", "", m.group(1))
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)
        slug = re.sub(r"[^\w\s-]", "", title.lower(), flags=re.U).strip()
        out.add(re.sub(r"[-\s]+", "-", slug))
    out.update(re.findall(r'id="([^"]+)"', text))
    return out


def _links(path: pathlib.Path):
    text = _FENCED.sub("", path.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)
    for m in _LINK.finditer(text):
        yield m.group(1) or m.group(2)


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page):
    """Every relative link goes to a file that exists, and its #anchor to a heading there."""
    path, broken = ROOT / page, []
    for target in _links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):   # http:, mailto: … not checked (offline)
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"{page}: " + "; ".join(broken)


# ---------------------------------------------------------------------- the site

def test_docs_site_builds_strict(tmp_path):
    """`mkdocs build --strict`: a warning (a broken link, a missing page, an unresolved
    API reference) fails the build."""
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install '.[docs]'")
    pytest.importorskip("material", reason="mkdocs-material is not installed")
    pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings-python is not installed")
    env = dict(os.environ, JAX_PLATFORMS="cpu", NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = tmp_path / "site"
    for page in ("index.html", "oracle/index.html", "api/index.html"):
        assert (site / page).is_file(), page
    html = "".join(p.read_text(encoding="utf-8") for p in site.rglob("*.html"))
    assert "cdn.jsdelivr" not in html and "fonts.googleapis" not in html, "a CDN in the site"


def _regen(pages):
    for page in pages:
        path = ROOT / page
        text = path.read_text(encoding="utf-8")
        try:
            _, _, outputs = _run(page)
        except AssertionError as exc:
            print(f"{page}: not rewritten, a block fails: {exc}")
            continue
        document = SYBIL.parse(path)
        texts = [e for e in document.examples() if e.region.evaluator is _check_output]
        new = text
        for t in reversed(texts):
            prev = [(ex, out) for ex, out in outputs if ex.end <= t.start]
            if not prev:
                continue
            ex, out = prev[-1]
            if text[ex.end:t.start].strip():
                continue
            body_start = text.index("\n", t.start) + 1
            body_end = text.rindex("```", t.start, t.end)
            new = new[:body_start] + out.rstrip("\n") + "\n" + new[body_end:]
        if new != text:
            path.write_text(new, encoding="utf-8")
        print(f"{page}: {'rewritten' if new != text else 'unchanged'}")


if __name__ == "__main__":
    if "--regen" in sys.argv:
        # The suite's XLA flags (float32 results can differ in the last bits without them);
        # the backend has not started yet, so they still apply.
        import tests.conftest  # noqa: F401
        _REGEN.append(True)
        _regen([a for a in sys.argv[1:] if a != "--regen"] or PAGES)
