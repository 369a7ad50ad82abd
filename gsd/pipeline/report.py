"""Report stage: segment held-out real images with every method and score them against ground truth.

For the toy world (`report.data = 'toy'`) the test set is `gsd.toy.sample(report.num_test,
seed=report.test_seed)`, images the GAN never saw. Methods (`report.methods`):

* `fewshot`: each test image is projected into the GAN (`gsd.projection`), the projected w+ and
  noise go through the generator and the trained heads (`gsd.segmenters.GANSegmenter`);
* `rgb_baseline`: a per-pixel RGB classifier trained on the same labelled shots;
* `supervised_1shot`, `supervised_10shot`: a UNet trained on 1 / 10 real labelled toy images
  (`report.supervised_seed`), with the auto-shot augmentation (flips swap left and right classes) and
  the class-balanced loss of `report.supervised_class_balance` (without it, 400 steps on 10 images
  found the left eye at 7-8 IoU: the UNet labels both eyes one class until late in training);
* `autoshot`: the auto-shot UNet of WORKDIR/autoshot (`gsd.pipeline.autoshot`), on the images as they are.

With `autoshot` on toy data and `report.composite`, the UNet also segments one 192x128 canvas with
three faces of different sizes (`gsd.toy.composite`), scored and shown in report.html.

Writes WORKDIR/metrics.json ({method: {weighted_iou, mean_iou, per_class_iou}}; weighted IoU over
the part classes, background excluded, as the paper's 3-class tables; mean IoU over all classes,
background included), WORKDIR/metrics_detail.json (weighted IoU with background, mean IoU without,
pixel accuracy, confusion matrices, projection PSNR, timings; for PASCAL-Part, `padding`: how the crops'
padding outside the photo was scored, 'ignore' by default, `report.pad`), WORKDIR/eval/gt/NNNNN.png and
WORKDIR/eval/<method>/pred/NNNNN.png (indexed PNGs in the class palette), WORKDIR/report.html.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import pathlib
import time
from typing import Callable, Optional

import ml_collections
import numpy as np

from gsd import errors, evaluation, pipeline, segmenters
from gsd.io import annotation, atomic
from gsd.io import images as image_io
from gsd.nn import baselines, unet
from gsd.stylegan2 import generator
from gsd.training import parallel

IGNORE_COLOUR = (224, 224, 192)  # unscored ground truth (evaluation.IGNORE_INDEX) in gt PNGs: PASCAL VOC's void


@dataclasses.dataclass(frozen=True)
class Method:
    """A way to segment the test images: `predict(context, test_images) -> (masks, extra detail)`, and the
    test data it can run on (None: any; 'toy': it trains on real toy images, so only the toy world has them)."""

    predict: Callable
    data: Optional[str] = None


class _Context:
    """What the methods of one report share, each built once on first use (the heads' generator, the UNet)."""

    def __init__(self, config, workdir: pathlib.Path):
        self.config, self.workdir = config, workdir
        self._unet = None

    @property
    def unet(self) -> segmenters.UNetSegmenter:
        if self._unet is None:
            self._unet = segmenters.load_unet(self.workdir / 'autoshot' / 'unet')
        return self._unet

    def shots(self):
        c = self.config.classes
        return annotation.read_shots(self.workdir / 'shots', list(c.names), annotation.palette(c.names, c.colours))


def models(config) -> dict:
    return {}


def test_set(config, image_size: int, mask_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, image_size, image_size, 3), masks uint8 (N, mask_size, mask_size)).

    Images come at the generator's resolution (projection needs it); masks at the head's output
    size (`fewshot.feature_size`), nearest-resized when the dataset's differ.
    """
    cfg = config.report
    if cfg.data == 'toy':
        from gsd import toy

        images, masks = toy.sample(cfg.num_test, seed=cfg.test_seed, size=image_size)
    elif cfg.data in ('celebamask', 'pascal_part'):
        from gsd.io import part_datasets

        if not cfg.data_root:
            raise ValueError(f'report.data_root: give the {cfg.data} folder (--config.report.data_root=DIR)')
        limit = cfg.num_test or None
        if cfg.data == 'celebamask':
            items = part_datasets.iter_celebamask(cfg.data_root, cfg.kind, image_size, split=cfg.split, limit=limit)
        else:
            root = pathlib.Path(cfg.data_root)
            ann, pad = root / 'Annotations_Part', _padding(cfg)
            # report.split_file: the test ids (e.g. the paper's split), in its order; '' -> every annotation.
            ids = part_datasets.read_id_list(cfg.split_file, ann) if cfg.get('split_file') else None
            items = part_datasets.iter_pascal_part(
                ann,
                root / 'JPEGImages',
                cfg.category,
                image_size,
                ids=ids,
                limit=limit,
                pad_label=part_datasets.PASCAL_PAD[pad],
            )
        pairs = [(img, mask) for _, img, mask in items]
        if not pairs:
            raise ValueError(f'{cfg.data_root}: no test images found for report.data={cfg.data!r}')
        images, masks = np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs])
    else:
        raise ValueError(f"report.data must be 'toy', 'celebamask' or 'pascal_part', got {cfg.data!r}")
    return images, _resize_nearest(masks, mask_size)


def _padding(cfg) -> str | None:
    """report.pad for PASCAL-Part ('ignore' by default: crop padding is not scored), None for other data."""
    if cfg.data != 'pascal_part':
        return None
    pad = cfg.get('pad', 'ignore')
    if pad not in ('ignore', 'background'):
        raise errors.SettingError(f"report.pad: must be 'ignore' or 'background', got {pad!r}")
    return pad


def _fewshot(ctx: _Context, test_images) -> tuple[np.ndarray, dict]:
    config = ctx.config
    t0 = time.time()
    module, variables = generator.build_generator(config.generator)
    seg = segmenters.load_heads(ctx.workdir / 'heads', module, variables)
    settings = pipeline.projection_settings(config.projection)
    proj, cached = _projections(config, module, variables, test_images, settings)
    masks, _ = segmenters.segment_projected(seg, proj, test_images, batch_size=settings['batch_size'])
    seconds = time.time() - t0
    extra = {
        'projection_psnr_mean': float(np.mean(proj.psnr)),
        'projection_and_segment_seconds': round(seconds, 1),
        'seconds_per_image': round(seconds / test_images.shape[0], 3),
        'projection_cached': cached,
    }
    return masks, extra


def _projections(config, module, variables, test_images, settings) -> tuple[segmenters.Projected, bool]:
    """The test images projected with the config's `projection` block; with `report.projection_cache` (a folder)
    read from there when it holds this very projection (a file named by a hash of the images, the generator's
    weights, the projection settings and the seed), else computed and stored there. Heads change, projections
    need not: a study's variants share one projection per seed."""
    folder = config.report.get('projection_cache', '')
    if not folder:
        return segmenters.project_images(module, variables, test_images, seed=config.seed, **settings), False
    digest = hashlib.sha256()
    digest.update(json.dumps(config.projection.to_dict(), sort_keys=True, default=str).encode())
    digest.update(f'seed={config.seed} shape={test_images.shape}'.encode())
    if config.generator.get('dtype', 'float32') != 'float32':  # float32 keys stay as they were
        digest.update(f'dtype={config.generator.dtype}'.encode())
    digest.update(np.ascontiguousarray(test_images).tobytes())
    digest.update(segmenters.generator_fingerprint(variables).encode())
    key = digest.hexdigest()
    path = pathlib.Path(folder).expanduser() / f'projection_{key[:20]}.npz'
    if path.exists():
        try:
            with np.load(path) as z:
                if str(z['key']) == key:
                    noise = {k[len('noise/') :]: z[k] for k in z.files if k.startswith('noise/')}
                    print(f'report: projections of the test images read from {path}', flush=True)
                    return segmenters.Projected(z['ws'], noise, z['images'], z['psnr']), True
        except (OSError, ValueError, KeyError) as e:  # a damaged cache is recomputed, not trusted
            print(f'report: {path}: unreadable projection cache ({type(e).__name__}); projecting again', flush=True)
    proj = segmenters.project_images(module, variables, test_images, seed=config.seed, **settings)
    arrays = {'key': np.asarray(key), 'ws': proj.ws, 'images': proj.images, 'psnr': proj.psnr}
    arrays.update({f'noise/{k}': v for k, v in proj.noise.items()})
    if parallel.is_writer():
        with atomic.open_atomic(path, 'wb') as f:
            np.savez(f, **arrays)
    return proj, False


