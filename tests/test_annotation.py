"""Label files: every input form round trips through PIL; every kind of bad file is named in the error."""

import numpy as np
import pytest
from PIL import Image

from gsd.io import annotation
from gsd.io.annotation import AnnotationError, read_annotations, read_mask, read_part_masks
from gsd.toy import CLASSES, PALETTE

S = 8
K = len(CLASSES)


def _mask(seed=0):
    return np.random.default_rng(seed).integers(0, K, (S, S)).astype(np.int32)


def _indexed(path, ids, palette=PALETTE):
    img = Image.fromarray(ids.astype(np.uint8), 'L').convert('P')
    img.putpalette(np.asarray(palette, np.uint8).reshape(-1).tolist())
    img.save(path)
    return path


def _binary(path, on, mode='L'):
    Image.fromarray((on * 255).astype(np.uint8), 'L').convert(mode).save(path)
    return path


def test_indexed_round_trip_with_and_without_colours(tmp_path):
    ids = _mask()
    path = _indexed(tmp_path / 'a.png', ids)
    assert np.array_equal(read_mask(path, size=S, num_classes=K), ids)
    out = read_mask(path, size=(S, S), num_classes=K, colours=PALETTE, class_names=CLASSES)
    assert out.dtype == np.int32 and np.array_equal(out, ids)


def test_indexed_is_read_by_the_colours_the_user_saw(tmp_path):
    # An editor reordered the palette: index i now shows class perm[i]'s colour.
    perm = np.random.default_rng(1).permutation(K)
    path = _indexed(tmp_path / 'a.png', np.argsort(perm)[_mask()], PALETTE[perm])
    assert np.array_equal(read_mask(path, size=S, num_classes=K, colours=PALETTE), _mask())
    # A palette that is no class table at all is refused when colours are given.
    bad = _indexed(tmp_path / 'b.png', _mask(), np.full((K, 3), 9) + np.arange(K)[:, None])
    with pytest.raises(AnnotationError, match='b.png: .*no class colour.*colours=None'):
        read_mask(bad, size=S, num_classes=K, colours=PALETTE)


def test_rgb_and_rgba_round_trip(tmp_path):
    ids = _mask()
    Image.fromarray(PALETTE[ids]).save(tmp_path / 'rgb.png')
    assert np.array_equal(read_mask(tmp_path / 'rgb.png', size=S, num_classes=K, colours=PALETTE), ids)
    rgba = np.concatenate([PALETTE[ids], np.full((S, S, 1), 255, np.uint8)], -1)
    rgba[0, :] = (77, 1, 2, 0)  # fully transparent (unpainted layer): background whatever its colour
    Image.fromarray(rgba, 'RGBA').save(tmp_path / 'rgba.png')
    expected = ids.copy()
    expected[0, :] = 0
    assert np.array_equal(read_mask(tmp_path / 'rgba.png', size=S, num_classes=K, colours=PALETTE), expected)
    rgba[1, :3, 3] = 128
    Image.fromarray(rgba, 'RGBA').save(tmp_path / 'soft.png')
    with pytest.raises(AnnotationError, match='soft.png: 3 pixels are partly transparent'):
        read_mask(tmp_path / 'soft.png', size=S, num_classes=K, colours=PALETTE)
    with pytest.raises(AnnotationError, match='rgb.png: .*no class colour table'):
        read_mask(tmp_path / 'rgb.png', size=S, num_classes=K)


def test_unknown_colour_names_colour_and_count(tmp_path):
    rgb = PALETTE[_mask()]
    rgb[2, 1:4] = (200, 150, 120)  # an antialiased skin/background blend
    rgb[5, 5] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / 'edge.png')
    with pytest.raises(AnnotationError) as e:
        read_mask(tmp_path / 'edge.png', size=S, num_classes=K, colours=PALETTE)
    msg = str(e.value)
    assert msg.startswith(str(tmp_path / 'edge.png') + ': 4 pixels') and '\n' not in msg
    assert '(200, 150, 120) in 3 pixels, (1, 2, 3) in 1 pixels' in msg


