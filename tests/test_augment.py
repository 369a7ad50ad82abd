"""gsd.augment: identity, flips with class swaps, translations, out-of-frame fill, no recompiles."""

import chex
import jax
import numpy as np

from gsd import augment as aug

H, W = 12, 16


def _dot(y, x, c=3):
    img = np.zeros((1, H, W, c), np.float32)
    img[0, y, x] = 1.0
    return img


def _labels():
    lab = np.zeros((1, H, W), np.int32)
    lab[0, 2:5, 1:4] = 3  # a 'left eye' on the image left
    lab[0, 2:5, 10:13] = 4  # a 'right eye' on the image right
    lab[0, 8:10, 6:9] = 6
    return lab


def test_identity_params_give_identity():
    m = aug.random_affine(jax.random.key(0), 2, H, W, flip=False, scale=(1.0, 1.0), rotate=0.0, translate=0.0)
    np.testing.assert_array_equal(np.asarray(m), np.tile(np.eye(2, 3, dtype=np.float32), (2, 1, 1)))
    img = np.random.default_rng(0).normal(size=(2, H, W, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(aug.apply_affine(img, m)), img)
    lab = np.concatenate([_labels()] * 2)
    np.testing.assert_array_equal(np.asarray(aug.apply_affine_labels(lab, m)), lab)
    probs = np.asarray(jax.nn.one_hot(lab, 7))
    np.testing.assert_array_equal(np.asarray(aug.apply_affine_labels(probs, m)), probs)


def test_pure_flip_flips_and_permutes():
    m = aug.affine_matrix(H, W, flip=True)
    assert bool(aug.is_mirror(m)[0])
    img = np.random.default_rng(1).normal(size=(1, H, W, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(aug.apply_affine(img, m)), img[:, :, ::-1], atol=1e-6)
    perm = aug.swap_permutation(7, [(3, 4)])
    lab = _labels()
    out = np.asarray(aug.apply_affine_labels(lab, m, flip_permutation=perm))
    np.testing.assert_array_equal(out, perm[lab[:, :, ::-1]])
    # The left eye region (image left) is labelled left_eye again after the flip and swap.
    assert (out[0, 2:5, 3:6] == 3).all() and (out[0, 2:5, 12:15] == 4).all()
    soft = np.asarray(aug.apply_affine_labels(np.asarray(jax.nn.one_hot(lab, 7)), m, flip_permutation=perm))
    np.testing.assert_allclose(soft, np.asarray(jax.nn.one_hot(out, 7)), atol=1e-6)
    # Without a flip the permutation is not applied.
    ident = aug.affine_matrix(H, W)
    np.testing.assert_array_equal(np.asarray(aug.apply_affine_labels(lab, ident, flip_permutation=perm)), lab)


def test_translation_moves_dot():
    m = aug.affine_matrix(H, W, shift=(5.0, -3.0))
    out = np.asarray(aug.apply_affine(_dot(6, 4), m))
    assert out[0, 3, 9, 0] == 1.0 and out.sum() == 3.0
    lab = np.zeros((1, H, W), np.int32)
    lab[0, 6, 4] = 2
    out_lab = np.asarray(aug.apply_affine_labels(lab, m))
    assert out_lab[0, 3, 9] == 2 and (out_lab > 0).sum() == 1


def test_rotation_and_scale_about_centre():
    # 90 degrees counter-clockwise on screen: the right of the centre goes to the top.
    s = 9
    img = np.zeros((1, s, s, 1), np.float32)
    img[0, 4, 6] = 1.0
    out = np.asarray(aug.apply_affine(img, aug.affine_matrix(s, s, angle=90.0)))
    assert abs(out[0, 2, 4, 0] - 1.0) < 1e-5 and abs(out.sum() - 1.0) < 1e-5
    out = np.asarray(aug.apply_affine(img, aug.affine_matrix(s, s, scale=2.0)))
    assert abs(out[0, 4, 8, 0] - 1.0) < 1e-5  # twice as far from the centre


def test_out_of_frame_gets_fill_and_background():
    m = aug.affine_matrix(H, W, shift=(W / 2, 0.0))
    img = np.ones((1, H, W, 3), np.float32)
    out = np.asarray(aug.apply_affine(img, m, fill=-0.5))
    np.testing.assert_array_equal(out[0, :, : W // 2], -0.5)
    np.testing.assert_array_equal(out[0, :, W // 2 :], 1.0)
    lab = np.full((1, H, W), 5, np.int32)
    out_lab = np.asarray(aug.apply_affine_labels(lab, m, background=0))
    assert (out_lab[0, :, : W // 2] == 0).all() and (out_lab[0, :, W // 2 :] == 5).all()
    probs = np.asarray(aug.apply_affine_labels(np.asarray(jax.nn.one_hot(lab, 6)), m, background=0))
    np.testing.assert_array_equal(probs[0, :, : W // 2].argmax(-1), 0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)


def test_random_ranges():
    m = np.asarray(aug.random_affine(jax.random.key(3), 256, H, W))
    a = m[:, :, :2]
    det = np.linalg.det(a)
    scale = 1 / np.sqrt(np.abs(det))
    assert scale.min() >= 0.5 - 1e-4 and scale.max() <= 2.0 + 1e-4
    assert 0.3 < (det < 0).mean() < 0.7
    # Where does the centre go? Solve A p + b = c for the output pixel showing the source centre.
    c = np.array([(W - 1) / 2, (H - 1) / 2])
    p = np.linalg.solve(a, (c - m[:, :, 2])[..., None])[..., 0]
    shift = p - c
    assert (np.abs(shift[:, 0]) <= 0.5 * W + 1e-3).all() and (np.abs(shift[:, 1]) <= 0.5 * H + 1e-3).all()
    assert np.abs(shift[:, 0]).max() > 0.35 * W


def test_jit_vmap_no_recompile():
    chex.clear_trace_counter()

    @chex.assert_max_traces(n=1)  # a second trace raises
    def f(key, x, y):
        return aug.augment(key, x, y, flip_permutation=aug.swap_permutation(7, [(3, 4)]))

    img = np.random.default_rng(2).normal(size=(2, H, W, 3)).astype(np.float32)
    lab = np.concatenate([_labels()] * 2)
    fj = jax.jit(f)
    outs = [fj(jax.random.key(k), img, lab) for k in range(3)]
    assert not np.array_equal(np.asarray(outs[0][0]), np.asarray(outs[1][0]))
    assert outs[0][0].shape == img.shape and outs[0][1].shape == lab.shape and outs[0][1].dtype == lab.dtype
    # vmapped over keys (e.g. several augmented views in one program): a new program, traced once for any keys.
    chex.clear_trace_counter()
    vj = jax.jit(jax.vmap(f, in_axes=(0, None, None)))
    x, y = [vj(jax.random.split(jax.random.key(k), 4), img, lab) for k in (7, 8)][0]
    assert x.shape == (4,) + img.shape and y.shape == (4,) + lab.shape
    assert set(np.unique(np.asarray(y))) <= {0, 3, 4, 6}
