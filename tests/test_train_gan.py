"""GAN training: smoke run end to end, kill-and-resume equals an uninterrupted run, reruns refused or
resumed from the previous checkpoint, the NaN guard and config errors as one line, 1 vs 8 devices."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO

SMOKE = [sys.executable, '-m', 'gsd.main', '--config=configs/toy_gan.py:smoke']


def run_cli(workdir, *extra, timeout=600):
    proc = subprocess.run(
        SMOKE + [f'--workdir={workdir}', *extra], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def exported_params(workdir):
    import jax

    from gsd import stylegan2

    _, variables = stylegan2.load(workdir / 'generator')
    return jax.tree.map(np.asarray, variables)


def assert_same_params(a, b):
    import jax

    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6, err_msg=str(path))


def run_failing(workdir, *extra, env=None):
    """A run that must end as bad input: exit status 2 and one line on stderr; returns that line."""
    proc = subprocess.run(
        SMOKE + [f'--workdir={workdir}', *extra], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('gsd: '), proc.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
    """One smoke run (6 steps, checkpoints 3 and 6), its workdir and stdout; tests that rerun in it copy it."""
    workdir = tmp_path_factory.mktemp('smoke') / 'run'
    return workdir, run_cli(workdir)


def copy_of(smoke, tmp_path):
    work = tmp_path / 'run'
    shutil.copytree(smoke[0], work)
    return work


def test_smoke_run_writes_everything(smoke):
    work, out = smoke
    assert 'gan: step 6/6' in out and 'img/s' in out and 'ETA' in out
    assert sorted(p.name for p in (work / 'samples').glob('*.png')) == ['step_0000003.png', 'step_0000006.png']
    assert (work / 'checkpoints' / '6').is_dir()
    events = list((work / 'tensorboard').glob('events.out.tfevents.*'))
    assert events and events[0].stat().st_size > 0
    rows = [json.loads(line) for line in (work / 'tensorboard' / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in rows] == [2, 4, 6] and all(np.isfinite(r['loss/G']) for r in rows)
    assert any('reg/r1_penalty' in r for r in rows) and any('reg/pl_penalty' in r for r in rows)
    params = exported_params(work)
    assert params['params']['synthesis']['b16']['conv1']['weight'].shape == (3, 3, 16, 16)


def test_kill_and_rerun_resumes_to_the_same_result(tmp_path):
    steps = ['--config.gan.total_steps=12', '--config.gan.checkpoint_every=3', '--config.gan.sample_every=100']
    straight = tmp_path / 'straight'
    run_cli(straight, *steps)

    killed = tmp_path / 'killed'
    proc = subprocess.Popen(
        SMOKE + [f'--workdir={killed}', *steps], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 300
    while not (killed / 'checkpoints' / '3').is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, 'the run ended before it could be killed: make it longer'
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / 'generator').exists()

    out = run_cli(killed, *steps)
    resumed = [line for line in out.splitlines() if 'resumed from step' in line]
    assert resumed and int(resumed[0].split('resumed from step ')[1].split()[0]) >= 3
    assert_same_params(exported_params(straight), exported_params(killed))


def test_resume_refuses_a_different_architecture(smoke, tmp_path):
    tmp_path = copy_of(smoke, tmp_path)
    proc = subprocess.run(
        SMOKE + [f'--workdir={tmp_path}', '--config.gan.channel_max=32'],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and 'different architecture' in proc.stderr
    # The same architecture on other training images: the checkpoints' record of their data refuses it.
    proc = subprocess.run(
        SMOKE + [f'--workdir={tmp_path}', '--config.gan.data.seed=5'],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and 'trained on other data' in proc.stderr and 'use a new workdir' in proc.stderr


def test_unreadable_latest_checkpoint_resumes_from_the_previous_one(smoke, tmp_path):
    work = copy_of(smoke, tmp_path)
    manifest = work / 'checkpoints' / '6' / 'state' / 'manifest.ocdbt'
    manifest.write_bytes(manifest.read_bytes()[: manifest.stat().st_size // 2])  # a save cut short
    before = exported_params(work)
    out = run_cli(work)
    notes = [line for line in out.splitlines() if ' is unreadable ' in line]
    assert len(notes) == 1 and 'checkpoint 6' in notes[0] and 'resuming from step 3' in notes[0], out
    assert 'gan: resumed from step 3' in out and 'gan: step 6/6' in out
    assert (work / 'unreadable_checkpoints' / '6').is_dir() and (work / 'checkpoints' / '6').is_dir()
    # Steps 4-6 trained again from checkpoint 3, on the same batches: the same generator.
    assert_same_params(before, exported_params(work))
    # Every checkpoint unreadable: one line naming the directory, no traceback.
    for step in (3, 6):
        manifest = work / 'checkpoints' / str(step) / 'state' / 'manifest.ocdbt'
        manifest.write_bytes(manifest.read_bytes()[:10])
    line = run_failing(work)
    assert f'{work / "checkpoints"}: no readable checkpoint' in line and 'use a new workdir' in line


def test_batch_not_divisible_by_the_devices_is_a_setting_error(tmp_path):
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu')
    line = run_failing(tmp_path, '--config.gan.batch_size=7', env=env)
    assert line == 'gsd: gan.batch_size: must be a positive multiple of the 2 devices, got 7'
    assert not (tmp_path / 'gan_config.json').exists() and not (tmp_path / 'checkpoints').exists(), 'checked first'


MULTI_DEVICE_SCRIPT = r"""
import importlib, json, sys
import jax, numpy as np
cfg = importlib.import_module('configs.toy_gan').get_config('smoke').gan
from gsd.pipeline.train_gan import GANTrainer
t = GANTrainer(cfg)
assert t.mesh.size == int(sys.argv[1]), t.mesh
state = t.init_state(0)
rng = np.random.RandomState(0)
out = []
for i in range(3):
    real = t.put_batch(rng.randint(0, 256, (cfg.batch_size, cfg.resolution, cfg.resolution, 3)).astype(np.uint8))
    state, m1 = t.train_step(state, real)
    state, m2 = t.r1_step(state, real)
    state, m3 = t.pl_step(state)
    out.append({k: float(v) for k, v in {**m1, **m2, **m3}.items() if k != 'finite'})
w = np.asarray(state.g_params['synthesis']['b16']['conv1']['weight'])
print(json.dumps({'metrics': out, 'w_sum': float(np.abs(w).sum()), 'w0': w.reshape(-1)[:8].tolist()}))
"""


@pytest.mark.parametrize('devices', [8])
def test_same_losses_on_one_and_many_devices(devices):
    results = {}
    for n in (1, devices):
        env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={n}', JAX_PLATFORMS='cpu')
        proc = subprocess.run(
            [sys.executable, '-c', MULTI_DEVICE_SCRIPT, str(n)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[n] = json.loads(proc.stdout.strip().splitlines()[-1])
    one, many = results[1], results[devices]
    for step_one, step_many in zip(one['metrics'], many['metrics']):
        assert step_one.keys() == step_many.keys()
        for k in step_one:
            np.testing.assert_allclose(step_many[k], step_one[k], rtol=1e-4, atol=1e-5, err_msg=k)
    np.testing.assert_allclose(many['w0'], one['w0'], rtol=1e-4, atol=1e-6)
