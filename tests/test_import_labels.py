"""Labels from labelme, CVAT, COCO and Label Studio: each written the way the tool writes it, imported, and read back
by the fewshot stage's reader pixel for pixel; every bad input named in one error with nothing written; exports that
import back to the same labels."""

import base64
import io
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from gsd import errors
from gsd.io import annotation, images, rle
from gsd.io.annotation import AnnotationError
from gsd.io.label_formats import export_shots, import_labels

REPO = pathlib.Path(__file__).resolve().parents[1]
NAMES = ('background', 'skin', 'hair', 'eye')
COLOURS = np.array([[0, 0, 0], [250, 190, 140], [120, 60, 10], [40, 110, 255]], np.uint8)
H, W = 12, 16  # not square: a transposed mask cannot pass


def _shots(workdir, count=2):
    """A shots folder as the shots stage writes it: images, label templates, legend, latents, record."""
    out = workdir / 'shots'
    rng = np.random.default_rng(0)
    for k in range(count):
        img = rng.integers(0, 256, (H, W, 3), np.uint8)
        images.write_png(out / 'images' / f'{k:05d}.png', img)
        annotation.write_label_template(out / 'labels' / f'{k:05d}.png', img, COLOURS)
    np.savez(out / 'latents.npz', ws=np.zeros((count, 3, 4), np.float32))
    annotation.write_colour_legend(out / 'classes.json', list(NAMES), COLOURS)
    (out / 'shots.json').write_text('{}')
    return workdir


def _box(x0, y0, x1, y1):
    """Pixels x0..x1, y0..y1 (inclusive) as a bool mask."""
    m = np.zeros((H, W), bool)
    m[y0 : y1 + 1, x0 : x1 + 1] = True
    return m


def _blob(seed):
    return np.random.default_rng(seed).random((H, W)) < 0.3


def _paint(*layers):
    """(class id, bool mask) in drawing order -> class ids: the later layer wins."""
    ids = np.zeros((H, W), np.int32)
    for c, m in layers:
        ids[m] = c
    return ids


# Two shots' truth: shot 0 has overlaps (hair over skin, eye over hair), shot 1 irregular blobs.
TRUTH = [
    _paint((1, _box(2, 1, 9, 8)), (2, _box(6, 3, 13, 5)), (3, _box(7, 4, 8, 4))),
    _paint((2, _blob(1)), (1, _blob(2) & ~_blob(1)), (3, _box(0, 0, 3, 2))),
]


def _read(workdir):
    return annotation.read_shots(workdir / 'shots', NAMES, COLOURS)[2]


def _snapshot(workdir):
    return {p.name: p.read_bytes() for p in sorted((workdir / 'shots' / 'labels').iterdir())}


def _png_b64(array):
    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buf, format='PNG')
    return base64.b64encode(buf.getvalue()).decode()


# labelme ------------------------------------------------------------------------------------------------------------


def _labelme_shape(label, points, shape_type):
    return dict(label=label, points=points, group_id=None, description='', shape_type=shape_type, flags={}, mask=None)


def _labelme_file(path, image_path, shapes, size=(H, W)):
    doc = dict(version='5.5.0', flags={}, shapes=shapes, imagePath=image_path, imageData=None)
    path.write_text(json.dumps(dict(doc, imageHeight=size[0], imageWidth=size[1]), indent=2))


def _labelme_mask_shape(label, mask):
    ys, xs = np.nonzero(mask)
    box = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    corners = [[int(xs.min()), int(ys.min())], [int(xs.max()), int(ys.max())]]
    return _labelme_shape(label, corners, 'mask') | {'mask': _png_b64(box)}


def _labelme_truth(src):
    """TRUTH as labelme files: shot 0 as polygon / rectangle / rectangle shapes, shot 1 as mask shapes."""
    src.mkdir()
    _labelme_file(
        src / '00000.json',
        '..\\images\\00000.png',  # labelme on Windows stores a relative Windows path
        [
            _labelme_shape('skin', [[2, 1], [9, 1], [9, 8], [2, 8]], 'polygon'),
            _labelme_shape('hair', [[13, 5], [6, 3]], 'rectangle'),  # dragged from the bottom-right corner
            _labelme_shape('eye', [[7, 4], [8, 4]], 'rectangle'),
        ],
    )
    _labelme_file(
        src / 'shot_one.json',
        '00001.jpg',
        [_labelme_mask_shape(NAMES[c], TRUTH[1] == c) for c in (2, 1, 3)],
    )
    return src


