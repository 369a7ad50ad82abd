"""Evaluation readers on tiny fake CelebAMask-HQ and PASCAL-Part trees: merges, overlaps, splits, crops."""

import shutil

import numpy as np
import pytest
import scipy.io
from PIL import Image

from gsd.io import part_datasets as pd
from gsd.io.annotation import AnnotationError

# ----------------------------------------------------------------------------------------------
# CelebAMask-HQ: masks drawn on an 8x8 grid of 64 px blocks, so NEAREST down to 8 px is exact.

MAPPING = """idx         orig_idx    orig_file
2           202598      202599.jpg
0           182638      182639.jpg
1           162770      162771.jpg
3           162771      162772.jpg
4           182637      182638.jpg
"""


def _cells(cells):
    grid = np.zeros((8, 8), bool)
    for r, c in cells:
        grid[r, c] = True
    return grid


def _rows_cols(rows, cols):
    return [(r, c) for r in rows for c in cols]


FACE = {  # part -> 8x8 cells; overlaps chosen so the two priorities differ
    'hair': _rows_cols(range(0, 2), range(8)),
    'hat': _rows_cols([0], range(4)),
    'skin': _rows_cols(range(1, 7), range(1, 7)),
    'l_brow': [(1, 2)],
    'r_brow': [(2, 5)],
    'l_eye': [(3, 2)],
    'r_eye': [(3, 5)],
    'eye_g': _rows_cols([3], range(1, 7)),
    'nose': [(4, 3), (4, 4)],
    'mouth': [(5, 3)],
    'u_lip': [(5, 4)],
    'l_ear': [(4, 0), (4, 1)],
    'neck': _rows_cols([6, 7], range(2, 6)),
    'cloth': _rows_cols([7], range(8)),
}
PAPER_10 = [
    [1] * 8,
    [1] * 8,
    [0, 6, 6, 6, 6, 2, 6, 0],
    [0, 6, 3, 6, 6, 3, 6, 0],
    [7, 6, 6, 5, 5, 6, 6, 0],
    [0, 6, 6, 4, 4, 6, 6, 0],
    [0, 6, 6, 6, 6, 6, 6, 0],
    [9, 9, 8, 8, 8, 8, 9, 9],
]
CELEBAMASK_10 = PAPER_10[:4] + [[7, 7, 6, 5, 5, 6, 6, 0], PAPER_10[5], [0, 6, 8, 8, 8, 8, 6, 0], [9] * 8]
PAPER_3 = [[0] * 8] * 3 + [[0, 0, 1, 0, 0, 1, 0, 0], [0, 0, 0, 3, 3, 0, 0, 0], [0, 0, 0, 2, 2, 0, 0, 0]] + [[0] * 8] * 2


@pytest.fixture
def celeba(tmp_path):
    root = tmp_path / 'CelebAMask-HQ'
    (root / 'CelebA-HQ-img').mkdir(parents=True)
    (root / 'CelebAMask-HQ-mask-anno' / '0').mkdir(parents=True)
    (root / 'CelebA-HQ-to-CelebA-mapping.txt').write_text(MAPPING)
    faces = {0: FACE, 2: {'hair': FACE['hair'], 'skin': FACE['skin']}}  # 2: no eye, mouth or nose
    for k, parts in faces.items():
        Image.new('RGB', (64, 64), (200, 40, 40)).save(root / 'CelebA-HQ-img' / f'{k}.jpg', quality=95)
        for part, cells in parts.items():
            big = np.kron(_cells(cells), np.ones((64, 64), bool))
            Image.fromarray(big.astype(np.uint8) * 255, 'L').save(
                root / 'CelebAMask-HQ-mask-anno' / '0' / f'{k:05d}_{part}.png'
            )
    return root


def test_celebamask_classes():
    assert pd.celebamask_classes('3class') == ('background', 'eye', 'mouth', 'nose')
    assert pd.celebamask_classes('10class') == (
        'background',
        'hair',
        'eyebrow',
        'eye',
        'mouth',
        'nose',
        'skin',
        'ear',
        'neck',
        'clothes',
    )
    with pytest.raises(ValueError, match='19class'):
        pd.celebamask_classes('19class')


