"""Study stage: one of the paper's studies as one command, run like a paper (mean +- std over seeds).

A study is its config's pipeline run once per *variant* and seed. The config is an ordinary run's config
(configs/toy_1shot.py's blocks) with `stages = ('study',)` and a `study` block:

* `study.variants`: one string per variant, `'name: key=value; key=value'`, the settings in which it
  differs from the config (`fewshot.groups=AB`, `shots.num=5`, `stages=report`,
  `report.methods=supervised_1shot,supervised_10shot`); values are read as the setting's own type
  (tuples comma-separated), and an unknown setting is refused before anything runs;
* `study.stages`: the pipeline stages each variant runs (a variant may override them with `stages=...`);
* `study.seeds`: 'test' (0, 1, 2), 'val' or a list; each variant runs as `--seeds` does
  (`gsd.pipeline.run_seeds`) in WORKDIR/<variant>/seed_<s>;
* `study.plot`: 'labels_curve' (Fig. 6: the supervised_<k>shot methods' mean IoU against k, with each
  variant's fewshot and autoshot as horizontal lines), 'bars' (mean IoU of every variant and method:
  Tables 1 and 7) or 'per_class' (per-class IoU of each variant's methods: Table 3).

Every variant reports with `report.projection_cache = WORKDIR/projections`, so the test images of a seed
are projected once and every head of the study segments the same projections. A variant and seed whose
run finished with the same config is kept (a killed study resumes; studies sharing a workdir share their
common variants). Writes WORKDIR/study_<name>.json (`study.name`; per variant: its settings, each method's
summary as `gsd.protocol.summarise`, seconds per seed), WORKDIR/study_<name>.md (the tables) and
WORKDIR/study_<name>.png (the plot).
"""

from __future__ import annotations

import copy
import json
import pathlib
import re
import time

import ml_collections

from gsd import errors, pipeline, protocol
from gsd.io import atomic, charts

PLOTS = ('labels_curve', 'bars', 'per_class')
_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')
_SUPERVISED = re.compile(r'^supervised_(\d+)shot$')


def models(config) -> dict:
    """Every variant's stages' models, as '<variant>/<stage>/<model>', each distinct one once (the variants of a
    study mostly share their generator, head and UNet)."""
    import jax

    out, seen = {}, set()
    for name, _, vc in _variants(config):
        for stage in pipeline.stage_names(vc):
            for model, (module, args) in pipeline.get(stage).models(vc).items():
                key = (repr(module), str(jax.tree.map(lambda a: (getattr(a, 'shape', None), str(a.dtype)), args)))
                if key not in seen:
                    seen.add(key)
                    out[f'{name}/{stage}/{model}'] = (module, args)
    return out


def parse_variant(text: str) -> tuple[str, list[tuple[str, str]]]:
    """'name: a.b=1; c=x,y' -> ('name', [('a.b', '1'), ('c', 'x,y')])."""
    name, _, rest = str(text).partition(':')
    name = name.strip()
    if not _NAME.match(name):
        raise errors.SettingError(
            f'study.variants: {text!r}: a variant is "name: key=value; ...", its name letters, digits, _ . -'
        )
    overrides = []
    for item in (s.strip() for s in rest.split(';')):
        if not item:
            continue
        key, eq, value = item.partition('=')
        if not eq or not key.strip():
            raise errors.SettingError(f'study.variants: {name}: {item!r} is not key=value')
        overrides.append((key.strip(), value.strip()))
    return name, overrides


def _value(text: str, current, where: str):
    """`text` read as the type of the setting's current value."""
    try:
        if isinstance(current, bool):
            if text.lower() not in ('true', 'false', '1', '0'):
                raise ValueError(text)
            return text.lower() in ('true', '1')
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, (tuple, list)):
            items = [t.strip() for t in text.split(',') if t.strip()]
            kind = type(current[0]) if len(current) else None
            if kind in (int, float):
                return tuple(kind(t) for t in items)
            if kind is None:
                return tuple(int(t) if t.lstrip('-').isdigit() else t for t in items)
            return tuple(items)
        if current is None or isinstance(current, str):
            return text
    except ValueError:
        raise errors.SettingError(f'study.variants: {where}: {text!r} is not a {type(current).__name__}') from None
    raise errors.SettingError(f'study.variants: {where}: a {type(current).__name__} setting cannot be overridden')


