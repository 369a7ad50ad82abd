"""SIGTERM for long runs: training loops stop at a step boundary, everything else unwinds.

A preempted Cloud TPU VM, `kill` or a scheduler's timeout sends SIGTERM. Python's default dies on the
spot: no `finally`, so grain's worker processes were left running as orphans. Raising SystemExit
unwinds the stack instead, but raised inside an orbax save it breaks the save's commit; so while a
training loop runs inside `stoppable()` the signal only sets a flag, and the loop stops at its next
step boundary.
"""

from __future__ import annotations

import contextlib
import signal

_stoppable_depth = 0
_stop_requested = False


def _on_sigterm(signum, frame):
    global _stop_requested
    if _stoppable_depth:
        _stop_requested = True
    else:
        raise SystemExit(128 + signum)


def handle_sigterm() -> None:
    """Install the handler (main thread only; the command line does this)."""
    signal.signal(signal.SIGTERM, _on_sigterm)


@contextlib.contextmanager
def stoppable(finish=None):
    """A block (a training loop) that polls `check_stop()` between steps; `finish` (e.g. the checkpoint
    manager's wait_until_finished) runs on the way out however the block ends, so an async save in
    flight commits before a stop, an error or Ctrl-C ends the process."""
    global _stoppable_depth
    _stoppable_depth += 1
    try:
        yield
    finally:
        _stoppable_depth -= 1
        if finish is not None:
            finish()


def check_stop(name: str) -> None:
    """Raise SystemExit(143) if SIGTERM arrived; the caller's `finally` lets in-flight saves commit."""
    if _stop_requested:
        print(f'{name}: stopping on SIGTERM; the last checkpoint resumes the run', flush=True)
        raise SystemExit(128 + signal.SIGTERM)
