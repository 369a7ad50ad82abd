"""Report stage: segment held-out real images with every method and score them against ground truth.

For the toy world (`report.data = 'toy'`) the test set is `gsd.toy.sample(report.num_test,
seed=report.test_seed)`, images the GAN never saw. Methods (`report.methods`):

* `fewshot`: each test image is projected into the GAN (`gsd.projection`), the projected w+ and
  noise go through the generator and the trained heads (`gsd.fewshot.Segmenter`);
* `rgb_baseline`: a per-pixel RGB classifier trained on the same labelled shots;
* `supervised_1shot`, `supervised_10shot`: a UNet trained on 1 / 10 real labelled toy images
  (`report.supervised_seed`), with the auto-shot augmentation;
* `autoshot`: the auto-shot UNet of WORKDIR/autoshot (`gsd.autoshot`), on the images as they are.

With `autoshot` on toy data and `report.composite`, the UNet also segments one 192x128 canvas with
three faces of different sizes (`gsd.toy.composite`), scored and shown in report.html.

Writes WORKDIR/metrics.json ({method: {weighted_iou, mean_iou, per_class_iou}}; weighted IoU over
the part classes, background excluded, as the paper's 3-class tables; mean IoU over all classes,
background included), WORKDIR/metrics_detail.json (weighted IoU with background, mean IoU without,
pixel accuracy, confusion matrices, projection PSNR, timings), WORKDIR/eval/gt/NNNNN.png and
WORKDIR/eval/<method>/pred/NNNNN.png (indexed PNGs in the class palette), WORKDIR/report.html.
"""

from __future__ import annotations

import html
import json
import pathlib
import time

import ml_collections
import numpy as np

from gsd import baselines, evaluation, fewshot, segment, shots, stages, unet
from gsd import images as image_io

METHODS = ('fewshot', 'rgb_baseline', 'supervised_1shot', 'supervised_10shot', 'autoshot')


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
        from gsd import part_datasets
        if not cfg.data_root:
            raise ValueError(f'report.data_root: give the {cfg.data} folder (--config.report.data_root=DIR)')
        limit = cfg.num_test or None
        if cfg.data == 'celebamask':
            items = part_datasets.iter_celebamask(cfg.data_root, cfg.kind, image_size, split=cfg.split, limit=limit)
        else:
            root = pathlib.Path(cfg.data_root)
            items = part_datasets.iter_pascal_part(root / 'Annotations_Part', root / 'JPEGImages', cfg.category,
                                                   image_size, limit=limit)
        pairs = [(img, mask) for _, img, mask in items]
        if not pairs:
            raise ValueError(f'{cfg.data_root}: no test images found for report.data={cfg.data!r}')
        images, masks = np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs])
    else:
        raise ValueError(f"report.data must be 'toy', 'celebamask' or 'pascal_part', got {cfg.data!r}")
    return images, _resize_nearest(masks, mask_size)


