"""Few-shot stage: train the segmentation head(s) on the labelled shots' GAN features.

Reads WORKDIR/shots (see `gsd.pipeline.shots`), runs the generator once on the shots' w+ (constant noise, as
they were sampled) capturing the chosen synthesis convs, and trains `config.fewshot.ensemble` heads
in one compiled program (`gsd.nn.heads.train_heads`: vmapped, split over every device of every process). The head's
first layer is applied per layer at that layer's own resolution (`first_layer_fused`), so the
concatenated (H, W, C) feature map is never built. Writes

    heads/params/          orbax checkpoint of the stacked head parameters (leading axis = member)
    heads/heads.json       everything needed to rebuild the head: kind, classes, layers, layout
    heads/train_loss.json  per-member loss per epoch (every 10th epoch)

`gsd.segmenters.load_heads(WORKDIR / 'heads', module, variables)` returns a `GANSegmenter` that maps w+
(and noise) to class probabilities.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gsd import errors, head_features, segmenters
from gsd.io import annotation, param_store
from gsd.nn import heads
from gsd.stylegan2 import generator
from gsd.training import parallel

FEATURE_DTYPES = ('float32', 'bfloat16')  # how the shots' activations are stored; heads compute in float32


def models(config) -> dict:
    module = generator.architecture(config.generator)
    if module is None:
        return {}
    ext = head_features.extractor_for(module, config.fewshot)
    head = segmenters.make_head(config.fewshot.head, len(config.classes.names), ext.layout)
    return {'head': (head, (ext.example_activations(),))}


def check(config) -> None:
    """Refuse settings the head training cannot run with, before any stage of the run starts."""
    cfg = config.fewshot

    def need(ok: bool, field: str, what: str) -> None:
        if not ok:
            raise errors.SettingError(f'fewshot.{field}: must be {what}, got {cfg[field]!r}')

    def integer(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)

    need(cfg.head in segmenters.HEAD_KINDS, 'head', f'one of {segmenters.HEAD_KINDS}')
    need(cfg.feature_dtype in FEATURE_DTYPES, 'feature_dtype', f'one of {FEATURE_DTYPES}')
    for field in ('epochs', 'ensemble', 'batch_size', 'lr_decay_every'):
        need(integer(cfg[field]) and cfg[field] >= 1, field, 'an integer >= 1')
    need(number(cfg.lr) and cfg.lr > 0, 'lr', 'a number > 0')
    need(number(cfg.weight_decay) and cfg.weight_decay >= 0, 'weight_decay', 'a number >= 0')
    need(number(cfg.lr_decay_factor) and cfg.lr_decay_factor > 0, 'lr_decay_factor', 'a number > 0')
    need(integer(cfg.feature_size) and cfg.feature_size >= 0, 'feature_size', "an integer >= 0 (0: the generator's)")
    # The image-channel fields are optional (configs written before them read as no image channels).
    need(isinstance(cfg.get('image_channels', False), bool), 'image_channels', 'True or False')
    weight, contrast = cfg.get('image_weight', 1.0), cfg.get('contrast_weight', 0.0)
    need(number(weight) and weight > 0, 'image_weight', 'a number > 0')
    need(number(contrast) and contrast >= 0, 'contrast_weight', 'a number >= 0')
    size = cfg.get('contrast_size', 9)
    need(integer(size) and size >= 3 and size % 2 == 1, 'contrast_size', 'an odd integer >= 3')


def _settings(config, ws, labels) -> dict:
    """What the heads are a function of: the config, the generator and the labelled shots."""
    digest = hashlib.sha256(np.ascontiguousarray(ws).tobytes() + np.ascontiguousarray(labels).tobytes())
    return {
        'seed': int(config.seed),
        'fewshot': config.fewshot.to_dict(),
        'generator': generator.identity(config.generator),
        'shots': digest.hexdigest()[:16],
    }


def run(config: ml_collections.ConfigDict, workdir) -> dict:
    """Train the heads, unless WORKDIR/heads already holds heads trained with the same settings on the
    same shots (a rerun of a pipeline keeps them, and what was made from them stays valid)."""
    check(config)
    cfg = config.fewshot
    workdir = pathlib.Path(workdir)
    out = workdir / 'heads'
    t0 = time.time()
    _, ws, labels = annotation.read_shots(
        workdir / 'shots', list(config.classes.names), annotation.palette(config.classes.names, config.classes.colours)
    )
    settings = json.loads(json.dumps(_settings(config, ws, labels)))  # as it reads back from JSON
    if (out / 'heads.json').exists():
        before = segmenters.read_heads_meta(out)
        if before.get('settings') == settings:
            print(f'fewshot: {out} already holds heads trained with these settings on these shots; kept')
            return before
    module, variables = generator.build_generator(config.generator)
    ext = head_features.extractor_for(module, cfg)
    if labels.shape[1] != ext.out_size:
        raise ValueError(
            f'{workdir / "shots" / "labels"}: labels are {labels.shape[1]} px, the head predicts at '
            f'{ext.out_size} px (fewshot.feature_size)'
        )
    # One shot at a time into buffers allocated once: the generator never runs at batch N.
    acts = ext.stored_activations(variables, jnp.asarray(ws), batch_size=1, dtype=cfg.feature_dtype)
    head = segmenters.make_head(cfg.head, len(config.classes.names), ext.layout)
    keys = jax.random.split(jax.random.key(config.seed + 1), cfg.ensemble)
    params, losses = heads.train_heads(
        head,
        keys,
        acts,
        labels,
        epochs=cfg.epochs,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        lr_decay_every=cfg.lr_decay_every,
        lr_decay_factor=cfg.lr_decay_factor,
        batch_size=cfg.batch_size,
    )
    losses = np.asarray(losses)
    if not np.all(np.isfinite(losses[:, -1])):
        raise FloatingPointError(
            f'fewshot.lr: head training diverged at lr {cfg.lr} (final losses {losses[:, -1]}); try a lower fewshot.lr'
        )
    meta = {
        'settings': settings,
        'head': cfg.head,
        'ensemble': int(cfg.ensemble),
        'classes': list(config.classes.names),
        'layers': list(ext.layers),
        'image_channels': ext.image_channels,
        'image_weight': ext.image_weight,
        'contrast_weight': ext.contrast_weight,
        'contrast_size': ext.contrast_size,
        'layer_channels': list(ext.layout.layer_channels),
        'feature_size': ext.out_size,
        'generator_resolution': module.resolution,
        'upsample': ext.upsample,
        'align_corners': ext.align_corners,
        'shots': int(labels.shape[0]),
        'epochs': int(cfg.epochs),
        'final_loss': [float(x) for x in losses[:, -1]],
        'seconds': round(time.time() - t0, 1),
    }
    if parallel.is_writer():  # every process holds every head (heads.train_heads gathers them)
        param_store.write(
            out, jax.device_get(params), {'heads.json': meta, 'train_loss.json': losses[:, ::10].round(5).tolist()}
        )
    print(
        f'fewshot: {cfg.ensemble} {cfg.head} head(s) on {labels.shape[0]} shot(s), '
        f'{ext.layout.channels} feature channels; final loss {np.mean(losses[:, -1]):.4f}; '
        f'{meta["seconds"]} s -> {out}'
    )
    return meta