def _rgb_baseline(ctx: _Context, test_images) -> tuple[np.ndarray, dict]:
    shot_imgs, _, shot_labels = ctx.shots()
    clf = baselines.rgb_classifier(shot_imgs, shot_labels, len(ctx.config.classes.names), seed=ctx.config.seed)
    return clf(test_images), {}


def _autoshot(ctx: _Context, test_images) -> tuple[np.ndarray, dict]:
    # The UNet at the test images' own size, no GAN.
    return np.asarray(ctx.unet.segment(test_images)), {}


def _supervised(k: int) -> Callable:
    def predict(ctx: _Context, test_images) -> tuple[np.ndarray, dict]:
        return _train_supervised(ctx.config, k, test_images, max(_supervised_counts(ctx.config))), {}

    return predict


# The registry: name -> Method. supervised_<k>shot for any k is made on demand (see `method`).
METHODS = {
    'fewshot': Method(_fewshot),
    'rgb_baseline': Method(_rgb_baseline),
    'autoshot': Method(_autoshot),
    'supervised_1shot': Method(_supervised(1), data='toy'),
    'supervised_10shot': Method(_supervised(10), data='toy'),
}


def method(name: str) -> Method:
    if name in METHODS:
        return METHODS[name]
    k = name[len('supervised_') : -len('shot')] if name.startswith('supervised_') and name.endswith('shot') else ''
    if k.isdigit() and int(k) > 0:
        return Method(_supervised(int(k)), data='toy')
    raise errors.SettingError(
        f'report.methods: unknown method {name!r}; known: {", ".join(METHODS)} (and supervised_<k>shot)'
    )