def test_labelme_polygons_rectangles_masks_and_circles(tmp_path):
    wd = _shots(tmp_path / 'wd')
    written = import_labels('labelme', _labelme_truth(tmp_path / 'lm'), wd)
    assert [p.name for p in written] == ['00000.png', '00001.png']
    assert np.array_equal(_read(wd), np.stack(TRUTH))
    with Image.open(written[0]) as img:  # the palette PNG the shots stage writes
        assert img.mode == 'P' and np.array_equal(np.reshape(img.getpalette()[:12], (4, 3)), COLOURS)
    # A circle (centre, a point on the rim) as labelme rasterises it.
    _labelme_file(tmp_path / 'lm' / '00000.json', '00000.png', [_labelme_shape('eye', [[8, 6], [8, 9]], 'circle')])
    import_labels('labelme', tmp_path / 'lm', wd)
    disc = Image.new('L', (W, H), 0)
    ImageDraw.Draw(disc).ellipse(((5, 3), (11, 9)), outline=1, fill=1)
    assert np.array_equal(_read(wd)[0], np.asarray(disc) * 3)


def test_overlapping_shapes_later_wins(tmp_path):
    wd = _shots(tmp_path / 'wd', count=1)
    src = tmp_path / 'lm'
    src.mkdir()
    skin, hair = [[2, 2], [10, 8]], [[6, 1], [14, 5]]
    for order in (('skin', 'hair'), ('hair', 'skin')):
        shapes = [_labelme_shape(n, skin if n == 'skin' else hair, 'rectangle') for n in order]
        _labelme_file(src / '00000.json', '00000.png', shapes)
        import_labels('labelme', src, wd)
        assert _read(wd)[0][4, 8] == NAMES.index(order[1])  # in both rectangles
        assert _read(wd)[0][7, 8] == 1 and _read(wd)[0][2, 12] == 2  # in one only


# CVAT ---------------------------------------------------------------------------------------------------------------


def _cvat_truth(root, masks=TRUTH, stems=('00000', '00001')):
    """A 'Segmentation mask 1.1' export: its own label order, CVAT's background, a label no shot uses."""
    order = [
        ('background', (0, 0, 0)),
        ('eye', COLOURS[3]),
        ('hair', COLOURS[2]),
        ('skin', COLOURS[1]),
        ('hat', (9, 9, 9)),
    ]
    lines = ['# label:color_rgb:parts:actions'] + [f'{n}:{",".join(str(int(v)) for v in c)}::' for n, c in order]
    root.mkdir(parents=True)
    (root / 'labelmap.txt').write_text('\n'.join(lines) + '\n')
    (root / 'ImageSets' / 'Segmentation').mkdir(parents=True)
    (root / 'ImageSets' / 'Segmentation' / 'default.txt').write_text(''.join(f'{s}\n' for s in stems))
    (root / 'SegmentationClass').mkdir()
    for k, (stem, ids) in enumerate(zip(stems, masks)):
        rgb = COLOURS[ids]
        img = Image.fromarray(rgb)
        if k % 2:  # CVAT saves indexed PNGs; an RGB re-save of them must read the same
            img = img.quantize(palette=_palette_image([c for _, c in order]))
        img.save(root / 'SegmentationClass' / f'{stem}.png')
    return root


