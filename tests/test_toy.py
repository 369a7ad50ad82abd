"""Toy world: determinism, shapes, class coverage, left/right eye symmetry, annotator, image folders."""

import json

import numpy as np
import pytest
from PIL import Image

from gsd import toy
from gsd.toy.annotator import dilate, read

N = 200


@pytest.fixture(scope='module')
def renders():
    """200 renders at 64 px with their parameters (seed 2024, not used to design any threshold)."""
    params = [toy.random_params(np.random.default_rng([2024, i]), 64) for i in range(N)]
    images, masks = toy.sample(N, 2024)
    return params, images, masks


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W, C) float image, reflecting at the borders."""
    r = int(np.ceil(3 * sigma))
    k = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * sigma**2))
    k /= k.sum()
    out = np.pad(image, ((r, r), (0, 0), (0, 0)), mode='reflect')
    out = sum(k[i] * out[i : i + image.shape[0]] for i in range(2 * r + 1))
    out = np.pad(out, ((0, 0), (r, r), (0, 0)), mode='reflect')
    return sum(k[i] * out[:, i : i + image.shape[1]] for i in range(2 * r + 1))


def degrade(image: np.ndarray, rng) -> np.ndarray:
    """What a small GAN does to an image: blur (sigma 0.7 px), a colour cast (4 levels per channel)
    and per-pixel noise (3 levels)."""
    x = gaussian_blur(image.astype(np.float64), 0.7) + rng.normal(0, 4, 3) + rng.normal(0, 3, image.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def face_u(p: toy.FaceParams, mask: np.ndarray, cls: int) -> float:
    """Centroid of class `cls` along the face's own horizontal axis (image-left is negative)."""
    ys, xs = np.nonzero(mask == cls)
    x, y = (xs.mean() + 0.5) / p.size - p.center[0], (ys.mean() + 0.5) / p.size - p.center[1]
    return np.cos(p.angle) * x + np.sin(p.angle) * y


def annotator_scores(images, masks):
    """Share of images accepted; over those, mean pixel accuracy and each class's recall."""
    k = len(toy.CLASSES)
    accepted, accuracy, confusion = 0, [], np.zeros((k, k))
    for image, mask in zip(images, masks):
        labels = toy.annotate(image)
        if labels is not None:
            accepted += 1
            accuracy.append(np.mean(labels == mask))
            np.add.at(confusion, (mask.ravel(), labels.ravel()), 1)
    return accepted / len(images), float(np.mean(accuracy)), np.diag(confusion) / confusion.sum(1)


def test_sample_is_deterministic_and_a_prefix_of_longer_runs():
    a_img, a_mask = toy.sample(5, 7)
    b_img, b_mask = toy.sample(5, 7)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    c_img, c_mask = toy.sample(3, 7)
    np.testing.assert_array_equal(c_img, a_img[:3])
    np.testing.assert_array_equal(c_mask, a_mask[:3])
    d_img, _ = toy.sample(5, 8)
    assert not any(np.array_equal(x, y) for x, y in zip(a_img, d_img))
    # One image on its own equals its place in the batch.
    img, mask = toy.render(toy.random_params(np.random.default_rng([7, 4]), 64))
    np.testing.assert_array_equal(img, a_img[4])
    np.testing.assert_array_equal(mask, a_mask[4])


def test_shapes_dtypes_and_palette():
    assert toy.CLASSES[0] == 'background' and len(toy.CLASSES) == 7
    assert {'left_eye', 'right_eye', 'skin', 'hair', 'nose', 'mouth'} <= set(toy.CLASSES)
    assert toy.PALETTE.shape == (len(toy.CLASSES), 3) and toy.PALETTE.dtype == np.uint8
    assert len({tuple(c) for c in toy.PALETTE}) == len(toy.CLASSES)
    images, masks = toy.sample(3, 0, size=48)
    assert images.shape == (3, 48, 48, 3) and images.dtype == np.uint8
    assert masks.shape == (3, 48, 48) and masks.dtype == np.uint8
    img, mask = toy.render(toy.random_params(np.random.default_rng(1), 100))
    assert img.shape == (100, 100, 3) and mask.shape == (100, 100)
    assert mask.max() < len(toy.CLASSES)


def test_same_face_at_every_size():
    """The draws do not depend on size: a 128 px render shrunk to 64 px nearly equals the 64 px one."""
    p = toy.random_params(np.random.default_rng([3, 0]), 64)
    small, small_mask = toy.render(p)
    large, large_mask = toy.render(toy.random_params(np.random.default_rng([3, 0]), 128))
    shrunk = large.reshape(64, 2, 64, 2, 3).astype(np.float64).mean((1, 3))
    assert np.abs(shrunk - small).mean() < 3.0
    assert np.mean(large_mask[::2, ::2] == small_mask) > 0.95


def test_every_class_in_nearly_every_image(renders):
    _, _, masks = renders
    present = np.array([[np.any(m == k) for k in range(len(toy.CLASSES))] for m in masks])
    assert present.all(1).mean() >= 0.95, present.mean(0)


def test_parts_are_not_tiny(renders):
    _, _, masks = renders
    for k in range(1, len(toy.CLASSES)):
        areas = (masks == k).sum((1, 2))
        assert np.percentile(areas, 5) >= 15, (toy.CLASSES[k], np.percentile(areas, 5))


