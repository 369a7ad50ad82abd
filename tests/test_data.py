"""Data input: image folders of every mode and kind of damage, the toy source, grain loaders and their
checkpoints, and the toy world as a TFDS ArrayRecord dataset built and read without TensorFlow."""

import json
import pickle
import subprocess
import sys
import warnings

import grain.python as grain
import ml_collections
import numpy as np
import pytest
from conftest import REPO
from PIL import Image, PngImagePlugin

from gsd import toy
from gsd.io import sources as data

R = 16  # folder source resolution


def _save(path, img, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)


def _halves(left, right, w=R, h=R, dtype=np.uint8):
    """(h, w[, c]) array: `left` in the left half, `right` in the right half."""
    left, right = np.asarray(left, dtype), np.asarray(right, dtype)
    a = np.empty((h, w) + left.shape, dtype)
    a[:, : w // 2], a[:, w // 2 :] = left, right
    return a


def _grey16(left, right, sbit=None):
    kwargs = {}
    if sbit is not None:
        info = PngImagePlugin.PngInfo()
        info.add(b'sBIT', bytes([sbit]))
        kwargs['pnginfo'] = info
    img = Image.fromarray(_halves(left, right, dtype=np.uint16))
    assert img.mode == 'I;16'
    return img, kwargs


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    """One folder with a file of every mode, odd sizes, nesting, and three kinds of damage."""
    root = tmp_path_factory.mktemp('images')
    _save(root / 'rgb.png', Image.fromarray(_halves([200, 10, 30], [5, 6, 7])))
    # Fully transparent black left, opaque blue right, one half-transparent black pixel.
    rgba = _halves([0, 0, 0, 0], [0, 0, 255, 255])
    rgba[0, -1] = [0, 0, 0, 128]
    _save(root / 'rgba.png', Image.fromarray(rgba, 'RGBA'))
    _save(root / 'l.png', Image.fromarray(_halves(40, 220), 'L'))
    _save(root / 'la.png', Image.fromarray(_halves([0, 0], [100, 255]), 'LA'))
    p = Image.fromarray(_halves(1, 2), 'P')  # palette indices 1 and 2 ...
    p.putpalette([0, 0, 0, 250, 120, 0, 0, 90, 160] + [0] * (3 * 253))  # ... orange and blue
    _save(root / 'p.png', p)
    p_trns = Image.fromarray(_halves(1, 2), 'P')
    p_trns.putpalette([0, 0, 0, 250, 120, 0, 0, 90, 160] + [0] * (3 * 253))
    _save(root / 'p_transparent.png', p_trns, transparency=1)  # index 1 (the left half) transparent
    # Stored sideways, red left and blue right, with EXIF orientation 6 (viewers turn it 90 degrees
    # clockwise): upright, red is on top; the centre crop keeps 8 rows of each.
    exif = Image.Exif()
    exif[0x0112] = 6
    _save(root / 'sideways.png', Image.fromarray(_halves([255, 0, 0], [0, 0, 255], w=2 * R)), exif=exif)
    _save(root / 'bilevel.bmp', Image.fromarray(_halves(0, 255), 'L').convert('1'))
    img, kw = _grey16(65535, 32768)
    _save(root / 'grey16.png', img, **kw)
    img, kw = _grey16(4095, 2048, sbit=12)
    _save(root / 'grey12_sbit.png', img, **kw)
    img, kw = _grey16(4095, 0)
    _save(root / 'grey12_no_sbit.png', img, **kw)
    _save(root / 'photo.jpg', Image.fromarray(_halves([220, 40, 40], [40, 40, 220])), quality=95)
    _save(root / 'cmyk.jpeg', Image.new('CMYK', (R, R), (0, 255, 255, 0)), quality=95)  # red
    _save(root / 'lossless.webp', Image.fromarray(_halves([1, 2, 3], [250, 251, 252])), lossless=True)
    # 48 x 16: red | green | blue thirds; the centre crop keeps exactly the green third.
    wide = np.zeros((R, 3 * R, 3), np.uint8)
    wide[:, :R], wide[:, R : 2 * R], wide[:, 2 * R :] = [255, 0, 0], [0, 255, 0], [0, 0, 255]
    _save(root / 'wide.png', Image.fromarray(wide))
    _save(root / 'tiny.png', Image.new('RGB', (3, 5), (10, 200, 90)))
    # 160 px in 10 px checker blocks: a whole-factor shrink (BOX) gives exactly one block per pixel.
    checker = (np.indices((160, 160)) // 10).sum(0) % 2 * 255
    _save(root / 'large.png', Image.fromarray(checker.astype(np.uint8), 'L'))
    _save(root / 'large_odd.png', Image.new('RGB', (100, 70), (9, 99, 199)))
    _save(root / 'nested' / 'deeper' / 'upper.PNG', Image.new('RGB', (R, R), (77, 88, 99)))
    (root / 'notes.txt').write_text('not an image')
    # Damage: random bytes, an empty file, and a JPEG cut in the middle of its data.
    (root / 'corrupt.png').write_bytes(np.random.default_rng(0).bytes(500))
    (root / 'empty.jpg').write_bytes(b'')
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    _save(root / 'full.jpg', Image.fromarray(noise), quality=90)
    jpeg = (root / 'full.jpg').read_bytes()
    (root / 'truncated.jpg').write_bytes(jpeg[: len(jpeg) // 2])
    return root


@pytest.fixture(scope='module')
def scanned(folder):
    """The folder's source, the messages of the warnings its scan raised, and what it skipped then
    (other tests' reads may add the truncated JPEG to `skipped` later)."""
    with pytest.warns(data.UnreadableImageWarning) as record:
        src = data.ImageFolderSource(folder, R)
    return src, [str(w.message) for w in record], list(src.skipped)


@pytest.fixture(scope='module')
def source(scanned):
    return scanned[0]


def _by_name(src):
    return {p.name: i for i, p in enumerate(src.paths)}


def test_folder_scan_lists_recursively_and_skips_unopenable_files_by_name(scanned, folder):
    source, messages, skipped = scanned
    assert source.paths == sorted(source.paths)
    names = [p.name for p in source.paths]
    assert 'upper.PNG' in names and 'notes.txt' not in names
    assert [path for path, _ in skipped] == [str(folder / 'corrupt.png'), str(folder / 'empty.jpg')]
    assert all(reason.startswith('cannot open') for _, reason in skipped)
    assert 'corrupt.png' not in names and 'empty.jpg' not in names
    # 23 files with image names: 2 cannot be opened; the truncated JPEG's header reads fine.
    assert len(source) == 21 and 'truncated.jpg' in names
    # One warning line per unopenable file, naming it.
    assert len(messages) == 2
    for bad in ('corrupt.png', 'empty.jpg'):
        assert sum(str(folder / bad) in m for m in messages) == 1


def test_folder_every_image_is_square_uint8(source):
    names = [p.name for p in source.paths]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', data.UnreadableImageWarning)  # truncated.jpg, checked below
        for i, name in enumerate(names):
            image = source[i]
            assert image.shape == (R, R, 3) and image.dtype == np.uint8, name


def test_folder_modes(source):
    idx = _by_name(source)
    get = lambda name: source[idx[name]].astype(int)  # noqa: E731
    np.testing.assert_array_equal(get('rgb.png'), _halves([200, 10, 30], [5, 6, 7]))
    rgba = get('rgba.png')
    assert (rgba[:, : R // 2] == 255).all()  # transparent -> white
    assert (rgba[1:, R // 2 :] == [0, 0, 255]).all()  # opaque stays
    assert np.abs(rgba[0, -1] - 127).max() <= 1  # half-transparent black over white
    np.testing.assert_array_equal(get('l.png'), _halves([40] * 3, [220] * 3))
    np.testing.assert_array_equal(get('la.png'), _halves([255] * 3, [100] * 3))
    np.testing.assert_array_equal(get('p.png'), _halves([250, 120, 0], [0, 90, 160]))
    np.testing.assert_array_equal(get('p_transparent.png'), _halves([255] * 3, [0, 90, 160]))
    sideways = get('sideways.png')
    assert (sideways[: R // 2] == [255, 0, 0]).all() and (sideways[R // 2 :] == [0, 0, 255]).all()
    np.testing.assert_array_equal(get('bilevel.bmp'), _halves([0] * 3, [255] * 3))
    # 16-bit: scaled by the bit depth, not clipped at 255.
    g16 = get('grey16.png')
    assert (g16[:, : R // 2] == 255).all() and (np.abs(g16[:, R // 2 :] - 128) <= 1).all()
    g12 = get('grey12_sbit.png')
    assert (g12[:, : R // 2] == 255).all() and (np.abs(g12[:, R // 2 :] - 128) <= 1).all()
    g12_plain = get('grey12_no_sbit.png')  # no sBIT: a 16-bit sample, 4095 / 65535 of white
    assert (g12_plain[:, : R // 2] == 16).all() and (g12_plain[:, R // 2 :] == 0).all()
    photo = get('photo.jpg')
    assert np.abs(photo[:, : R // 2 - 2] - [220, 40, 40]).max() <= 12
    assert np.abs(photo[:, R // 2 + 2 :] - [40, 40, 220]).max() <= 12
    assert np.abs(get('cmyk.jpeg') - [255, 0, 0]).max() <= 12
    np.testing.assert_array_equal(get('lossless.webp'), _halves([1, 2, 3], [250, 251, 252]))


def test_folder_crop_and_resize(source):
    idx = _by_name(source)
    assert (source[idx['wide.png']] == [0, 255, 0]).all()  # centre crop of the middle third
    assert (np.abs(source[idx['tiny.png']].astype(int) - [10, 200, 90]) <= 1).all()  # upscaled
    checker = (np.indices((R, R)).sum(0) % 2 * 255)[..., None].repeat(3, -1)
    np.testing.assert_array_equal(source[idx['large.png']], checker)  # BOX: one block per pixel
    assert (np.abs(source[idx['large_odd.png']].astype(int) - [9, 99, 199]) <= 1).all()
    assert (source[idx['upper.PNG']] == [77, 88, 99]).all()


def test_folder_truncated_jpeg_is_named_counted_and_replaced(folder):
    with pytest.warns(data.UnreadableImageWarning):
        src = data.ImageFolderSource(folder, R)  # its own source: the shared one may have met the file
    i = _by_name(src)['truncated.jpg']
    with pytest.warns(data.UnreadableImageWarning) as record:
        image = src[i]
    assert [str(w.message).count(str(folder / 'truncated.jpg')) for w in record] == [1]
    np.testing.assert_array_equal(image, src[(i + 1) % len(src)])
    assert len(src.skipped) == 3 and src.skipped[-1][0] == str(folder / 'truncated.jpg')
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # warned once: reading it again is silent
        np.testing.assert_array_equal(src[i], image)
    assert len(src.skipped) == 3


def test_folder_source_pickles_for_worker_processes(source):
    idx = _by_name(source)['rgb.png']
    copy = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(copy[idx], source[idx])
    assert copy.paths == source.paths


@pytest.mark.parametrize('content', ['nothing', 'only_damage'])
def test_folder_without_readable_images_names_it(tmp_path, content):
    root = tmp_path / 'no_images_here'
    root.mkdir()
    if content == 'only_damage':
        (root / 'a.png').write_bytes(b'\x89PNG garbage')
        (root / 'b.jpg').write_bytes(b'')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', data.UnreadableImageWarning)
        with pytest.raises(ValueError, match=str(root)):
            data.ImageFolderSource(root, R)


def test_toy_source_is_toy_sample():
    images, _ = toy.sample(5, 7, 24)
    src = data.ToySource(24, seed=7)
    assert len(src) == 2**31 - 1
    for i in range(5):
        np.testing.assert_array_equal(src[i], images[i])
    assert not np.array_equal(data.ToySource(24, seed=8)[0], images[0])
    with pytest.raises(IndexError):
        data.ToySource(24, seed=7, length=5)[5]


def _batches(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_loader_batches_shape_order_and_seed():
    src = data.ToySource(8, seed=1, length=24)
    images, _ = toy.sample(24, 1, 8)
    first = _batches(data.make_loader(src, 4, seed=3), 6)
    assert all(b.shape == (4, 8, 8, 3) and b.dtype == np.uint8 for b in first)
    # One epoch is a permutation of the source: every image exactly once.
    assert sorted(x.tobytes() for b in first for x in b) == sorted(x.tobytes() for x in images)
    again = _batches(data.make_loader(src, 4, seed=3), 6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    other = _batches(data.make_loader(src, 4, seed=4), 6)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    assert not np.array_equal(np.concatenate(first), images)  # shuffled at all
    ordered = _batches(data.make_loader(src, 4, seed=3, shuffle=False), 6)
    np.testing.assert_array_equal(np.concatenate(ordered), images)


def test_loader_epochs_and_remainder():
    src = data.ToySource(8, seed=1, length=10)
    sizes = [len(b) for b in data.make_loader(src, 4, seed=0, num_epochs=1)]
    assert sizes == [4, 4]
    sizes = [len(b) for b in data.make_loader(src, 4, seed=0, num_epochs=1, drop_remainder=False)]
    assert sizes == [4, 4, 2]


def test_loader_state_round_trip_resumes_exactly():
    loader = data.make_loader(data.ToySource(8, seed=2), 3, seed=11)
    it = iter(loader)
    next(it), next(it)
    state = it.get_state()
    expected = [next(it), next(it)]
    resumed = iter(loader)
    fresh_first = next(iter(loader))
    resumed.set_state(state)
    got = [next(resumed), next(resumed)]
    assert all(np.array_equal(a, b) for a, b in zip(expected, got))
    assert not np.array_equal(got[0], fresh_first)  # the state moved it on


def test_loader_orbax_checkpoint_round_trip(tmp_path):
    ocp = pytest.importorskip('orbax.checkpoint')
    loader = data.make_loader(data.ToySource(8, seed=2), 3, seed=5)
    it = iter(loader)
    next(it)
    checkpointer = ocp.Checkpointer(grain.PyGrainCheckpointHandler())
    checkpointer.save(tmp_path / 'ckpt', args=grain.PyGrainCheckpointSave(it))
    expected = next(it)
    resumed = iter(loader)
    checkpointer.restore(tmp_path / 'ckpt', args=grain.PyGrainCheckpointRestore(resumed))
    np.testing.assert_array_equal(next(resumed), expected)


def test_folder_loader(source):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', data.UnreadableImageWarning)
        batch = next(iter(data.make_loader(source, 5, seed=0)))
    assert batch.shape == (5, R, R, 3) and batch.dtype == np.uint8


def test_record_transform():
    t = data.ToUint8HWC()
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = t.map({'image': grey[..., None], 'label': 3})
    assert out.shape == (3, 4, 3) and (out == grey[..., None]).all()
    assert t.map(grey).shape == (3, 4, 3)
    with pytest.raises(TypeError, match='float32'):
        t.map(np.zeros((4, 4, 3), np.float32))


def test_source_from_config(folder):
    src = data.source_from_config(ml_collections.ConfigDict({'kind': 'toy', 'resolution': 12, 'seed': 4}))
    assert isinstance(src, data.ToySource) and (src.resolution, src.seed) == (12, 4)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', data.UnreadableImageWarning)
        src = data.source_from_config({'kind': 'folder', 'path': str(folder), 'resolution': 8})
    assert isinstance(src, data.ImageFolderSource) and src[0].shape == (8, 8, 3)
    with pytest.raises(ValueError, match="'lmdb'.*toy, folder, tfds"):
        data.source_from_config({'kind': 'lmdb'})


# ----------------------------------------------------------------------------------------------
# toy_faces: built in a fresh interpreter that must never import TensorFlow.

SIZE, N_TRAIN, N_TEST, SEED = 16, 12, 4, 5

BUILD_SCRIPT = """
import json, sys
import numpy as np
import gsd.io.sources, gsd.toy.dataset
import tensorflow_datasets as tfds
builder = gsd.toy.dataset.build(sys.argv[1], size={size}, n_train={n_train}, n_test={n_test}, seed={seed})
name = gsd.toy.dataset.load_name(builder)
records = tfds.data_source(name, data_dir=sys.argv[1])
batch = next(iter(gsd.io.sources.make_loader(gsd.io.sources.TfdsSource(name, data_dir=sys.argv[1]), 4, seed=0)))
assert batch.shape == (4, {size}, {size}, 3), batch.shape
assert 'tensorflow' not in sys.modules, 'tensorflow was imported'
print(json.dumps({{'name': name, 'train': len(records['train']), 'test': len(records['test'])}}))
""".format(size=SIZE, n_train=N_TRAIN, n_test=N_TEST, seed=SEED)


@pytest.fixture(scope='module')
def toy_faces(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp('tfds')
    proc = subprocess.run(
        [sys.executable, '-c', BUILD_SCRIPT, str(data_dir)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return data_dir, result


def test_toy_faces_builds_without_tensorflow(toy_faces):
    data_dir, result = toy_faces
    assert result == {
        'name': f'toy_faces/s{SIZE}_train{N_TRAIN}_test{N_TEST}_seed{SEED}',
        'train': N_TRAIN,
        'test': N_TEST,
    }
    files = sorted(p.name for p in (data_dir / 'toy_faces').rglob('*array_record*'))
    assert files == ['toy_faces-test.array_record-00000-of-00001', 'toy_faces-train.array_record-00000-of-00001']


def test_toy_faces_records_are_toy_samples(toy_faces):
    import tensorflow_datasets as tfds

    from gsd.toy import dataset as toy_tfds

    data_dir, result = toy_faces
    records = tfds.data_source(result['name'], data_dir=data_dir)
    for split, n, seed in (('train', N_TRAIN, SEED), ('test', N_TEST, SEED + toy_tfds.TEST_SEED_OFFSET)):
        images, masks = toy.sample(n, seed, SIZE)
        assert len(records[split]) == n
        for i in range(n):
            r = records[split][i]
            assert r['index'] == i
            np.testing.assert_array_equal(r['image'], images[i])
            np.testing.assert_array_equal(r['mask'], masks[i])
    assert not np.array_equal(records['test'][0]['image'], records['train'][0]['image'])


def test_toy_faces_info_and_rebuild_is_a_no_op(toy_faces):
    from gsd.toy import dataset as toy_tfds

    data_dir, result = toy_faces
    shards = sorted((data_dir / 'toy_faces').rglob('*array_record*'))
    stamps = [p.stat().st_mtime_ns for p in shards]
    builder = toy_tfds.build(data_dir, size=SIZE, n_train=N_TRAIN, n_test=N_TEST, seed=SEED)
    assert [p.stat().st_mtime_ns for p in shards] == stamps
    assert toy_tfds.load_name(builder) == result['name']
    assert str(builder.version) == '1.0.0'
    assert set(builder.info.features) == {'image', 'mask', 'index'}
    assert builder.info.features['image'].shape == (SIZE, SIZE, 3)
    assert all(name in builder.info.description for name in toy.CLASSES)
    np.testing.assert_array_equal(builder.as_data_source('train')[3]['image'], toy.sample(4, SEED, SIZE)[0][3])


def test_tfds_source_and_loader(toy_faces):
    from gsd.toy import dataset as toy_tfds

    data_dir, result = toy_faces
    images, _ = toy.sample(N_TRAIN, SEED, SIZE)
    src = data.TfdsSource(result['name'], data_dir=data_dir)
    assert len(src) == N_TRAIN
    np.testing.assert_array_equal(src[2], images[2])
    ordered = list(data.make_loader(src, 4, seed=0, shuffle=False, num_epochs=1))
    np.testing.assert_array_equal(np.concatenate(ordered), images)
    # Resized like the folder source: a 2x shrink is a 2x2 box average.
    half = data.TfdsSource(result['name'], split='test', data_dir=data_dir, resolution=SIZE // 2)
    test_images, _ = toy.sample(N_TEST, SEED + toy_tfds.TEST_SEED_OFFSET, SIZE)
    box = test_images[1].reshape(SIZE // 2, 2, SIZE // 2, 2, 3).mean((1, 3))
    assert half[1].shape == (SIZE // 2, SIZE // 2, 3)
    assert np.abs(half[1] - box).max() <= 1
    with pytest.raises(KeyError, match="'picture'.*'mask'"):
        data.TfdsSource(result['name'], data_dir=data_dir, image_key='picture')[0]
    cfg = ml_collections.ConfigDict(
        {
            'kind': 'tfds',
            'name': result['name'],
            'split': 'test',
            'data_dir': str(data_dir),
            'image_key': 'image',
            'resolution': None,
        }
    )
    src = data.source_from_config(cfg)
    assert isinstance(src, data.TfdsSource) and len(src) == N_TEST
    np.testing.assert_array_equal(src[0], test_images[0])