def _palette_image(colours):
    pal = Image.new('P', (1, 1))
    pal.putpalette(np.asarray(colours, np.uint8).ravel().tolist() * (256 // len(colours)))
    return pal


def test_cvat_segmentation_masks(tmp_path):
    wd = _shots(tmp_path / 'wd')
    _cvat_truth(tmp_path / 'export' / 'task_7_dataset')  # the zip extracted into a folder of its own
    import_labels('cvat', tmp_path / 'export', wd)
    assert np.array_equal(_read(wd), np.stack(TRUTH))


# COCO ---------------------------------------------------------------------------------------------------------------


def _coco_truth(path, file_names=('images/00000.jpg', '00001.png'), size=(H, W)):
    """Shot 0 as polygons (pixel-edge coordinates: pixel i spans [i, i+1)), shot 1 as RLE: uncompressed counts
    (CVAT's and the ground-truth files' form) and a compressed string (pycocotools' form)."""
    cats = [{'id': 7, 'name': 'skin', 'supercategory': ''}, {'id': 3, 'name': 'hair'}, {'id': 12, 'name': 'eye'}]
    imgs = [{'id': 10 + k, 'file_name': f, 'height': size[0], 'width': size[1]} for k, f in enumerate(file_names)]

    def poly(x0, y0, x1, y1):  # the outline of pixels x0..x1, y0..y1
        return [[x0, y0, x1 + 1, y0, x1 + 1, y1 + 1, x0, y1 + 1]]

    hair = TRUTH[1] == 2
    skin = TRUTH[1] == 1
    anns = [
        {'image_id': 10, 'category_id': 7, 'segmentation': poly(2, 1, 9, 8), 'iscrowd': 0},
        {'image_id': 10, 'category_id': 3, 'segmentation': poly(6, 3, 13, 5), 'iscrowd': 0},
        {'image_id': 10, 'category_id': 12, 'segmentation': poly(7, 4, 8, 4), 'iscrowd': 0},
        {'image_id': 11, 'category_id': 3, 'segmentation': {'size': [H, W], 'counts': rle.coco_counts(hair)}},
        {'image_id': 11, 'category_id': 7, 'segmentation': {'size': [H, W], 'counts': _coco_string(skin)}},
        {'image_id': 11, 'category_id': 12, 'segmentation': poly(0, 0, 3, 2) + [[0, 0, 2, 0, 0, 2]]},
    ]
    anns = [dict(a, id=i + 1, iscrowd=1 if isinstance(a['segmentation'], dict) else 0) for i, a in enumerate(anns)]
    path.write_text(json.dumps({'images': imgs, 'annotations': anns, 'categories': cats}))
    return path


def _coco_string(mask):
    return rle.coco_string(rle.coco_counts(mask))


def test_coco_polygons_and_both_rle_forms(tmp_path):
    wd = _shots(tmp_path / 'wd')
    import_labels('coco', _coco_truth(tmp_path / 'instances_default.json'), wd)
    assert np.array_equal(_read(wd), np.stack(TRUTH))


def test_rle_codecs_against_hand_made_streams():
    # COCO: counts [2, 3, 4, 1] compress to '2', '3', '4', then 1 - 3 = -2 as the signed group 30 -> 'N'.
    assert rle.coco_string([2, 3, 4, 1]) == '234N' and rle.coco_counts_from_string('234N') == [2, 3, 4, 1]
    # Column-major: a 2x3 mask whose first column is set.
    assert np.array_equal(rle.coco_mask([0, 2, 4], [2, 3]), [[1, 0, 0], [1, 0, 0]])
    # Label Studio: 8 values; a run of five 0s, then three literal words 255, 7, 255.
    bits = f'{8:032b}{7:05b}' + ''.join(f'{b - 1:04b}' for b in (3, 4, 8, 16))
    bits += '1' + '00' + '100' + f'{0:08b}' + '0' + '00' + '010' + f'{255:08b}{7:08b}{255:08b}'
    bits += '0' * (-len(bits) % 8)
    data = list(int(bits, 2).to_bytes(len(bits) // 8, 'big'))
    assert rle.ls_decode(data).tolist() == [0, 0, 0, 0, 0, 255, 7, 255]
    values = np.repeat(np.random.default_rng(0).integers(0, 3, 500), np.random.default_rng(1).integers(1, 40, 500))
    assert np.array_equal(rle.ls_decode(rle.ls_encode(values)), values)
    with pytest.raises(ValueError, match='ends early'):
        rle.ls_decode(data[:5])


# Label Studio -------------------------------------------------------------------------------------------------------


def _ls_brush(name, mask, colour, size=(H, W)):
    """A brush result as Label Studio's editor saves it: the RGBA canvas (label colour, opaque where painted)."""
    rgba = np.zeros(mask.shape + (4,), np.uint8)
    rgba[mask] = list(colour) + [255]
    value = {'format': 'rle', 'rle': rle.ls_encode(rgba.ravel()), 'brushlabels': [name]}
    return dict(type='brushlabels', value=value, original_width=size[1], original_height=size[0], image_rotation=0)


def _ls_polygon(name, x0, y0, x1, y1):
    """A polygon around pixels x0..x1, y0..y1, in percent of the image size."""
    pts = [[x * 100 / W, y * 100 / H] for x, y in ((x0, y0), (x1 + 1, y0), (x1 + 1, y1 + 1), (x0, y1 + 1))]
    value = {'points': pts, 'closed': True, 'polygonlabels': [name]}
    return dict(type='polygonlabels', value=value, original_width=W, original_height=H, image_rotation=0)


def _ls_truth(path):
    tasks = [
        {
            'id': 1,
            'data': {'image': '/data/upload/1/1a2b3c4d-00000.png'},  # Label Studio prefixes uploads
            'annotations': [
                {'id': 5, 'was_cancelled': True, 'result': [_ls_polygon('eye', 0, 0, 15, 11)]},
                {
                    'id': 6,
                    'was_cancelled': False,
                    'result': [_ls_polygon('skin', 2, 1, 9, 8), _ls_polygon('hair', 6, 3, 13, 5)]
                    + [_ls_brush('eye', TRUTH[0] == 3, COLOURS[3])],
                },
            ],
        },
        {
            'id': 2,
            'data': {'image': '/data/local-files/?d=shots%2Fimages%2F00001.png'},
            'annotations': [{'id': 7, 'result': [_ls_brush(NAMES[c], TRUTH[1] == c, COLOURS[c]) for c in (2, 1, 3)]}],
        },
    ]
    path.write_text(json.dumps(tasks))
    return path


def test_labelstudio_brushes_and_polygons(tmp_path):
    wd = _shots(tmp_path / 'wd')
    import_labels('labelstudio', _ls_truth(tmp_path / 'project-1-at-2024.json'), wd)
    assert np.array_equal(_read(wd), np.stack(TRUTH))


# names, errors ------------------------------------------------------------------------------------------------------


def test_map_renames_and_drops_labels(tmp_path):
    wd = _shots(tmp_path / 'wd', count=1)
    src = tmp_path / 'lm'
    src.mkdir()
    shapes = [
        _labelme_shape('face', [[2, 1], [9, 8]], 'rectangle'),
        _labelme_shape('Hair', [[6, 3], [13, 5]], 'rectangle'),
        _labelme_shape('glasses', [[0, 0], [15, 0]], 'rectangle'),
        _labelme_shape('eye', [[7, 4], [8, 4]], 'rectangle'),
    ]
    _labelme_file(src / '00000.json', '00000.png', shapes)
    import_labels('labelme', src, wd, mapping={'face': 'skin', 'Hair': 'hair', 'glasses': None})
    assert np.array_equal(_read(wd)[0], TRUTH[0])
    with pytest.raises(errors.SettingError, match=r'mapping: face=nose: not a class .*classes: background, skin'):
        import_labels('labelme', src, wd, mapping={'face': 'nose'})


def test_unknown_names_are_listed_together_and_nothing_is_written(tmp_path):
    wd = _shots(tmp_path / 'wd')
    src = _labelme_truth(tmp_path / 'lm')
    _labelme_file(src / '00000.json', '00000.png', [_labelme_shape('face', [[0, 0], [3, 3]], 'rectangle')])
    doc = json.loads((src / 'shot_one.json').read_text())
    doc['shapes'] += [
        _labelme_shape('lips', [[0, 0], [3, 3]], 'rectangle'),
        _labelme_shape('face', [[1, 1], [2, 2]], 'rectangle'),
    ]
    (src / 'shot_one.json').write_text(json.dumps(doc))
    before = _snapshot(wd)
    with pytest.raises(AnnotationError) as e:
        import_labels('labelme', src, wd)
    assert str(e.value) == (
        f"{src}: labels that are no class: 'face' (in 00000.json, shot_one.json), 'lips' (in shot_one.json); "
        'classes: background, skin, hair, eye; map with --map THEIRS=OURS'
    )
    assert _snapshot(wd) == before


def _problems(call):
    with pytest.raises(AnnotationError) as e:
        call()
    return e.value.problems


@pytest.mark.parametrize('fmt', ['labelme', 'cvat', 'coco', 'labelstudio'])
def test_wrong_size_missing_label_and_foreign_image_are_named(tmp_path, fmt):
    wd = _shots(tmp_path / 'wd', count=3)  # shot 00002 has no label in any source below
    before = _snapshot(wd)
    src = tmp_path / 'src'
    if fmt == 'labelme':
        _labelme_truth(src)
        _labelme_file(
            src / '00000.json', '00000.png', [_labelme_shape('skin', [[0, 0], [3, 3]], 'rectangle')], (H, W + 1)
        )
        _labelme_file(src / 'cat.json', 'photos/cat.png', [_labelme_shape('skin', [[0, 0], [3, 3]], 'rectangle')])
        bad_size, foreign = src / '00000.json', src / 'cat.json'
    elif fmt == 'cvat':
        _cvat_truth(
            src, masks=[np.pad(TRUTH[0], ((0, 0), (0, 1))), TRUTH[1], TRUTH[1]], stems=('00000', '00001', 'cat')
        )
        bad_size, foreign = src / 'SegmentationClass' / '00000.png', src / 'SegmentationClass' / 'cat.png'
    elif fmt == 'coco':
        src.mkdir()
        _coco_truth(src / 'a.json', file_names=('00000.png', 'cat.png'), size=(H, W))
        doc = json.loads((src / 'a.json').read_text())
        doc['images'][0]['width'] = W + 1
        (src / 'a.json').write_text(json.dumps(doc))
        bad_size = foreign = src / 'a.json'
    else:
        src.mkdir()
        _ls_truth(src / 'a.json')
        tasks = json.loads((src / 'a.json').read_text())
        tasks[0]['annotations'][1]['result'][2] = _ls_brush('eye', np.ones((H, W + 1), bool), COLOURS[3], (H, W + 1))
        tasks[1]['data']['image'] = 'https://example.org/cat.png'
        (src / 'a.json').write_text(json.dumps(tasks))
        bad_size = foreign = src / 'a.json'
    problems = _problems(lambda: import_labels(fmt, src, wd))
    messages = '\n'.join(f'{p}: {m}' for p, m in problems)
    assert any(p == str(bad_size) and '17x12' in m for p, m in problems), messages  # width x height
    assert f'{foreign}: ' in messages and "cat.png' is not one of the shots (00000.png to 00002.png)" in messages
    missing = [m for p, m in problems if 'no label for shot' in m]
    assert len(missing) == 1 and missing[0].endswith('00002.png'), problems  # one line, however many are missing
    assert _snapshot(wd) == before


def test_damaged_files_are_named(tmp_path):
    wd = _shots(tmp_path / 'wd', count=1)
    before = _snapshot(wd)
    lm = tmp_path / 'lm'
    lm.mkdir()
    (lm / 'broken.json').write_text('{"shapes": [')
    bad_mask = _labelme_shape('skin', [[0, 0], [3, 3]], 'mask') | {'mask': 'not base64!'}
    _labelme_file(lm / '00000.json', '00000.png', [bad_mask])
    problems = dict(_problems(lambda: import_labels('labelme', lm, wd)))
    assert problems[str(lm / 'broken.json')].startswith('is not valid JSON')
    assert 'mask is not a base64 PNG' in problems[str(lm / '00000.json')]
    coco = tmp_path / 'c.json'
    doc = {
        'images': [{'id': 1, 'file_name': '00000.png', 'height': H, 'width': W}],
        'categories': [{'id': 1, 'name': 'skin'}],
    }
    doc['annotations'] = [{'id': 4, 'image_id': 1, 'category_id': 1, 'segmentation': {'size': [H, W], 'counts': '2~'}}]
    coco.write_text(json.dumps(doc))
    assert 'annotation 4: compressed RLE string holds' in _problems(lambda: import_labels('coco', coco, wd))[0][1]
    assert _snapshot(wd) == before


def test_two_labels_for_one_shot_and_clashing_part_files(tmp_path):
    wd = _shots(tmp_path / 'wd', count=1)
    lm = tmp_path / 'lm'
    lm.mkdir()
    for name in ('a.json', 'b.json'):
        _labelme_file(lm / name, '00000.png', [_labelme_shape('skin', [[0, 0], [3, 3]], 'rectangle')])
    images.write_png(wd / 'shots' / 'labels' / '00000_hair.png', np.zeros((H, W), np.uint8))
    problems = _problems(lambda: import_labels('labelme', lm, wd))
    assert (str(lm / 'b.json'), 'labels shot 00000.png, as a.json does: keep one') in problems
    assert any(p.endswith('00000_hair.png') and 'would be read with the imported 00000.png' in m for p, m in problems)


# export -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('fmt', ['labelme', 'cvat', 'coco', 'labelstudio'])
def test_export_then_import_round_trip(tmp_path, fmt):
    wd = _shots(tmp_path / 'wd', count=3)
    for k, ids in enumerate(TRUTH):  # shot 00002 stays an unpainted template
        images.write_png(wd / 'shots' / 'labels' / f'{k:05d}.png', ids.astype(np.uint8), palette=COLOURS)
    out = export_shots(fmt, wd, tmp_path / 'out')
    files = {p.relative_to(out).as_posix() for p in out.rglob('*') if p.is_file()}
    expected = {
        'labelme': {'labels.txt', '00000.png', '00002.png', '00000.json', '00001.json'},
        'cvat': {'labelmap.txt', 'ImageSets/Segmentation/default.txt', 'JPEGImages/00002.png', 'cvat_labels.json'},
        'coco': {'annotations.json', 'images/00000.png', 'images/00002.png'},
        'labelstudio': {'labeling_config.xml', 'tasks.json', 'images/00002.png'},
    }[fmt]
    assert expected <= files, files
    assert not any(name.startswith('00002') for name in files if name.endswith('.json'))
    if fmt == 'labelme':
        assert (out / 'labels.txt').read_text() == 'skin\nhair\neye\n'
    if fmt == 'cvat':
        assert (out / 'labelmap.txt').read_text().splitlines()[:2] == [
            '# label:color_rgb:parts:actions',
            'background:0,0,0::',
        ]
    if fmt == 'labelstudio':
        assert '<Label value="hair" background="#783c0a"/>' in (out / 'labeling_config.xml').read_text()
    # The shot painted in the tool afterwards: the re-import must give all three labels back.
    third = _paint((1, _box(1, 1, 4, 4)))
    if fmt == 'labelme':
        _labelme_file(out / '00002.json', '00002.png', [_labelme_shape('skin', [[1, 1], [4, 4]], 'rectangle')])
    elif fmt == 'cvat':
        Image.fromarray(COLOURS[third]).save(out / 'SegmentationClass' / '00002.png')
    elif fmt == 'coco':
        doc = json.loads((out / 'annotations.json').read_text())
        doc['annotations'].append(
            {'id': 99, 'image_id': 3, 'category_id': 1, 'segmentation': [[1, 1, 5, 1, 5, 5, 1, 5]]}
        )
        (out / 'annotations.json').write_text(json.dumps(doc))
    else:
        tasks = json.loads((out / 'tasks.json').read_text())
        tasks[2]['annotations'] = [{'result': [_ls_polygon('skin', 1, 1, 4, 4)]}]
        (out / 'tasks.json').write_text(json.dumps(tasks))
    for k in range(3):  # back to templates, so only the import can bring the labels back
        annotation.write_label_template(wd / 'shots' / 'labels' / f'{k:05d}.png', np.zeros((H, W, 3)), COLOURS)
    import_labels(fmt, out, wd)
    assert np.array_equal(_read(wd), np.stack(TRUTH + [third]))


def test_export_refuses_a_non_empty_folder(tmp_path):
    wd = _shots(tmp_path / 'wd', count=1)
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'keep.txt').write_text('mine')
    with pytest.raises(errors.BadFileError, match='out: is not empty'):
        export_shots('coco', wd, tmp_path / 'out')
    assert [p.name for p in (tmp_path / 'out').iterdir()] == ['keep.txt']


# command line -------------------------------------------------------------------------------------------------------


def _cli(*args):
    return subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'import_labels.py'), *map(str, args)], capture_output=True, text=True
    )


