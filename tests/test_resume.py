"""Kill-and-resume: a run killed with SIGKILL at random moments and resumed ends bitwise
equal to an uninterrupted run; two separate processes with one seed agree bitwise."""
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
WORKER = str(ROOT / "tests" / "resume_worker.py")
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run(*args, timeout=240):
    proc = subprocess.run([sys.executable, WORKER, *map(str, args)], env=ENV,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]


def load(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "ref.npz"
    run(path)
    return load(path)


def test_two_processes_same_seed_bitwise_identical(reference, tmp_path):
    run(tmp_path / "again.npz")
    assert_bitwise_equal(load(tmp_path / "again.npz"), reference)


@pytest.mark.parametrize("trial", range(3))
def test_sigkill_at_random_moment_then_resume_is_bitwise_identical(reference, tmp_path, trial):
    ckpt = tmp_path / "ckpt"
    proc = subprocess.Popen([sys.executable, WORKER, str(tmp_path / "x.npz"), str(ckpt),
                             "--slow"], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(random.Random(1000 + trial).uniform(1.5, 3.0))  # import, compile, train, save
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = sorted(p.name for p in ckpt.glob(".*")) + sorted(p.name for p in ckpt.glob("*"))
    run(tmp_path / "resumed.npz", ckpt)
    assert_bitwise_equal(load(tmp_path / "resumed.npz"), reference)
    # at most `keep` = 2 checkpoints, and the killed save's temp file is gone
    final = sorted(p.name for p in ckpt.glob(".*")) + sorted(p.name for p in ckpt.glob("*"))
    assert len(final) <= 2 and all(name.startswith("ckpt-") for name in final), (left, final)
    if trial == 0:  # resuming a finished run loads it and returns the same result
        run(tmp_path / "again.npz", ckpt)
        assert_bitwise_equal(load(tmp_path / "again.npz"), reference)
