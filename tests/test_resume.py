"""Kill-and-resume: a run killed with SIGKILL at random moments and resumed ends bitwise
equal to an uninterrupted run; two separate processes with one seed agree bitwise.

Every run is a process of tests/resume_worker.py (a process must really die), each with a
hard timeout."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKER = [sys.executable, str(ROOT / "tests" / "resume_worker.py")]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
TIMEOUT = 240  # seconds, per process


def run(*args):
    proc = subprocess.run(WORKER + [str(a) for a in args], env=ENV, capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-4000:]


def load(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def listing(folder):
    return sorted(p.name for p in folder.glob(".*")) + sorted(p.name for p in folder.glob("*"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, and a second process with the same seed (both at once)."""
    base = tmp_path_factory.mktemp("resume-reference")
    procs = [subprocess.Popen(WORKER + [str(base / name)], env=ENV, stderr=subprocess.PIPE)
             for name in ("ref.npz", "again.npz")]
    for proc in procs:
        _, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, err[-4000:]
    return load(base / "ref.npz"), load(base / "again.npz")


def test_two_processes_same_seed_bitwise_identical(reference):
    ref, again = reference
    assert_bitwise_equal(again, ref)


@pytest.mark.parametrize("trial", range(3))
def test_sigkill_at_random_moment_then_resume_is_bitwise_identical(reference, trial, tmp_path):
    # a --slow run (≳ 1 s of epochs), killed with SIGKILL a random 0-0.6 s after its first
    # checkpoint appears (mid-epoch or mid-save), then resumed
    ckpt = tmp_path / "ckpt"
    proc = subprocess.Popen(WORKER + [str(tmp_path / "x.npz"), str(ckpt), "--slow"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None and not any(ckpt.glob("ckpt-*")):
            time.sleep(0.01)
        time.sleep(random.Random(1000 + trial).uniform(0.0, 0.6))
        killed_running = proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    left = listing(ckpt)
    assert killed_running, f"the run ended (exit {proc.returncode}) before the kill: nothing resumed"
    assert any(name.startswith("ckpt-") for name in left), left
    run(tmp_path / "resumed.npz", ckpt)
    assert_bitwise_equal(load(tmp_path / "resumed.npz"), reference[0])
    # at most `keep` = 2 checkpoints, and the killed save's temp file is gone
    final = listing(ckpt)
    assert len(final) <= 2 and all(name.startswith("ckpt-") for name in final), (left, final)
    if trial == 0:  # resuming a finished run loads it and returns the same result
        run(tmp_path / "again.npz", ckpt)
        assert_bitwise_equal(load(tmp_path / "again.npz"), reference[0])