def _supervised_counts(config) -> list[int]:
    # The supervised runs share one compiled program padded to the largest k.
    return [
        int(m[len('supervised_') : -len('shot')])
        for m in pipeline.names(config.report.methods)
        if m.startswith('supervised_')
    ]


def _chosen_methods(config) -> dict:
    """{name: Method} of report.methods, each known and runnable on report.data."""
    cfg = config.report
    if cfg.data not in ('toy', 'celebamask', 'pascal_part'):
        raise errors.SettingError(f"report.data: must be 'toy', 'celebamask' or 'pascal_part', got {cfg.data!r}")
    chosen = {m: method(m) for m in pipeline.names(cfg.methods)}
    if not chosen:
        raise errors.SettingError(f'report.methods: none named; known: {", ".join(METHODS)}')
    for m, how in chosen.items():
        if how.data is not None and how.data != cfg.data:
            raise errors.SettingError(
                f'report.methods: {m} trains on real {how.data} images, which report.data={cfg.data!r} '
                f'does not have; remove it from report.methods'
            )
    return chosen


def check(config) -> None:
    """Methods and test data are checked before any stage of the run starts."""
    _chosen_methods(config)
    cfg = config.report
    if cfg.data in ('celebamask', 'pascal_part'):
        if not cfg.get('data_root'):
            raise errors.SettingError(f'report.data_root: give the {cfg.data} folder (--config.report.data_root=DIR)')
        errors.input_folder(cfg.data_root, 'report.data_root')
    _padding(cfg)
    split_file = cfg.get('split_file', '')
    if split_file and not pathlib.Path(split_file).expanduser().is_file():
        raise errors.MissingInputError(f'{split_file}: no such split file (report.split_file)')


