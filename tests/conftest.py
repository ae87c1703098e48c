"""Test-wide numerics: float64 available, rank promotion refused, warnings are errors.

x64 is switched on for the whole session so the gradient checks can run at relative error
1e-9; float32 tests ask for float32 explicitly.  `jax_numpy_rank_promotion="raise"` makes a
(B, 1) - (B,) broadcast an error instead of a silent (B, B) matrix.
"""
import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_collection_finish(session):
    """Start the matrix worker (tests/matrix.py) as soon as its tests are selected, so it
    runs on the second core while the other test files run."""
    if any(getattr(getattr(item, "module", None), "__name__", "").endswith("test_matrix")
           for item in session.items):
        from tests import matrix
        matrix.Worker.start(session.config._tmp_path_factory.getbasetemp())
