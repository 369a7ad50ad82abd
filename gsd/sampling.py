"""Sampling stage: draw images from a generator and write them as a PNG grid plus their latents."""

from __future__ import annotations

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gsd import images as image_io
from gsd import stylegan2


TOY_CHECKPOINT = 'gsd:toy'   # the toy generator shipped in the package (gsd.toy.pretrained)


def build_generator(gen: ml_collections.ConfigDict):
    """(module, variables) from a config's `generator` block: a checkpoint path, 'gsd:toy' (the
    shipped toy generator), or random weights of the architecture the block describes (checkpoint '')."""
    if gen.checkpoint == TOY_CHECKPOINT:
        from gsd import toy
        return toy.pretrained()
    if gen.checkpoint or gen.get('expected'):
        path = pathlib.Path(gen.checkpoint).expanduser()
        if not gen.checkpoint or not path.exists():
            hint = gen.get('official', '')
            raise FileNotFoundError(
                f'{gen.checkpoint or "generator.checkpoint"}: generator checkpoint not '
                f'{"found" if gen.checkpoint else "given"}' + (
                    f'; this config expects {hint} - download it yourself, then run it as is or convert it '
                    f'once with `python tools/convert_checkpoint.py FILE OUT_DIR` and pass '
                    f'--config.generator.checkpoint=FILE_OR_OUT_DIR' if hint else ''))
        return stylegan2.load(path, gen.get('which', 'G_ema'),
                              crop_rows=tuple(gen.crop_rows) if gen.get('crop_rows') else None)
    module = _random_generator(gen)
    variables = jax.jit(module.init)(jax.random.PRNGKey(gen.init_seed), jnp.zeros((1, module.z_dim)))
    return module, variables


def _random_generator(gen) -> stylegan2.Generator:
    channels = stylegan2.channels_nvidia(gen.resolution, gen.channel_base, gen.channel_max)
    return stylegan2.Generator(gen.resolution, channels, z_dim=gen.z_dim, w_dim=gen.w_dim, n_mlp=gen.n_mlp)


def architecture(gen: ml_collections.ConfigDict):
    """The generator module a config's `generator` block will load, when known without reading a user
    file: the shipped toy generator, the architecture a paper config expects (`expected`), or the
    random-weights one; None for an arbitrary checkpoint."""
    if gen.checkpoint == TOY_CHECKPOINT:
        from gsd import toy
        return toy.pretrained()[0]
    if gen.get('expected'):
        return _random_generator(gen.expected)
    if gen.checkpoint:
        return None
    return _random_generator(gen)


def models(config) -> dict:
    """{name: (module, example_args)} this stage builds, for shape checks without running it."""
    module = architecture(config.generator)
    return {} if module is None else {'generator': (module, (jnp.zeros((1, module.z_dim)),))}


def run(config: ml_collections.ConfigDict, workdir) -> dict:
    """Write WORKDIR/samples/grid.png and WORKDIR/samples/latents.npz (z, ws) for `config.samples`."""
    workdir = pathlib.Path(workdir)
    out = workdir / 'samples'
    t0 = time.time()
    module, variables = build_generator(config.generator)
    cfg = config.samples
    z = jax.random.normal(jax.random.PRNGKey(config.seed), (cfg.num, module.z_dim))
    generate = jax.jit(lambda v, z: _ws_and_images(module, v, z, cfg.truncation_psi))
    ws, imgs = [], []
    for start in range(0, cfg.num, cfg.batch_size):     # fixed batch shape: one compile
        zb = z[start:start + cfg.batch_size]
        pad = cfg.batch_size - zb.shape[0]
        w, img = generate(variables, jnp.pad(zb, ((0, pad), (0, 0))))
        ws.append(np.asarray(w)[:zb.shape[0]])
        imgs.append(np.asarray(img)[:zb.shape[0]])
    imgs = image_io.to_uint8(np.concatenate(imgs))
    grid_path = image_io.write_png(out / 'grid.png', image_io.grid(imgs))
    np.savez(out / 'latents.npz', z=np.asarray(z), ws=np.concatenate(ws))
    summary = {'num': cfg.num, 'resolution': int(imgs.shape[1]), 'truncation_psi': cfg.truncation_psi,
               'seconds': round(time.time() - t0, 2), 'grid': str(grid_path)}
    (out / 'summary.json').write_text(json.dumps(summary, indent=1))
    print(f'samples: wrote {cfg.num} images to {grid_path} in {summary["seconds"]} s')
    return summary


def _ws_and_images(module, variables, z, psi):
    ws = module.apply(variables, z, truncation_psi=psi, method='map')
    return ws, module.apply(variables, ws, noise_mode='const', method='synthesize')
