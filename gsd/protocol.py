"""The research protocol: which seeds choices are tuned on, which ones are reported, and how runs are summed up.

Every random choice of a run follows `config.seed`: which generated sample is labelled, the heads' and
UNets' initialisation, projection noise, and (in the toy world) which real images are the test and
supervised sets (`report.test_seed = seed + 2_000_000`, `report.supervised_seed = seed + 3_000_000`). So
a seed is a whole repetition of the experiment, and two seed sets split the work as a paper must:

* `VALIDATION_SEEDS` (100, 101, 102): every setting gsd ships was chosen on these (their runs label
  other samples and score other real images);
* `TEST_SEEDS` (0, 1, 2): what the README, docs/studies.md and the issue notes report, never tuned on.

A figure is the mean +- std (population std, ddof 0, over the seeds, as SLiMe and DatasetGAN report) of
mean IoU over all classes, with weighted IoU and per-class IoU beside it:

    python -m gsd.main --config=configs/toy_1shot.py --workdir=DIR --seeds=test

runs the config once per seed in DIR/seed_N and writes DIR/summary.json and DIR/summary.md
(`summarise`, `markdown`).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

VALIDATION_SEEDS = (100, 101, 102)
TEST_SEEDS = (0, 1, 2)
SEED_SETS = {'val': VALIDATION_SEEDS, 'test': TEST_SEEDS}


def parse_seeds(text: str) -> tuple[int, ...]:
    """'test' | 'val' | '0,1,2' -> seeds; anything else is a ValueError naming --seeds."""
    text = text.strip()
    if text in SEED_SETS:
        return SEED_SETS[text]
    try:
        seeds = tuple(int(s) for s in text.split(',') if s.strip())
    except ValueError:
        seeds = ()
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(
            f"--seeds: {text!r} is not 'test' {TEST_SEEDS}, 'val' {VALIDATION_SEEDS} or distinct integers >= 0 "
            f'separated by commas'
        )
    return seeds


def _mean_std(values: Sequence[float]) -> dict:
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {'mean': float('nan'), 'std': float('nan'), 'n': 0}
    mean = sum(finite) / len(finite)
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite))
    return {'mean': mean, 'std': std, 'n': len(finite)}


def summarise(metrics_by_seed: Mapping[int, Mapping[str, Mapping]]) -> dict:
    """{seed: metrics.json of that seed's report} -> {method: {'mean_iou': {mean, std, n}, 'weighted_iou': ...,
    'per_class_iou': {class: {mean, std, n}}, 'seeds': [...]}}. A method missing from a seed's report
    is summed over the seeds that have it (its `seeds` say which)."""
    methods: dict = {}
    for seed in sorted(metrics_by_seed):
        for name, m in metrics_by_seed[seed].items():
            methods.setdefault(name, []).append((seed, m))
    out = {}
    for name, runs in methods.items():
        classes = list(runs[0][1].get('per_class_iou', {}))
        out[name] = {
            'seeds': [s for s, _ in runs],
            'mean_iou': _mean_std([m['mean_iou'] for _, m in runs]),
            'weighted_iou': _mean_std([m['weighted_iou'] for _, m in runs]),
            'per_class_iou': {c: _mean_std([m['per_class_iou'].get(c) for _, m in runs]) for c in classes},
        }
    return out


def _pm(stat: Mapping) -> str:
    return '-' if not stat['n'] else f'{stat["mean"]:.1f} +- {stat["std"]:.1f}'


def markdown(summary: Mapping, title: str = '') -> str:
    """A table, one row per method: mean IoU, weighted IoU (parts) and every class's IoU, mean +- std."""
    if not summary:
        return f'{title}\n\n(no methods)\n' if title else '(no methods)\n'
    classes = list(next(iter(summary.values()))['per_class_iou'])
    head = ['method', 'seeds', 'mean IoU', 'weighted IoU (parts)'] + classes
    lines = [f'| {" | ".join(head)} |', '|' + '---|' * len(head)]
    for name, s in summary.items():
        cells = [name, ','.join(map(str, s['seeds'])), _pm(s['mean_iou']), _pm(s['weighted_iou'])]
        cells += [_pm(s['per_class_iou'].get(c, {'n': 0})) for c in classes]
        lines.append(f'| {" | ".join(cells)} |')
    text = '\n'.join(lines) + '\n'
    return f'{title}\n\n{text}' if title else text