def test_celebamask_splits_by_orig_idx(celeba):
    assert pd.celebamask_test_ids(celeba) == [0, 2]  # sorted, whatever the file's order
    assert pd.celebamask_split_ids(celeba, 'val') == [3, 4]
    assert pd.celebamask_split_ids(celeba, 'train') == [1]


def test_celebamask_10class_merges_and_paper_priority(celeba):
    items = list(pd.iter_celebamask(celeba, '10class', 8))
    assert [name for name, _, _ in items] == ['0', '2']
    name, image, mask = items[0]
    assert image.shape == (8, 8, 3) and image.dtype == np.uint8 and mask.dtype == np.uint8
    assert np.abs(image.astype(int) - (200, 40, 40)).max() < 12
    np.testing.assert_array_equal(mask, PAPER_10)
    full = list(pd.iter_celebamask(celeba, '10class', 512, limit=1))[0][2]
    np.testing.assert_array_equal(full[::64, ::64], PAPER_10)


def test_celebamask_priority_of_its_own_g_mask(celeba):
    _, _, mask = next(pd.iter_celebamask(celeba, '10class', 8, priority='celebamask'))
    np.testing.assert_array_equal(mask, CELEBAMASK_10)


def test_celebamask_3class_and_a_face_with_none_of_its_parts(celeba):
    (_, _, mask0), (_, _, mask2) = pd.iter_celebamask(celeba, '3class', 8)
    np.testing.assert_array_equal(mask0, PAPER_3)
    assert not mask2.any()


def test_celebamask_missing_paths_are_named(celeba, tmp_path):
    with pytest.raises(FileNotFoundError, match='CelebA-HQ-to-CelebA-mapping.txt: no such file'):
        pd.celebamask_test_ids(tmp_path)
    with pytest.raises(FileNotFoundError, match='CelebA-HQ-img: no such directory'):
        pd.iter_celebamask(tmp_path / 'nowhere', '10class', 8)  # fails at the call, not at next()
    with pytest.raises(FileNotFoundError, match='1.jpg: no such file'):
        next(pd.iter_celebamask(celeba, '10class', 8, split='train'))
    (celeba / 'CelebAMask-HQ-mask-anno' / '0' / '00000_beard.png').write_bytes(b'')
    with pytest.raises(AnnotationError, match="00000_beard.png: part 'beard' is not a known part"):
        next(pd.iter_celebamask(celeba, '10class', 8))


# ----------------------------------------------------------------------------------------------
# PASCAL-Part: .mat files in MATLAB's nesting (1xN struct arrays, [] for no parts).


def _struct(fields, rows):
    a = np.empty((1, len(rows)), dtype=[(f, 'O') for f in fields])
    for i, row in enumerate(rows):
        for f, v in zip(fields, row):
            a[0, i][f] = v
    return a


