"""The image -> w+ encoder (gsd.nn.encoder), its stage and hybrid inversion (projection started from its w+)."""

import importlib
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gsd import errors, pipeline, projection, segmenters
from gsd.io import images as image_io
from gsd.nn import encoder as encoder_lib
from gsd.stylegan2 import generator

# The shipped encoder alone on 8 of the generator's own samples: 24.6 dB mean, w_avg 11.9 dB.
SHIPPED_MARGIN_DB = 8.0


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
    """(config, workdir, module, variables) after the :smoke encoder run (a 16 px random-weights generator)."""
    config = importlib.import_module('configs.encoder').get_config('smoke')
    workdir = tmp_path_factory.mktemp('encoder')
    pipeline.run_all(config, workdir)
    module, variables = generator.build_generator(config.generator)
    return config, workdir, module, variables


def test_smoke_config_trains_and_writes_a_loadable_encoder(smoke):
    config, workdir, module, variables = smoke
    meta = json.loads((workdir / 'encoder' / 'encoder.json').read_text())
    assert meta['architecture']['num_ws'] == module.num_ws and meta['architecture']['widths'] == [8, 16]
    assert meta['generator']['fingerprint'] == segmenters.generator_fingerprint(variables)
    enc = segmenters.load_encoder(workdir / 'encoder', module, variables)
    images = np.random.RandomState(0).randint(0, 256, (3, 16, 16, 3)).astype(np.uint8)
    ws = np.asarray(enc(images))
    assert ws.shape == (3, module.num_ws, module.w_dim) and np.all(np.isfinite(ws))
    # 4 steps moved it off w_avg (the last layer starts at zero).
    assert np.abs(ws - np.asarray(enc.w_avg)).max() > 0


def test_untrained_encoder_outputs_w_avg(smoke):
    _, _, module, variables = smoke
    enc = encoder_lib.for_generator(module, widths=(8, 16), hidden=32)
    params = encoder_lib.init_params(enc, jax.random.PRNGKey(3), module.resolution)
    w_avg, _ = projection.w_statistics(module, variables)
    images = jnp.asarray(np.random.RandomState(1).randint(0, 256, (2, 16, 16, 3)), jnp.float32)
    ws = enc.apply({'params': params}, images, w_avg)
    np.testing.assert_array_equal(np.asarray(ws), np.broadcast_to(np.asarray(w_avg), ws.shape))


def test_projection_starts_at_init_ws_and_converges_faster_from_a_good_start(smoke):
    _, _, module, variables = smoke
    z = jax.random.normal(jax.random.PRNGKey(7), (2, module.z_dim))
    ws_true, raw = generator.ws_and_images(module, variables, z, 1.0)
    targets = image_io.to_uint8(raw)
    _, w_std = projection.w_statistics(module, variables)
    near = np.asarray(ws_true) + 0.1 * float(w_std) / np.sqrt(module.w_dim) * np.random.RandomState(0).randn(
        *ws_true.shape
    )
    kw = dict(steps=8, space='w+', optimize_noise=False, initial_noise_factor=0.0)
    # lr 0: nothing moves, so the result is the start itself (the same compiled program as below).
    still = projection.project(module, variables, targets, init_ws=near, lr=0.0, **kw)
    np.testing.assert_allclose(still.ws, near, atol=1e-6)
    # A start near the truth (what a trained encoder gives) beats w_avg at the same few steps.
    hybrid = projection.project(module, variables, targets, init_ws=near, lr=0.02, **kw)
    plain = projection.project(module, variables, targets, lr=0.02, **kw)
    assert np.all(hybrid.psnr > plain.psnr + 3.0), (hybrid.psnr, plain.psnr)
    with pytest.raises(ValueError, match='init_ws must be'):
        projection.project(module, variables, targets, steps=1, init_ws=np.zeros((2, 1, module.w_dim)))


def _one_line(excinfo):
    assert '\n' not in str(excinfo.value), str(excinfo.value)


def test_corrupt_or_foreign_encoder_directory_is_one_line(smoke, tmp_path):
    _, workdir, module, variables = smoke
    bad = tmp_path / 'bad'
    shutil.copytree(workdir / 'encoder', bad)
    (bad / 'encoder.json').write_text('{"format": "gsd-enc')
    with pytest.raises(errors.BadFileError, match='damaged') as e:
        segmenters.load_encoder(bad, module, variables)
    _one_line(e)

    shutil.rmtree(bad)
    shutil.copytree(workdir / 'encoder', bad)
    for f in (bad / 'params').rglob('*'):
        if f.is_file():
            f.write_bytes(b'not orbax')
    with pytest.raises(errors.BadFileError) as e:
        segmenters.load_encoder(bad, module, variables)
    _one_line(e)

    with pytest.raises(errors.MissingInputError) as e:
        segmenters.load_encoder(tmp_path / 'nothing', module, variables)
    _one_line(e)

    other = jax.tree.map(lambda a: a + 1.0, variables)  # another generator of the same shape
    with pytest.raises(errors.SettingError, match='another generator') as e:
        segmenters.load_encoder(workdir / 'encoder', module, other)
    _one_line(e)


def test_projection_settings_resolve_the_encoder(smoke):
    config, workdir, _, _ = smoke
    p = importlib.import_module('configs.toy_1shot').get_config('smoke').projection
    assert p.encoder == '' and pipeline.projection_settings(p)['encoder'] is None
    p.encoder = str(workdir / 'encoder')
    assert pipeline.projection_settings(p)['encoder'] == workdir / 'encoder'
    p.encoder = 'gsd:no_such_encoder'
    with pytest.raises(errors.SettingError, match='unknown shipped encoder'):
        pipeline.projection_settings(p)


def test_shipped_toy_encoder_starts_closer_than_w_avg():
    from gsd import toy

    G, variables = toy.pretrained()
    enc = segmenters.load_encoder('gsd:toy_encoder', G, variables)
    z = jax.random.normal(jax.random.PRNGKey(11), (8, G.z_dim))
    _, raw = generator.ws_and_images(G, variables, z, 1.0)
    targets = image_io.to_uint8(raw)

    def psnr_from(ws):
        return projection.psnr(image_io.to_uint8(G.apply(variables, jnp.asarray(ws), method='synthesize')), targets)

    guessed = psnr_from(enc(targets))
    start = psnr_from(np.broadcast_to(np.asarray(enc.w_avg), (8, G.num_ws, G.w_dim)))
    assert np.mean(guessed) > np.mean(start) + SHIPPED_MARGIN_DB, (guessed, start)
