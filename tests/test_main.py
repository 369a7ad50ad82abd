"""The command line runs a config's stages end to end (smoke variant) and writes what WORKSPACE.md says."""

import json
import subprocess
import sys

import numpy as np
from conftest import REPO
from PIL import Image


def test_samples_smoke_run(tmp_path):
    cmd = [
        sys.executable,
        '-m',
        'gsd.main',
        '--config=configs/samples.py:smoke',
        f'--workdir={tmp_path}',
        '--config.seed=3',
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    grid = np.asarray(Image.open(tmp_path / 'samples' / 'grid.png'))
    assert grid.shape == (2 * 16 + 2, 2 * 16 + 2, 3)
    latents = np.load(tmp_path / 'samples' / 'latents.npz')
    assert latents['z'].shape == (4, 32) and latents['ws'].shape == (4, 6, 32)
    summary = json.loads((tmp_path / 'samples' / 'summary.json').read_text())
    assert summary['num'] == 4 and summary['resolution'] == 16
    # The seed drives the samples: the same seed reproduces them, another changes them.
    again = tmp_path / 'again'
    subprocess.run(
        cmd[:-2] + [f'--workdir={again}', '--config.seed=3'], cwd=REPO, check=True, timeout=300, capture_output=True
    )
    np.testing.assert_array_equal(np.load(again / 'samples' / 'latents.npz')['z'], latents['z'])


def test_missing_workdir_flag_is_a_usage_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, '-m', 'gsd.main', '--config=configs/samples.py:smoke'],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and 'workdir' in proc.stderr


def test_toy_1shot_smoke_run(tmp_path):
    """README's main job in its :smoke form, through the command line, on the shipped toy generator."""
    cmd = [sys.executable, '-m', 'gsd.main', '--config=configs/toy_1shot.py:smoke', f'--workdir={tmp_path}']
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / 'metrics.json').read_text())
    assert set(metrics) == {'fewshot', 'rgb_baseline', 'supervised_10shot', 'autoshot'}
    for values in metrics.values():
        assert 0 <= values['mean_iou'] <= 100 and 0 <= values['weighted_iou'] <= 100
    labels = np.asarray(Image.open(tmp_path / 'shots' / 'labels' / '00000.png'))
    assert len(np.unique(labels)) == 7, 'the toy annotator labels every class of an accepted sample'
    assert (tmp_path / 'report.html').exists() and (tmp_path / 'eval' / 'fewshot' / 'pred' / '00003.png').exists()
    assert (tmp_path / 'eval' / 'autoshot' / 'pred' / '00003.png').exists()
    composite = np.asarray(Image.open(tmp_path / 'eval' / 'composite' / 'autoshot_pred.png'))
    assert composite.shape == (128, 192), 'the auto-shot UNet segments the 192x128 composite at its own size'
    assert 'composite/overlay_autoshot.png' in (tmp_path / 'report.html').read_text()
    # A rerun keeps what is done (shots, heads, the dataset) and resumes the rest.
    again = subprocess.run(
        cmd + ['--config.stages=shots,fewshot,autoshot_data'], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count('kept') == 3, again.stdout


def test_sigterm_stops_training_loops_at_a_step_boundary():
    import os
    import signal

    import pytest

    from gsd.training import stop as stages

    previous = signal.getsignal(signal.SIGTERM)
    stages.handle_sigterm()
    try:
        finished = []
        with pytest.raises(SystemExit) as stop:
            with stages.stoppable(finish=lambda: finished.append(True)):
                stages.check_stop('loop')  # nothing asked yet: the loop goes on
                os.kill(os.getpid(), signal.SIGTERM)  # inside the loop only a flag is set ...
                finished.append(False)
                stages.check_stop('loop')  # ... and the loop stops at its next check
        assert stop.value.code == 128 + signal.SIGTERM
        assert finished == [False, True]  # `finish` ran on the way out
        stages._stop_requested = False
        with pytest.raises(SystemExit):  # outside a loop the signal ends the process at once
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        stages._stop_requested = False
        signal.signal(signal.SIGTERM, previous)