def test_command_line_imports_and_reports_bad_input_in_one_line(tmp_path):
    wd = _shots(tmp_path / 'wd')
    src = _labelme_truth(tmp_path / 'lm')
    bad = _cli('--format', 'labelme', src, wd, '--map', 'skin')
    assert (
        bad.returncode == 2
        and bad.stderr == "import_labels: --map: 'skin' is not THEIRS=OURS (or THEIRS= to drop a label)\n"
    )
    _labelme_file(src / '00000.json', '00000.png', [_labelme_shape('face', [[0, 0], [3, 3]], 'rectangle')])
    bad = _cli('--format', 'labelme', src, wd)
    assert bad.returncode == 2 and bad.stderr.startswith(f'import_labels: {src}: labels that are no class: ')
    assert bad.stderr.count('\n') == 1 and 'Traceback' not in bad.stderr
    good = _cli('--format', 'labelme', src, wd, '--map', 'face=skin')
    assert good.returncode == 0 and good.stdout.startswith('wrote 2 labels in'), good.stderr
    assert (_read(wd)[0] == _paint((1, _box(0, 0, 3, 3)))).all()
    out = _cli('--format', 'cvat', '--export', tmp_path / 'out', wd)
    assert out.returncode == 0 and (tmp_path / 'out' / 'labelmap.txt').is_file(), out.stderr
