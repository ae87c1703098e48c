"""The suite's background lane: jobs that run in subprocesses, one after another, on the
second core while pytest runs the in-process tests on the first.

Each job is a function that starts its subprocess(es), waits, and returns what its tests
assert on.  conftest submits the jobs of the selected test files right after collection,
in the order the files need them; a test's fixture then calls `result(name)`, which
waits for that job (and submits it first if collection did not, e.g. under `-k`).
A job that raised re-raises in every test that asks for it.

The lane thread only waits on child processes, so it costs pytest's process nothing; the
children get the core that pytest is not using.
"""
import concurrent.futures
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_pool = None
_futures = {}
_tmp = None


def env(**drop_or_set):
    """os.environ with the checkout on PYTHONPATH (and keys set, or dropped with None)."""
    out = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    for k, v in drop_or_set.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def folder(name):
    """A fresh folder for job `name` under the session's base temp folder."""
    path = Path(_tmp) / "lane" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def run(argv, *, timeout=600, **kw):
    """subprocess.run with captured text output; raises with the tail of stderr on failure."""
    proc = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited with {proc.returncode}:\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


# --------------------------------------------------------------------------- the jobs

# The smoke run covers W1 only: W2 and W3 run the same code paths with other shapes, and
# compiling their steps, fits and GEMMs would triple its time on 2 cores.
BENCHMARK_WORKLOADS = ("W1",)


def benchmark_quick():
    """scripts/benchmark.py --quick on BENCHMARK_WORKLOADS, in a fresh JAX with its
    default flags."""
    out = folder("benchmark") / "bench.json"
    proc = run([ROOT / "scripts" / "benchmark.py", "--quick", "--workloads",
                ",".join(BENCHMARK_WORKLOADS), "--json", out],
               cwd=ROOT, env=env(JAX_ENABLE_X64=None, XLA_FLAGS=None))
    return out.read_text(), proc.stdout


def matrix():
    """tests/matrix.py: the declared matrix, manual δ vs jax.grad, eager."""
    out = folder("matrix") / "matrix.json"
    run(["-m", "tests.matrix", out], cwd=ROOT, env=env(), timeout=900)
    return out.read_text()


def parallel():
    """tests/parallel_worker.py on 4 forced host devices; its last stdout line is JSON."""
    proc = run([ROOT / "tests" / "parallel_worker.py"], env=env(), timeout=300)
    return proc.stdout.strip().splitlines()[-1]


RESUME_WORKER = ROOT / "tests" / "resume_worker.py"
RESUME_TRIALS = 3


def resume_reference():
    """An uninterrupted run, and a second process with the same seed."""
    base = folder("resume-reference")
    run([RESUME_WORKER, base / "ref.npz"], env=env(), timeout=240)
    run([RESUME_WORKER, base / "again.npz"], env=env(), timeout=240)
    return base / "ref.npz", base / "again.npz"


def resume_trial(trial):
    """A --slow run killed with SIGKILL at a random moment after its first checkpoint
    (mid-training or mid-save), then resumed; trial 0 also resumes the finished run."""
    base = folder(f"resume-trial{trial}")
    ckpt = base / "ckpt"
    proc = subprocess.Popen([sys.executable, str(RESUME_WORKER), str(base / "x.npz"),
                             str(ckpt), "--slow"], env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while (time.monotonic() < deadline and proc.poll() is None
           and not any(ckpt.glob("ckpt-*"))):
        time.sleep(0.01)
    # the worker sleeps 20 ms an epoch and 20 ms a save: 24 epochs last ≳ 1 s
    time.sleep(random.Random(1000 + trial).uniform(0.0, 0.6))
    killed_running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = sorted(p.name for p in ckpt.glob(".*")) + sorted(p.name for p in ckpt.glob("*"))
    run([RESUME_WORKER, base / "resumed.npz", ckpt], env=env(), timeout=240)
    final = sorted(p.name for p in ckpt.glob(".*")) + sorted(p.name for p in ckpt.glob("*"))
    again = None
    if trial == 0:
        again = base / "again.npz"
        run([RESUME_WORKER, again, ckpt], env=env(), timeout=240)
    return dict(resumed=base / "resumed.npz", again=again, left=left, final=final,
                killed_running=killed_running)


JOBS = {
    "benchmark_quick": benchmark_quick,
    "matrix": matrix,
    "parallel": parallel,
    "resume_reference": resume_reference,
    **{f"resume_trial{t}": (lambda t=t: resume_trial(t)) for t in range(RESUME_TRIALS)},
}
# which test files need which jobs, in the order the files run
NEEDS = {
    "test_benchmark": ["benchmark_quick"],
    "test_matrix": ["matrix"],
    "test_parallel": ["parallel"],
    "test_resume": ["resume_reference"] + [f"resume_trial{t}" for t in range(RESUME_TRIALS)],
}


def start(tmp_folder, module_names=None):
    """Submits the jobs that the given test modules need (all when None), in order."""
    global _pool, _tmp
    if _tmp is None:
        _tmp = str(tmp_folder)
    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="test-lane")
    for module, names in NEEDS.items():
        if module_names is None or module in module_names:
            for name in names:
                if name not in _futures:
                    _futures[name] = _pool.submit(JOBS[name])


def result(name, tmp_folder):
    """The return value of job `name` (waits for it; submits it if nobody did)."""
    start(tmp_folder, module_names=())
    if name not in _futures:
        _futures[name] = _pool.submit(JOBS[name])
    return _futures[name].result()


def stop():
    """Cancels the jobs that have not started (the running one finishes): at the end of a
    session that stopped early (-x, Ctrl-C), nobody is waiting for them any more."""
    if _pool is not None:
        _pool.shutdown(wait=False, cancel_futures=True)