def variant_config(config, overrides, name: str = '?') -> ml_collections.ConfigDict:
    """A deep copy of `config` (field references kept, so seed-derived settings follow the seed) with
    stages = study.stages and the overrides applied; the `study` stage itself is refused in it."""
    c = copy.deepcopy(config)
    with c.unlocked():
        # Not recorded in the variant's runs: studies that share a variant share its runs.
        del c['study']
    c.stages = tuple(pipeline.names(config.study.stages))
    for key, text in overrides:
        *parents, leaf = key.split('.')
        node = c
        for p in parents:
            if not isinstance(node, ml_collections.ConfigDict) or p not in node:
                raise errors.SettingError(f'study.variants: {name}: no setting {key!r} in this config')
            node = node[p]
        if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
            raise errors.SettingError(f'study.variants: {name}: no setting {key!r} in this config')
        node[leaf] = _value(text, node[leaf], f'{name}: {key}')
    if 'study' in pipeline.names(c.stages):
        raise errors.SettingError(f'study.variants: {name}: a variant cannot run the study stage itself')
    return c


def _variants(config) -> list[tuple[str, list, ml_collections.ConfigDict]]:
    out, seen = [], set()
    for text in config.study.variants:
        name, overrides = parse_variant(text)
        if name in seen:
            raise errors.SettingError(f'study.variants: two variants named {name!r}')
        seen.add(name)
        out.append((name, overrides, variant_config(config, overrides, name)))
    if not out:
        raise errors.SettingError('study.variants: none given')
    return out


def check(config) -> None:
    """The study's own settings, then every variant's stages and their checks, before anything runs."""
    cfg = config.study
    if not _NAME.match(str(cfg.name)):
        raise errors.SettingError(f'study.name: {cfg.name!r} must be letters, digits, _ . - (it names the outputs)')
    if cfg.plot not in PLOTS:
        raise errors.SettingError(f'study.plot: must be one of {", ".join(PLOTS)}, got {cfg.plot!r}')
    protocol.parse_seeds(str(cfg.seeds))
    for name, _, vc in _variants(config):
        for stage in pipeline.stage_names(vc):
            module = pipeline.get(stage)
            if hasattr(module, 'check'):
                try:
                    module.check(vc)
                except errors.SettingError as e:
                    raise errors.SettingError(f'study.variants: {name}: {e}') from None


def run(config: ml_collections.ConfigDict, workdir) -> dict:
    workdir = pathlib.Path(workdir)
    cfg = config.study
    seeds = protocol.parse_seeds(str(cfg.seeds))
    variants = _variants(config)
    results = {}
    for i, (name, overrides, vc) in enumerate(variants):
        vc.report.projection_cache = str(workdir / 'projections')
        print(f'study: variant {name} ({i + 1} of {len(variants)}) on seeds {",".join(map(str, seeds))}', flush=True)
        t0 = time.time()
        summary = pipeline.run_seeds(vc, workdir / name, seeds)
        seconds = {}
        for s in seeds:
            try:
                seconds[s] = json.loads((workdir / name / f'seed_{s}' / 'seed_run.json').read_text()).get('seconds')
            except (OSError, ValueError):
                seconds[s] = None
        results[name] = {
            'overrides': dict(overrides),
            'shots': int(vc.shots.num),
            'methods': summary,
            'seconds_per_seed': seconds,
            'seconds_this_run': round(time.time() - t0, 1),
        }
    out = {'title': cfg.title, 'seeds': list(seeds), 'plot': cfg.plot, 'variants': results}
    if cfg.plot == 'labels_curve':
        out['labels_to_match'] = labels_to_match(results)
    stem = workdir / f'study_{cfg.name}'  # studies may share a workdir (and their common variants' runs)
    atomic.write_json(stem.with_suffix('.json'), out)
    atomic.write_text(stem.with_suffix('.md'), markdown(out))
    draw(out, stem.with_suffix('.png'))
    print(markdown(out), flush=True)
    return out


def _mean(stat) -> float:
    return stat['mean'] if stat and stat.get('n') else float('nan')


def _std(stat) -> float:
    return stat['std'] if stat and stat.get('n') else float('nan')


def supervised_curve(results: dict) -> list[tuple[int, dict]]:
    """[(k, summary of supervised_<k>shot)] over all variants, by k."""
    curve = {}
    for v in results.values():
        for m, s in v['methods'].items():
            hit = _SUPERVISED.match(m)
            if hit:
                curve[int(hit.group(1))] = s
    return sorted(curve.items())


def _references(results: dict) -> list[tuple[str, dict]]:
    """[('fewshot, 1 shot', summary), ...]: the GAN methods of every variant, labelled by its shot count."""
    refs = []
    for v in results.values():
        for m in ('fewshot', 'autoshot'):
            if m in v['methods']:
                refs.append((f'{m}, {v["shots"]} shot{"s" if v["shots"] > 1 else ""}', v['methods'][m]))
    return refs