def run(config: ml_collections.ConfigDict, workdir) -> dict:
    workdir = pathlib.Path(workdir)
    cfg = config.report
    names = tuple(config.classes.names)
    colours = annotation.palette(config.classes.names, config.classes.colours)
    chosen = _chosen_methods(config)
    methods = list(chosen)
    test_images, test_masks = test_set(config, *_test_sizes(config, workdir, methods))
    eval_dir = workdir / 'eval'
    # Ground truth keeps IGNORE (255, unscored: crop padding, unlabelled parts) in a palette that shows it.
    gt_colours = np.zeros((256, 3), np.uint8)
    gt_colours[: len(colours)] = colours
    gt_colours[evaluation.IGNORE_INDEX] = IGNORE_COLOUR
    # Every process scores every method (the projections are split over the processes and gathered);
    # process 0 writes the files.
    writer = parallel.is_writer()
    for i, m in enumerate(test_masks if writer else ()):
        image_io.write_png(eval_dir / 'gt' / f'{i:05d}.png', m.astype(np.uint8), palette=gt_colours)
        image_io.write_png(eval_dir / 'images' / f'{i:05d}.png', test_images[i])

    ctx = _Context(config, workdir)
    metrics, detail, predictions = {}, {}, {}
    for name, how in chosen.items():
        t0 = time.time()
        pred, extra = how.predict(ctx, test_images)
        pred = _resize_nearest(np.asarray(pred), test_masks.shape[1])
        conf = evaluation.Confusion(len(names), names)
        conf.update(test_masks, pred)
        r = conf.results(background=0)
        metrics[name] = {
            'weighted_iou': r['weighted_iou_no_bg'],
            'mean_iou': r['mean_iou'],
            'per_class_iou': r['per_class_iou'],
        }
        detail[name] = {**r, **extra, 'seconds': round(time.time() - t0, 1)}
        if _padding(cfg):  # how the crops' padding was scored, in every report on PASCAL-Part
            detail[name]['padding'] = _padding(cfg)
        predictions[name] = pred[: cfg.num_shown]
        for i, p in enumerate(pred if writer else ()):
            image_io.write_png(eval_dir / name / 'pred' / f'{i:05d}.png', p.astype(np.uint8), palette=colours)
        print(
            f'report: {name}: weighted IoU (parts) {r["weighted_iou_no_bg"]:.1f}, mean IoU {r["mean_iou"]:.1f} '
            f'({detail[name]["seconds"]} s)'
        )

    composite = None
    if cfg.data == 'toy' and cfg.get('composite') and 'autoshot' in methods:
        composite = _composite(config, workdir, colours, ctx.unet)
        detail['autoshot']['composite'] = composite
    if writer:
        atomic.write_json(workdir / 'metrics.json', metrics)
        atomic.write_json(workdir / 'metrics_detail.json', detail)
        _write_html(workdir, config, metrics, detail, test_images, test_masks, predictions, gt_colours, composite)
    return metrics


def _test_sizes(config, workdir: pathlib.Path, methods) -> tuple[int, int]:
    """(image size, mask size): the heads' generator resolution and output size; for a report without the
    heads (only UNets, say the supervised baselines of a study), the generator's and `fewshot.feature_size`."""
    heads_dir = workdir / 'heads'
    if 'fewshot' in methods or (heads_dir / 'heads.json').exists():
        meta = segmenters.read_heads_meta(heads_dir)
        return meta['generator_resolution'], meta['feature_size']
    module = generator.architecture(config.generator)
    if module is None:
        module = generator.build_generator(config.generator)[0]
    return module.resolution, config.fewshot.get('feature_size') or module.resolution


