"""Auto-shot stage: distil the GAN-labelled dataset into a UNet that segments real images of any size.

    python -m gsd.main --config=configs/toy_autoshot.py --workdir=DIR --config.stages=autoshot

Trains `gsd.unet.UNet` (architecture and its relation to the paper's supplementary: gsd.unet's
docstring) on WORKDIR/autoshot_data (`gsd.synthetic`): cross-entropy against softmax(stored
logits), Adam (`autoshot.lr`, 1e-3), the paper's augmentation on device inside the jitted step
(`gsd.augment`: flip, scale 0.5-2, rotation +-10 degrees, translation up to 50%; out-of-frame
pixels labelled background; a mirror swaps `classes.flip_permutation`). After every epoch the
validation split is scored (mean IoU of the UNet's argmax against the soft labels' argmax) and the
lr is multiplied by `plateau_factor` once `plateau_patience` epochs pass without improvement
(`gsd.unet.Plateau`, the torch ReduceLROnPlateau rule). Data-parallel: the global batch is sharded
over every device (jit + NamedSharding), each process reading its own shard of the records.

Writes WORKDIR/autoshot/checkpoints (orbax: state, data-iterator position and plateau state, every
`checkpoint_every` epochs; a rerun resumes from the last one), WORKDIR/autoshot/tensorboard (and
metrics.jsonl), and WORKDIR/autoshot/unet (orbax params + unet.json), which `load` reads back as an
`AutoshotSegmenter` for any image size, aspect and number of objects: no GAN at test time.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import time
from typing import Any, Sequence

import grain.python as grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from gsd import augment, data, evaluation, param_store, stages, unet
from gsd import metrics as metrics_lib

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def add_config(c: ml_collections.ConfigDict, *, num_images: int, base_width: int, epochs: int, batch_size: int,
               truncation_psi: float = 1.0, chunk_size: int = 100, generation_batch: int = 10,
               dtype: str = 'float32') -> ml_collections.ConfigDict:
    """Add the auto-shot blocks (autoshot_data, autoshot, autoshot_segment) to config `c`, with these
    settings and the paper's training recipe; every field is then overridable with --config.X=..."""
    a = c.autoshot_data = ml_collections.ConfigDict()
    a.num_images = num_images          # generated images labelled by the heads
    a.truncation_psi = truncation_psi  # 1.0: the GAN's whole distribution, as varied as real data
    a.batch_size = generation_batch    # images per generation program, split over the local devices
    a.chunk_size = chunk_size          # images per staged file: the unit a killed run resumes by
    a.filter_fraction = 0.0            # drop this share of the most uncertain images (needs fewshot.ensemble >= 2)
    a.val_fraction = 0.05              # the last 5% (by index) of the kept images: validation

    u = c.autoshot = ml_collections.ConfigDict()
    u.base_width = base_width          # UNet widths base_width * 2**level (gsd.unet)
    u.depth = 4
    u.norm_groups = 8
    u.dtype = dtype                    # compute dtype: 'bfloat16' on TPU/GPU
    u.conv_impl = 'xla'                # XLA's conv (gsd.heads.Conv3x3): fastest for a standalone jitted step
    u.batch_size = batch_size          # global, sharded over all devices
    u.epochs = epochs
    u.lr = 1e-3                        # the paper: Adam 1e-3,
    u.plateau_patience = 20            # x0.1 after 20 epochs without validation improvement
    u.plateau_factor = 0.1
    u.flip = True                      # the paper's augmentation (gsd.augment): flips,
    u.scale = (0.5, 2.0)               # scales,
    u.log_scale = True                 # (drawn log-uniform; False: uniform, as torchvision)
    u.rotate = 10.0                    # rotations in degrees,
    u.translate = 0.5                  # translations, as a fraction of the size
    u.checkpoint_every = 1             # epochs
    u.max_validation = 500             # validation images scored per epoch
    u.data_workers = 0                 # grain worker processes

    c.autoshot_segment = ml_collections.ConfigDict()
    c.autoshot_segment.input = ''      # folder of images for the `autoshot_segment` stage
    return c