def _box(shape, rows, cols):
    m = np.zeros(shape, np.uint8)
    m[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = 1
    return m


def _write_mat(path, objects):
    """objects: [(class, mask, [(part name, mask)])]."""
    objs = _struct(
        ['class', 'class_ind', 'mask', 'parts'],
        [(c, np.array([[1]]), m, _struct(['part_name', 'mask'], p) if p else np.zeros((0, 0))) for c, m, p in objects],
    )
    scipy.io.savemat(path, {'anno': _struct(['imname', 'objects'], [(path.stem, objs)])})


CAR_SHAPE = (40, 60)


def _car_objects():
    b = lambda r, c: _box(CAR_SHAPE, r, c)  # noqa: E731
    main = [
        ('leftside', b((10, 19), (20, 49))),
        ('window_1', b((10, 13), (25, 34))),
        ('door_1', b((14, 19), (36, 45))),
        ('wheel_1', b((24, 29), (22, 27))),
        ('headlight_1', b((20, 21), (44, 47))),
        ('fliplate', b((22, 23), (40, 45))),
    ]
    return [
        ('person', b((0, 39), (0, 9)), []),
        ('car', b((10, 29), (20, 49)), main),
        ('car', b((32, 37), (50, 59)), [('wheel_2', b((32, 37), (50, 59)))]),
        ('car', b((0, 3), (10, 59)), []),
    ]  # a car without parts: unscored


@pytest.fixture
def pascal(tmp_path):
    ann, img = tmp_path / 'Annotations_Part', tmp_path / 'JPEGImages'
    ann.mkdir()
    img.mkdir()
    _write_mat(ann / '2008_000001.mat', _car_objects())
    photo = np.zeros(CAR_SHAPE + (3,), np.uint8)
    photo[10:30, 20:50] = 255
    Image.fromarray(photo).save(img / '2008_000001.jpg', quality=95)
    horse = _box((30, 30), (0, 9), (0, 19))
    parts = [
        ('head', _box((30, 30), (0, 3), (0, 4))),
        ('leye', _box((30, 30), (1, 1), (1, 1))),
        ('torso', _box((30, 30), (0, 5), (5, 19))),
        ('lfuleg', _box((30, 30), (6, 9), (5, 7))),
        ('lfho', _box((30, 30), (9, 9), (8, 9))),
        ('tail', _box((30, 30), (0, 2), (19, 19))),
    ]
    _write_mat(ann / '2008_000002.mat', [('horse', horse, parts)])
    Image.new('RGB', (30, 30), (255, 255, 255)).save(img / '2008_000002.jpg', quality=95)
    return ann, img


def test_pascal_part_classes_and_grouping():
    assert pd.pascal_part_classes('car') == ('background', 'body', 'plate', 'light', 'wheel', 'window')
    assert pd.pascal_part_classes('horse') == ('background', 'head', 'neck_torso', 'legs', 'tail')
    expected = {
        'bliplate': 'plate',
        'headlight_12': 'light',
        'door_3': 'body',
        'roofside': 'body',
        'rightmirror': 'body',
        'window_7': 'window',
        'spoiler': None,
    }
    assert {p: pd.pascal_part_class('car', p) for p in expected} == expected
    horse = ('rear', 'muzzle', 'neck', 'rblleg', 'rbho', 'tail')
    expected_horse = ['head', 'head', 'neck_torso', 'legs', 'legs', 'tail']
    assert [pd.pascal_part_class('horse', p) for p in horse] == expected_horse


def test_pascal_car_crop_and_classes(pascal):
    ann, img = pascal
    items = list(pd.iter_pascal_part(ann, img, 'car', 36))  # 20x30 box * 1.2 -> 36: no resize
    assert [n for n, _, _ in items] == ['2008_000001']
    _, image, mask = items[0]
    assert image.shape == (36, 36, 3) and mask.shape == (36, 36) and mask.dtype == np.uint8
    top, left = 2, 17  # box centre (20, 35) - 18
    full = np.zeros(CAR_SHAPE, np.uint8)
    full[10:30, 20:50] = 1  # object pixels under no part: body
    full[24:30, 22:28] = 4  # wheel
    full[10:14, 25:35] = 5  # window beats the leftside under it
    full[20:22, 44:48] = 3  # light
    full[22:24, 40:46] = 2  # plate
    full[32:38, 50:60] = 4  # the second car is labelled from its own parts
    full[0:4, 10:60] = pd.IGNORE  # the car without parts
    np.testing.assert_array_equal(mask, full[top : top + 36, left : left + 36])
    assert image[8:28, 3:33].min() > 200 and image[:8].max() < 40  # the car is where its mask is
    _, small, small_mask = next(pd.iter_pascal_part(ann, img, 'car', 12))
    assert small.shape == (12, 12, 3) and set(np.unique(small_mask)) <= {0, 1, 2, 3, 4, 5, 255}


def test_pascal_horse_padding_and_uncovered_pixels(pascal):
    ann, img = pascal
    ((name, image, mask),) = pd.iter_pascal_part(ann, img, 'horse', 24, margin=0.1)
    top, left = -7, -2  # 10x20 box -> side 24 around centre (5, 10): rows -7.., cols -2..
    assert name == '2008_000002'
    # Padding outside the photo: IGNORE in the mask by default (unscored), black in the image.
    assert (mask[:7] == pd.IGNORE).all() and (mask[:, :2] == pd.IGNORE).all() and (image[:7] == 0).all()
    assert (mask[7:, 2:] != pd.IGNORE).any() and (image[7:17, 2:22] > 200).all()
    assert image[7:17, 2:22].min() > 200
    inside = mask[-top : -top + 10, -left : -left + 20]
    assert (inside[0:4, 0:5] == 1).all()  # head, eye included
    assert (inside[0:3, 19] == 4).all()  # tail over torso
    assert (inside[3:6, 5:19] == 2).all()  # neck_torso
    assert (inside[6:10, 5:8] == 3).all() and (inside[9, 8:10] == 3).all()  # leg and hoof
    assert (inside[4:10, 0:5] == pd.IGNORE).all() and (inside[6:9, 10:19] == pd.IGNORE).all()
    ((_, _, as_bg),) = pd.iter_pascal_part(ann, img, 'horse', 24, pad_label=0)  # the old behaviour
    assert (as_bg[:7] == 0).all() and (as_bg[:, :2] == 0).all()
    np.testing.assert_array_equal(as_bg[7:, 2:], mask[7:, 2:])  # only the padding differs
    ((_, _, small),) = pd.iter_pascal_part(ann, img, 'horse', 12)  # NEAREST keeps 255 as 255
    assert (small[:3] == pd.IGNORE).all() and (small[:, :1] == pd.IGNORE).all()


@pytest.mark.parametrize('squeeze', [False, True])
@pytest.mark.parametrize('as_record', [False, True])
def test_pascal_parse_any_loadmat_nesting(tmp_path, squeeze, as_record):
    one = tmp_path / 'one.mat'  # one object with one part: squeeze_me turns 1x1 structs into scalars
    _write_mat(one, [('car', _box((5, 6), (1, 3), (1, 4)), [('wheel_1', _box((5, 6), (2, 2), (2, 2)))])])
    many = tmp_path / 'many.mat'
    _write_mat(many, _car_objects())
    for path, expected in ((one, [('car', 1)]), (many, [('person', 0), ('car', 6), ('car', 1), ('car', 0)])):
        objects = pd._parse_anno(scipy.io.loadmat(path, squeeze_me=squeeze, struct_as_record=as_record))
        assert [(c, len(p)) for c, _, p in objects] == expected
        reference = pd.read_pascal_part(path)
        for (_, m, parts), (_, m_ref, parts_ref) in zip(objects, reference):
            assert m.dtype == bool and np.array_equal(m, m_ref)
            assert [(n, pm.tolist()) for n, pm in parts] == [(n, pm.tolist()) for n, pm in parts_ref]


def test_pascal_errors_name_the_file(pascal, tmp_path):
    ann, img = pascal
    with pytest.raises(FileNotFoundError, match='nowhere: no such directory; expected PASCAL-Part'):
        pd.iter_pascal_part(tmp_path / 'nowhere', img, 'car', 8)  # fails at the call
    (ann / 'broken.mat').write_bytes(b'not a mat file')
    with pytest.raises(AnnotationError, match='broken.mat: cannot read as a PASCAL-Part annotation'):
        list(pd.iter_pascal_part(ann, img, 'car', 8, ids=['broken']))
    spoiler = [('spoiler', _box((4, 4), (0, 0), (0, 0)))]
    _write_mat(ann / 'odd.mat', [('car', _box((4, 4), (0, 1), (0, 1)), spoiler)])
    with pytest.raises(AnnotationError, match="odd.mat: unknown car part 'spoiler'"):
        list(pd.iter_pascal_part(ann, img, 'car', 8, ids=['odd']))
    with pytest.warns(UserWarning, match='2008_000002.mat: no car with part annotations'):
        assert list(pd.iter_pascal_part(ann, img, 'car', 8, ids=['2008_000002'])) == []
    assert len(list(pd.iter_pascal_part(ann, img, 'car', 8, ids=['2008_000001'] * 3, limit=2))) == 2


def _report_config(root, **report):
    import ml_collections

    r = dict(data='pascal_part', data_root=str(root), category='horse', num_test=0, pad='ignore', split_file='')
    r.update(report)
    return ml_collections.ConfigDict({'report': r})


def test_report_pads_as_ignore_and_the_confusion_skips_it(pascal):
    from gsd import evaluation
    from gsd.pipeline import report

    root = pascal[0].parent
    _, ignored = report.test_set(_report_config(root), 24, 12)  # masks nearest-resized to 12
    _, as_bg = report.test_set(_report_config(root, pad='background'), 24, 12)
    assert ignored.shape == (1, 12, 12) and (ignored[0, :3] == evaluation.IGNORE_INDEX).all()
    assert (as_bg[0, :3] == 0).all() and (as_bg[0, :, :1] == 0).all()
    padding = (ignored == evaluation.IGNORE_INDEX) & (as_bg == 0)
    assert padding.sum() >= 3 * 12 + 9  # the rows above and the column left of the photo
    names = pd.pascal_part_classes('horse')
    pred = np.zeros_like(ignored)  # "all background": right on padding scored as background
    scored = {}
    for pad, masks in (('ignore', ignored), ('background', as_bg)):
        conf = evaluation.Confusion(len(names), names)
        conf.update(masks, pred)
        scored[pad] = conf
    assert scored['background'].matrix.sum() - scored['ignore'].matrix.sum() == padding.sum()
    assert scored['background'].matrix[0, 0] - scored['ignore'].matrix[0, 0] == padding.sum()
    assert scored['ignore'].matrix.sum() == (ignored != evaluation.IGNORE_INDEX).sum()
    bg_iou = {p: c.results()['per_class_iou']['background'] for p, c in scored.items()}
    assert bg_iou['background'] > bg_iou['ignore']  # padding inflated the background IoU
    with pytest.raises(ValueError, match="report.pad: must be 'ignore' or 'background'"):
        report.test_set(_report_config(root, pad='zero'), 24, 12)


def test_split_file_selects_and_orders_ids(pascal, tmp_path):
    from gsd.pipeline import report

    ann, img = pascal
    shutil.copy(ann / '2008_000002.mat', ann / '2008_000003.mat')
    Image.new('RGB', (30, 30), (0, 0, 255)).save(img / '2008_000003.jpg', quality=95)
    split = tmp_path / 'horse_test.txt'
    split.write_text("# the paper's test ids\n2008_000003\n\n2008_000002  # last\n")
    assert pd.read_id_list(split, ann) == ['2008_000003', '2008_000002']
    names = [n for n, _, _ in pd.iter_pascal_part(ann, img, 'horse', 8, ids=pd.read_id_list(split))]
    assert names == ['2008_000003', '2008_000002']  # the file's order, not sorted
    images, _ = report.test_set(_report_config(ann.parent, split_file=str(split)), 8, 8)
    assert images.shape[0] == 2 and images[0, 4, 4, 2] > 200 and images[1, 4, 4, 2] > 200
    assert images[0, 4, 4, 0] < 60 < images[1, 4, 4, 0]  # blue 2008_000003 first, white 2008_000002 second
    split.write_text('2008_000002\n')
    images, _ = report.test_set(_report_config(ann.parent, split_file=str(split)), 8, 8)
    assert images.shape[0] == 1  # restricted to the listed ids


def test_bad_split_file_is_one_line_naming_it(pascal, tmp_path):
    from gsd import errors
    from gsd.pipeline import report

    ann, _ = pascal
    missing = tmp_path / 'nowhere.txt'
    cases = [
        (missing, None, errors.MissingInputError, 'nowhere.txt: no such file'),
        (tmp_path / 'unknown.txt', '2008_000002\n2009_999999\n', errors.BadFileError, '2009_999999'),
        (tmp_path / 'columns.txt', '2008_000002 1\n', errors.BadFileError, 'line 1 is not one image id'),
        (tmp_path / 'empty.txt', '\n# nothing\n', errors.BadFileError, 'no image id'),
        (tmp_path / 'binary.txt', b'\xff\xfe\x00bad', errors.BadFileError, 'cannot read the split file'),
    ]
    for path, content, kind, problem in cases:
        if isinstance(content, str):
            path.write_text(content)
        elif content is not None:
            path.write_bytes(content)
        with pytest.raises(kind) as info:
            report.test_set(_report_config(ann.parent, split_file=str(path)), 8, 8)
        message = str(info.value)
        assert message.startswith(f'{path}: ') and problem in message and '\n' not in message, message