@pytest.mark.parametrize('mode', ['L', 'I;16', '1'])
def test_greyscale_ids_round_trip(tmp_path, mode):
    ids = _mask() % 2 if mode == '1' else _mask()
    img = {
        'L': lambda: Image.fromarray(ids.astype(np.uint8)),
        'I;16': lambda: Image.fromarray(ids.astype(np.uint16)),  # a 16-bit PNG
        '1': lambda: Image.fromarray(ids.astype(np.uint8) * 255).convert('1'),
    }[mode]()
    img.save(tmp_path / 'g.png')
    with Image.open(tmp_path / 'g.png') as back:
        assert back.mode == mode
    assert np.array_equal(read_mask(tmp_path / 'g.png', size=S, num_classes=K), ids)


def test_bad_single_masks(tmp_path):
    Image.fromarray(np.full((S, S), 9, np.uint8)).save(tmp_path / 'ids.png')
    with pytest.raises(AnnotationError, match=r'ids.png: 64 pixels hold ids 9 outside the 7 classes \(back'):
        read_mask(tmp_path / 'ids.png', size=S, num_classes=K, class_names=CLASSES)
    Image.fromarray(np.zeros((6, S), np.uint8)).save(tmp_path / 'small.png')
    with pytest.raises(AnnotationError, match=r'small.png: is 8x6 pixels, expected 8x8 \(width x height\)'):
        read_mask(tmp_path / 'small.png', size=S, num_classes=K)
    (tmp_path / 'corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'garbage' * 10)
    with pytest.raises(AnnotationError, match='corrupt.png: cannot read as an image'):
        read_mask(tmp_path / 'corrupt.png', size=S, num_classes=K)
    Image.fromarray(np.zeros((S, S), np.uint8)).save(tmp_path / 'lossy.png', format='JPEG')
    with pytest.raises(AnnotationError, match='lossy.png: is a JPEG'):
        read_mask(tmp_path / 'lossy.png', size=S, num_classes=K)
    with pytest.raises(AnnotationError, match='gone.png: no such file'):
        read_mask(tmp_path / 'gone.png', size=S, num_classes=K)


FACE = ('background', 'eye', 'mouth', 'skin')  # earlier classes win overlaps
MERGES = {'l_eye': 'eye', 'r_eye': 'eye', 'mouth': 'mouth', 'u_lip': 'mouth', 'skin': 'skin', 'hat': None}


def _parts(tmp_path, stem='00000'):
    on = {p: np.zeros((S, S), bool) for p in ('skin', 'l_eye', 'r_eye', 'u_lip', 'hat')}
    on['skin'][1:7, 1:7] = True
    on['l_eye'][2, 2] = on['r_eye'][2, 5] = True
    on['u_lip'][5, 3:5] = True
    on['hat'][0, :] = True
    for p, m in on.items():
        _binary(tmp_path / f'{stem}_{p}.png', m, mode='RGB' if p == 'skin' else 'L')
    expected = np.zeros((S, S), np.int32)
    expected[1:7, 1:7] = 3
    expected[2, 2] = expected[2, 5] = 1
    expected[5, 3:5] = 2
    return expected  # no 'mouth' file: a listed part that is absent


def test_part_masks_merge_and_priority(tmp_path):
    expected = _parts(tmp_path)
    out = read_part_masks(tmp_path, stem='00000', size=S, class_names=FACE, merges=MERGES, on_overlap='first')
    assert out.dtype == np.int32 and np.array_equal(out, expected)
    with pytest.raises(AnnotationError) as e:
        read_part_masks(tmp_path, stem='00000', size=S, class_names=FACE, merges=MERGES)
    # Skin overlaps the eyes and the lip (each pair named once, on the first part in name order);
    # the hat also overlaps the skin, but it is dropped, so it is not checked.
    lines = str(e.value).splitlines()
    assert lines == [
        f"{tmp_path / '00000_l_eye.png'}: part 'l_eye' overlaps 00000_skin.png in 1 pixels",
        f"{tmp_path / '00000_r_eye.png'}: part 'r_eye' overlaps 00000_skin.png in 1 pixels",
        f"{tmp_path / '00000_skin.png'}: part 'skin' overlaps 00000_u_lip.png in 2 pixels",
    ]


def test_part_masks_without_merges_use_class_names(tmp_path):
    on = np.zeros((S, S), bool)
    on[3:5, 3:5] = True
    _binary(tmp_path / 's_mouth.png', on)
    _indexed(tmp_path / 's_eye.png', np.eye(S, dtype=np.int32), [[255, 255, 255], [0, 0, 0]])  # index 0 white
    out = read_part_masks(tmp_path, stem='s', size=S, class_names=FACE, on_overlap='first')
    eye = ~np.eye(S, dtype=bool)  # black (index 1) off the diagonal; eye is before mouth, so it wins
    assert np.array_equal(out == 1, eye) and np.array_equal(out == 2, on & ~eye) and not (out == 3).any()


def test_bad_part_masks(tmp_path):
    _binary(tmp_path / 'e_eye.png', np.zeros((S, S), bool))
    with pytest.raises(AnnotationError, match=r'e_\*.png: every part mask is empty'):
        read_part_masks(tmp_path, stem='e', size=S, class_names=FACE)
    with pytest.raises(AnnotationError, match=r"nobody_\*.png: no label for stem 'nobody'"):
        read_part_masks(tmp_path, stem='nobody', size=S, class_names=FACE)
    _binary(tmp_path / 't_eey.png', np.ones((S, S), bool))
    with pytest.raises(AnnotationError, match="t_eey.png: part 'eey' is not a known part"):
        read_part_masks(tmp_path, stem='t', size=S, class_names=FACE)


def test_read_annotations_mixed_forms(tmp_path):
    expected_parts = _parts(tmp_path, '1')
    ids = _mask() % len(FACE)
    _indexed(tmp_path / '1_b.png', ids, PALETTE[: len(FACE)])  # stem '1_b', not a part of stem '1'
    Image.fromarray(PALETTE[ids]).save(tmp_path / '2.png')
    out = read_annotations(
        tmp_path, ['1', '1_b', '2'], size=S, class_names=FACE, colours=PALETTE[:4], merges=MERGES, on_overlap='first'
    )
    assert out.shape == (3, S, S) and out.dtype == np.int32
    assert np.array_equal(out[0], expected_parts)
    assert np.array_equal(out[1], ids) and np.array_equal(out[2], ids)


def test_read_annotations_lists_every_bad_file(tmp_path):
    Image.fromarray(PALETTE[_mask() % 4]).save(tmp_path / 'ok.png')
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / 'small.png')
    (tmp_path / 'broken_eye.png').write_bytes(b'not a png')
    Image.fromarray(PALETTE[_mask() % 4]).save(tmp_path / 'both.png')
    _binary(tmp_path / 'both_eye.png', np.ones((S, S), bool))
    with pytest.raises(AnnotationError) as e:
        read_annotations(
            tmp_path, ['ok', 'small', 'broken', 'both', 'missing'], size=S, class_names=FACE, colours=PALETTE[:4]
        )
    lines = str(e.value).splitlines()
    assert [line.split(': ')[0] for line in lines] == [
        str(tmp_path / n) for n in ('small.png', 'broken_eye.png', 'both.png', 'missing_*.png')
    ]
    assert 'expected 8x8' in lines[0] and 'cannot read' in lines[1] and 'keep one form' in lines[2]