def build_model(config) -> unet.UNet:
    u = config.autoshot
    if u.dtype not in DTYPES:
        raise ValueError(f'autoshot.dtype must be one of {tuple(DTYPES)}, got {u.dtype!r}')
    return unet.UNet(len(config.classes.names), u.base_width, u.depth, u.norm_groups, DTYPES[u.dtype],
                     u.conv_impl or None)


def models(config) -> dict:
    size = 2 ** config.autoshot.depth * 4
    return {'unet': (build_model(config), (jnp.zeros((1, size, size, 3)),))}


class _ImageAndLogits(grain.MapTransform):
    def map(self, record):
        return {'image': np.asarray(record['image']), 'logits': np.asarray(record['logits'])}


def _loader(source, batch: int, seed: int, workers: int) -> grain.DataLoader:
    shard = grain.ShardByJaxProcess(drop_remainder=True)
    sampler = grain.IndexSampler(len(source), shard_options=shard, shuffle=True, seed=seed, num_epochs=None)
    return grain.DataLoader(data_source=source, sampler=sampler, shard_options=shard, worker_count=workers,
                            operations=[_ImageAndLogits(), grain.Batch(batch, drop_remainder=True)])


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
        im, lo = images[s:s + batch], logits[s:s + batch]
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
    from gsd import synthetic   # imported here: tensorflow_datasets is slow to import, configs import this module
    cfg = config.autoshot
    workdir = pathlib.Path(workdir).absolute()
    out = workdir / 'autoshot'
    meta, train_source, val_source = synthetic.sources(workdir)
    num_classes = len(config.classes.names)
    if meta['classes'] != list(config.classes.names):
        raise ValueError(f'{workdir / "autoshot_data"}: labelled with classes {meta["classes"]}, the config has '
                         f'{list(config.classes.names)}')
    if cfg.batch_size % jax.process_count():
        raise ValueError(f'autoshot.batch_size {cfg.batch_size} must be divisible by {jax.process_count()} processes')
    mesh = unet.data_mesh()
    if cfg.batch_size % mesh.size:
        raise ValueError(f'autoshot.batch_size {cfg.batch_size} must be divisible by the {mesh.size} devices')
    steps_per_epoch = max(1, meta['train'] // cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    model = build_model(config)
    tx = optax.adam(cfg.lr)
    augment_fn = functools.partial(augment.augment, flip=cfg.flip, scale=tuple(cfg.scale), rotate=cfg.rotate,
                                   translate=cfg.translate, background=0, log_scale=cfg.log_scale,
                                   flip_permutation=tuple(config.classes.flip_permutation))
    step_fn = unet.make_train_step(model, tx, mesh, augment_fn=augment_fn, soft=True)
    evaluate = _evaluator(model, num_classes)
    data_sharding = NamedSharding(mesh, P('data'))

    loader = _loader(train_source, cfg.batch_size // jax.process_count(), config.seed, cfg.data_workers)
    data_iter = iter(loader)
    key = jax.random.key(config.seed + 7)
    state = unet.create_state(model, tx, jax.random.fold_in(key, 0), mesh=mesh)
    plateau = unet.Plateau(cfg.plateau_patience, cfg.plateau_factor, mode='max' if val_source else 'min')
    manager = ocp.CheckpointManager(out / 'checkpoints', options=ocp.CheckpointManagerOptions(
        max_to_keep=2, create=True))
    latest = manager.latest_step()
    if latest is not None:
        restored = manager.restore(latest, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(state), data=grain.PyGrainCheckpointRestore(data_iter),
            plateau=ocp.args.JsonRestore()))
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
    with stages.stoppable(finish=manager.wait_until_finished):
        for step in range(start, total_steps):
            stages.check_stop('autoshot')
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
                raise FloatingPointError(f'autoshot: non-finite loss in epoch {epoch}; the last good checkpoint is '
                                         f'in {out / "checkpoints"}')
            last = {'train/loss': float(values['loss']) / count, 'train/accuracy': float(values['accuracy']) / count}
            if val is not None:
                last.update(_score(evaluate, state.params, *val, cfg.batch_size, num_classes))
            scale = plateau.update(last['val/mean_iou'] if val is not None else last['train/loss'])
            if scale != float(jax.device_get(state.lr_scale)):
                state = unet.set_lr_scale(state, scale)
            last['lr'] = cfg.lr * scale
            writer.write_scalars(done, last)
            history.append({'epoch': epoch, **last})
            progress.report(done, epoch=epoch, **{k.split('/')[-1] if k.startswith('train') else k: v
                                                  for k, v in last.items()})
            sums, count = None, 0
            if epoch % cfg.checkpoint_every == 0 or done == total_steps:
                manager.save(done, args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), data=grain.PyGrainCheckpointSave(data_iter),
                    plateau=ocp.args.JsonSave(dict(plateau.__dict__))))
    writer.close()
    result = {'steps': total_steps, 'epochs': cfg.epochs, 'steps_per_epoch': steps_per_epoch,
              'seconds_this_run': round(time.time() - t0, 1), 'final': last, 'dataset': meta['name']}
    if jax.process_index() == 0:
        unet_meta = {'classes': list(config.classes.names), 'colours': [list(map(int, c)) for c in config.classes.colours],
                     'base_width': model.base_width, 'depth': model.depth, 'norm_groups': model.norm_groups,
                     'dtype': cfg.dtype, 'conv_impl': cfg.conv_impl, 'trained_on': meta['image_shape'], **result}
        param_store.write(out / 'unet', jax.device_get(state.params), {'unet.json': unet_meta})
        (out / 'train.json').write_text(json.dumps({**result, 'history': history}, indent=1))
    print(f'autoshot: UNet trained {total_steps} steps ({cfg.epochs} epochs) -> {out / "unet"}; {last}')
    return result


