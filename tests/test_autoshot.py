"""Auto-shot: the labelled dataset (TFDS, resume after a real kill, 1 vs 8 devices), the UNet stage
(resume, any-size inference, folders of any image mode) and the toy composite.

A tiny random 16 px generator stands in for a trained one, with a head trained on painted shots
(as in test_fewshot_pipeline), so the numbers are meaningless but every path is real.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
import test_fewshot_pipeline
from conftest import REPO
from PIL import Image
from test_fewshot_pipeline import make_config, paint

from gsd import segmenters, toy
from gsd.io import autoshot_dataset
from gsd.io import images as image_io
from gsd.pipeline import autoshot, autoshot_segment, fewshot, shots
from gsd.pipeline import autoshot_data as synthetic
from gsd.stylegan2 import generator
from gsd.training import parallel

# pytest finds fixtures among the module's names; bound here rather than imported so that the tests'
# arguments of the same name are not redefinitions to the linter.
generator_dir = test_fewshot_pipeline.generator_dir

NUM, CHUNK, BATCH = 12, 4, 2


def autoshot_config(generator_dir, **data):
    c = make_config(generator_dir)
    with c.unlocked():
        c.stages = ('autoshot_data',)
        c.autoshot_data.num_images, c.autoshot_data.chunk_size, c.autoshot_data.batch_size = NUM, CHUNK, BATCH
        c.autoshot_data.val_fraction = 0.25
        for k, v in data.items():
            setattr(c.autoshot_data, k, v)
        c.autoshot.epochs, c.autoshot.batch_size, c.autoshot.base_width = 1, 4, 8
    return c


@pytest.fixture(scope='module')
def heads_dir(tmp_path_factory, generator_dir):
    """A workdir with two painted shots and a trained head."""
    config = autoshot_config(generator_dir)
    work = tmp_path_factory.mktemp('autoshot') / 'heads_only'
    shots.run(config, work)
    for stem in ('00000', '00001'):
        img = image_io.read_rgb(work / 'shots' / 'images' / f'{stem}.png')
        image_io.write_png(work / 'shots' / 'labels' / f'{stem}.png', paint(img), palette=shots.palette(config))
    fewshot.run(config, work)
    return work


@pytest.fixture(scope='module')
def dataset_dir(tmp_path_factory, heads_dir, generator_dir):
    work = tmp_path_factory.mktemp('autoshot') / 'with_data'
    shutil.copytree(heads_dir, work)
    synthetic.run(autoshot_config(generator_dir), work)
    return work


def test_jensen_shannon_and_soft_labels():
    a = jnp.array([10.0, -10.0])
    same = jnp.broadcast_to(a, (3, 2, 4, 4, 2))
    np.testing.assert_allclose(synthetic.jensen_shannon(same), 0.0, atol=1e-6)
    opposite = jnp.stack([jnp.broadcast_to(a, (1, 4, 4, 2)), jnp.broadcast_to(a[::-1], (1, 4, 4, 2))])
    np.testing.assert_allclose(synthetic.jensen_shannon(opposite), np.log(2), rtol=1e-4)
    # One member: its own logits. Several: softmax of the result is the members' mean softmax.
    logits = jax.random.normal(jax.random.key(0), (3, 2, 4, 4, 5)) * 3
    np.testing.assert_array_equal(synthetic.soft_labels(logits[:1]), logits[0])
    np.testing.assert_allclose(jax.nn.softmax(synthetic.soft_labels(logits)), jax.nn.softmax(logits).mean(0), atol=1e-6)


def test_dataset_reads_back_through_tfds_and_matches_the_labeller(dataset_dir, generator_dir):
    meta, train, val = autoshot_dataset.sources(dataset_dir / 'autoshot_data')
    assert (meta['train'], meta['validation'], len(train), len(val)) == (9, 3, 9, 3)
    records = [train[i] for i in range(len(train))] + [val[i] for i in range(len(val))]
    assert [int(r['index']) for r in records] == list(range(NUM)), 'every index once, in order'
    r = records[5]
    assert r['image'].dtype == np.uint8 and r['image'].shape == (16, 16, 3)
    assert r['logits'].dtype == np.float16 and r['logits'].shape == (16, 16, 7)
    # By name, as any program reads it (no gsd builder needed).
    by_name = tfds.data_source(meta['name'], split='train', data_dir=meta['data_dir'])
    np.testing.assert_array_equal(by_name[5]['image'], r['image'])
    # Image i is a function of (seed, i) alone: the labeller on [5, 6] reproduces record 5.
    config = autoshot_config(generator_dir)
    seg = segmenters.load_heads(dataset_dir / 'heads', *generator.build_generator(config.generator))
    mesh = parallel.mesh(jax.devices()[:1])
    out = synthetic.Labeller(seg, config.seed, config.autoshot_data.truncation_psi, mesh)(np.array([5, 6]))
    np.testing.assert_array_equal(out['image'][0], r['image'])
    np.testing.assert_allclose(out['logits'][0].astype(np.float32), r['logits'].astype(np.float32), atol=1e-2)
    # A rerun finds the complete dataset and keeps it; other settings are refused.
    assert synthetic.run(config, dataset_dir)['kept'] == NUM
    with config.unlocked():
        config.autoshot_data.num_images = NUM + 4
    with pytest.raises(ValueError, match='use a new workdir'):
        synthetic.run(config, dataset_dir)


def test_uncertainty_filter_needs_an_ensemble(heads_dir, generator_dir, tmp_path):
    work = tmp_path / 'w'
    shutil.copytree(heads_dir, work)
    with pytest.raises(ValueError, match='ensemble'):
        synthetic.run(autoshot_config(generator_dir, filter_fraction=0.25), work)


_KILL_SCRIPT = r"""
import sys
import jax
jax.config.update('jax_num_cpu_devices', 8)
sys.path.insert(0, sys.argv[3])
from test_autoshot import autoshot_config
from gsd.pipeline import autoshot_data as synthetic
config = autoshot_config(sys.argv[2], num_images=int(sys.argv[4]), chunk_size=8, batch_size=8)
synthetic.run(config, sys.argv[1])
"""


def test_generation_resumes_after_a_kill_on_eight_devices(heads_dir, generator_dir, tmp_path):
    """SIGKILL after the first staged chunk; the rerun completes with no gap or duplicate, and the
    8-device images equal the 1-device labeller's."""
    work = tmp_path / 'w'
    shutil.copytree(heads_dir, work)
    n = 800
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(REPO))
    args = [sys.executable, '-c', _KILL_SCRIPT, str(work), str(generator_dir), str(REPO / 'tests'), str(n)]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    staging = work / 'autoshot_data' / 'staging'
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not list(staging.glob('chunk_*.npz')):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    staged = len(list(staging.glob('chunk_*.npz')))
    assert 1 <= staged < n // 8, f'the kill should land mid-run ({staged} chunks staged): {proc.stdout.read()[-2000:]}'
    with pytest.raises(FileNotFoundError, match='no complete auto-shot dataset'):
        autoshot_dataset.sources(work / 'autoshot_data')  # a half-made dataset is never read
    rerun = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert 'resuming' in rerun.stdout
    meta, train, val = autoshot_dataset.sources(work / 'autoshot_data')
    indices = [int(train[i]['index']) for i in range(len(train))] + [int(val[i]['index']) for i in range(len(val))]
    assert indices == list(range(n))
    config = autoshot_config(generator_dir)
    seg = segmenters.load_heads(work / 'heads', *generator.build_generator(config.generator))
    mesh = parallel.mesh(jax.devices()[:1])
    ref = synthetic.Labeller(seg, config.seed, config.autoshot_data.truncation_psi, mesh)(np.array([0, 1, 798, 799]))
    got = [train[0], train[1], val[len(val) - 2], val[len(val) - 1]]
    for j, r in enumerate(got):
        assert np.abs(ref['image'][j].astype(int) - r['image'].astype(int)).max() <= 1
        np.testing.assert_allclose(ref['logits'][j].astype(np.float32), r['logits'].astype(np.float32), atol=2e-2)


