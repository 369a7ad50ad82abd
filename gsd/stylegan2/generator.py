"""A generator from a config's `generator` block, and sampling from it by (seed, index).

The block names a checkpoint file or directory (any format `gsd.stylegan2.load` reads), a checkpoint
shipped in the package (`gsd:toy`), or, with no checkpoint, the architecture to build with random
weights. Sample i of a seed is z_i = normal(fold_in(key(seed), i)): a pure function of (seed, i), so
shots, auto-shot images and their reruns do not depend on batching, devices or interruptions.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import ml_collections

from gsd import errors
from gsd.stylegan2.loading import load
from gsd.stylegan2.networks import Generator, channels_nvidia

# Checkpoints shipped inside the package, by config value (paths relative to the gsd package). The
# toy world's package offers the same one as `gsd.toy.pretrained()`.
SHIPPED = {'gsd:toy': 'toy/assets/toy_generator'}
TOY_CHECKPOINT = 'gsd:toy'
DTYPES = ('float32', 'bfloat16')  # generator.dtype


def shipped_path(name: str) -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parents[1] / SHIPPED[name]


def build_generator(gen: ml_collections.ConfigDict, dtype=None):
    """(module, variables) from a config's `generator` block: a checkpoint path, a shipped name ('gsd:toy'),
    or random weights of the architecture the block describes (checkpoint ''). The synthesis computes in
    `dtype` if given, else in the block's `dtype` ('float32' when it has none, or 'bfloat16')."""
    if dtype is None:
        name = gen.get('dtype', 'float32')
        if name not in DTYPES:
            raise errors.SettingError(f'generator.dtype: must be one of {", ".join(DTYPES)}, got {name!r}')
        dtype = None if name == 'float32' else jnp.dtype(name)
    kw = {} if dtype is None else {'dtype': dtype}
    if gen.checkpoint in SHIPPED:
        path = shipped_path(gen.checkpoint)
        if not (path / 'gsd_stylegan2.json').exists():
            raise FileNotFoundError(f'{path}: the shipped generator {gen.checkpoint!r} is missing from this install')
        return load(path, 'G_ema', **kw)
    if gen.checkpoint or gen.get('expected'):
        path = pathlib.Path(gen.checkpoint).expanduser()
        if not gen.checkpoint or not path.exists():
            hint = gen.get('official', '')
            raise FileNotFoundError(
                f'{gen.checkpoint or "generator.checkpoint"}: generator checkpoint not '
                f'{"found" if gen.checkpoint else "given"}'
                + (
                    f'; this config expects {hint} - download it yourself, then run it as is or convert it '
                    f'once with `python tools/convert_checkpoint.py FILE OUT_DIR` and pass '
                    f'--config.generator.checkpoint=FILE_OR_OUT_DIR'
                    if hint
                    else ''
                )
            )
        return load(
            path, gen.get('which', 'G_ema'), crop_rows=tuple(gen.crop_rows) if gen.get('crop_rows') else None, **kw
        )
    module = _random_generator(gen).clone(**kw)
    variables = jax.jit(module.init)(jax.random.PRNGKey(gen.init_seed), jnp.zeros((1, module.z_dim)))
    return module, variables


def _random_generator(gen) -> Generator:
    channels = channels_nvidia(gen.resolution, gen.channel_base, gen.channel_max)
    return Generator(gen.resolution, channels, z_dim=gen.z_dim, w_dim=gen.w_dim, n_mlp=gen.n_mlp)


def identity(gen: ml_collections.ConfigDict) -> str:
    """The generator a block names, for the settings records that decide whether outputs are still valid:
    its checkpoint, with '@bfloat16' when it computes in bfloat16 (float32 adds nothing, so records
    written before `generator.dtype` existed still match)."""
    dtype = gen.get('dtype', 'float32')
    return str(gen.checkpoint) + ('' if dtype == 'float32' else f'@{dtype}')


def architecture(gen: ml_collections.ConfigDict):
    """The generator module a config's `generator` block will load, when known without reading a user
    file: a shipped generator, the architecture a paper config expects (`expected`), or the
    random-weights one; None for an arbitrary checkpoint."""
    if gen.checkpoint in SHIPPED:
        return build_generator(gen)[0]
    if gen.get('expected'):
        return _random_generator(gen.expected)
    if gen.checkpoint:
        return None
    return _random_generator(gen)


def generator_models(gen: ml_collections.ConfigDict) -> dict:
    """{'generator': (module, example args)} for a stage's shape checks; {} for an arbitrary checkpoint."""
    module = architecture(gen)
    return {} if module is None else {'generator': (module, (jnp.zeros((1, module.z_dim)),))}


def latents(key, index, z_dim: int) -> jax.Array:
    """z for sample indices `index` (N,) of PRNG key `key`: normal(fold_in(key, i)), traceable."""
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (z_dim,)))(index)


def ws_and_images(module, variables, z, psi: float):
    """(w+ (N, num_ws, w_dim), raw images (N, H, W, 3)) for latents z, truncated by psi, constant noise."""
    ws = module.apply(variables, z, truncation_psi=psi, method='map')
    return ws, module.apply(variables, ws, noise_mode='const', method='synthesize')
