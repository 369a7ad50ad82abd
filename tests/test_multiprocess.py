"""Several JAX processes as one run (`jax.distributed` on local CPU processes, gloo collectives): 2 processes
x 2 CPU devices against 1 process x 4 devices on configs/toy_gan.py:smoke and configs/toy_1shot.py:smoke.
The same losses, weights and metrics; each file written by one process (tests/mp_run.py records every
Python-level write); one process SIGKILLed mid-run, then both restarted with the same commands, resume and
finish with the weights of the uninterrupted run."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO

GAN = ['--config=configs/toy_gan.py:smoke', '--config.gan.total_steps=12']  # checkpoints every 3 steps
ONESHOT = ['--config=configs/toy_1shot.py:smoke']
RUNNER = str(REPO / 'tests' / 'mp_run.py')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
    env['PYTHONPATH'] = os.pathsep.join([str(REPO), env.get('PYTHONPATH', '')])
    return env


def start(workdir, flags, processes: int, devices: int, tag: str):
    """Start the run's processes (`processes` x `devices` CPU devices); returns [(Popen, log path, audit path)]."""
    workdir.parent.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    procs = []
    for i in range(processes):
        cluster = (
            [f'--coordinator_address=127.0.0.1:{port}', f'--num_processes={processes}', f'--process_id={i}']
            if processes > 1
            else []
        )
        log = workdir.parent / f'{workdir.name}.{tag}.p{i}.log'
        audit = workdir.parent / f'{workdir.name}.p{i}.writes'
        cmd = [sys.executable, RUNNER, str(audit), *flags, f'--workdir={workdir}', *cluster]
        with open(log, 'w') as out:
            procs.append(
                (subprocess.Popen(cmd, cwd=REPO, env=_env(devices), stdout=out, stderr=subprocess.STDOUT), log, audit)
            )
    return procs


def finish(procs, timeout=900):
    for p, log, _ in procs:
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q, _, _ in procs:
                q.kill()
            pytest.fail(f'{log.name}: still running after {timeout} s:\n{log.read_text()[-3000:]}')
        assert rc == 0, f'{log.name}: exit {rc}\n{log.read_text()[-3000:]}'


def run(workdir, flags, processes, devices):
    procs = start(workdir, flags, processes, devices, 'run')
    finish(procs)
    return [log.read_text() for _, log, _ in procs]


def files(workdir) -> set:
    """Every file under workdir, with the per-process names made process-neutral."""
    out = set()
    for p in workdir.rglob('*'):
        if p.is_file():
            name = str(p.relative_to(workdir))
            if name.startswith('.gsd.lock') or 'process_' in name or 'events.out.tfevents' in name or '/d/' in name:
                continue  # per-process lock files and orbax items, orbax's randomly named data files, TB's host name
            out.add(name)
    return out


def written(audit, workdir) -> set:
    if not audit.exists():
        return set()
    root = str(workdir.resolve())
    return {line for line in audit.read_text().splitlines() if line.startswith(root)}


def assert_written_once(workdir, processes: int):
    """No file written by two processes. Process 0 writes the run's files; any other process only its lock
    file, orbax's per-process items of the collective checkpoints and its own auto-shot chunks (chunk c
    belongs to process c mod N, and process 0 publishes the dataset from them)."""
    root = workdir.parent
    logs = [written(root / f'{workdir.name}.p{i}.writes', workdir) for i in range(processes)]
    assert logs[0], 'the audit hook saw no writes by process 0'
    for i, paths in enumerate(logs[1:], start=1):
        assert not paths & logs[0], f'written by processes 0 and {i}: {sorted(paths & logs[0])[:10]}'
        own = {
            p for p in paths if p.endswith(f'.gsd.lock.{i}') or f'process_{i}' in p or '/autoshot_data/staging/' in p
        }
        assert paths == own, f'process {i} wrote {sorted(paths - own)[:10]}'


def final_metrics(workdir) -> dict:
    return json.loads((workdir / 'tensorboard' / 'metrics.jsonl').read_text().splitlines()[-1])


def generator_params(workdir):
    import jax

    from gsd import stylegan2

    _, variables = stylegan2.load(workdir / 'generator')
    return jax.tree_util.tree_leaves_with_path(jax.tree.map(np.asarray, variables))


@pytest.fixture(scope='module')
def gan_reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('mp_gan') / 'one_process'
    run(workdir, GAN, processes=1, devices=4)
    return workdir