def labels_to_match(results: dict) -> dict:
    """For each GAN method's line: the fewest real labels with which the supervised UNet's mean IoU reaches
    its mean (None: none of the counts run does)."""
    curve = supervised_curve(results)
    return {
        label: next((k for k, s in curve if _mean(s['mean_iou']) >= _mean(ref['mean_iou'])), None)
        for label, ref in _references(results)
    }


def _pm(stat) -> str:
    return '-' if not stat or not stat.get('n') else f'{stat["mean"]:.1f} +- {stat["std"]:.1f}'


def markdown(study: dict) -> str:
    """study_<name>.md: every variant's methods (mean IoU, weighted IoU, per class) and the study's own summary."""
    seeds = ', '.join(map(str, study['seeds']))
    lines = [f'## {study["title"]}', '', f'Mean +- std over seeds {seeds}; IoU in percent; mean IoU over all classes.']
    lines.append('')
    classes: list[str] = []
    for v in study['variants'].values():
        for s in v['methods'].values():
            classes = classes or list(s['per_class_iou'])
    head = ['variant', 'method', 'mean IoU', 'weighted IoU (parts)'] + classes
    lines += [f'| {" | ".join(head)} |', '|' + '---|' * len(head)]
    for name, v in study['variants'].items():
        for m, s in v['methods'].items():
            cells = [name, m, _pm(s['mean_iou']), _pm(s['weighted_iou'])]
            cells += [_pm(s['per_class_iou'].get(c)) for c in classes]
            lines.append(f'| {" | ".join(cells)} |')
    lines += ['', '| variant | settings | seconds per seed (2-core CPU) |', '|---|---|---|']
    for name, v in study['variants'].items():
        settings = '; '.join(f'{k}={x}' for k, x in v['overrides'].items()) or '(the config as it is)'
        secs = ', '.join('-' if t is None else f'{t:.0f}' for t in v['seconds_per_seed'].values())
        lines.append(f'| {name} | `{settings}` | {secs} |')
    if 'labels_to_match' in study:
        counts = sorted(
            {int(m.group(1)) for v in study['variants'].values() for m in map(_SUPERVISED.match, v['methods']) if m}
        )
        run = ', '.join(map(str, counts))
        lines += ['']
        for label, k in study['labels_to_match'].items():
            said = f'{k} real labels' if k is not None else 'more real labels than any count run'
            lines.append(f'- The supervised UNet needs {said} to match {label} (the fewest of the counts run: {run}).')
    return '\n'.join(lines) + '\n'


def draw(study: dict, path) -> None:
    """study_<name>.png for the study's `plot`."""
    variants = study['variants']
    title = f'{study["title"]} (mean +- std, seeds {",".join(map(str, study["seeds"]))})'
    if study['plot'] == 'labels_curve':
        curve = supervised_curve(variants)
        if not curve:
            raise errors.SettingError('study.plot: labels_curve needs supervised_<k>shot methods in report.methods')
        refs = _references(variants)
        charts.line_chart(
            path,
            title=title,
            x_label='real labelled images (supervised UNet)',
            y_label='mean IoU (%)',
            curves=[
                (
                    'supervised UNet',
                    [k for k, _ in curve],
                    [_mean(s['mean_iou']) for _, s in curve],
                    [_std(s['mean_iou']) for _, s in curve],
                )
            ],
            hlines=[(label, _mean(s['mean_iou']), _std(s['mean_iou'])) for label, s in refs],
        )
    elif study['plot'] == 'bars':
        methods = list(dict.fromkeys(m for v in variants.values() for m in v['methods']))
        charts.bar_chart(
            path,
            title=title,
            y_label='mean IoU (%)',
            groups=list(variants),
            series=[
                (
                    m,
                    [_mean(v['methods'].get(m, {}).get('mean_iou')) for v in variants.values()],
                    [_std(v['methods'].get(m, {}).get('mean_iou')) for v in variants.values()],
                )
                for m in methods
            ],
        )
    else:  # per_class: one group per class, one bar per (variant, method)
        series, classes = [], []
        for name, v in variants.items():
            for m, s in v['methods'].items():
                classes = classes or list(s['per_class_iou'])
                label = m if len(variants) == 1 else f'{name} {m}'
                per = s['per_class_iou']
                series.append((label, [_mean(per.get(c)) for c in classes], [_std(per.get(c)) for c in classes]))
        charts.bar_chart(path, title=title, y_label='IoU (%)', groups=classes, series=series)
