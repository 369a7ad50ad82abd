"""Segmentation metrics accumulated over a test set: confusion matrix, per-class / mean / weighted IoU.

The paper's tables report percentages, so every IoU and the pixel accuracy here are percentages
(0-100). IoU per class is TP / (TP + FP + FN) over the WHOLE test set (one confusion matrix summed
over all images, not a mean of per-image IoUs), as the paper, DatasetGAN and DDPM-segmentation do.

The paper's "weighted IoU" weights each class's IoU by that class's share of the ground-truth pixels.
Which classes it covers differs between the paper's tables: background is left out in the 3-class
face setting (Table 2's 71.7 lies between the three part IoUs, where a ~99% background IoU would
dominate) and kept in the 10-class one (Table 3 lists background). So
`Confusion.results` gives both, under names that say which, beside the plain mean IoU and the
per-class IoUs.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

IGNORE_INDEX = 255  # the usual "unlabelled" value in label PNGs (PASCAL VOC's void, ADE20K, ...)


@functools.partial(jax.jit, static_argnames=('num_classes',))
def _counts(gt, pred, num_classes: int):
    """Confusion matrix plus the number of pixels whose gt is valid but whose pred is out of range
    (those cannot be placed in the matrix; `Confusion.update` refuses them)."""
    gt = jnp.asarray(gt).reshape(-1).astype(jnp.int32)
    pred = jnp.asarray(pred).reshape(-1).astype(jnp.int32)
    valid_gt = (gt >= 0) & (gt < num_classes)
    valid_pred = (pred >= 0) & (pred < num_classes)
    keep = valid_gt & valid_pred
    # Dropped pixels get index 0 with weight 0: bincount's fixed length keeps the shape static.
    flat = jnp.where(keep, gt * num_classes + pred, 0)
    matrix = jnp.bincount(flat, weights=keep.astype(jnp.int32), length=num_classes * num_classes)
    return matrix.reshape(num_classes, num_classes), jnp.sum(valid_gt & ~valid_pred)


def confusion_matrix(gt, pred, num_classes: int) -> jax.Array:
    """(num_classes, num_classes) int32 pixel counts: rows = ground truth, columns = prediction.

    gt and pred are integer class ids of the same shape (any rank: one image or a batch). Pixels whose
    gt is outside [0, num_classes) -- IGNORE_INDEX (255), negative values -- are ignored, and so are
    pixels whose pred is out of range (jit cannot raise; `Confusion.update` checks for them).
    Jittable (num_classes is static). Counts are int32: keep one call under 2**31 pixels and sum
    calls in int64 (as `Confusion` does).
    """
    if np.shape(gt) != np.shape(pred):
        raise ValueError(f'gt and pred shapes differ: {np.shape(gt)} vs {np.shape(pred)}')
    return _counts(gt, pred, num_classes)[0]


class Confusion:
    """A confusion matrix summed over a test set, in int64 so millions of 512 px images cannot overflow.

        conf = Confusion(len(names), names)
        for gt, pred in batches:
            conf.update(gt, pred)
        conf.results()   # {'mean_iou': ..., 'weighted_iou_no_bg': ..., ...}

    Each batch is counted with the jitted `confusion_matrix` (on device for device arrays: only the
    small matrix comes back to the host).
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None, ignore_index: int = IGNORE_INDEX):
        self.num_classes = int(num_classes)
        self.class_names = (
            tuple(class_names) if class_names is not None else tuple(f'class_{i}' for i in range(self.num_classes))
        )
        if len(self.class_names) != self.num_classes:
            raise ValueError(f'{len(self.class_names)} class names for {self.num_classes} classes')
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), np.int64)

    def update(self, gt, pred) -> None:
        """Add one image or a batch: integer class ids of equal shape.

        gt == ignore_index and negative gt are skipped; any other gt >= num_classes, or a pred outside
        [0, num_classes) where gt counts, is a ValueError (a wrong class count or label mapping, which
        silently dropping pixels would hide).
        """
        gt = gt if isinstance(gt, jax.Array) else np.asarray(gt)
        pred = pred if isinstance(pred, jax.Array) else np.asarray(pred)
        if gt.shape != pred.shape:
            raise ValueError(f'gt and pred shapes differ: {gt.shape} vs {pred.shape}')
        stray_gt = (gt >= self.num_classes) & (gt != self.ignore_index)
        if bool(stray_gt.any()):
            values = sorted(set(np.asarray(gt[stray_gt]).tolist()))[:10]
            raise ValueError(
                f'ground truth holds class ids >= {self.num_classes} (other than the ignore '
                f'index {self.ignore_index}): {values}'
            )
        matrix, stray_pred = _counts(gt, pred, self.num_classes)
        if int(stray_pred):
            raise ValueError(f'{int(stray_pred)} predicted pixels hold a class id outside [0, {self.num_classes})')
        self.matrix += np.asarray(matrix, np.int64)

    def results(self, background: int | None = 0) -> dict:
        """Metrics of everything added so far (percentages 0-100, except the raw counts).

        per_class_iou      {name: IoU}; NaN for a class absent from both gt and predictions (no
                           TP + FP + FN: its IoU is undefined), which every mean below then skips.
                           A class predicted but never in gt has IoU 0 and does count in mean_iou.
        mean_iou           plain mean over all classes, background included (DatasetGAN, DDPM-seg).
        mean_iou_no_bg     the same over the part classes (all but `background`).
        weighted_iou       sum of IoU_c * (gt pixels of c / all gt pixels), background included
                           (the paper's 10-class tables).
        weighted_iou_no_bg the same over the part classes, weights renormalised to sum to one over
                           them (the paper's 3-class tables).
        pixel_accuracy     correct pixels / counted pixels.
        gt_pixels          {name: ground-truth pixel count} (the weights, for reports).
        confusion          the matrix as a list of lists (rows gt, columns prediction).

        background=None: no background class; the *_no_bg values then equal the plain ones.
        With no counted pixel at all every metric is NaN. NaN values are floats: write the dict with
        json.dumps (which emits NaN) or replace them before strict JSON.
        """
        m = self.matrix.astype(np.float64)
        tp = np.diag(m)
        gt_count, pred_count = m.sum(1), m.sum(0)
        union = gt_count + pred_count - tp  # TP + FN + FP
        with np.errstate(invalid='ignore', divide='ignore'):
            iou = np.where(union > 0, 100.0 * tp / union, np.nan)
        parts = np.ones(self.num_classes, bool)
        if background is not None:
            parts[background] = False
        total = m.sum()
        return {
            'per_class_iou': {name: float(v) for name, v in zip(self.class_names, iou)},
            'mean_iou': _nanmean(iou),
            'mean_iou_no_bg': _nanmean(iou[parts]),
            'weighted_iou': _weighted(iou, gt_count),
            'weighted_iou_no_bg': _weighted(iou[parts], gt_count[parts]),
            'pixel_accuracy': float(100.0 * tp.sum() / total) if total > 0 else float('nan'),
            'gt_pixels': {name: int(v) for name, v in zip(self.class_names, self.matrix.sum(1))},
            'confusion': self.matrix.tolist(),
        }


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float('nan')


def _weighted(iou: np.ndarray, gt_count: np.ndarray) -> float:
    """sum_c IoU_c * share_c. A class with gt pixels always has a defined IoU (its union is > 0); a
    NaN IoU only occurs with weight 0 and so contributes nothing."""
    total = gt_count.sum()
    if total <= 0:
        return float('nan')
    return float(np.sum(np.where(gt_count > 0, iou, 0.0) * gt_count) / total)
