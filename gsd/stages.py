"""The pipeline's stages by name: each is `run(config, workdir)` plus `models(config)` for shape checks."""

from __future__ import annotations

import importlib
import pathlib

# Stage name -> module; imported lazily so a run only loads what its config asks for.
STAGES = {
    'samples': 'gsd.sampling',
    'train_gan': 'gsd.train_gan',
    'shots': 'gsd.shots',
    'fewshot': 'gsd.fewshot',
    'segment': 'gsd.segment',
    'report': 'gsd.report',
}


def get(name: str):
    if name not in STAGES:
        raise ValueError(f'unknown stage {name!r}; known: {", ".join(STAGES)}')
    return importlib.import_module(STAGES[name])


def run_all(config, workdir) -> dict:
    """Run config.stages in order; returns {stage: its result}."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    return {name: get(name).run(config, workdir) for name in config.stages}
