"""Run metrics: TensorBoard event files, a JSON-lines log, and a progress line with rate and ETA.

clu's metric writers and periodic actions import TensorFlow at import time, which gsd never
installs, so this writer keeps clu's MetricWriter call shapes (`write_scalars(step, dict)`,
`write_images(step, dict)`, `write_hparams(dict)`, `flush()`) on top of tensorboardX, which writes
the same TensorBoard event files with protobuf alone. Only process 0 writes.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time
from typing import Mapping

import jax
import numpy as np


class MetricWriter:
    """TensorBoard events under `logdir` plus `logdir/metrics.jsonl` (one JSON object per write)."""

    def __init__(self, logdir, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.logdir = pathlib.Path(logdir)
        self._tb = None
        if self.enabled:
            from tensorboardX import SummaryWriter  # imported here: only the writing process needs it

            self.logdir.mkdir(parents=True, exist_ok=True)
            self._tb = SummaryWriter(str(self.logdir), flush_secs=30)
            self._jsonl = open(self.logdir / 'metrics.jsonl', 'a')

    def write_scalars(self, step: int, scalars: Mapping[str, float]):
        if not self.enabled:
            return
        values = {k: float(v) for k, v in scalars.items()}
        for k, v in values.items():
            self._tb.add_scalar(k, v, step)
        self._jsonl.write(json.dumps({'step': int(step), **values}) + '\n')

    def write_images(self, step: int, images: Mapping[str, np.ndarray]):
        """images: {tag: uint8 (H, W, 3)}."""
        if not self.enabled:
            return
        for k, v in images.items():
            self._tb.add_image(k, np.asarray(v), step, dataformats='HWC')

    def write_hparams(self, hparams: Mapping):
        if not self.enabled:
            return
        self._tb.add_text('config', '    ' + json.dumps(hparams, indent=1, default=str).replace('\n', '\n    '), 0)

    def flush(self):
        if self.enabled:
            self._tb.flush()
            self._jsonl.flush()

    def close(self):
        if self.enabled:
            self._tb.close()
            self._jsonl.close()


class Progress:
    """One line per report: step/total, rate in items/s, ETA, and the given values."""

    def __init__(self, total_steps: int, items_per_step: int, start_step: int = 0, stream=sys.stdout, name=''):
        self.total, self.items, self.name, self.stream = total_steps, items_per_step, name, stream
        self._t0, self._s0 = time.time(), start_step

    def report(self, step: int, **values) -> str:
        elapsed = time.time() - self._t0
        done = step - self._s0
        rate = done * self.items / elapsed if elapsed > 0 and done > 0 else 0.0
        eta = (self.total - step) * self.items / rate if rate > 0 else float('nan')
        parts = [f'{self.name}step {step}/{self.total}', f'{rate:.1f} img/s', f'ETA {_duration(eta)}']
        parts += [f'{k} {v:.4g}' if isinstance(v, float) else f'{k} {v}' for k, v in values.items()]
        line = ' | '.join(parts)
        if jax.process_index() == 0:
            print(line, file=self.stream, flush=True)
        return line


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return '?'
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f'{h}:{m:02d}:{s:02d}' if h else f'{m}:{s:02d}'