@dataclasses.dataclass(eq=False)
class AutoshotSegmenter:
    """The trained UNet: uint8 images of any size and aspect -> class ids (or probabilities)."""
    model: unet.UNet
    params: Any
    classes: tuple[str, ...]
    colours: np.ndarray
    batch_size: int = 16

    def probabilities(self, images) -> np.ndarray:
        """(N, H, W, C) or (H, W, C) uint8 (C = 1 or 3, or (H, W) grey) -> probabilities (..., K)."""
        return self._run(images, 'probs')

    def segment(self, images):
        """uint8 images -> class ids: an array (N, H, W) for an array input, or a list of (H, W)
        masks for a list of images of different sizes (each size compiles once; equal sizes batch)."""
        return self._run(images, 'labels')

    def _run(self, images, output: str):
        if isinstance(images, np.ndarray) and images.ndim == 4:
            return unet.predict(self.model, self.params, _rgb_batch(images), self.batch_size, output=output)
        if isinstance(images, np.ndarray):      # one image, (H, W) or (H, W, C)
            return self._run(data._array_to_square(images, None)[None], output)[0]
        images = [data._array_to_square(np.asarray(im), None) for im in images]
        results: list = [None] * len(images)
        by_shape: dict = {}
        for i, im in enumerate(images):
            by_shape.setdefault(im.shape, []).append(i)
        for idx in by_shape.values():
            out = self._run(np.stack([images[i] for i in idx]), output)
            for i, o in zip(idx, out):
                results[i] = o
        return results


def _rgb_batch(images: np.ndarray) -> np.ndarray:
    if images.dtype != np.uint8:
        raise TypeError(f'expected uint8 images, got {images.dtype}: refusing to guess their range')
    if images.shape[-1] == 1:
        return np.repeat(images, 3, axis=-1)
    if images.shape[-1] != 3:
        raise ValueError(f'expected (N, H, W, 1) or (N, H, W, 3) images, got shape {images.shape}')
    return images


def load(workdir, config=None, batch_size: int = 16) -> AutoshotSegmenter:
    """The AutoshotSegmenter an `autoshot` run wrote to WORKDIR/autoshot/unet (the config is not needed:
    unet.json holds the architecture and classes)."""
    out = pathlib.Path(workdir) / 'autoshot' / 'unet'
    path = out / 'unet.json'
    if not path.exists():
        raise FileNotFoundError(f'{out}: no trained auto-shot UNet here; run the autoshot stage first')
    meta = json.loads(path.read_text())
    model = unet.UNet(len(meta['classes']), meta['base_width'], meta['depth'], meta['norm_groups'],
                      DTYPES[meta['dtype']], meta.get('conv_impl') or None)
    return AutoshotSegmenter(model, param_store.read_params(out), tuple(meta['classes']),
                             np.asarray(meta['colours'], np.uint8), batch_size)