def test_template_round_trip_and_legend(tmp_path):
    image = np.random.default_rng(2).integers(0, 256, (S, S + 2, 3), np.uint8)
    path = annotation.write_label_template(tmp_path / 'sub' / 't.png', image, PALETTE)
    with Image.open(path) as img:
        assert img.mode == 'P' and img.size == (S + 2, S)
        assert np.array_equal(np.asarray(img.getpalette(), np.uint8).reshape(-1, 3)[:K], PALETTE)
    assert not read_mask(path, size=(S, S + 2), num_classes=K, colours=PALETTE).any()

    legend = annotation.write_colour_legend(tmp_path / 'legend.json', CLASSES, PALETTE)
    names, colours = annotation.read_colour_legend(legend)
    assert names == CLASSES and np.array_equal(colours, PALETTE)
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in tmp_path.rglob('*')) == ['legend.json', 'sub', 't.png']


def test_template_showing_the_image_refuses_unpainted_pixels(tmp_path):
    image = np.random.default_rng(3).integers(0, 256, (S, S, 3), np.uint8)
    image[:2] = PALETTE[1]  # exact class colours in the image must not pass as labels
    path = annotation.write_label_template(tmp_path / 't.png', image, PALETTE, show_image=True)
    with pytest.raises(AnnotationError, match=f'{S * S} pixels have colours that are no class colour'):
        read_mask(path, size=S, num_classes=K, colours=PALETTE)
    # Paint everything (as an editor in indexed mode would: palette indices) and it reads.
    with Image.open(path) as img:
        painted = img.copy()
    painted.putdata(_mask().reshape(-1).tolist())
    painted.save(path)
    assert np.array_equal(read_mask(path, size=S, num_classes=K, colours=PALETTE), _mask())
