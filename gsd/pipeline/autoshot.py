"""Auto-shot stage: distil the GAN-labelled dataset into a UNet that segments real images of any size.

    python -m gsd.main --config=configs/toy_autoshot.py --workdir=DIR --config.stages=autoshot

Trains `gsd.nn.unet.UNet` (architecture and its relation to the paper's supplementary: gsd.nn.unet's
docstring) on WORKDIR/autoshot_data (`gsd.pipeline.autoshot_data`): cross-entropy against softmax(stored
logits), Adam (`autoshot.lr`, 1e-3), the paper's augmentation on device inside the jitted step
(`gsd.augment`: flip, scale 0.5-2, rotation +-10 degrees, translation up to 50%; out-of-frame
pixels labelled background; a mirror swaps `classes.flip_permutation`). After every epoch the
validation split is scored (mean IoU of the UNet's argmax against the soft labels' argmax) and the
lr is multiplied by `plateau_factor` once `plateau_patience` epochs pass without improvement
(`gsd.nn.unet.Plateau`, the torch ReduceLROnPlateau rule). Data-parallel: the global batch is sharded
over every device (jit + NamedSharding), each process reading its own shard of the records.

The loop, checkpoints, NaN guard, SIGTERM stop and metrics are the training scaffold's
(`gsd.training.loop`); this module holds the step, the per-epoch validation and Plateau, and the export.

Writes WORKDIR/autoshot/checkpoints (orbax: state, data-iterator position, plateau state and what the
state was trained on, every `checkpoint_every` epochs; a rerun resumes from the last readable one,
and refuses checkpoints trained on another dataset (its dataset.json and settings.json, which name the
heads that labelled it), architecture, batch size or seed), WORKDIR/autoshot/tensorboard (and
metrics.jsonl), and WORKDIR/autoshot/unet (orbax params + unet.json), which `gsd.segmenters.load_unet` reads back
as a `UNetSegmenter` for any image size, aspect and number of objects: no GAN at test time.
"""

from __future__ import annotations

import functools
import json
import pathlib

import grain.python as grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gsd import augment, evaluation, segmenters
from gsd.io import param_store, sources
from gsd.nn import unet
from gsd.training import loop, parallel


def build_model(config) -> unet.UNet:
    u = config.autoshot
    if u.dtype not in segmenters.UNET_DTYPES:
        raise ValueError(f'autoshot.dtype must be one of {tuple(segmenters.UNET_DTYPES)}, got {u.dtype!r}')
    return unet.UNet(
        len(config.classes.names),
        u.base_width,
        u.depth,
        u.norm_groups,
        segmenters.UNET_DTYPES[u.dtype],
        u.conv_impl or None,
    )


def models(config) -> dict:
    size = 2**config.autoshot.depth * 4
    return {'unet': (build_model(config), (jnp.zeros((1, size, size, 3)),))}


class ImageAndLogits(grain.MapTransform):
    """An auto-shot record -> the two arrays the UNet trains on."""

    def map(self, record):
        return {'image': np.asarray(record['image']), 'logits': np.asarray(record['logits'])}


def _validation_arrays(source, limit: int) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(source), limit)
    records = [source[i] for i in range(n)]
    return np.stack([r['image'] for r in records]), np.stack([r['logits'] for r in records])


def _evaluator(model: unet.UNet, num_classes: int):
    @jax.jit
    def evaluate(params, images, logits, valid):
        out = model.apply({'params': params}, unet.preprocess(images))
        target = jax.nn.softmax(logits.astype(jnp.float32), -1)
        if target.shape[1:3] != out.shape[1:3]:
            target = jax.image.resize(target, out.shape[:3] + target.shape[3:], 'linear')
        ce = optax.softmax_cross_entropy(out, target).mean((1, 2))
        w = valid.astype(jnp.float32)[:, None, None, None]
        truth = jax.nn.one_hot(jnp.argmax(target, -1), num_classes) * w
        pred = jax.nn.one_hot(jnp.argmax(out, -1), num_classes)
        confusion = jnp.einsum('nhwi,nhwj->ij', truth, pred)
        return jnp.sum(ce * valid), confusion

    return evaluate


def _score(evaluate, params, images, logits, batch: int, num_classes: int) -> dict:
    """Validation cross-entropy and mean IoU (UNet argmax vs the soft labels' argmax)."""
    total, conf = 0.0, 0.0
    for (im, lo), count in parallel.padded_batches((images, logits), batch):
        ce, c = evaluate(params, im, lo, np.arange(batch) < count)
        total, conf = total + ce, conf + c
    total, conf = jax.device_get((total, conf))
    confusion = evaluation.Confusion(num_classes)
    confusion.matrix += np.rint(np.asarray(conf)).astype(np.int64)
    return {'val/loss': float(total) / images.shape[0], 'val/mean_iou': confusion.results()['mean_iou']}


def _class_weights(source, num_classes: int, cfg) -> tuple[float, ...]:
    """`unet.balanced_class_weights` (power `autoshot.class_balance`) from the labels' class shares, counted
    on up to `class_balance_images` training records spread evenly over the set (soft labels' argmax)."""
    n = len(source)
    count = min(n, cfg.get('class_balance_images', 500))
    pixels = np.zeros(num_classes, np.int64)
    for i in np.linspace(0, n - 1, count).round().astype(int):
        pixels += np.bincount(np.argmax(np.asarray(source[int(i)]['logits']), -1).ravel(), minlength=num_classes)
    return unet.balanced_class_weights(pixels, cfg.class_balance)


