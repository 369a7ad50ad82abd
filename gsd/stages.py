"""The pipeline's stages by name: each is `run(config, workdir)` plus `models(config)` for shape checks."""

from __future__ import annotations

import contextlib
import importlib
import pathlib
import signal

# Stage name -> module; imported lazily so a run only loads what its config asks for.
STAGES = {
    'samples': 'gsd.sampling',
    'train_gan': 'gsd.train_gan',
    'shots': 'gsd.shots',
    'fewshot': 'gsd.fewshot',
    'segment': 'gsd.segment',
    'autoshot_data': 'gsd.synthetic',
    'autoshot': 'gsd.autoshot',
    'autoshot_segment': 'gsd.autoshot_segment',
    'report': 'gsd.report',
}


def get(name: str):
    if name not in STAGES:
        raise ValueError(f'unknown stage {name!r}; known: {", ".join(STAGES)}')
    return importlib.import_module(STAGES[name])


def names(value) -> list[str]:
    """A tuple field given on the command line as `--config.stages=a,b` arrives as ('a,b',) or 'a,b':
    split it into ['a', 'b'] (used for stages and report.methods)."""
    items = [value] if isinstance(value, str) else list(value)
    return [n.strip() for item in items for n in str(item).split(',') if n.strip()]


def run_all(config, workdir) -> dict:
    """Run config.stages in order; returns {stage: its result}."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    return {name: get(name).run(config, workdir) for name in names(config.stages)}


# SIGTERM (a preempted Cloud TPU VM, `kill`, a scheduler's timeout). Python's default dies on the spot:
# no `finally`, so grain's worker processes were left running as orphans. Raising SystemExit unwinds the
# stack instead, but raised inside an orbax save it breaks the save's commit; so while a training loop
# runs inside `stoppable()` the signal only sets a flag, and the loop stops at its next step boundary.
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
