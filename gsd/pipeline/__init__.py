"""The pipeline's stages by name: each module has `run(config, workdir)` plus `models(config)` for shape checks."""

from __future__ import annotations

import importlib
import pathlib

# Stage name -> module (module name = stage name); imported lazily so a run only loads what it asks for.
STAGES = (
    'samples',
    'train_gan',
    'shots',
    'fewshot',
    'segment',
    'autoshot_data',
    'autoshot',
    'autoshot_segment',
    'report',
)


def get(name: str):
    if name not in STAGES:
        raise ValueError(f'unknown stage {name!r}; known: {", ".join(STAGES)}')
    return importlib.import_module(f'gsd.pipeline.{name}')


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
