"""Studies (gsd.pipeline.study): variants as overrides of a run's config, run per seed, tables and charts."""

import importlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from gsd import errors, stylegan2
from gsd.io import charts
from gsd.pipeline import study

STUDIES = ('study_labels', 'study_layers', 'study_heads', 'study_autoshot')


def load(name, arg=None):
    return importlib.import_module(f'configs.{name}').get_config(arg)


def test_variants_are_overrides_of_the_config_with_its_seed_references_kept():
    config = load('study_layers')
    name, overrides = study.parse_variant('AB: fewshot.groups=AB; report.methods=fewshot,rgb_baseline; shots.num=5')
    assert name == 'AB'
    vc = study.variant_config(config, overrides, name)
    assert vc.fewshot.groups == 'AB' and vc.shots.num == 5
    assert vc.report.methods == ('fewshot', 'rgb_baseline')
    assert tuple(vc.stages) == ('shots', 'fewshot', 'report') and 'study' not in vc
    vc.seed = 7  # run_seeds sets the seed: the seed-derived test set follows it
    assert vc.report.test_seed == 2_000_007 and config.report.test_seed == 2_000_000
    assert config.fewshot.groups == '' and config.stages == ('study',)


@pytest.mark.parametrize(
    'text, match',
    [
        ('x: fewshot.no_such=1', "no setting 'fewshot.no_such'"),
        ('x: shots.num=five', "'five' is not a int"),
        ('x: stages=study', 'cannot run the study stage'),
        ('bad name: shots.num=1', 'a variant is'),
        ('x: shots.num', 'is not key=value'),
    ],
)
def test_bad_variants_are_refused_naming_the_setting(text, match):
    config = load('study_layers')
    with pytest.raises(errors.SettingError, match=match):
        name, overrides = study.parse_variant(text)
        study.variant_config(config, overrides, name)


@pytest.mark.parametrize('name', STUDIES)
def test_every_study_passes_its_checks(name):
    config = load(name)
    study.check(config)  # every variant's stage checks; test_configs builds their models


def test_bad_plot_and_duplicate_variants_are_refused():
    config = load('study_layers', 'smoke')
    config.study.plot = 'pie'
    with pytest.raises(errors.SettingError, match='study.plot'):
        study.check(config)
    config = load('study_layers', 'smoke')
    config.study.variants = ('A: fewshot.groups=A', 'A: fewshot.groups=B')
    with pytest.raises(errors.SettingError, match="two variants named 'A'"):
        study.check(config)


def _summary(mean, std=1.0):
    stat = {'mean': mean, 'std': std, 'n': 3}
    return {'seeds': [0, 1, 2], 'mean_iou': stat, 'weighted_iou': stat, 'per_class_iou': {'skin': stat, 'nose': stat}}


def test_labels_to_match_table_and_charts(tmp_path):
    variants = {
        'supervised': {
            'overrides': {'stages': 'report'},
            'shots': 1,
            'methods': {f'supervised_{k}shot': _summary(m) for k, m in ((1, 40.0), (10, 70.0), (50, 86.0))},
            'seconds_per_seed': {'0': 10.0},
        },
        'mlp_1shot': {
            'overrides': {},
            'shots': 1,
            'methods': {'fewshot': _summary(80.0), 'autoshot': _summary(95.0)},
            'seconds_per_seed': {'0': 20.0},
        },
    }
    assert study.labels_to_match(variants) == {'fewshot, 1 shot': 50, 'autoshot, 1 shot': None}
    doc = study.markdown(
        {'title': 'T', 'seeds': [0, 1, 2], 'variants': variants, 'labels_to_match': {'fewshot, 1 shot': 50}}
    )
    assert '| mlp_1shot | fewshot | 80.0 +- 1.0 |' in doc
    assert 'needs 50 real labels to match fewshot, 1 shot (the fewest of the counts run: 1, 10, 50)' in doc
    for plot in study.PLOTS:
        path = tmp_path / f'{plot}.png'
        study.draw({'title': 'T', 'seeds': [0, 1, 2], 'plot': plot, 'variants': variants}, path)
        with Image.open(path) as im:
            assert im.size == (900, 520) and len(np.unique(np.asarray(im.convert('RGB')).reshape(-1, 3), axis=0)) > 5


def test_bar_chart_refuses_nothing_to_draw(tmp_path):
    with pytest.raises(ValueError):
        charts.bar_chart(tmp_path / 'x.png', title='t', y_label='y', groups=[], series=[])


def test_a_study_runs_each_variant_per_seed_and_resumes(tmp_path, capsys):
    g = stylegan2.Generator(16, stylegan2.channels_nvidia(16, 64, 16), z_dim=16, w_dim=16, n_mlp=2)
    stylegan2.save(tmp_path / 'g', {'G_ema': (g, jax.jit(g.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16))))})
    config = load('study_labels', 'smoke')
    config.generator.checkpoint = str(tmp_path / 'g')
    config.report.num_test = 2
    config.study.variants = (
        'two: stages=report; report.methods=supervised_1shot; report.num_shown=1',
        'three: stages=report; report.methods=supervised_1shot; report.num_shown=2',
    )
    work = tmp_path / 'study'
    out = study.run(config, work)
    assert list(out['variants']) == ['two', 'three']
    for v in ('two', 'three'):
        assert (work / v / 'seed_0' / 'metrics.json').exists()
        assert out['variants'][v]['methods']['supervised_1shot']['seeds'] == [0]
    saved = json.loads((work / 'study_labels.json').read_text())
    assert saved['labels_to_match'] == {}
    assert (work / 'study_labels.png').exists() and (work / 'study_labels.md').exists()
    capsys.readouterr()
    study.run(config, work)  # a finished study: every run kept, nothing trained again
    assert capsys.readouterr().out.count('already done with this config') == 2
