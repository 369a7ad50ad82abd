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

Writes WORKDIR/autoshot/checkpoints (orbax: state, data-iterator position and plateau state, every
`checkpoint_every` epochs; a rerun resumes from the last one), WORKDIR/autoshot/tensorboard (and
metrics.jsonl), and WORKDIR/autoshot/unet (orbax params + unet.json), which `load` reads back as an
`gsd.segmenters.UNetSegmenter` for any image size, aspect and number of objects: no GAN at test time.
"""

from __future__ import annotations

import functools
import json
import pathlib
import time

import grain.python as grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gsd import augment, evaluation, segmenters
from gsd.io import param_store
from gsd.nn import unet
from gsd.training import metrics as metrics_lib
from gsd.training import stop


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


class _ImageAndLogits(grain.MapTransform):
    def map(self, record):
        return {'image': np.asarray(record['image']), 'logits': np.asarray(record['logits'])}


def _loader(source, batch: int, seed: int, workers: int) -> grain.DataLoader:
    shard = grain.ShardByJaxProcess(drop_remainder=True)
    sampler = grain.IndexSampler(len(source), shard_options=shard, shuffle=True, seed=seed, num_epochs=None)
    return grain.DataLoader(
        data_source=source,
        sampler=sampler,
        shard_options=shard,
        worker_count=workers,
        operations=[_ImageAndLogits(), grain.Batch(batch, drop_remainder=True)],
    )


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
    n = images.shape[0]
    for s in range(0, n, batch):
        im, lo = images[s : s + batch], logits[s : s + batch]
        pad = batch - im.shape[0]
        valid = np.arange(batch) < im.shape[0]
        if pad:
            im = np.concatenate([im, np.zeros((pad,) + im.shape[1:], im.dtype)])
            lo = np.concatenate([lo, np.zeros((pad,) + lo.shape[1:], lo.dtype)])
        ce, c = evaluate(params, im, lo, valid)
        total, conf = total + ce, conf + c
    total, conf = jax.device_get((total, conf))
    confusion = evaluation.Confusion(num_classes)
    confusion.matrix += np.rint(np.asarray(conf)).astype(np.int64)
    return {'val/loss': float(total) / n, 'val/mean_iou': confusion.results()['mean_iou']}


def run(config: ml_collections.ConfigDict, workdir) -> dict:
    import orbax.checkpoint as ocp

    from gsd.io import autoshot_dataset  # imported here: tensorflow_datasets is slow to import

    cfg = config.autoshot
    workdir = pathlib.Path(workdir).absolute()
    out = workdir / 'autoshot'
    meta, train_source, val_source = autoshot_dataset.sources(workdir / 'autoshot_data')
    num_classes = len(config.classes.names)
    if meta['classes'] != list(config.classes.names):
        raise ValueError(
            f'{workdir / "autoshot_data"}: labelled with classes {meta["classes"]}, the config has '
            f'{list(config.classes.names)}'
        )
    if cfg.batch_size % jax.process_count():
        raise ValueError(f'autoshot.batch_size {cfg.batch_size} must be divisible by {jax.process_count()} processes')
    mesh = unet.data_mesh()
    if cfg.batch_size % mesh.size:
        raise ValueError(f'autoshot.batch_size {cfg.batch_size} must be divisible by the {mesh.size} devices')
    steps_per_epoch = max(1, meta['train'] // cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    model = build_model(config)
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
    step_fn = unet.make_train_step(model, tx, mesh, augment_fn=augment_fn, soft=True)
    evaluate = _evaluator(model, num_classes)
    data_sharding = NamedSharding(mesh, P('data'))

    loader = _loader(train_source, cfg.batch_size // jax.process_count(), config.seed, cfg.data_workers)
    data_iter = iter(loader)
    key = jax.random.key(config.seed + 7)
    state = unet.create_state(model, tx, jax.random.fold_in(key, 0), mesh=mesh)
    plateau = unet.Plateau(cfg.plateau_patience, cfg.plateau_factor, mode='max' if val_source else 'min')
    manager = ocp.CheckpointManager(
        out / 'checkpoints', options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    )
    latest = manager.latest_step()
    if latest is not None:
        restored = manager.restore(
            latest,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(state),
                data=grain.PyGrainCheckpointRestore(data_iter),
                plateau=ocp.args.JsonRestore(),
            ),
        )
        state = restored['state']
        plateau.__dict__.update(restored['plateau'])
        print(f'autoshot: resumed from step {latest} in {out / "checkpoints"}', flush=True)
    val = _validation_arrays(val_source, cfg.max_validation) if val_source else None

    writer = metrics_lib.MetricWriter(out / 'tensorboard')
    if latest is None:
        writer.write_hparams({**cfg.to_dict(), 'dataset': meta})
    start = int(jax.device_get(state.step))
    progress = metrics_lib.Progress(total_steps, cfg.batch_size, start, name='autoshot: ')
    step_key = jax.random.fold_in(key, 1)
    sums, count, finite, last, history = None, 0, jnp.array(True), {}, []
    t0 = time.time()
    with stop.stoppable(finish=manager.wait_until_finished):
        for step in range(start, total_steps):
            stop.check_stop('autoshot')
            batch = next(data_iter)
            images = jax.make_array_from_process_local_data(data_sharding, batch['image'])
            logits = jax.make_array_from_process_local_data(data_sharding, batch['logits'])
            state, m = step_fn(state, images, logits, jax.random.fold_in(step_key, step))
            # Sums stay on device; the host reads them once per epoch.
            finite = finite & m.pop('finite')
            sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
            count += 1
            done = step + 1
            if done % steps_per_epoch and done != total_steps:
                continue
            epoch = done // steps_per_epoch
            values, ok = jax.device_get((sums, finite))
            if not ok:
                raise FloatingPointError(
                    f'autoshot: non-finite loss in epoch {epoch}; the last good checkpoint is in {out / "checkpoints"}'
                )
            last = {'train/loss': float(values['loss']) / count, 'train/accuracy': float(values['accuracy']) / count}
            if val is not None:
                last.update(_score(evaluate, state.params, *val, cfg.batch_size, num_classes))
            scale = plateau.update(last['val/mean_iou'] if val is not None else last['train/loss'])
            if scale != float(jax.device_get(state.lr_scale)):
                state = unet.set_lr_scale(state, scale)
            last['lr'] = cfg.lr * scale
            writer.write_scalars(done, last)
            history.append({'epoch': epoch, **last})
            progress.report(
                done, epoch=epoch, **{k.split('/')[-1] if k.startswith('train') else k: v for k, v in last.items()}
            )
            sums, count = None, 0
            if epoch % cfg.checkpoint_every == 0 or done == total_steps:
                manager.save(
                    done,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardSave(state),
                        data=grain.PyGrainCheckpointSave(data_iter),
                        plateau=ocp.args.JsonSave(dict(plateau.__dict__)),
                    ),
                )
    writer.close()
    result = {
        'steps': total_steps,
        'epochs': cfg.epochs,
        'steps_per_epoch': steps_per_epoch,
        'seconds_this_run': round(time.time() - t0, 1),
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
        param_store.write(out / 'unet', jax.device_get(state.params), {'unet.json': unet_meta})
        (out / 'train.json').write_text(json.dumps({**result, 'history': history}, indent=1))
    print(f'autoshot: UNet trained {total_steps} steps ({cfg.epochs} epochs) -> {out / "unet"}; {last}')
    return result


def load(workdir, batch_size: int = 16) -> segmenters.UNetSegmenter:
    """The UNetSegmenter an `autoshot` run wrote to WORKDIR/autoshot/unet (no config needed: unet.json
    holds the architecture and classes)."""
    return segmenters.load_unet(pathlib.Path(workdir) / 'autoshot' / 'unet', batch_size)
