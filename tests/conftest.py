"""Test-wide numerics: float64 available, rank promotion refused, warnings are errors.

x64 is switched on for the whole session so the gradient checks can run at relative error
1e-9; float32 tests ask for float32 explicitly.  `jax_numpy_rank_promotion="raise"` makes a
(B, 1) - (B,) broadcast an error instead of a silent (B, B) matrix.

Compile time, not run time, is most of this suite's cost (hundreds of small programs), so
the session, and the worker processes it starts (they inherit the environment), compile
with flags that make XLA's CPU compiler cheaper, measured as the summed
`backend_compile_duration` of test_backprop.py and test_optim.py on 2 cores:

- `--xla_backend_optimization_level=0`: the same optimised HLO, with less LLVM
  optimisation of the machine code;
- `--xla_cpu_use_fusion_emitters=false`: XLA's older loop-fusion emitters instead of the
  MLIR fusion emitters, which cost most of the rest (39 s -> 19 s of compile for the same
  ~680 programs; the two files' wall time 57 s -> 36 s).  XLA aborts on a flag it does not
  know, so this one is added only after a child process has started a backend with it
  (about 1 s): a jaxlib that dropped it costs speed, not the session.

Results can differ from the default flags in the last bits (e.g. where LLVM would fuse a
multiply-add); every comparison here either has a tolerance or compares two runs under
the same flags.  Speed is measured by scripts/benchmark.py with the default flags, never
here.  A flag already named in XLA_FLAGS wins.
"""
import os
import subprocess
import sys


def _add_xla_flag(flag, probe=False):
    """Appends `flag` to XLA_FLAGS unless its name is there already; with `probe`, only if
    a child process starts a CPU backend with it."""
    name = flag.partition("=")[0]
    flags = os.environ.get("XLA_FLAGS", "")
    if name in flags:
        return
    flags = f"{flags} {flag}".strip()
    if probe:
        ok = subprocess.run([sys.executable, "-c", "import jax; jax.devices('cpu')"],
                            env=dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
        if not ok:
            return
    os.environ["XLA_FLAGS"] = flags


_add_xla_flag("--xla_backend_optimization_level=0")
_add_xla_flag("--xla_cpu_use_fusion_emitters=false", probe=True)

import jax  # noqa: E402  (after XLA_FLAGS: XLA reads it when the backend starts)

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


def _module(item):
    return getattr(getattr(item, "module", None), "__name__", "").rpartition(".")[2]


def pytest_collection_modifyitems(session, config, items):
    """The test files that wait on the lane's jobs run last (in their own order), so
    the lane has all of the other files' time to finish: in alphabetical order
    test_resume waited for it, and then test_scripts and test_train ran after."""
    from tests import lane
    items.sort(key=lambda item: _module(item) in lane.NEEDS)  # stable: order otherwise kept


def pytest_collection_finish(session):
    """Start the background lane (tests/lane.py) with the subprocess jobs of the selected
    test files, so they run on the second core while the other test files run here."""
    modules = {_module(item) for item in session.items}
    from tests import lane
    lane.start(session.config._tmp_path_factory.getbasetemp(), modules)


def pytest_sessionfinish(session, exitstatus):
    from tests import lane
    lane.stop()
