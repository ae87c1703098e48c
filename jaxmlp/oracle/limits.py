"""A time limit for the student's code the oracle calls, so that an endless loop fails its
configuration instead of hanging an autograder.

The limit is a POSIX interval timer (`signal.setitimer`) whose SIGALRM raises
`TimeLimitExceeded` in the code that is running: it interrupts Python loops and returns
between NumPy calls, but one long C call (a huge matrix product) finishes first.  Signals
reach only the main thread, so off the main thread, or where `signal.setitimer` does not
exist (Windows), the code runs without a limit; run untrusted code in a separate process
with its own limits (the `jaxmlp check` command is one).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Optional

__all__ = ["TimeLimitExceeded", "time_limit", "can_limit"]


class TimeLimitExceeded(TimeoutError):
    """The student's function ran past its time limit."""


def can_limit() -> bool:
    """Whether `time_limit` can interrupt code here (POSIX, main thread)."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def time_limit(seconds: Optional[float], what: str = "your function"):
    """Raises `TimeLimitExceeded` in the body once it has run `seconds` (None: no limit)."""
    if seconds is None or not can_limit():
        yield
        return

    def fire(signum, frame):
        raise TimeLimitExceeded(f"{what} ran past the time limit of {seconds:g} s "
                                f"(an endless loop?)")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
