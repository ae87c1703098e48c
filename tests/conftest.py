"""Test-wide settings, made before any test starts JAX's backend.

- float64 available (gradient checks run at relative error 1e-9; float32 tests ask for
  float32), rank promotion an error (a (B, 1) - (B,) broadcast raises instead of making a
  (B, B) matrix); warnings are errors (pyproject.toml).
- 4 CPU devices, so that tests/test_parallel.py shards over them in this process; every
  other test runs on the first device, as it would with one.
- Cheaper XLA compiles (most of the suite's time is compiling small programs): less LLVM
  optimisation, and on jaxlib 0.10, where it was measured and exists, the older CPU loop
  emitters (XLA aborts on a flag it does not know).  See CONTRIBUTING.md for the timings.
  Results may differ from the default flags in the last bits; every comparison has a
  tolerance or compares two runs under the same flags.  A flag already in XLA_FLAGS wins.
"""
import os
from importlib.metadata import version

FLAGS = ["--xla_backend_optimization_level=0"]
if version("jaxlib").startswith("0.10."):
    FLAGS.append("--xla_cpu_use_fusion_emitters=false")
for flag in FLAGS:
    if flag.partition("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()

import jax  # noqa: E402  (after XLA_FLAGS: XLA reads it when the backend starts)

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_num_cpu_devices", 4)
