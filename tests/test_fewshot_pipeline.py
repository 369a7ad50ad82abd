"""The few-shot pipeline as a user runs it: shots -> (paint labels) -> fewshot -> report, and segment.

A tiny random 16 px generator stands in for a trained one (the toy generator's own run is the demo);
labels are "painted" by the test from the images' brightness, so the head has something to learn.
"""

import importlib
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from gsd import segmenters, stylegan2
from gsd.io import annotation
from gsd.io import images as image_io
from gsd.pipeline import fewshot, report, segment, shots
from gsd.stylegan2 import generator

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_config(name, arg=None):
    return importlib.import_module(f'configs.{name}').get_config(arg)


@pytest.fixture(scope='module')
def generator_dir(tmp_path_factory):
    g = stylegan2.Generator(16, stylegan2.channels_nvidia(16, 256, 16), z_dim=16, w_dim=16, n_mlp=2)
    variables = jax.jit(g.init)(jax.random.PRNGKey(3), jnp.zeros((1, 16)))
    path = tmp_path_factory.mktemp('gen') / 'g'
    stylegan2.save(path, {'G_ema': (g, variables)})
    return path


def make_config(generator_dir, **report_overrides):
    c = load_config('toy_1shot', 'smoke')
    with c.unlocked():
        c.generator.checkpoint = str(generator_dir)
        c.shots.annotator = 'none'
        c.shots.num = 2
        c.fewshot.epochs, c.fewshot.lr_decay_every = 40, 1000
        c.report.methods = ('fewshot', 'rgb_baseline', 'supervised_1shot')
        c.report.num_test = 3
        for k, v in report_overrides.items():
            setattr(c.report, k, v)
    return c


def paint(image: np.ndarray) -> np.ndarray:
    """Labels from brightness: background / skin / hair as dark / mid / bright thirds."""
    grey = image.astype(np.float32).mean(-1)
    lo, hi = np.percentile(grey, [33, 66])
    return np.digitize(grey, [lo, hi]).astype(np.uint8)


def test_shots_fewshot_report_segment(tmp_path, generator_dir):
    config = make_config(generator_dir)
    work = tmp_path / 'run'
    summary = shots.run(config, work)
    assert summary['num'] == 2
    out = work / 'shots'
    for stem in ('00000', '00001'):
        assert (out / 'images' / f'{stem}.png').exists() and (out / 'labels' / f'{stem}.png').exists()
    assert json.loads((out / 'classes.json').read_text())

    # Unpainted templates are refused, naming every file.
    with pytest.raises(annotation.AnnotationError) as err:
        fewshot.run(config, work)
    assert '00000.png' in str(err.value) and '00001.png' in str(err.value)

    colours = shots.palette(config)
    painted = {}
    for stem in ('00000', '00001'):
        img = image_io.read_rgb(out / 'images' / f'{stem}.png')
        painted[stem] = paint(img)
        image_io.write_png(out / 'labels' / f'{stem}.png', painted[stem], palette=colours)

    meta = fewshot.run(config, work)
    losses = np.asarray(json.loads((work / 'heads' / 'train_loss.json').read_text()))
    assert losses[0, -1] < 0.7 * losses[0, 0], losses  # the head learned the painted labels

    seg = segmenters.load_heads(work / 'heads', *generator.build_generator(config.generator))
    ws = np.load(out / 'latents.npz')['ws']
    _, probs, _ = seg(jnp.asarray(ws))
    pred = np.asarray(jnp.argmax(probs, -1))
    truth = np.stack([painted['00000'], painted['00001']])
    assert np.mean(pred == truth) > 0.6, 'the trained head should reproduce its own training labels'
    assert meta['shots'] == 2

    metrics = report.run(config, work)
    assert set(metrics) == {'fewshot', 'rgb_baseline', 'supervised_1shot'}
    for m in metrics.values():
        assert set(m) == {'weighted_iou', 'mean_iou', 'per_class_iou'}
        assert set(m['per_class_iou']) == set(config.classes.names)
    on_disk = json.loads((work / 'metrics.json').read_text())
    assert set(on_disk) == set(metrics)
    for i in range(3):
        assert (work / 'eval' / 'gt' / f'{i:05d}.png').exists()
        for method in metrics:
            pred_png = work / 'eval' / method / 'pred' / f'{i:05d}.png'
            assert Image.open(pred_png).mode == 'P'
    page = (work / 'report.html').read_text()
    assert 'supervised_1shot' in page and '<table>' in page

    # Segment a folder of real images of other sizes and modes; a corrupt file is named and skipped.
    photos = tmp_path / 'photos'
    photos.mkdir()
    Image.fromarray(np.full((30, 40, 4), 200, np.uint8), 'RGBA').save(photos / 'wide.png')
    Image.fromarray(np.linspace(0, 255, 16 * 16).reshape(16, 16).astype(np.uint8), 'L').save(photos / 'grey.png')
    (photos / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
    with config.unlocked():
        config.segment.input = str(photos)
    with pytest.warns(UserWarning, match='broken.png'):
        result = segment.run(config, work)
    assert result['images'] == 2
    assert any('broken.png' in path for path, _ in result['skipped'])
    for stem in ('wide', 'grey'):
        for kind in ('mask', 'overlay', 'projection'):
            assert (work / 'segment' / f'{stem}_{kind}.png').exists()


def test_shots_refuse_other_settings_on_the_same_workdir(tmp_path, generator_dir):
    config = make_config(generator_dir)
    shots.run(config, tmp_path)
    before = (tmp_path / 'shots' / 'labels' / '00000.png').read_bytes()
    shots.run(config, tmp_path)  # same settings: kept as is
    assert (tmp_path / 'shots' / 'labels' / '00000.png').read_bytes() == before
    with config.unlocked():
        config.seed = 5
    with pytest.raises(ValueError, match='use a new workdir'):
        shots.run(config, tmp_path)


def test_missing_paper_checkpoint_names_the_official_file(tmp_path):
    config = load_config('face_1shot', 'smoke')
    with pytest.raises(FileNotFoundError, match='stylegan2-ffhq-config-f.pkl.*convert_checkpoint'):
        shots.run(config, tmp_path)
    with config.unlocked():
        config.generator.checkpoint = str(tmp_path / 'nope.pkl')
    with pytest.raises(FileNotFoundError, match='nope.pkl'):
        shots.run(config, tmp_path)