def test_left_and_right_eyes_look_alike_but_left_is_left(renders):
    params, images, masks = renders
    left, right = toy.CLASSES.index('left_eye'), toy.CLASSES.index('right_eye')
    mean_left = images[masks == left].astype(np.float64).mean(0)
    mean_right = images[masks == right].astype(np.float64).mean(0)
    assert np.abs(mean_left - mean_right).max() < 3.0, (mean_left, mean_right)
    for p, m in zip(params, masks):
        assert face_u(p, m, left) < face_u(p, m, right)


def test_colour_alone_cannot_tell_left_eye_from_right(renders):
    """A nearest-class-mean classifier on pixel colour is at chance; on face-frame position it is perfect."""
    params, images, masks = renders
    left, right = toy.CLASSES.index('left_eye'), toy.CLASSES.index('right_eye')
    train, test = slice(0, N // 2), slice(N // 2, N)

    def colour(sel, cls):
        return images[sel][masks[sel] == cls].astype(np.float64)

    means = [colour(train, left).mean(0), colour(train, right).mean(0)]
    x = np.concatenate([colour(test, left), colour(test, right)])
    truth = np.concatenate([np.zeros(len(colour(test, left))), np.ones(len(colour(test, right)))])
    guess = np.argmin([((x - m) ** 2).sum(1) for m in means], axis=0)
    assert 0.4 < np.mean(guess == truth) < 0.6
    # The same classifier on the eye's position in the face frame separates them completely.
    u = np.array([[face_u(p, m, left), face_u(p, m, right)] for p, m in zip(params, masks)])
    centres = u[train].mean(0)
    guess_u = np.argmin(np.abs(u[test][..., None] - centres), -1)
    assert np.mean(guess_u == np.array([0, 1])) == 1.0


def test_annotator_reads_clean_renders(renders):
    _, images, masks = renders
    acceptance, accuracy, recall = annotator_scores(images, masks)
    assert acceptance >= 0.97 and accuracy >= 0.93, (acceptance, accuracy)
    assert recall.min() >= 0.8, recall  # every part, left and right eye included, mostly found


def test_annotator_tolerates_gan_like_blur_and_colour_noise(renders):
    _, images, masks = renders
    rng = np.random.default_rng(0)
    acceptance, accuracy, recall = annotator_scores([degrade(x, rng) for x in images], masks)
    assert acceptance >= 0.9 and accuracy >= 0.9, (acceptance, accuracy)
    assert recall.min() >= 0.8, recall


def test_annotator_refuses_what_it_cannot_read(renders):
    _, images, masks = renders
    rng = np.random.default_rng(1)
    assert toy.annotate(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) is None
    assert toy.annotate(np.zeros((64, 64, 3), np.uint8)) is None
    assert toy.annotate(np.full((64, 64, 3), 200, np.uint8)) is None
    assert read(np.zeros((64, 64, 3), np.uint8)) == (None, 'no face')
    skin = toy.CLASSES.index('skin')
    for i in range(10):
        # Paint one eye (and its anti-aliased fringe) with the skin colour just around it.
        eye = toy.CLASSES.index('left_eye' if i % 2 else 'right_eye')
        assert toy.annotate(images[i]) is not None
        region = masks[i] == eye
        fringe = dilate(region)
        ring = dilate(dilate(dilate(fringe))) & (masks[i] == skin)
        painted = images[i].copy()
        painted[fringe] = np.median(images[i][ring], axis=0).astype(np.uint8)
        assert toy.annotate(painted) is None, i
        assert read(painted)[1] == '1 eyes', (i, read(painted)[1])


def test_annotator_labels_eyes_by_face_side_not_colour(renders):
    """Mirroring a render left-right swaps which eye is left: labels must follow the geometry."""
    _, images, masks = renders
    left, right = toy.CLASSES.index('left_eye'), toy.CLASSES.index('right_eye')
    for image, mask in zip(images[:10], masks[:10]):
        labels = toy.annotate(image[:, ::-1])
        assert labels is not None
        assert np.mean(labels[:, ::-1][mask == left] == right) > 0.8
        assert np.mean(labels[:, ::-1][mask == right] == left) > 0.8


def test_image_folder_round_trip_and_resume(tmp_path):
    out = tmp_path / 'toy'
    assert toy.write_image_folder(out, 4, seed=5, size=32) == 4
    images, masks = toy.sample(4, 5, size=32)
    for i in range(4):
        np.testing.assert_array_equal(np.asarray(Image.open(out / 'images' / f'{i:05d}.png')), images[i])
        with Image.open(out / 'masks' / f'{i:05d}.png') as m:
            assert m.mode == 'P'
            np.testing.assert_array_equal(np.asarray(m), masks[i])
            palette = np.array(m.getpalette()[: 3 * len(toy.CLASSES)]).reshape(-1, 3)
        np.testing.assert_array_equal(palette, toy.PALETTE)
    meta = json.loads((out / 'classes.json').read_text())
    assert meta['classes'] == list(toy.CLASSES) and meta['palette'] == toy.PALETTE.tolist()

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob('*.png')}
    assert toy.write_image_folder(out, 4, seed=5, size=32) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob('*.png')} == stamps
    # A truncated file (an interrupted copy) is redone; more images extend the folder.
    (out / 'images' / '00002.png').write_bytes((out / 'images' / '00002.png').read_bytes()[:40])
    assert toy.write_image_folder(out, 6, seed=5, size=32) == 3
    np.testing.assert_array_equal(np.asarray(Image.open(out / 'images' / '00002.png')), images[2])
    assert not list(out.rglob('.*'))  # no temporary files left behind
    with pytest.raises(ValueError, match='seed'):
        toy.write_image_folder(out, 6, seed=6, size=32)