def _resize_nearest(masks: np.ndarray, size: int) -> np.ndarray:
    if masks.shape[1] == size and masks.shape[2] == size:
        return masks
    rows, cols = (np.arange(size) * masks.shape[1] // size), (np.arange(size) * masks.shape[2] // size)
    return masks[:, rows][:, :, cols]


def _composite(config, workdir: pathlib.Path, colours, unet_segmenter: segmenters.UNetSegmenter) -> dict:
    """Three toy faces at different sizes on one 192x128 canvas, segmented by the auto-shot UNet."""
    from gsd import toy

    image, mask = toy.composite(config.report.test_seed)
    pred = np.asarray(unet_segmenter.segment(image))
    conf = evaluation.Confusion(len(config.classes.names), tuple(config.classes.names))
    conf.update(mask, pred)
    r = conf.results(background=0)
    d = workdir / 'eval' / 'composite'
    if parallel.is_writer():
        image_io.write_png(d / 'image.png', image)
        image_io.write_png(d / 'gt.png', mask, palette=colours)
        image_io.write_png(d / 'autoshot_pred.png', pred.astype(np.uint8), palette=colours)
        image_io.write_png(d / 'overlay_gt.png', image_io.overlay(image, mask, colours))
        image_io.write_png(d / 'overlay_autoshot.png', image_io.overlay(image, pred.astype(np.uint8), colours))
    print(
        f'report: composite {image.shape[1]}x{image.shape[0]}: auto-shot weighted IoU (parts) '
        f'{r["weighted_iou_no_bg"]:.1f}, mean IoU {r["mean_iou"]:.1f}'
    )
    return {
        'size': [int(image.shape[1]), int(image.shape[0])],
        'weighted_iou': r['weighted_iou_no_bg'],
        'mean_iou': r['mean_iou'],
        'per_class_iou': r['per_class_iou'],
    }


def _train_supervised(config, k: int, test_images, pad_to: int) -> np.ndarray:
    from gsd import toy

    cfg = config.report
    size = test_images.shape[1]
    images, masks = toy.sample(k, seed=cfg.supervised_seed, size=size)
    params = unet.train_simple(
        images,
        masks,
        num_classes=len(config.classes.names),
        steps=cfg.supervised_steps,
        batch_size=cfg.supervised_batch,
        seed=config.seed,
        base_width=cfg.unet_width,
        flip_permutation=tuple(config.classes.flip_permutation),
        pad_to=pad_to,
        class_balance=cfg.get('supervised_class_balance', 0.0),
    )
    model = unet.UNet(len(config.classes.names), cfg.unet_width)
    return np.asarray(unet.predict(model, params, test_images, batch_size=50, output='labels'))


def _write_html(
    workdir: pathlib.Path,
    config,
    metrics: dict,
    detail: dict,
    test_images,
    test_masks,
    predictions: dict,
    colours,
    composite: dict | None = None,
) -> None:
    names = tuple(config.classes.names)
    n_show = min(config.report.num_shown, test_images.shape[0])
    rows = ''.join(
        f'<tr><td>{html.escape(m)}</td><td>{v["weighted_iou"]:.1f}</td><td>{v["mean_iou"]:.1f}</td>'
        + ''.join(f'<td>{v["per_class_iou"][c]:.1f}</td>' for c in names)
        + '</tr>'
        for m, v in metrics.items()
    )
    head = ''.join(f'<th>{html.escape(c)}</th>' for c in names)
    # Overlays: one mosaic per method (first n_show test images), saved beside the report.
    figs = []
    shown = test_images[:n_show]
    image_io.write_png(workdir / 'eval' / 'overview_images.png', image_io.grid(shown, cols=8))
    figs.append(('test images', 'eval/overview_images.png'))
    gt = test_masks[:n_show]
    image_io.write_png(
        workdir / 'eval' / 'overview_gt.png',
        image_io.grid(np.stack([image_io.overlay(a, b, colours) for a, b in zip(shown, gt)]), cols=8),
    )
    figs.append(('ground truth', 'eval/overview_gt.png'))
    for m in metrics:
        pred = predictions[m][:n_show]
        image_io.write_png(
            workdir / 'eval' / f'overview_{m}.png',
            image_io.grid(np.stack([image_io.overlay(a, b, colours) for a, b in zip(shown, pred)]), cols=8),
        )
        figs.append((m, f'eval/overview_{m}.png'))
    legend = ''.join(
        f'<span style="background:rgb{tuple(int(x) for x in c)};padding:2px 8px;margin:2px">{html.escape(n)}</span>'
        for n, c in zip(names, colours)
    )
    if composite:
        figs.append(
            (
                f'auto-shot on one {composite["size"][0]}x{composite["size"][1]} image with three faces '
                f'(ground truth, then the UNet; weighted IoU {composite["weighted_iou"]:.1f}, '
                f'mean IoU {composite["mean_iou"]:.1f})',
                'eval/composite/overlay_gt.png',
            )
        )
        figs.append(('', 'eval/composite/overlay_autoshot.png'))
    figures = ''.join(
        f'<h3>{html.escape(t)}</h3><img src="{html.escape(p)}" style="image-rendering:pixelated;width:{8 * 128}px">'
        for t, p in figs
    )
    shown_keys = (
        'projection_psnr_mean',
        'seconds_per_image',
        'seconds',
        'weighted_iou',
        'mean_iou_no_bg',
        'pixel_accuracy',
    )
    extra = ''.join(
        f'<li>{html.escape(m)}: {html.escape(json.dumps({k: v for k, v in d.items() if k in shown_keys}))}</li>'
        for m, d in detail.items()
    )
    pad = _padding(config.report)
    pad_note = f'<p>PASCAL-Part crops: padding outside the photo scored as {pad}.</p>' if pad else ''
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>gsd report</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:3px 8px;text-align:right}}
table{{border-collapse:collapse}} tr:nth-child(even){{background:#eee}}</style></head><body>
<h1>gsd: part segmentation on {test_images.shape[0]} held-out images</h1>{pad_note}
<p>Weighted IoU: each part class's IoU weighted by its share of ground-truth part pixels (background
excluded, as the paper's 3-class tables). Mean IoU: over all classes, background included. Percent.</p>
<table><tr><th>method</th><th>weighted IoU</th><th>mean IoU</th>{head}</tr>{rows}</table>
<ul>{extra}</ul><p>Legend: {legend}</p>{figures}</body></html>"""
    atomic.write_text(workdir / 'report.html', page)