def test_gan_two_processes_killed_and_restarted_match_one_process(gan_reference, tmp_path):
    workdir = tmp_path / 'two_processes'
    procs = start(workdir, GAN, processes=2, devices=2, tag='killed')
    deadline = time.time() + 600
    while not (workdir / 'checkpoints' / '6' / 'state' / 'commit_success.txt').exists():
        assert time.time() < deadline and all(p.poll() is None for p, _, _ in procs), procs[0][1].read_text()[-3000:]
        time.sleep(0.2)
    procs[1][0].send_signal(signal.SIGKILL)
    try:  # process 0 loses its peer in the next collective and ends; if it waits instead, it is killed too
        procs[0][0].wait(timeout=120)
    except subprocess.TimeoutExpired:
        procs[0][0].kill()
        procs[0][0].wait()
    assert not (workdir / 'generator').exists(), 'the run finished before the kill; nothing was tested'

    procs = start(workdir, GAN, processes=2, devices=2, tag='resumed')
    finish(procs)
    resumed = procs[0][1].read_text()
    assert 'resum' in resumed.lower(), resumed[-2000:]

    ref, two = final_metrics(gan_reference), final_metrics(workdir)
    assert ref['step'] == two['step'] == 12
    for k in ref:
        np.testing.assert_allclose(two[k], ref[k], rtol=1e-4, atol=1e-5, err_msg=k)
    for (path, a), (_, b) in zip(generator_params(gan_reference), generator_params(workdir)):
        np.testing.assert_allclose(b, a, rtol=0, atol=2e-5, err_msg=str(path))
    assert files(workdir) - {'tensorboard/metrics.jsonl'} >= files(gan_reference) - {'tensorboard/metrics.jsonl'}
    assert_written_once(workdir, 2)


def test_oneshot_pipeline_two_processes_match_one_process(tmp_path):
    """The demo's stages, then `segment` and `autoshot_segment` on a folder of 3 photos (two sizes)."""
    from PIL import Image

    from gsd import toy

    photos = tmp_path / 'photos'
    photos.mkdir()
    images, _ = toy.sample(3, seed=5_000_000, size=64)
    for i, im in enumerate(images):
        Image.fromarray(im).resize((96, 96) if i == 2 else (64, 64)).save(photos / f'face{i}.png')
    flags = ONESHOT + [
        '--config.stages=shots,fewshot,autoshot_data,autoshot,report,segment,autoshot_segment',
        f'--config.segment.input={photos}',
        f'--config.autoshot_segment.input={photos}',
    ]
    one, two = tmp_path / 'one_process', tmp_path / 'two_processes'
    run(one, flags, processes=1, devices=4)
    run(two, flags, processes=2, devices=2)
    assert files(one) == files(two)
    assert {'segment/face2_mask.png', 'autoshot_segment/face2_mask.png'} <= files(two)
    for stage in ('segment', 'autoshot_segment'):
        for i in range(3):
            a, b = (np.asarray(Image.open(w / stage / f'face{i}_mask.png')) for w in (one, two))
            assert a.shape == b.shape and np.mean(a != b) < 0.01, (stage, i, np.mean(a != b))
    assert_written_once(two, 2)
    a, b = (json.loads((w / 'metrics.json').read_text()) for w in (one, two))
    assert a.keys() == b.keys()
    for method in a:
        for k in ('mean_iou', 'weighted_iou'):
            # 4 devices against 2 x 2 reduce in another order: float32 rounding may flip a pixel's argmax.
            assert abs(a[method][k] - b[method][k]) < 0.5, (method, k, a[method][k], b[method][k])
    heads = [json.loads((w / 'heads' / 'heads.json').read_text())['final_loss'] for w in (one, two)]
    np.testing.assert_allclose(heads[1], heads[0], rtol=1e-4)
    unet = [json.loads((w / 'autoshot' / 'train.json').read_text())['final'] for w in (one, two)]
    for k in ('train/loss', 'val/loss'):
        np.testing.assert_allclose(unet[1][k], unet[0][k], rtol=1e-4, err_msg=k)


