"""JUnit XML for autograders (nbgrader, Gradescope, GitHub Classroom, CI test tabs).

One ``<testcase>`` per configuration and layer: a network check gives one per layer (its
dW, db and δ together) and one for the loss; a probe gives that for every configuration
it ran (a configuration where your function raised is one ``<error>`` case); a layer
check gives one per gradient (dx, dw, db, …).  A mismatch is a ``<failure>`` whose
message is the diagnosis.  Written with the standard library's ElementTree, which
escapes the text; characters XML 1.0 cannot hold are dropped.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import NamedTuple, Optional

__all__ = ["Case", "cases_from_report", "cases_from_probe", "cases_from_layer", "write"]

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class Case(NamedTuple):
    """One test case: `failure` (a mismatch) or `error` (your code raised), else passed."""

    name: str
    failure: Optional[str] = None
    error: Optional[str] = None


def _clean(text: str) -> str:
    return _NOT_XML.sub("", text)


def cases_from_report(report, prefix: str = "") -> list:
    """An `OracleReport` → one case per layer (output layer first) and one for the loss."""
    layers = sorted({e.layer for e in report.dW}, reverse=True)
    cases = []
    for l in layers:
        rows = [e for q in (report.dW, report.db, report.delta) for e in q if e.layer == l]
        bad = [e for e in rows if not e.ok]
        text = "\n".join(f"{e.quantity}: {e.diagnosis}" for e in bad) or None
        cases.append(Case(f"{prefix}layer {l}", text))
    if report.loss is not None:
        cases.append(Case(f"{prefix}loss", None if report.loss.ok else report.loss.diagnosis))
    return cases


def cases_from_probe(probe_report) -> list:
    """A `ProbeReport` → the cases of every configuration, smallest first."""
    cases = []
    for r in probe_report.results:
        name = f"depth {r.depth}, m = {r.batch_size}" + (
            f", {r.activation}" if r.activation else "") + (", saturating" if r.saturated
                                                            else "")
        if r.error is not None or r.report is None:
            cases.append(Case(name, error=r.error or "no report"))
        else:
            cases.extend(cases_from_report(r.report, prefix=f"{name}: "))
    return cases


def cases_from_layer(layer_report) -> list:
    """A `LayerReport` → one case per gradient it checked."""
    cases = []
    for e in layer_report.entries:
        name = f"{layer_report.kind}: {e.quantity}"
        if e.status == "error":
            cases.append(Case(name, error=e.diagnosis))
        else:
            cases.append(Case(name, None if e.status == "ok" else e.diagnosis))
    if not cases:  # nothing could be checked: the report's own diagnosis
        cases.append(Case(f"{layer_report.kind}", error=layer_report.diagnosis or "error"))
    return cases


def write(path: str, suite: str, cases: list, classname: str = "jaxmlp.check") -> None:
    """Writes `cases` as one ``<testsuite>`` named `suite` to `path` (UTF-8)."""
    failures = sum(c.failure is not None for c in cases)
    errors = sum(c.error is not None for c in cases)
    root = ET.Element("testsuites", tests=str(len(cases)), failures=str(failures),
                      errors=str(errors))
    ts = ET.SubElement(root, "testsuite", name=_clean(suite), tests=str(len(cases)),
                       failures=str(failures), errors=str(errors), skipped="0")
    for c in cases:
        tc = ET.SubElement(ts, "testcase", classname=_clean(classname), name=_clean(c.name))
        if c.error is not None:
            el = ET.SubElement(tc, "error", message=_clean(c.error.splitlines()[0][:500]
                                                           if c.error else "error"))
            el.text = _clean(c.error)
        elif c.failure is not None:
            first = c.failure.splitlines()[0] if c.failure else "mismatch"
            el = ET.SubElement(tc, "failure", message=_clean(first[:500]))
            el.text = _clean(c.failure)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
