"""GAN training: smoke run end to end, kill-and-resume equals an uninterrupted run, 1 vs 8 devices."""

import json
import os
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


def test_smoke_run_writes_everything(tmp_path):
    out = run_cli(tmp_path)
    assert 'gan: step 6/6' in out and 'img/s' in out and 'ETA' in out
    assert sorted(p.name for p in (tmp_path / 'samples').glob('*.png')) == ['step_0000003.png', 'step_0000006.png']
    assert (tmp_path / 'checkpoints' / '6').is_dir()
    events = list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))
    assert events and events[0].stat().st_size > 0
    rows = [json.loads(line) for line in (tmp_path / 'tensorboard' / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in rows] == [2, 4, 6] and all(np.isfinite(r['loss/G']) for r in rows)
    assert any('reg/r1_penalty' in r for r in rows) and any('reg/pl_penalty' in r for r in rows)
    params = exported_params(tmp_path)
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
    a, b = exported_params(straight), exported_params(killed)
    for (path, x), y in zip(__import__('jax').tree_util.tree_leaves_with_path(a), __import__('jax').tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6, err_msg=str(path))


def test_resume_refuses_a_different_architecture(tmp_path):
    run_cli(tmp_path)
    proc = subprocess.run(
        SMOKE + [f'--workdir={tmp_path}', '--config.gan.channel_max=32'],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and 'different architecture' in proc.stderr


MULTI_DEVICE_SCRIPT = r"""
import importlib.util, json, sys
import jax, numpy as np
spec = importlib.util.spec_from_file_location('c', 'configs/toy_gan.py')
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
cfg = m.get_config('smoke').gan
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
