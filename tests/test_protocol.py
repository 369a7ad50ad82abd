"""The research protocol: seed sets, mean +- std summaries, and a sweep over seeds that resumes."""

import json
import math
import subprocess
import sys

import pytest
from conftest import REPO

from configs import toy_1shot
from gsd import pipeline, protocol


def test_seed_sets_are_disjoint_and_parsed():
    assert not set(protocol.TEST_SEEDS) & set(protocol.VALIDATION_SEEDS)
    assert protocol.parse_seeds('test') == (0, 1, 2)
    assert protocol.parse_seeds('val') == (100, 101, 102)
    assert protocol.parse_seeds(' 4, 7 ') == (4, 7)
    for bad in ('', 'tset', '1,1', '-1', '1.5'):
        with pytest.raises(ValueError, match='--seeds'):
            protocol.parse_seeds(bad)


def test_summary_is_mean_and_population_std_per_method_and_class():
    runs = {
        0: {'a': {'mean_iou': 50.0, 'weighted_iou': 60.0, 'per_class_iou': {'bg': 90.0, 'nose': 10.0}}},
        1: {
            'a': {'mean_iou': 70.0, 'weighted_iou': 80.0, 'per_class_iou': {'bg': 94.0, 'nose': float('nan')}},
            'b': {'mean_iou': 1.0, 'weighted_iou': 2.0, 'per_class_iou': {'bg': 3.0, 'nose': 4.0}},
        },
    }
    s = protocol.summarise(runs)
    assert s['a']['mean_iou'] == {'mean': 60.0, 'std': 10.0, 'n': 2}
    assert s['a']['per_class_iou']['bg']['mean'] == 92.0 and s['a']['per_class_iou']['bg']['std'] == 2.0
    assert s['a']['per_class_iou']['nose'] == {'mean': 10.0, 'std': 0.0, 'n': 1}, 'NaN (class absent) is skipped'
    assert s['b']['seeds'] == [1] and s['a']['seeds'] == [0, 1]
    table = protocol.markdown(s, 'title')
    assert '| a | 0,1 | 60.0 +- 10.0 | 70.0 +- 10.0 | 92.0 +- 2.0 | 10.0 +- 0.0 |' in table


def test_run_seeds_writes_each_seed_and_the_summary_and_resumes(tmp_path, capsys):
    config = toy_1shot.get_config('smoke')
    config.stages = ('shots', 'fewshot', 'report')
    config.report.methods = ('rgb_baseline',)
    config.report.composite = False
    summary = pipeline.run_seeds(config, tmp_path, (0, 1))
    assert config.seed == 0, 'the config comes back with its own seed'
    per_seed = [json.loads((tmp_path / f'seed_{s}' / 'metrics.json').read_text())['rgb_baseline'] for s in (0, 1)]
    assert per_seed[0]['mean_iou'] != per_seed[1]['mean_iou'], 'each seed labels another sample and scores other images'
    values = [m['mean_iou'] for m in per_seed]
    mean = sum(values) / 2
    assert summary['rgb_baseline']['mean_iou']['mean'] == pytest.approx(mean)
    assert summary['rgb_baseline']['mean_iou']['std'] == pytest.approx(
        math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    )
    written = json.loads((tmp_path / 'summary.json').read_text())
    assert written['seeds'] == [0, 1] and written['methods']['rgb_baseline']['mean_iou']['n'] == 2
    assert '+-' in (tmp_path / 'summary.md').read_text()
    capsys.readouterr()
    pipeline.run_seeds(config, tmp_path, (0, 1))
    assert capsys.readouterr().out.count('already done with this config') == 2
    config.report.num_test = 3  # another config: the seeds run again
    pipeline.run_seeds(config, tmp_path, (1,))
    assert 'already done' not in capsys.readouterr().out


def test_cli_refuses_a_bad_seed_list_in_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'gsd.main',
            '--config=configs/toy_1shot.py:smoke',
            f'--workdir={tmp_path}',
            '--seeds=1,x',
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip().startswith('gsd: --seeds:'), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