def test_cluster_detection_needs_a_job_of_several_processes():
    from gsd.training import cluster

    slurm = {'SLURM_JOB_ID': '7', 'SLURM_STEP_NODELIST': 'n[1-2]', 'SLURM_PROCID': '0', 'SLURM_LOCALID': '0'}
    assert cluster.detected({}) is None
    assert cluster.detected({**slurm, 'SLURM_NTASKS': '1'}) is None  # one task: a plain single process
    assert cluster.detected({**slurm, 'SLURM_NTASKS': '4'}) == 'slurm'
    assert cluster.detected({**slurm, 'SLURM_NTASKS': '2(x2)'}) == 'slurm'
    assert cluster.detected({'OMPI_MCA_orte_hnp_uri': 'x', 'OMPI_COMM_WORLD_SIZE': '1'}) is None
    assert cluster.detected({'OMPI_MCA_orte_hnp_uri': 'x', 'OMPI_COMM_WORLD_SIZE': '2'}) == 'openmpi'
    assert cluster.detected({'TPU_WORKER_HOSTNAMES': 'w0'}) is None  # a single-host TPU VM
    assert cluster.detected({'TPU_WORKER_HOSTNAMES': 'w0,w1'}) == 'cloud_tpu'
    assert cluster.initialize() == 'single process'  # this test process: nothing detected, nothing joined


def refused(workdir, flags, devices: int) -> str:
    """A single-process run that must end as bad input before any work: exit 2, one line on stderr, no
    workdir made; returns the line."""
    proc = subprocess.run(
        [sys.executable, '-m', 'gsd.main', *flags, f'--workdir={workdir}'],
        cwd=REPO,
        env=_env(devices),
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert not workdir.exists()  # refused before any work
    return lines[0]


@pytest.mark.parametrize(
    'flags, message',
    [
        (['--num_processes=2', '--process_id=0'], '--coordinator_address: missing'),
        (['--coordinator_address=127.0.0.1:1', '--process_id=0'], '--num_processes: missing'),
        (['--coordinator_address=localhost', '--num_processes=2', '--process_id=0'], 'is not host:port'),
        (['--coordinator_address=127.0.0.1:1', '--num_processes=2', '--process_id=2'], 'must be in 0..1'),
        (['--coordinator_address=127.0.0.1:1', '--num_processes=0', '--process_id=0'], 'at least 1'),
    ],
)
def test_cluster_flags_errors_are_one_line(tmp_path, flags, message):
    line = refused(tmp_path / 'w', GAN + flags, devices=1)
    assert line.startswith('gsd: --') and message in line, line


def test_global_batches_do_not_depend_on_the_process_count():
    from gsd.io.sources import GlobalBatchSampler

    one = GlobalBatchSampler(37, 8, 0, 1, shuffle=True, seed=3, num_epochs=None)
    halves = [GlobalBatchSampler(37, 4, p, 2, shuffle=True, seed=3, num_epochs=None) for p in (0, 1)]
    for step in range(12):  # past the first epoch's end: every epoch reshuffles the same way on both
        batch = [one[step * 8 + k].record_key for k in range(8)]
        split = [halves[p][step * 4 + k].record_key for p in (0, 1) for k in range(4)]
        assert batch == split
    # A finite run reads whole global batches only, the same number on every process.
    finite = [GlobalBatchSampler(37, 4, p, 2, shuffle=False, seed=3, num_epochs=2) for p in (0, 1)]
    assert len(finite[0]) == len(finite[1]) == (74 // 8) * 4
    with pytest.raises(IndexError):
        finite[1][len(finite[1])]
    # Without drop_remainder each process also reads its rows of the last, partial global batch (2 rows here).
    kept = [GlobalBatchSampler(37, 4, p, 2, shuffle=False, seed=3, num_epochs=2, drop_remainder=False) for p in (0, 1)]
    assert [len(k) for k in kept] == [9 * 4 + 2, 9 * 4]
    assert sorted(k[i].record_key for k in kept for i in range(len(k))) == sorted(list(range(37)) * 2)
    # One process reads what the earlier loader read, under its name: its checkpoints still resume.
    import grain.python as grain

    legacy = grain.IndexSampler(37, shard_options=grain.ShardByJaxProcess(True), shuffle=True, seed=3, num_epochs=None)
    assert repr(one) == repr(legacy)
    assert [one[i].record_key for i in range(100)] == [legacy[i].record_key for i in range(100)]


def test_a_batch_that_cannot_split_is_refused_before_any_stage(tmp_path):
    """toy_1shot:smoke's autoshot batch (8) on 3 devices: one line naming the setting, and no shots sampled."""
    line = refused(tmp_path / 'w', ONESHOT + ['--config.autoshot.batch_size=8'], devices=3)
    assert line.startswith('gsd: autoshot.batch_size: must be a positive multiple of the 3 devices'), line
