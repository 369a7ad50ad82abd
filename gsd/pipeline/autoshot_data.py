"""Auto-shot dataset stage: the GAN and the few-shot head label thousands of generated images.

    python -m gsd.main --config=configs/toy_autoshot.py --workdir=DIR --config.stages=autoshot_data

Image i is drawn from z_i = normal(fold_in(key(seed), i)) with truncation `autoshot_data.truncation_psi`
and constant noise, so it depends on (seed, i) only: not on the batch, the chunking, the number of
devices or an interruption. The heads of WORKDIR/heads (`gsd.pipeline.fewshot`) label it with their per-pixel
LOGITS (soft labels, stored as float16 and never argmaxed): a single head's own logits, or for an
ensemble the log of the members' mean probability (the mixture's logits). With an ensemble each
image also gets its uncertainty, the Jensen-Shannon divergence across members averaged over pixels
(DatasetGAN's criterion), and `filter_fraction` drops that share of the most uncertain images.

Generation runs in chunks of `chunk_size` images, each one jitted program per batch sharded over the
local devices (on several hosts, chunk c belongs to process c mod process_count). A finished chunk
is written atomically to WORKDIR/autoshot_data/staging/chunk_NNNNNN.npz, so a rerun after a kill
skips the chunks on disk and generates only the rest: no duplicates, no gaps. When every chunk is
there, process 0 materialises the TFDS dataset `gsd_autoshot` (ArrayRecord, `Tensor` features only,
so no TensorFlow) in WORKDIR/autoshot_data/tfds: splits 'train' and 'validation' (the last
`val_fraction` of the kept images by index). TFDS writes into a temporary directory and renames it
when complete, and `sources` reads only a complete dataset, so a half-written one is never read.

Records: image uint8 (S, S', 3) and logits float16 (S, S', K) at the heads' output size (images
are resized to it when the generator's resolution is higher; a cropped generator's rows are cut
from both), z float32 (z_dim,), w float32 (w_dim,)
(the truncated w every layer received), index int64 (i), uncertainty float32 (0 for one head).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gsd import errors, segmenters
from gsd.io import atomic, autoshot_dataset
from gsd.stylegan2 import generator
from gsd.training import metrics as metrics_lib
from gsd.training import parallel


def models(config) -> dict:
    return {}


# ----------------------------------------------------------------------------------------------
# Labelling generated images on device.


def jensen_shannon(logits) -> jax.Array:
    """Members' logits (M, N, H, W, K) -> (N,) mean over pixels of JSD = H(mean p) - mean H(p), in nats."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    mean_logp = jax.nn.logsumexp(logp, axis=0) - jnp.log(logp.shape[0])
    entropy_of_mean = -jnp.sum(jnp.exp(mean_logp) * mean_logp, -1)
    mean_entropy = -jnp.mean(jnp.sum(jnp.exp(logp) * logp, -1), 0)
    return jnp.mean(entropy_of_mean - mean_entropy, axis=(1, 2))


def soft_labels(logits) -> jax.Array:
    """Members' logits (M, N, H, W, K) -> the ensemble's logits (N, H, W, K): a lone head's own, else
    log of the mean probability (softmax of it is the members' mean softmax)."""
    if logits.shape[0] == 1:
        return logits[0]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    return jax.nn.logsumexp(logp, axis=0) - jnp.log(logp.shape[0])


