"""The oracle's documentation runs: every Python block of README's "Check your own
backprop" and of docs/oracle.md is executed, in order, in one namespace per document, and
what it prints must be what the text says:

- a ```text block that is the next fenced block after a Python block is that block's
  whole output (errors at rounding level, 1e-12 and below, compare as equal);
- ``print(...)  # X`` and a comment line ``# jaxmlp …`` after a print are lines it must
  print.

`python -m tests.test_docs --regen` rewrites the ```text blocks from a fresh run (then
read the diff: the text around them may need the same change).
"""
import contextlib
import io
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
PRELUDE = "import numpy as np\nfrom jaxmlp import oracle\n"


def _readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Check your own backprop")
    end = text.index("\n## ", start + 1)
    return text[start:end]


DOCS = {"README": _readme_section, "docs/oracle.md": lambda: (ROOT / "docs" / "oracle.md")
        .read_text()}


def _blocks(text):
    return [(m.group(1), m.group(2), m.span(2)) for m in FENCE.finditer(text)]


_TINY = re.compile(r"\d\.\d+e-(1[2-9]|[2-9]\d|\d{3})")


def _normal(text: str) -> str:
    """Rounding-level errors (1e-12 and below) differ between BLAS builds: "tiny"."""
    return _TINY.sub("tiny", text.rstrip("\n"))


def _expected_lines(code: str) -> list:
    lines, out = code.splitlines(), []
    for k, line in enumerate(lines):
        m = re.match(r"\s*print\(.*\)\s+# (.+)$", line)
        if m:
            out.append(m.group(1).strip())
        m = re.match(r"# (jaxmlp .+)$", line)
        if m and k and any("print(" in lines[j] for j in range(max(0, k - 3), k)):
            out.append(m.group(1).strip())
    return out


def _run(text):
    """[(python block, its stdout, the text block expected or None, that block's span)]."""
    ns = {}
    exec(PRELUDE, ns)
    blocks = _blocks(text)
    results = []
    for i, (lang, code, _) in enumerate(blocks):
        if lang != "python":
            continue
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile(code, "<doc block>", "exec"), ns)
        nxt = blocks[i + 1] if i + 1 < len(blocks) else None
        expected = nxt if nxt is not None and nxt[0] == "text" else None
        results.append((code, buf.getvalue(), expected))
    return results


@pytest.mark.parametrize("doc", list(DOCS))
def test_doc_examples_run_and_print_what_they_say(doc):
    text = DOCS[doc]()
    results = _run(text)
    assert results, f"{doc} has no Python examples"
    for code, out, expected in results:
        printed = [line.rstrip() for line in out.splitlines()]
        for line in _expected_lines(code):
            assert line in printed, (doc, line, out)
        if expected is not None:
            assert _normal(out) == _normal(expected[1]), (
                f"{doc}: the text block after\n{code}\ndiffers from its output; "
                f"`python -m tests.test_docs --regen` rewrites it\n{out}")


def _regen():
    path = ROOT / "docs" / "oracle.md"
    for name, read, write in (
            ("README", _readme_section, None), ("docs/oracle.md", DOCS["docs/oracle.md"], path)):
        text = read()
        new = text
        for code, out, expected in reversed(_run(text)):
            if expected is not None:
                a, b = expected[2]
                new = new[:a] + out.rstrip("\n") + "\n" + new[b:]
        if name == "README":
            full = (ROOT / "README.md").read_text()
            (ROOT / "README.md").write_text(full.replace(text, new))
        else:
            write.write_text(new)
        print(f"{name}: {'rewritten' if new != text else 'unchanged'}")


if __name__ == "__main__":
    if "--regen" in sys.argv:
        import jax
        jax.config.update("jax_enable_x64", True)
        _regen()
