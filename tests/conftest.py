"""Test-wide numerics: float64 available, rank promotion refused, warnings are errors.

x64 is switched on for the whole session so the gradient checks can run at relative error
1e-9; float32 tests ask for float32 explicitly.  `jax_numpy_rank_promotion="raise"` makes a
(B, 1) - (B,) broadcast an error instead of a silent (B, B) matrix.

Compile time, not run time, is most of this suite's cost (hundreds of small programs), so
the session, and the worker processes it starts (they inherit the environment), compile
with XLA's backend optimisation level 0: the same optimised HLO programs, with less LLVM
optimisation of their machine code (measured: test_backprop.py and test_scripts.py
together 103 s -> 80 s on 2 cores).  Results can differ from the default flags in the
last bits (e.g. where LLVM would fuse a multiply-add); every comparison here either has a
tolerance or compares two runs under the same flags.  Speed is measured by
scripts/benchmark.py with the default flags, never here.  A level set in XLA_FLAGS wins.
"""
import os

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402  (after XLA_FLAGS: XLA reads it when the backend starts)

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_collection_finish(session):
    """Start the background lane (tests/lane.py) with the subprocess jobs of the selected
    test files, so they run on the second core while the other test files run here."""
    modules = {getattr(getattr(item, "module", None), "__name__", "").rpartition(".")[2]
               for item in session.items}
    from tests import lane
    lane.start(session.config._tmp_path_factory.getbasetemp(), modules)


def pytest_sessionfinish(session, exitstatus):
    from tests import lane
    lane.stop()