@dataclasses.dataclass(eq=False)
class Labeller:
    """z indices -> (images uint8, soft-label logits float16, z, w, uncertainty), one jitted program
    per batch size, the batch sharded over `mesh`'s 'data' axis."""

    segmenter: segmenters.GANSegmenter
    seed: int
    truncation_psi: float
    mesh: Mesh

    def __post_init__(self):
        g = self.segmenter.module
        self.z_dim = g.z_dim
        data = NamedSharding(self.mesh, P('data'))
        replicated = NamedSharding(self.mesh, P())
        self._key = jax.random.key(self.seed)
        self._run = jax.jit(self._label, in_shardings=(replicated, replicated, data), out_shardings=data)
        self._data = data

    def _label(self, params, variables, index):
        seg = self.segmenter
        z = generator.latents(self._key, index, self.z_dim)
        ws = seg.module.apply(variables, z, truncation_psi=self.truncation_psi, method='map')
        images, logits = seg.member_logits(params, variables, ws)  # logits (M, N, S, S, K)
        labels = soft_labels(logits)
        if images.shape[1] != images.shape[2]:
            # A generator with cropped output (car: 512x384 inside 512x512): the same rows of the
            # square label map, scaled to its size.
            crop, size = seg.module.crop_rows, labels.shape[2]
            labels = labels[:, crop[0] * size // images.shape[2] : crop[1] * size // images.shape[2]]
        if images.shape[1:3] != labels.shape[1:3]:
            # Heads predicting below the generator's resolution (face: 512 px labels of 1024 px images):
            # images are stored at the labels' size, antialiased, so pairs stay aligned pixel for pixel.
            images = jax.image.resize(
                images, images.shape[:1] + labels.shape[1:3] + images.shape[3:], 'linear', antialias=True
            )
        # As gsd.io.images.to_uint8 (x * 127.5 + 128, floored, clipped), on device.
        img = jnp.clip(jnp.floor(images * 127.5 + 128.0), 0, 255).astype(jnp.uint8)
        return {
            'image': img,
            'logits': labels.astype(jnp.float16),
            'z': z,
            'w': ws[:, 0],
            'uncertainty': jensen_shannon(logits) if logits.shape[0] > 1 else jnp.zeros(z.shape[0]),
        }

    def __call__(self, index: np.ndarray) -> dict:
        """Labels images `index` (length divisible by the mesh size); numpy results on the host."""
        seg = self.segmenter
        idx = jax.device_put(np.asarray(index, np.int32), self._data)
        return jax.device_get(self._run(seg.params, seg.variables, idx))


# ----------------------------------------------------------------------------------------------
# Staging (resumable) and materialisation (TFDS).


def _settings(config, workdir: pathlib.Path) -> dict:
    c = config.autoshot_data
    heads_meta = dict(segmenters.read_heads_meta(workdir / 'heads'))  # no heads: says to run fewshot first
    heads_meta.pop('seconds', None)  # the heads are the same however long they took
    return {
        'seed': int(config.seed),
        'num_images': int(c.num_images),
        'chunk_size': int(c.chunk_size),
        'truncation_psi': float(c.truncation_psi),
        'generator': generator.identity(config.generator),
        'heads': hashlib.sha256(json.dumps(heads_meta, sort_keys=True).encode()).hexdigest()[:16],
    }


def check(config) -> None:
    """Refuse settings generation cannot run with, before any stage of the run starts (the batch's split over
    the devices is checked when the devices are known)."""
    c = config.autoshot_data

    def integer(field, least):
        v = c[field]
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= least):
            raise errors.SettingError(f'autoshot_data.{field}: must be an integer >= {least}, got {v!r}')

    integer('num_images', 2)
    integer('batch_size', 1)
    integer('chunk_size', 1)
    for field in ('val_fraction', 'filter_fraction'):
        if not 0 <= c[field] < 1:
            raise errors.SettingError(f'autoshot_data.{field}: must be in [0, 1), got {c[field]!r}')
    if c.chunk_size % c.batch_size:
        raise errors.SettingError(
            f'autoshot_data.chunk_size: {c.chunk_size} must be a multiple of autoshot_data.batch_size {c.batch_size}'
        )


def _chunk_path(staging: pathlib.Path, c: int) -> pathlib.Path:
    return staging / f'chunk_{c:06d}.npz'


def _write_atomic_npz(path: pathlib.Path, arrays: dict) -> None:
    with atomic.open_atomic(path) as f:
        np.savez(f, **arrays)


def _chunk_ok(path: pathlib.Path, start: int, stop: int) -> bool:
    try:
        with np.load(path) as z:
            return np.array_equal(z['index'], np.arange(start, stop))
    except Exception:  # noqa: BLE001 - any unreadable chunk is generated again
        return False


def _config_name(num: int, kept: int) -> str:
    return f'n{num}_kept{kept}'