def _trained_on(config, meta: dict, dataset_dir: pathlib.Path) -> dict:
    """What a checkpoint's state depends on: the dataset (its dataset.json and the settings it was made
    with, which name the heads that labelled it), the architecture, the classes, the batch and the seed."""
    u = config.autoshot
    settings = dataset_dir / 'settings.json'
    dataset = {
        # Not where it lies or how long it took: a moved workdir or an identical regeneration still resumes.
        'dataset.json': {k: v for k, v in meta.items() if k not in ('data_dir', 'seconds_generation')},
        'settings.json': json.loads(settings.read_text()) if settings.exists() else None,
    }
    return {
        'dataset': loop.fingerprint(dataset),
        'classes': list(config.classes.names),
        'architecture': [u.base_width, u.depth, u.norm_groups],
        'batch_size': u.batch_size,
        'class_balance': u.get('class_balance', 0.0),
        'seed': config.seed,
    }


def check(config) -> None:
    """The global batch must split over every device of every process: said before any stage starts."""
    parallel.local_batch_size(config.autoshot.batch_size, 'autoshot.batch_size')


def run(config: ml_collections.ConfigDict, workdir) -> dict:
    cfg = config.autoshot
    workdir = pathlib.Path(workdir).absolute()
    out = workdir / 'autoshot'
    mesh = parallel.mesh()
    local_batch = parallel.local_batch_size(cfg.batch_size, 'autoshot.batch_size', mesh)
    loop.require_positive({'autoshot.epochs': cfg.epochs, 'autoshot.checkpoint_every': cfg.checkpoint_every})
    model = build_model(config)

    from gsd.io import autoshot_dataset  # imported here: tensorflow_datasets is slow to import

    dataset_dir = workdir / 'autoshot_data'
    meta, train_source, val_source = autoshot_dataset.sources(dataset_dir)
    num_classes = len(config.classes.names)
    if meta['classes'] != list(config.classes.names):
        raise ValueError(
            f'{dataset_dir}: labelled with classes {meta["classes"]}, the config has {list(config.classes.names)}'
        )
    steps_per_epoch = max(1, meta['train'] // cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    tx = optax.adam(cfg.lr)
    augment_fn = functools.partial(
        augment.augment,
        flip=cfg.flip,
        scale=tuple(cfg.scale),
        rotate=cfg.rotate,
        translate=cfg.translate,
        background=0,
        log_scale=cfg.log_scale,
        flip_permutation=tuple(config.classes.flip_permutation),
    )
    weights = _class_weights(train_source, num_classes, cfg) if cfg.get('class_balance', 0.0) else None
    train_step = unet.make_train_step(model, tx, mesh, augment_fn=augment_fn, soft=True, class_weights=weights)
    evaluate = _evaluator(model, num_classes)
    loader = sources.make_loader(
        train_source, local_batch, config.seed, worker_count=cfg.data_workers, transform=ImageAndLogits()
    )
    key = jax.random.key(config.seed + 7)
    step_key = jax.random.fold_in(key, 1)
    plateau = unet.Plateau(cfg.plateau_patience, cfg.plateau_factor, mode='max' if val_source else 'min')
    val = _validation_arrays(val_source, cfg.max_validation) if val_source else None
    history = []

    def step(state, batch, index):
        return train_step(state, batch['image'], batch['logits'], jax.random.fold_in(step_key, index))

    def log(state, done, means):
        """Once per epoch: validation, the plateau lr schedule, the epoch's history row."""
        epoch = done // steps_per_epoch
        last = {'train/loss': means['loss'], 'train/accuracy': means['accuracy']}
        if val is not None:
            last.update(_score(evaluate, state.params, *val, cfg.batch_size, num_classes))
        scale = plateau.update(last['val/mean_iou'] if val is not None else last['train/loss'])
        if scale != float(jax.device_get(state.lr_scale)):
            state = unet.set_lr_scale(state, scale)
        last['lr'] = cfg.lr * scale
        history.append({'epoch': epoch, **last})
        shown = {k.split('/')[-1] if k.startswith('train') else k: v for k, v in last.items()}
        return state, last, {'epoch': epoch, **shown}

    finished = loop.train(
        'autoshot',
        out,
        mesh=mesh,
        loader=loader,
        init=lambda: unet.create_state(model, tx, jax.random.fold_in(key, 0), mesh=mesh),
        step=step,
        total_steps=total_steps,
        batch_size=cfg.batch_size,
        log_every=steps_per_epoch,
        checkpoint_every=steps_per_epoch * cfg.checkpoint_every,
        keep_checkpoints=2,
        trained_on=_trained_on(config, meta, dataset_dir),
        hparams={**cfg.to_dict(), 'dataset': meta},
        log=log,
        json_state={'plateau': (lambda: dict(plateau.__dict__), plateau.__dict__.update)},
    )
    last = finished.metrics
    result = {
        'steps': total_steps,
        'epochs': cfg.epochs,
        'steps_per_epoch': steps_per_epoch,
        'seconds_this_run': finished.seconds,
        'final': last,
        'dataset': meta['name'],
    }
    if jax.process_index() == 0:
        unet_meta = {
            'classes': list(config.classes.names),
            'colours': [list(map(int, c)) for c in config.classes.colours],
            'base_width': model.base_width,
            'depth': model.depth,
            'norm_groups': model.norm_groups,
            'dtype': cfg.dtype,
            'conv_impl': cfg.conv_impl,
            'trained_on': meta['image_shape'],
            **result,
        }
        param_store.write(out / 'unet', jax.device_get(finished.state.params), {'unet.json': unet_meta})
        (out / 'train.json').write_text(json.dumps({**result, 'history': history}, indent=1))
    print(f'autoshot: UNet trained {total_steps} steps ({cfg.epochs} epochs) -> {out / "unet"}; {last}')
    return result