def test_unet_stage_resumes_and_segments_any_size(dataset_dir, generator_dir, tmp_path, capsys):
    work = tmp_path / 'w'
    shutil.copytree(dataset_dir, work)
    config = autoshot_config(generator_dir)
    first = autoshot.run(config, work)
    assert first['steps'] == 2 * 1 and (work / 'autoshot' / 'unet' / 'unet.json').exists()
    with config.unlocked():
        config.autoshot.epochs = 2
    second = autoshot.run(config, work)
    assert 'resumed from step 2' in capsys.readouterr().out
    assert second['steps'] == 4
    history = json.loads((work / 'autoshot' / 'train.json').read_text())['history']
    assert [h['epoch'] for h in history] == [2], 'the rerun trained only the missing epoch'
    assert (work / 'autoshot' / 'tensorboard' / 'metrics.jsonl').exists()

    # The latest checkpoint damaged (a save cut short): one line, then epoch 2 again from checkpoint 2,
    # on the same batches with the same plateau state, to the same UNet.
    before = jax.tree.map(np.asarray, segmenters.load_unet(work / 'autoshot' / 'unet').params)
    manifest = work / 'autoshot' / 'checkpoints' / '4' / 'state' / 'manifest.ocdbt'
    manifest.write_bytes(manifest.read_bytes()[: manifest.stat().st_size // 2])
    autoshot.run(config, work)
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if ' is unreadable ' in line]
    assert len(notes) == 1 and 'checkpoint 4' in notes[0] and 'resuming from step 2' in notes[0], out
    assert 'autoshot: resumed from step 2' in out
    jax.tree.map(
        np.testing.assert_array_equal,
        jax.tree.map(np.asarray, segmenters.load_unet(work / 'autoshot' / 'unet').params),
        before,
    )

    seg = segmenters.load_unet(work / 'autoshot' / 'unet')
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    labels = seg.segment(batch)
    assert labels.shape == (3, 16, 16)
    wide = rng.integers(0, 256, (37, 61, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    assert seg.segment(wide).shape == (37, 61)
    masks = seg.segment([wide, grey, batch[1]])
    assert [m.shape for m in masks] == [(37, 61), (20, 30), (16, 16)]
    np.testing.assert_array_equal(masks[2], labels[1])  # alone or in a batch: the same result
    probs = seg.probabilities(wide)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)

    # A folder of any modes and sizes; the corrupt file is named and skipped.
    photos = tmp_path / 'photos'
    photos.mkdir()
    Image.fromarray(np.full((30, 40, 4), 200, np.uint8), 'RGBA').save(photos / 'rgba.png')
    Image.fromarray(grey, 'L').save(photos / 'grey.png')
    Image.fromarray((np.arange(24 * 18).reshape(18, 24) * 100).astype(np.uint16)).save(photos / 'deep.png')
    Image.fromarray(wide).save(photos / 'photo.jpg')
    (photos / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
    with config.unlocked():
        config.autoshot_segment.input = str(photos)
    with pytest.warns(UserWarning, match='broken.png'):
        result = autoshot_segment.run(config, work)
    assert set(result['images']) == {'rgba.png', 'grey.png', 'deep.png', 'photo.jpg'}
    assert {v['output'] for v in result['images'].values()} == {'rgba', 'grey', 'deep', 'photo'}
    assert result['images']['deep.png']['size'] == [24, 18]
    assert any('broken.png' in path for path, _ in result['skipped'])
    mask = Image.open(work / 'autoshot_segment' / 'photo_mask.png')
    assert mask.mode == 'P' and mask.size == (61, 37)

    # Heads retrained and the dataset regenerated (its settings.json names other heads): the UNet's
    # checkpoints were trained on the old data and are refused, not silently reused.
    settings = work / 'autoshot_data' / 'settings.json'
    settings.write_text(json.dumps({**json.loads(settings.read_text()), 'heads': 'retrained'}))
    with pytest.raises(ValueError, match='trained on other data.*delete .*autoshot/checkpoints or use a new workdir'):
        autoshot.run(config, work)


def test_unet_stage_nan_guard(dataset_dir, generator_dir, tmp_path):
    work = tmp_path / 'w'
    shutil.copytree(dataset_dir, work)
    config = autoshot_config(generator_dir)
    with config.unlocked():
        config.autoshot.lr = float('nan')  # the first step's update makes every later loss NaN
    with pytest.raises(FloatingPointError, match='autoshot: non-finite loss between steps 0 and 2.*no checkpoint yet'):
        autoshot.run(config, work)
    assert not (work / 'autoshot' / 'unet').exists() and not list((work / 'autoshot' / 'checkpoints').iterdir())


def test_unet_stage_checks_its_settings_first(generator_dir, tmp_path):
    config = autoshot_config(generator_dir)
    for setting, value, message in [
        ('batch_size', 0, 'autoshot.batch_size: must be a positive multiple of the 1 devices, got 0'),
        ('epochs', 0, 'autoshot.epochs: must be an integer >= 1, got 0'),
    ]:
        with config.unlocked():
            setattr(config.autoshot, setting, value)
        with pytest.raises(ValueError, match=message):
            autoshot.run(config, tmp_path / 'nothing_here')  # refused before the dataset is even looked for
        with config.unlocked():
            setattr(config.autoshot, setting, autoshot_config(generator_dir).autoshot[setting])


def test_composite_canvas():
    image, mask = toy.composite(3)
    assert image.shape == (128, 192, 3) and mask.shape == (128, 192)
    again, _ = toy.composite(3)
    np.testing.assert_array_equal(image, again)
    from gsd.toy.annotator import components

    _, sizes = components(mask > 0)
    assert (sizes[1:] > 50).sum() == 3, 'three separate faces'
    assert set(np.unique(mask)) == set(range(len(toy.CLASSES)))
    with pytest.raises(ValueError, match='do not fit'):
        toy.composite(0, width=100)
