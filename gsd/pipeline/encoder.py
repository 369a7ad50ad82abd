"""Encoder stage: train an image -> w+ encoder (gsd.nn.encoder) for the config's generator, on its own samples.

    python -m gsd.main --config=configs/encoder.py --workdir=/tmp/encoder

The samples are generated inside the jitted step (no data on disk): the loader hands out sample indices,
and sample i is drawn from fold_in(key, i), so a resumed run trains on exactly the samples an
uninterrupted one would. The loop is the training scaffold's (`gsd.training.loop`): checkpoints every
`encoder.checkpoint_every` steps (a rerun resumes), TensorBoard metrics, a progress line, the NaN guard.

Writes WORKDIR/encoder/ (orbax `params/` plus `encoder.json`: the architecture, the generator it was
trained for with a fingerprint of its weights, the recipe and the final losses), which
`projection.encoder = WORKDIR/encoder` hands to the projections of the `segment` and `report` stages
(`gsd.segmenters.load_encoder`), and WORKDIR/encoder_train/ (checkpoints/, tensorboard/).
"""

from __future__ import annotations

import functools
import json
import pathlib

import grain.python as grain
import jax
import ml_collections
import numpy as np

from gsd import errors, projection, segmenters
from gsd.io import param_store, sources
from gsd.nn import encoder as encoder_lib
from gsd.stylegan2 import generator
from gsd.training import loop, parallel


def models(config) -> dict:
    module = generator.architecture(config.generator)
    if module is None:
        return {}
    cfg = config.encoder
    enc = encoder_lib.for_generator(module, cfg.widths, cfg.hidden, cfg.groups)
    r = module.resolution
    return {'encoder': (enc, (np.zeros((1, r, r, 3), np.float32), np.zeros((module.w_dim,), np.float32)))}


def check(config) -> None:
    cfg = config.encoder
    loop.require_positive(
        {
            'encoder.total_steps': cfg.total_steps,
            'encoder.batch_size': cfg.batch_size,
            'encoder.log_every': cfg.log_every,
            'encoder.checkpoint_every': cfg.checkpoint_every,
            'encoder.keep_checkpoints': cfg.keep_checkpoints,
        }
    )
    if not 0.0 < cfg.psi_min <= cfg.psi_max:
        raise errors.SettingError(
            f'encoder.psi_min/psi_max: need 0 < psi_min <= psi_max, got {cfg.psi_min}, {cfg.psi_max}'
        )
    if len(cfg.widths) < 1:
        raise errors.SettingError('encoder.widths: give at least one block width')
    parallel.local_batch_size(cfg.batch_size, 'encoder.batch_size')  # splits over every device of every process


class SampleIndices(grain.RandomAccessDataSource):
    """Record i is the sample index i: the generated samples need no data, only where they are in the run."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.int32(i)


class _Identity(grain.MapTransform):
    def map(self, x):
        return x


def recipe(cfg) -> encoder_lib.Recipe:
    return encoder_lib.Recipe(cfg.psi_min, cfg.psi_max, cfg.mixing_prob, cfg.pixel_weight)


def run(config: ml_collections.ConfigDict, workdir) -> dict:
    """Train (or resume) the encoder of `config.encoder` for `config.generator`; export WORKDIR/encoder."""
    check(config)
    cfg = config.encoder
    workdir = pathlib.Path(workdir).absolute()
    mesh = parallel.mesh()
    local_batch = parallel.local_batch_size(cfg.batch_size, 'encoder.batch_size', mesh)
    module, g_vars = generator.build_generator(config.generator)
    G = module.clone(fused_modconv=False)  # one shared kernel per batch: fast gradients w.r.t. w+
    enc = encoder_lib.for_generator(G, cfg.widths, cfg.hidden, cfg.groups)
    w_avg, w_std = projection.w_statistics(G, g_vars)  # the projection's start: an untrained encoder returns it
    tx = encoder_lib.optimizer(cfg.lr, cfg.total_steps)
    rec = recipe(cfg)
    step_fn = jax.jit(functools.partial(encoder_lib.train_step, enc, G, tx, rec), donate_argnums=0)
    # Indices in run order (no shuffle: the samples are random already); enough for every step.
    loader = sources.make_loader(
        SampleIndices(cfg.total_steps * cfg.batch_size),
        local_batch,
        seed=config.seed,
        shuffle=False,
        num_epochs=1,
        transform=_Identity(),
    )
    fp = segmenters.generator_fingerprint(g_vars)
    settings = {
        k: v for k, v in cfg.to_dict().items() if k not in ('log_every', 'checkpoint_every', 'keep_checkpoints')
    }
    finished = loop.train(
        'encoder',
        workdir / 'encoder_train',
        mesh=mesh,
        loader=loader,
        init=lambda: encoder_lib.create_state(enc, tx, jax.random.PRNGKey(config.seed), G.resolution),
        step=lambda state, indices, index: step_fn(state, indices, g_vars, w_avg, w_std),
        total_steps=cfg.total_steps,
        batch_size=cfg.batch_size,
        log_every=cfg.log_every,
        checkpoint_every=cfg.checkpoint_every,
        keep_checkpoints=cfg.keep_checkpoints,
        trained_on={'generator': fp, 'seed': config.seed, **json.loads(json.dumps(settings, default=str))},
        hparams=cfg.to_dict(),
    )
    meta = {
        'format': segmenters.ENCODER_FORMAT,
        'architecture': {
            'num_ws': enc.num_ws,
            'w_dim': enc.w_dim,
            'resolution': G.resolution,
            'widths': list(enc.widths),
            'hidden': enc.hidden,
            'groups': enc.groups,
        },
        'generator': {'checkpoint': str(config.generator.get('checkpoint', '')), 'fingerprint': fp},
        'recipe': {**settings, 'widths': list(cfg.widths), 'seed': config.seed},
        'metrics': finished.metrics,
    }
    out = None
    if jax.process_index() == 0:
        out = param_store.write(workdir / 'encoder', jax.device_get(finished.state.params), {'encoder.json': meta})
    result = {
        'steps': cfg.total_steps,
        'seconds_this_run': finished.seconds,
        'metrics': finished.metrics,
        'encoder': str(out) if out else None,
    }
    print(f'encoder: {cfg.total_steps} steps, losses {finished.metrics} -> {out}', flush=True)
    return result