def overlay(image: np.ndarray, mask: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Class colours blended over the image; background (class 0) left as is."""
    col = colours[mask].astype(np.float32)
    out = image.astype(np.float32)
    fg = (mask > 0)[..., None]
    return np.where(fg, (1 - alpha) * out + alpha * col, out).round().astype(np.uint8)


def fewshot_predictions(config, workdir, test_images) -> tuple[np.ndarray, dict]:
    t0 = time.time()
    result = segment.segment_images(fewshot.load(workdir, config), test_images, config.projection, seed=config.seed)
    seconds = time.time() - t0
    extra = {'projection_psnr_mean': float(np.mean(result.psnr)), 'projection_and_segment_seconds': round(seconds, 1),
             'seconds_per_image': round(seconds / test_images.shape[0], 3)}
    return result.masks, extra


def run(config: ml_collections.ConfigDict, workdir) -> dict:
    workdir = pathlib.Path(workdir)
    cfg = config.report
    names = tuple(config.classes.names)
    colours = shots.palette(config)
    methods = stages.names(cfg.methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f'report.methods: unknown {unknown}; known {METHODS}')
    seg_meta = fewshot.read_meta(workdir)
    test_images, test_masks = test_set(config, seg_meta['generator_resolution'], seg_meta['feature_size'])
    eval_dir = workdir / 'eval'
    for i, m in enumerate(test_masks):
        image_io.write_png(eval_dir / 'gt' / f'{i:05d}.png', m.astype(np.uint8), palette=colours)
        image_io.write_png(eval_dir / 'images' / f'{i:05d}.png', test_images[i])

    # supervised_<k>shot -> k; the runs share one compiled program padded to the largest k.
    shot_counts = {m: int(m[len('supervised_'):-len('shot')]) for m in methods if m.startswith('supervised_')}
    metrics, detail, predictions = {}, {}, {}
    for method in methods:
        t0 = time.time()
        extra = {}
        if method == 'fewshot':
            pred, extra = fewshot_predictions(config, workdir, test_images)
        elif method == 'rgb_baseline':
            shot_imgs, _, shot_labels = shots.read(workdir, config)
            clf = baselines.rgb_classifier(shot_imgs, shot_labels, len(names), seed=config.seed)
            pred = clf(test_images)
        elif method.startswith('supervised_'):
            pred = _supervised(config, shot_counts[method], test_images, max(shot_counts.values()))
        else:   # autoshot: the UNet at the test images' own size, no GAN
            from gsd import autoshot
            pred = _resize_nearest(np.asarray(autoshot.load(workdir).segment(test_images)), test_masks.shape[1])
        conf = evaluation.Confusion(len(names), names)
        conf.update(test_masks, pred)
        r = conf.results(background=0)
        metrics[method] = {'weighted_iou': r['weighted_iou_no_bg'], 'mean_iou': r['mean_iou'],
                           'per_class_iou': r['per_class_iou']}
        detail[method] = {**r, **extra, 'seconds': round(time.time() - t0, 1)}
        predictions[method] = pred[:cfg.num_shown]
        for i, p in enumerate(pred):
            image_io.write_png(eval_dir / method / 'pred' / f'{i:05d}.png', p.astype(np.uint8), palette=colours)
        print(f'report: {method}: weighted IoU (parts) {r["weighted_iou_no_bg"]:.1f}, mean IoU {r["mean_iou"]:.1f} '
              f'({detail[method]["seconds"]} s)')

    composite = None
    if cfg.data == 'toy' and cfg.get('composite') and 'autoshot' in methods:
        composite = _composite(config, workdir, colours)
        detail['autoshot']['composite'] = composite
    (workdir / 'metrics.json').write_text(json.dumps(metrics, indent=1))
    (workdir / 'metrics_detail.json').write_text(json.dumps(detail, indent=1))
    _write_html(workdir, config, metrics, detail, test_images, test_masks, predictions, colours, composite)
    return metrics


def _resize_nearest(masks: np.ndarray, size: int) -> np.ndarray:
    if masks.shape[1] == size and masks.shape[2] == size:
        return masks
    rows, cols = (np.arange(size) * masks.shape[1] // size), (np.arange(size) * masks.shape[2] // size)
    return masks[:, rows][:, :, cols]


def _composite(config, workdir: pathlib.Path, colours) -> dict:
    """Three toy faces at different sizes on one 192x128 canvas, segmented by the auto-shot UNet."""
    from gsd import autoshot, toy
    image, mask = toy.composite(config.report.test_seed)
    pred = np.asarray(autoshot.load(workdir).segment(image))
    conf = evaluation.Confusion(len(config.classes.names), tuple(config.classes.names))
    conf.update(mask, pred)
    r = conf.results(background=0)
    d = workdir / 'eval' / 'composite'
    image_io.write_png(d / 'image.png', image)
    image_io.write_png(d / 'gt.png', mask, palette=colours)
    image_io.write_png(d / 'autoshot_pred.png', pred.astype(np.uint8), palette=colours)
    image_io.write_png(d / 'overlay_gt.png', overlay(image, mask, colours))
    image_io.write_png(d / 'overlay_autoshot.png', overlay(image, pred.astype(np.uint8), colours))
    print(f'report: composite {image.shape[1]}x{image.shape[0]}: auto-shot weighted IoU (parts) '
          f'{r["weighted_iou_no_bg"]:.1f}, mean IoU {r["mean_iou"]:.1f}')
    return {'size': [int(image.shape[1]), int(image.shape[0])], 'weighted_iou': r['weighted_iou_no_bg'],
            'mean_iou': r['mean_iou'], 'per_class_iou': r['per_class_iou']}


def _supervised(config, k: int, test_images, pad_to: int) -> np.ndarray:
    from gsd import toy
    cfg = config.report
    size = test_images.shape[1]
    images, masks = toy.sample(k, seed=cfg.supervised_seed, size=size)
    params = unet.train_simple(images, masks, num_classes=len(config.classes.names),
                                      steps=cfg.supervised_steps, batch_size=cfg.supervised_batch,
                                      seed=config.seed, base_width=cfg.unet_width,
                                      flip_permutation=tuple(config.classes.flip_permutation), pad_to=pad_to)
    model = unet.UNet(len(config.classes.names), cfg.unet_width)
    return np.asarray(unet.predict(model, params, test_images, batch_size=50, output='labels'))


def _write_html(workdir: pathlib.Path, config, metrics: dict, detail: dict, test_images, test_masks,
                predictions: dict, colours, composite: dict | None = None) -> None:
    names = tuple(config.classes.names)
    n_show = min(config.report.num_shown, test_images.shape[0])
    rows = ''.join(
        f'<tr><td>{html.escape(m)}</td><td>{v["weighted_iou"]:.1f}</td><td>{v["mean_iou"]:.1f}</td>'
        + ''.join(f'<td>{v["per_class_iou"][c]:.1f}</td>' for c in names) + '</tr>'
        for m, v in metrics.items())
    head = ''.join(f'<th>{html.escape(c)}</th>' for c in names)
    # Overlays: one mosaic per method (first n_show test images), saved beside the report.
    figs = []
    shown = test_images[:n_show]
    image_io.write_png(workdir / 'eval' / 'overview_images.png', image_io.grid(shown, cols=8))
    figs.append(('test images', 'eval/overview_images.png'))
    gt = test_masks[:n_show]
    image_io.write_png(workdir / 'eval' / 'overview_gt.png',
                       image_io.grid(np.stack([overlay(a, b, colours) for a, b in zip(shown, gt)]), cols=8))
    figs.append(('ground truth', 'eval/overview_gt.png'))
    for m in metrics:
        pred = predictions[m][:n_show]
        image_io.write_png(workdir / 'eval' / f'overview_{m}.png',
                           image_io.grid(np.stack([overlay(a, b, colours) for a, b in zip(shown, pred)]), cols=8))
        figs.append((m, f'eval/overview_{m}.png'))
    legend = ''.join(f'<span style="background:rgb{tuple(int(x) for x in c)};padding:2px 8px;margin:2px">'
                     f'{html.escape(n)}</span>' for n, c in zip(names, colours))
    if composite:
        figs.append((f'auto-shot on one {composite["size"][0]}x{composite["size"][1]} image with three faces '
                     f'(ground truth, then the UNet; weighted IoU {composite["weighted_iou"]:.1f}, '
                     f'mean IoU {composite["mean_iou"]:.1f})', 'eval/composite/overlay_gt.png'))
        figs.append(('', 'eval/composite/overlay_autoshot.png'))
    figures = ''.join(f'<h3>{html.escape(t)}</h3><img src="{html.escape(p)}" style="image-rendering:pixelated;'
                      f'width:{8 * 128}px">' for t, p in figs)
    extra = ''.join(f'<li>{html.escape(m)}: {html.escape(json.dumps({k: v for k, v in d.items() if k in ("projection_psnr_mean", "seconds_per_image", "seconds", "weighted_iou", "mean_iou_no_bg", "pixel_accuracy")}))}</li>'
                    for m, d in detail.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>gsd report</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:3px 8px;text-align:right}} table{{border-collapse:collapse}}
tr:nth-child(even){{background:#eee}}</style></head><body>
<h1>gsd: part segmentation on {test_images.shape[0]} held-out images</h1>
<p>Weighted IoU: each part class's IoU weighted by its share of ground-truth part pixels (background
excluded, as the paper's 3-class tables). Mean IoU: over all classes, background included. Percent.</p>
<table><tr><th>method</th><th>weighted IoU</th><th>mean IoU</th>{head}</tr>{rows}</table>
<ul>{extra}</ul><p>Legend: {legend}</p>{figures}</body></html>"""
    (workdir / 'report.html').write_text(page)