def run(config: ml_collections.ConfigDict, workdir) -> dict:
    """Generate (or resume) the staged chunks, then materialise the TFDS dataset (see module doc)."""
    check(config)
    cfg = config.autoshot_data
    workdir = pathlib.Path(workdir).absolute()
    out = workdir / 'autoshot_data'
    staging = out / 'staging'
    settings = _settings(config, workdir)
    staging.mkdir(parents=True, exist_ok=True)
    record = out / 'settings.json'
    if record.exists():
        before = json.loads(record.read_text())
        if before != settings:
            raise ValueError(
                f'{out}: holds a dataset made with {before}, not {settings}; use a new workdir or delete {out}'
            )
    elif jax.process_index() == 0:
        atomic.write_json(record, settings)
    done = autoshot_dataset.materialised(out)
    if done is not None:
        print(f'autoshot_data: {out / "tfds"} already holds the dataset ({done["kept"]} images); kept')
        return done

    t0 = time.time()
    seg = segmenters.load_heads(workdir / 'heads', *generator.build_generator(config.generator))
    if cfg.filter_fraction > 0 and jax.tree.leaves(seg.params)[0].shape[0] < 2:
        raise errors.SettingError(
            'autoshot_data.filter_fraction: needs an ensemble of heads (fewshot.ensemble >= 2): '
            'the uncertainty score compares members'
        )
    devices = jax.local_devices()
    mesh = parallel.mesh(devices)
    batch = cfg.batch_size
    if batch % len(devices):
        raise errors.SettingError(
            f'autoshot_data.batch_size: {batch} must be divisible by the {len(devices)} local devices'
        )
    labeller = Labeller(seg, config.seed, cfg.truncation_psi, mesh)
    n, chunk = int(cfg.num_images), int(cfg.chunk_size)
    chunks = [c for c in range(-(-n // chunk)) if c % jax.process_count() == jax.process_index()]
    todo = [c for c in chunks if not _chunk_ok(_chunk_path(staging, c), c * chunk, min(n, (c + 1) * chunk))]
    if len(todo) < len(chunks):
        print(f'autoshot_data: resuming: {len(chunks) - len(todo)} of {len(chunks)} chunks already staged')
    progress = metrics_lib.Progress(len(chunks), chunk, len(chunks) - len(todo), name='autoshot_data: chunk ')
    for k, c in enumerate(todo):
        start, stop = c * chunk, min(n, (c + 1) * chunk)
        parts = []
        for s in range(start, stop, batch):
            index = np.arange(s, s + batch)  # the last batch may run past n: trimmed below
            parts.append(labeller(index))
        arrays = {key: np.concatenate([p[key] for p in parts])[: stop - start] for key in parts[0]}
        arrays['index'] = np.arange(start, stop)
        _write_atomic_npz(_chunk_path(staging, c), arrays)
        progress.report(len(chunks) - len(todo) + k + 1)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices('gsd.pipeline.autoshot_data: chunks staged')
    result = None
    if jax.process_index() == 0:
        result = _materialise(out, staging, n, chunk, cfg, config)
        result['seconds_generation'] = round(time.time() - t0, 1)
        atomic.write_json(out / 'dataset.json', result)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices('gsd.pipeline.autoshot_data: dataset written')
        result = autoshot_dataset.materialised(out)
    print(
        f'autoshot_data: {result["kept"]} labelled images ({result["train"]} train, {result["validation"]} '
        f'validation) in {out / "tfds"}; {result["seconds_generation"]} s'
    )
    return result


def _materialise(out: pathlib.Path, staging: pathlib.Path, n: int, chunk: int, cfg, config) -> dict:
    # Every chunk is there and covers exactly its indices (checked again: chunks from other hosts).
    paths = [_chunk_path(staging, c) for c in range(-(-n // chunk))]
    missing = [str(p) for c, p in enumerate(paths) if not _chunk_ok(p, c * chunk, min(n, (c + 1) * chunk))]
    if missing:
        raise errors.MissingInputError(
            f'{missing[0]}: chunk missing or damaged ({len(missing)} in all: {missing[:5]}); rerun to generate them'
        )
    scores = np.concatenate([np.load(p)['uncertainty'] for p in paths])
    with np.load(paths[0]) as z:
        shapes = {k: z[k].shape[1:] for k in ('image', 'logits', 'z', 'w')}
    drop = int(round(cfg.filter_fraction * n))
    # Stable order: ties (e.g. all zero) keep the lowest indices.
    order = np.argsort(scores, kind='stable')
    keep = np.sort(order[: n - drop])
    num_val = int(round(cfg.val_fraction * len(keep)))
    if len(keep) - num_val < 1:
        raise errors.SettingError(
            f'autoshot_data.val_fraction: leaves no training images ({len(keep)} kept, {num_val} validation)'
        )
    name = _config_name(n, len(keep))
    builder_config = tfds.core.BuilderConfig(name=name, description=f'{n} generated, {len(keep)} kept')
    classes = list(config.classes.names)
    builder = autoshot_dataset.GsdAutoshot(
        staging=staging,
        shapes=shapes,
        keep=keep,
        num_val=num_val,
        classes=classes,
        description=f'gsd auto-shot dataset: {n} generated images labelled by the few-shot heads; classes {classes}',
        config=builder_config,
        data_dir=out / 'tfds',
    )
    tfds.disable_progress_bar()  # gsd prints its own progress; TFDS's bars flood logs
    builder.download_and_prepare()
    return {
        'name': f'{autoshot_dataset.DATASET}/{name}',
        'data_dir': str(out / 'tfds'),
        'generated': n,
        'kept': int(len(keep)),
        'dropped_most_uncertain': drop,
        'train': int(len(keep) - num_val),
        'validation': num_val,
        'classes': classes,
        'image_shape': list(shapes['image']),
        'logits_shape': list(shapes['logits']),
        'uncertainty_mean': float(scores.mean()),
    }
