"""Feature extraction: layer selection, resizing against hand computations, the fused first layer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gsd import features as F
from gsd.stylegan2 import Generator, capture_activations, channels_nvidia


@pytest.fixture(scope='module')
def small():
    g = Generator(32, (32, 32, 16, 16), z_dim=16, w_dim=16, n_mlp=1)
    variables = jax.jit(g.init)(jax.random.key(0), jnp.zeros((1, 16)))  # jitted: op by op is twice as slow
    ws = g.apply(variables, jax.random.normal(jax.random.key(1), (2, 16)), method='map')
    return g, variables, ws


def test_paper_layers_have_5056_channels_at_1024px():
    ch = channels_nvidia(1024)
    assert ch == (512, 512, 512, 512, 512, 256, 128, 64, 32)
    names = F.select_layers(1024)
    assert names[0] == 'b8.conv0' and names[-1] == 'b1024.conv1' and len(names) == 16
    assert not any('torgb' in n or n == 'b4.conv1' for n in names)
    # 8..1024 px convs: 2 * (4 * 512 + 256 + 128 + 64 + 32) = 5056, the paper's and the authors' count.
    assert F.FeatureLayout.for_generator(1024, ch, names, 512).channels == 5056
    assert F.FeatureExtractor(Generator(1024, ch), out_size=512).channels == 5056
    # Stopping at 512 px (the paper's prose) gives 4992, not the 5,056 the paper's CNN was built for.
    assert F.FeatureLayout.for_generator(1024, ch, F.select_layers(1024, res_range=(8, 512)), 512).channels == 4992


def test_select_layers_by_groups_range_and_names():
    assert F.select_layers(32) == ['b8.conv0', 'b8.conv1', 'b16.conv0', 'b16.conv1', 'b32.conv0', 'b32.conv1']
    assert F.select_layers(64, groups='A') == ['b4.conv1', 'b8.conv0', 'b8.conv1']
    assert F.select_layers(64, groups='C') == ['b64.conv0', 'b64.conv1']
    assert F.select_layers(64, groups='A+B') == F.select_layers(64, res_range=(4, 32))
    assert F.select_layers(64, groups='BC') == F.select_layers(64, res_range=(16, 64))
    assert F.select_layers(64, groups='ABC') == [n for n in F.conv_layer_names(64)]
    assert F.select_layers(64, layers=['b32.conv1', 'b8.conv0']) == ['b8.conv0', 'b32.conv1']  # forward order
    for bad in (
        dict(layers=['b32.torgb']),
        dict(layers=['b128.conv0']),
        dict(groups='D'),
        dict(groups='A', res_range=(4, 8)),
        dict(res_range=(5, 7)),
    ):
        with pytest.raises(ValueError):
            F.select_layers(64, **bad)


def test_bilinear_align_corners_by_hand():
    a, b, c, d = 1.0, 2.0, 5.0, 11.0
    x = jnp.array([[a, b], [c, d]]).reshape(1, 2, 2, 1)
    y = np.asarray(F.resize(x, 3, 'bilinear', align_corners=True))[0, ..., 0]
    expected = [[a, (a + b) / 2, b], [(a + c) / 2, (a + b + c + d) / 4, (b + d) / 2], [c, (c + d) / 2, d]]
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-6)
    # Half-pixel centres (align_corners=False), 2 -> 4: sources -0.25 (clamped to 0), 0.25, 0.75, 1.25.
    y = np.asarray(F.resize_axis(x, 2, 4, 'bilinear', align_corners=False))[0, 0, :, 0]
    np.testing.assert_allclose(y, [a, 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b, b], rtol=0, atol=1e-6)


def test_bilinear_corners_and_half_pixel_against_jax_image():
    x = jax.random.normal(jax.random.key(2), (2, 5, 7, 3))
    y = np.asarray(F.resize_axis(F.resize_axis(x, 1, 13), 2, 13))
    for i, j in [(0, 0), (0, -1), (-1, 0), (-1, -1)]:
        np.testing.assert_allclose(y[:, i, j], np.asarray(x)[:, i, j], rtol=0, atol=1e-6)
    # jax.image.resize is the half-pixel convention: it must agree with align_corners=False only.
    ref = np.asarray(jax.image.resize(x, (2, 13, 13, 3), 'bilinear'))
    half = np.asarray(F.resize_axis(F.resize_axis(x, 1, 13, align_corners=False), 2, 13, align_corners=False))
    np.testing.assert_allclose(half, ref, rtol=0, atol=1e-5)
    assert np.abs(y - ref).max() > 1e-2


def test_nearest_repeats_and_area_averages():
    x = jax.random.normal(jax.random.key(3), (1, 4, 4, 2))
    np.testing.assert_array_equal(
        np.asarray(F.resize(x, 12, 'nearest')), np.repeat(np.repeat(np.asarray(x), 3, axis=1), 3, axis=2)
    )
    blocks = np.asarray(x).reshape(1, 2, 2, 2, 2, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(np.asarray(F.resize(x, 2)), blocks, rtol=0, atol=1e-6)
    # Non-integer ratio 5 -> 3, PyTorch's adaptive pooling windows [0, 2), [1, 4), [3, 5).
    v = jnp.arange(5.0).reshape(1, 1, 5, 1)
    np.testing.assert_allclose(np.asarray(F.resize_axis(v, 2, 3))[0, 0, :, 0], [0.5, 2.0, 3.5], rtol=0, atol=1e-6)


def test_extractor_matches_capture_activations(small):
    g, variables, ws = small
    fe = F.FeatureExtractor(g, out_size=16)
    assert fe.layers == ('b8.conv0', 'b8.conv1', 'b16.conv0', 'b16.conv1', 'b32.conv0', 'b32.conv1')
    assert fe.channels == 2 * (32 + 16 + 16) == 128
    images, ref = jax.jit(lambda v, w: capture_activations(g, v, w))(variables, ws)
    acts = fe.activations(variables, ws)
    assert set(acts) == set(fe.layers) and acts['b32.conv0'].shape == (2, 32, 32, 16)
    feats = np.asarray(fe.extract(variables, ws))
    assert feats.shape == (2, 16, 16, 128)
    off = dict(zip(fe.layers, fe.layout.channel_offsets))
    np.testing.assert_allclose(
        feats[..., off['b16.conv1'] : off['b16.conv1'] + 16], np.asarray(ref['b16.conv1']), rtol=1e-5, atol=1e-5
    )
    # The 8 px map upsampled with align_corners: its corners survive unchanged.
    np.testing.assert_allclose(
        feats[:, [0, -1], :, :32][:, :, [0, -1]],
        np.asarray(ref['b8.conv0'])[:, [0, -1]][:, :, [0, -1]],
        rtol=1e-5,
        atol=1e-5,
    )
    # The 32 px map is area-averaged to 16.
    down = np.asarray(ref['b32.conv1']).reshape(2, 16, 2, 16, 2, 16).mean(axis=(2, 4))
    np.testing.assert_allclose(feats[..., off['b32.conv1'] :], down, rtol=1e-5, atol=1e-5)
    im2, f2 = fe.images_and_features(variables, ws)
    np.testing.assert_allclose(np.asarray(im2), np.asarray(images), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(f2), feats)
    with pytest.raises(ValueError):
        fe.extract(variables, ws, noise_mode='random')


@pytest.mark.parametrize('upsample,align_corners', [('bilinear', True), ('bilinear', False), ('nearest', True)])
def test_fused_first_layer_equals_concat_then_dense(small, upsample, align_corners):
    g, variables, ws = small
    # out_size 16: the 8 px layers are upsampled, the 32 px ones area-downsampled.
    fe = F.FeatureExtractor(g, out_size=16, upsample=upsample, align_corners=align_corners)
    acts = fe.activations(variables, ws)
    weight = jax.random.normal(jax.random.key(4), (fe.channels, 24))
    bias = jax.random.normal(jax.random.key(5), (24,))
    naive = np.asarray(
        jnp.einsum('nhwc,cf->nhwf', fe.layout.concat(acts), weight, precision=jax.lax.Precision.HIGHEST) + bias
    )
    fused = np.asarray(
        jax.jit(F.fused_first_layer, static_argnums=(3, 4, 5, 6, 7, 8))(
            acts,
            weight,
            bias,
            fe.layers,
            fe.layout.channel_offsets,
            16,
            upsample,
            align_corners,
            jax.lax.Precision.HIGHEST,
        )
    )
    assert fused.shape == (2, 16, 16, 24)
    assert np.abs(fused - naive).max() <= 1e-4 * np.abs(naive).max()
    # Offsets matter: reading every layer's weights from row 0 must give something else.
    wrong = F.fused_first_layer(acts, weight, bias, fe.layers, (0,) * len(fe.layers), 16, upsample, align_corners)
    assert np.abs(np.asarray(wrong) - naive).max() > 1e-2 * np.abs(naive).max()


@pytest.mark.parametrize(
    'n_in,n_out,upsample,align_corners',
    [
        (8, 64, 'bilinear', True),
        (16, 64, 'bilinear', False),
        (8, 64, 'nearest', True),
        (5, 23, 'bilinear', True),
        (64, 16, 'bilinear', True),
        (23, 5, 'bilinear', True),
        (32, 32, 'bilinear', True),
    ],
)
def test_banded_resize_equals_resize(n_in, n_out, upsample, align_corners):
    x = jax.random.normal(jax.random.key(6), (2, n_in, n_in, 3))
    m = F.resize_matrix(n_in, n_out, upsample, align_corners)
    ref = np.asarray(F.resize(x, n_out, upsample, align_corners))
    for block in (4, 64):
        y = F.banded_resize_sum([F.banded_resize_sum([x], [m], axis=2, block=block)], [m], axis=1, block=block)
        np.testing.assert_allclose(np.asarray(y), ref, rtol=0, atol=1e-5)


def test_banded_resize_sums_inputs_of_different_sizes():
    xs = [jax.random.normal(jax.random.key(i), (1, r, 16, 2)) for i, r in enumerate((4, 8, 16))]
    mats = [F.resize_matrix(x.shape[1], 32) for x in xs]
    ref = sum(np.asarray(F.resize_axis(x, 1, 32)) for x in xs)
    np.testing.assert_allclose(np.asarray(F.banded_resize_sum(xs, mats, axis=1, block=8)), ref, rtol=0, atol=1e-5)
    # Its transpose (what the fused first layer's backward pass runs) is the resize's transpose too.
    g = jax.random.normal(jax.random.key(9), (1, 32, 16, 2))
    banded = jax.grad(lambda xs: jnp.sum(F.banded_resize_sum(xs, mats, axis=1, block=8) * g))(xs)
    gathered = jax.grad(lambda xs: jnp.sum(sum(F.resize_axis(x, 1, 32) for x in xs) * g))(xs)
    for a, b in zip(banded, gathered):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5)


def test_stored_activations_equal_activations(small):
    g, variables, _ = small
    ws = g.apply(variables, jax.random.normal(jax.random.key(7), (3, 16)), method='map')
    fe = F.FeatureExtractor(g, out_size=16)
    ref = fe.activations(variables, ws)
    for batch_size in (1, 2):  # 2: a last, shorter batch
        stored = fe.stored_activations(variables, ws, batch_size=batch_size)
        for n in fe.layers:
            assert stored[n].dtype == jnp.float32
            np.testing.assert_allclose(np.asarray(stored[n]), np.asarray(ref[n]), rtol=1e-5, atol=1e-5)
    half = fe.stored_activations(variables, ws, dtype=jnp.bfloat16)
    for n in fe.layers:
        assert half[n].dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(half[n], np.float32), np.asarray(ref[n]), rtol=1e-2, atol=1e-2)


def test_local_contrast_is_the_image_minus_its_box_mean():
    from scipy.ndimage import uniform_filter

    x = np.random.RandomState(0).rand(2, 13, 11, 3).astype(np.float32)
    ref = x - uniform_filter(x, size=(1, 9, 9, 1), mode='nearest')  # edges replicated
    np.testing.assert_allclose(np.asarray(F.local_contrast(jnp.asarray(x), 9)), ref, atol=1e-5)


def test_image_pseudo_layer_follows_the_convs_and_is_read_from_the_given_photo(small):
    """The image channels: the generator's output (times its weight, and its local contrast) after the convs;
    a segmenter given the photo reads the photo there instead, and nothing else changes."""
    from gsd import segmenters

    g, variables, ws = small
    plain = F.FeatureExtractor(g, 32)
    ext = F.FeatureExtractor(g, 32, image_channels=True, image_weight=3.0, contrast_weight=10.0, contrast_size=5)
    assert ext.layout.layers == plain.layers + (F.IMAGE,) and ext.layout.channels == plain.channels + 6
    images, acts = ext.images_and_activations(variables, ws)
    expected = jnp.concatenate([3.0 * images, 10.0 * F.local_contrast(images, 5)], -1)
    np.testing.assert_allclose(np.asarray(acts[F.IMAGE]), np.asarray(expected), atol=1e-5)
    assert F.FeatureExtractor(g, 32, image_channels=True).layout.layer_channels[-1] == 3
    head = segmenters.make_head('mlp', 4, ext.layout)
    params = jax.vmap(lambda k: head.init(k, ext.example_activations())['params'])(
        jax.random.split(jax.random.key(2), 1)
    )
    seg = segmenters.GANSegmenter(g, variables, ext, head, params, ('a', 'b', 'c', 'd'))
    _, own, _ = seg(ws)
    _, same, _ = seg(ws, images=images)
    np.testing.assert_allclose(np.asarray(same), np.asarray(own), atol=1e-5)
    _, photo, _ = seg(ws, images=jnp.zeros_like(images))
    assert np.abs(np.asarray(photo) - np.asarray(own)).max() > 1e-3, 'the photo replaces the generated image'
