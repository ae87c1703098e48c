"""Kill-and-resume: a run killed with SIGKILL at random moments and resumed ends bitwise
equal to an uninterrupted run; two separate processes with one seed agree bitwise.

The processes run in the background lane (tests/lane.py) while other files run here."""
import numpy as np
import pytest

from tests import lane


def load(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    ref, again = lane.result("resume_reference", tmp_path_factory.getbasetemp())
    return load(ref), load(again)


def test_two_processes_same_seed_bitwise_identical(reference):
    ref, again = reference
    assert_bitwise_equal(again, ref)


@pytest.mark.parametrize("trial", range(lane.RESUME_TRIALS))
def test_sigkill_at_random_moment_then_resume_is_bitwise_identical(reference, trial,
                                                                   tmp_path_factory):
    # the lane starts a --slow run, waits for its first checkpoint, kills it with SIGKILL
    # a random 0-0.6 s later (mid-epoch or mid-save) and resumes it (tests/lane.py)
    out = lane.result(f"resume_trial{trial}", tmp_path_factory.getbasetemp())
    assert out["killed_running"], "the run finished before the kill: nothing was resumed"
    assert any(name.startswith("ckpt-") for name in out["left"]), out["left"]
    assert_bitwise_equal(load(out["resumed"]), reference[0])
    # at most `keep` = 2 checkpoints, and the killed save's temp file is gone
    final = out["final"]
    assert len(final) <= 2 and all(name.startswith("ckpt-") for name in final), out
    if trial == 0:  # resuming a finished run loads it and returns the same result
        assert_bitwise_equal(load(out["again"]), reference[0])
