"""Test sets of the paper's evaluation (CelebAMask-HQ faces, PASCAL-Part car and horse) as square pairs.

Every reader yields (name, image uint8 (R, R, 3), mask uint8 (R, R)) in a fixed order. Mask values are
indices into the class tuple (`celebamask_classes`, `pascal_part_classes`; background is 0) or
IGNORE (255, which gsd.evaluation.Confusion skips). Nothing is downloaded: the datasets must be on disk.
Bad label files raise gsd.io.annotation.AnnotationError naming the file; a missing dataset folder or
index file raises FileNotFoundError saying what belongs there.

PASCAL-Part crops are squares around an object, padded where they leave the photo. That padding is
IGNORE by default (`PASCAL_PAD['ignore']`): as background it would count as correct background
(much of the crop of a wide object or one at the photo's edge), which no method has to see to get right.
"""

from __future__ import annotations

import math
import pathlib
import re
import warnings
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from gsd import errors
from gsd.io.annotation import AnnotationError, read_part_masks

IGNORE = 255

# ----------------------------------------------------------------------------------------------
# CelebAMask-HQ.

CELEBAMASK_PARTS = (
    'skin',
    'nose',
    'eye_g',
    'l_eye',
    'r_eye',
    'l_brow',
    'r_brow',
    'l_ear',
    'r_ear',
    'mouth',
    'u_lip',
    'l_lip',
    'hair',
    'hat',
    'ear_r',
    'neck_l',
    'neck',
    'cloth',
)
CELEBAMASK_MASK_SIZE = 512
_CELEBAMASK_MERGES = {  # class -> its parts, in the paper's order (authors' load_celeba_mask)
    '3class': {'eye': ('l_eye', 'r_eye'), 'mouth': ('mouth', 'u_lip', 'l_lip'), 'nose': ('nose',)},
    '10class': {
        'hair': ('hair',),
        'eyebrow': ('l_brow', 'r_brow'),
        'eye': ('l_eye', 'r_eye'),
        'mouth': ('mouth', 'u_lip', 'l_lip'),
        'nose': ('nose',),
        'skin': ('skin',),
        'ear': ('l_ear', 'r_ear'),
        'neck': ('neck',),
        'clothes': ('cloth',),
    },
}
# Which class keeps a pixel that two parts claim (first wins). 'paper': the merge order above, as the
# authors' argmax over stacked class masks resolved ties. 'celebamask': CelebAMask-HQ's own g_mask.py,
# which paints its part list in order so the LAST part wins; its parts of one merged class are
# adjacent in that list, so it reduces to this class order. The two disagree on hair/neck/clothes/
# skin/ear overlaps (e.g. neck under a collar: 'paper' says neck, g_mask.py says clothes).
_CELEBAMASK_ORDER = {
    'paper': None,
    'celebamask': ('clothes', 'neck', 'hair', 'mouth', 'ear', 'eyebrow', 'eye', 'nose', 'skin'),
}
_DROPPED = '(dropped)'  # hat, eye_g, ear_r, neck_l (and, for 3 classes, the rest): never occlude a class
_SPLITS = {'train': (0, 162771), 'val': (162771, 182638), 'test': (182638, None)}  # CelebA orig_idx


def celebamask_classes(kind: str) -> tuple[str, ...]:
    """'3class' -> ('background', 'eye', 'mouth', 'nose'); '10class' -> background + the paper's nine."""
    if kind not in _CELEBAMASK_MERGES:
        raise ValueError(f'unknown CelebAMask-HQ class set {kind!r}; expected one of {sorted(_CELEBAMASK_MERGES)}')
    return ('background',) + tuple(_CELEBAMASK_MERGES[kind])


def celebamask_split_ids(root, split: str = 'test') -> list[int]:
    """CelebA-HQ ids (ascending) of CelebA's official split, from root/CelebA-HQ-to-CelebA-mapping.txt.

    Thresholds on orig_idx as CelebAMask-HQ's g_partition.py uses them (train < 162771 <= val < 182638
    <= test). orig_idx is 0-based (orig_file = orig_idx + 1), so by CelebA's file-name split the two
    boundary images would move one split; kept as the face-parsing literature splits.
    """
    if split not in _SPLITS:
        raise ValueError(f'unknown split {split!r}; expected one of {sorted(_SPLITS)}')
    path = pathlib.Path(root) / 'CelebA-HQ-to-CelebA-mapping.txt'
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file; expected CelebAMask-HQ's mapping of CelebA-HQ ids "
            f'to CelebA (columns idx orig_idx orig_file) in the dataset root'
        )
    lo, hi = _SPLITS[split]
    ids = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        cols = line.split()
        if not cols or (n == 1 and cols[:2] == ['idx', 'orig_idx']):
            continue
        try:
            idx, orig = int(cols[0]), int(cols[1])
        except (ValueError, IndexError):
            problem = f'line {n} is not "idx orig_idx orig_file": {line.strip()!r}'
            raise AnnotationError([(path, problem)]) from None
        if orig >= lo and (hi is None or orig < hi):
            ids.append(idx)
    return sorted(ids)


def celebamask_test_ids(root) -> list[int]:
    """The 2,824 CelebA-HQ ids of CelebA's test split (see `celebamask_split_ids`)."""
    return celebamask_split_ids(root, 'test')


def iter_celebamask(
    root, kind: str, resolution: int, split: str = 'test', limit: int | None = None, priority: str = 'paper'
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(str(id), image, mask) for the split's ids in ascending order, at resolution x resolution.

    Image: CelebA-HQ-img/{id}.jpg, area-averaged (Pillow BOX) to the resolution. Mask: the part PNGs
    CelebAMask-HQ-mask-anno/{id // 2000}/{id:05d}_{part}.png merged by `celebamask_classes(kind)`,
    read at 512 px with gsd.io.annotation.read_part_masks and resized NEAREST. Dropped parts (hat,
    eyeglasses, earring, necklace) do not hide what lies beneath them, as in the authors' code. priority
    'paper' or 'celebamask' decides overlaps (see _CELEBAMASK_ORDER).
    """
    classes = celebamask_classes(kind)
    _check_resolution(resolution)
    if priority not in _CELEBAMASK_ORDER:
        raise ValueError(f'unknown priority {priority!r}; expected one of {sorted(_CELEBAMASK_ORDER)}')
    root = pathlib.Path(root)
    image_dir, mask_dir = root / 'CelebA-HQ-img', root / 'CelebAMask-HQ-mask-anno'
    for folder, what in (
        (image_dir, 'the 30,000 images {id}.jpg'),
        (mask_dir, 'the part masks in folders 0-14: {id // 2000}/{id:05d}_{part}.png'),
    ):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such directory; expected CelebAMask-HQ's {what}")
    ids = celebamask_split_ids(root, split)[:limit]
    order = _CELEBAMASK_ORDER[priority] or classes[1:]
    # read_part_masks gives pixels to the earlier class name: read in priority order, then renumber.
    # Dropped parts go to a last, lowest-priority class (not None) so that a 3-class face showing no
    # eye, mouth or nose reads as all background instead of failing read_part_masks' empty-mask check.
    read_names = ('background',) + tuple(order) + (_DROPPED,)
    renumber = np.array([0] + [classes.index(c) for c in order] + [0], np.uint8)
    merges = {part: _DROPPED for part in CELEBAMASK_PARTS}
    merges.update({part: c for c, parts in _CELEBAMASK_MERGES[kind].items() for part in parts})
    # Checked above, read below: a wrong path fails at the call, not at the first next().
    return _celebamask_items(ids, image_dir, mask_dir, read_names, merges, renumber, resolution)


def _celebamask_items(ids, image_dir, mask_dir, read_names, merges, renumber, resolution):
    for k in ids:
        image = _read_rgb(image_dir / f'{k}.jpg')
        if image.size[0] != image.size[1]:
            raise AnnotationError(
                [
                    (
                        image_dir / f'{k}.jpg',
                        f'is {image.size[0]}x{image.size[1]}: CelebA-HQ '
                        f'images are square, and the masks could not be aligned otherwise',
                    )
                ]
            )
        mask = read_part_masks(
            mask_dir / str(k // 2000),
            stem=f'{k:05d}',
            size=CELEBAMASK_MASK_SIZE,
            class_names=read_names,
            merges=merges,
            on_overlap='first',
        )
        yield str(k), _resize_image(image, resolution), _resize_mask(renumber[mask], resolution)


# ----------------------------------------------------------------------------------------------
# PASCAL-Part car and horse.

# Part name -> class. The paper names the classes only (car: body, plate, light, wheel, window; horse:
# head, neck+torso, legs, tail); this grouping is the natural one: plate = front and back plates,
# body = the sides, roof, mirrors and doors; a horse's head includes eyes, ears and muzzle, its legs
# the hooves. Unknown part names are errors, not silently background.
_CAR_PARTS = [
    (r'fliplate|bliplate', 'plate'),
    (r'headlight_\d+', 'light'),
    (r'wheel_\d+', 'wheel'),
    (r'window_\d+', 'window'),
    (r'(front|left|right|back|roof)side|(left|right)mirror|door_\d+', 'body'),
]
_HORSE_PARTS = [
    (r'head|[lr]eye|[lr]ear|muzzle', 'head'),
    (r'neck|torso', 'neck_torso'),
    (r'[lr][fb][ul]leg|[lr][fb]ho', 'legs'),
    (r'tail', 'tail'),
]
_PASCAL = {  # category -> (classes, part rules, overlap priority (first wins), uncovered object pixels)
    # Small, specific parts win over the large body part they are drawn on. Car pixels under no part
    # are body (the paper's Body is "the rest of the car"); uncovered horse pixels are slivers between
    # parts whose class nothing tells (leg or torso?), so they are not scored.
    'car': (
        ('background', 'body', 'plate', 'light', 'wheel', 'window'),
        _CAR_PARTS,
        ('plate', 'light', 'wheel', 'window', 'body'),
        'body',
    ),
    'horse': (
        ('background', 'head', 'neck_torso', 'legs', 'tail'),
        _HORSE_PARTS,
        ('head', 'tail', 'legs', 'neck_torso'),
        None,
    ),
}


# How the padding of a PASCAL-Part crop (outside the photo) is labelled: report.pad's values -> pad_label.
PASCAL_PAD = {'ignore': IGNORE, 'background': 0}


def pascal_part_classes(category: str) -> tuple[str, ...]:
    """'car' -> (background, body, plate, light, wheel, window); 'horse' -> (background, head,
    neck_torso, legs, tail)."""
    if category not in _PASCAL:
        raise ValueError(f'unknown PASCAL-Part category {category!r}; expected one of {sorted(_PASCAL)}')
    return _PASCAL[category][0]


def pascal_part_class(category: str, part: str) -> str | None:
    """The class a PASCAL-Part part name belongs to ('wheel_3' -> 'wheel'), or None if unknown."""
    pascal_part_classes(category)
    return next((c for pattern, c in _PASCAL[category][1] if re.fullmatch(pattern, part)), None)


def _unwrap(x):
    """loadmat wraps values in 1-element object arrays (and, with squeeze_me, 0-d ones): strip them."""
    while isinstance(x, np.ndarray) and x.dtype == object and x.size == 1:
        x = x.reshape(-1)[0]
    return x


def _records(x) -> list:
    """A MATLAB struct array in any loadmat form (record ndarray, np.void, mat_struct, empty) -> list."""
    x = _unwrap(x)
    if isinstance(x, np.ndarray):
        if x.size == 0:
            return []  # an object without parts: MATLAB writes [] (0x0 double)
        if x.dtype.names is None and x.dtype != object:
            raise ValueError(f'expected a struct array, got a {x.dtype} array of shape {x.shape}')
        return [_unwrap(r) for r in x.reshape(-1)]
    return [x]


def _field(record, name: str):
    names = record.dtype.names if isinstance(record, np.void) else getattr(record, '_fieldnames', ())
    if name not in (names or ()):
        raise ValueError(f'a struct lacks the field {name!r} (has {list(names or ())})')
    return _unwrap(record[name] if isinstance(record, np.void) else getattr(record, name))


def _text(x) -> str:
    x = _unwrap(x)
    return str(x.reshape(-1)[0]) if isinstance(x, np.ndarray) else str(x)


def _parse_anno(mat: dict) -> list[tuple[str, np.ndarray, list[tuple[str, np.ndarray]]]]:
    """loadmat's dict (any squeeze_me / struct_as_record) -> [(class, bool mask, [(part, bool mask)])]."""
    if 'anno' not in mat:
        raise ValueError(f'no variable "anno" (has {sorted(k for k in mat if not k.startswith("__"))})')
    (anno,) = _records(mat['anno'])
    objects = []
    for obj in _records(_field(anno, 'objects')):
        parts = [
            (_text(_field(p, 'part_name')), np.asarray(_field(p, 'mask')) != 0) for p in _records(_field(obj, 'parts'))
        ]
        objects.append((_text(_field(obj, 'class')), np.asarray(_field(obj, 'mask')) != 0, parts))
    return objects


def read_pascal_part(path) -> list[tuple[str, np.ndarray, list[tuple[str, np.ndarray]]]]:
    """One Annotations_Part/{imname}.mat -> [(class, object mask, [(part name, part mask)])], bool masks
    in file order. An unreadable or differently shaped file is an AnnotationError naming it."""
    import scipy.io  # a dependency of jax; imported here as only this reader needs it

    path = pathlib.Path(path)
    try:
        objects = _parse_anno(scipy.io.loadmat(path))
        shapes = {m.shape for _, mask, parts in objects for m in [mask] + [pm for _, pm in parts]}
        if len(shapes) > 1 or any(len(s) != 2 for s in shapes):
            raise ValueError(f'masks of differing or non-2-D shapes {sorted(shapes)}')
    except Exception as e:  # noqa: BLE001 - any failure means the file is not a PASCAL-Part annotation
        problem = f'cannot read as a PASCAL-Part annotation ({type(e).__name__}: {e})'
        raise AnnotationError([(path, problem)]) from None
    return objects


def _object_label(path, category: str, mask: np.ndarray, parts) -> np.ndarray:
    """One object -> uint8 class ids (0 outside it); parts painted lowest priority first."""
    classes, _, priority, uncovered = _PASCAL[category]
    if not parts:  # no part annotated at all: which car/horse part a pixel is, is unknown
        return np.where(mask, IGNORE, 0).astype(np.uint8)
    label = np.where(mask, classes.index(uncovered) if uncovered else IGNORE, 0).astype(np.uint8)
    for c in reversed(priority):
        for name, part_mask in parts:
            cls = pascal_part_class(category, name)
            if cls is None:
                raise AnnotationError([(path, f'unknown {category} part {name!r}')])
            if cls == c:
                label[part_mask] = classes.index(c)
    return label


def iter_pascal_part(
    annotations_dir,
    images_dir,
    category: str,
    resolution: int,
    ids: Iterable[str] | None = None,
    limit: int | None = None,
    margin: float = 0.1,
    pad_label: int = IGNORE,
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(imname, image, mask) around the largest `category` object of each image, in `ids` order
    (default: every .mat in annotations_dir, sorted, skipping images without the category).

    The main object is the one with most object-mask pixels among those with part annotations. The
    crop is the square around its mask's bounding box widened by `margin` of the longer side on each
    side; what falls outside the photo is black in the image and `pad_label` in the mask (IGNORE,
    the default, leaves it unscored; 0 scores it as background). Every object of the category in the
    crop is labelled from its own parts (another car is not background); objects without parts are
    IGNORE; other categories (a rider) are background. Image: Pillow BOX when shrinking, BILINEAR
    when enlarging; mask: NEAREST (255 stays 255). Explicit ids without a usable object are skipped with a warning.
    """
    pascal_part_classes(category)
    _check_resolution(resolution)
    annotations_dir, images_dir = pathlib.Path(annotations_dir), pathlib.Path(images_dir)
    for folder, what in (
        (annotations_dir, "PASCAL-Part's Annotations_Part: one {imname}.mat per image"),
        (images_dir, "PASCAL VOC 2010's JPEGImages: one {imname}.jpg per image"),
    ):
        if not folder.is_dir():
            raise FileNotFoundError(f'{folder}: no such directory; expected {what}')
    names = [str(i) for i in ids] if ids is not None else sorted(p.stem for p in annotations_dir.glob('*.mat'))
    # Checked above, read below: a wrong path fails at the call, not at the first next().
    return _pascal_items(
        names, ids is not None, annotations_dir, images_dir, category, resolution, limit, margin, pad_label
    )


def read_id_list(path, annotations_dir=None) -> list[str]:
    """The image ids of a split file, one per line in file order (blank lines and '#' comments skipped),
    e.g. the paper's PASCAL-Part test list. Given annotations_dir, every id must have {id}.mat there.

    A missing file raises errors.MissingInputError, an unusable one errors.BadFileError; both one line
    naming the file.
    """
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        what = 'not a file' if path.exists() else 'no such file'
        raise errors.MissingInputError(f'{path}: {what}; expected a split file, one image id per line')
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise errors.BadFileError(f'{path}: cannot read the split file ({type(e).__name__}: {e})') from None
    ids = []
    for n, line in enumerate(text.splitlines(), 1):
        cols = line.split('#', 1)[0].split()
        if len(cols) > 1:
            raise errors.BadFileError(f'{path}: line {n} is not one image id: {line.strip()!r}')
        ids += cols
    if not ids:
        raise errors.BadFileError(f'{path}: no image id in the split file')
    if annotations_dir is not None:
        missing = [i for i in ids if not (pathlib.Path(annotations_dir) / f'{i}.mat').is_file()]
        if missing:
            more = f' and {len(missing) - 3} more' if len(missing) > 3 else ''
            raise errors.BadFileError(
                f'{path}: {len(missing)} id(s) without an annotation in {annotations_dir}: '
                f'{", ".join(missing[:3])}{more}'
            )
    return ids


def _pascal_items(names, explicit, annotations_dir, images_dir, category, resolution, limit, margin, pad_label):
    done = 0
    for name in names:
        if limit is not None and done >= limit:
            return
        path = annotations_dir / f'{name}.mat'
        if not path.is_file():
            raise FileNotFoundError(f'{path}: no such file; expected the PASCAL-Part annotation of {name}')
        crop = _pascal_crop(path, images_dir / f'{name}.jpg', category, margin, pad_label)
        if crop is None:
            if explicit:
                warnings.warn(f'{path}: no {category} with part annotations; skipped', stacklevel=3)
            continue
        image, label = crop
        yield name, _resize_image(Image.fromarray(image, 'RGB'), resolution), _resize_mask(label, resolution)
        done += 1


def _pascal_crop(path, image_path, category, margin, pad_label):
    """(image, label) square crops around the main object at full resolution, or None without one."""
    objects = [(m, p) for c, m, p in read_pascal_part(path) if c == category]
    candidates = [(int(m.sum()), -i) for i, (m, p) in enumerate(objects) if p]
    if not candidates:
        return None
    main = -max(candidates)[1]  # most pixels; the earlier object on a tie
    labels = [_object_label(path, category, m, p) for m, p in objects]
    label = np.zeros_like(labels[main])
    for i in [j for j in range(len(objects)) if j != main] + [main]:  # the main object on top
        label = np.where(labels[i] != 0, labels[i], label)
    image = np.asarray(_read_rgb(image_path))
    if image.shape[:2] != label.shape:
        raise AnnotationError(
            [
                (
                    path,
                    f'masks are {label.shape[1]}x{label.shape[0]} but {image_path} is '
                    f'{image.shape[1]}x{image.shape[0]}',
                )
            ]
        )
    ys, xs = np.nonzero(labels[main])
    side = max(1, math.ceil((max(ys.max() - ys.min(), xs.max() - xs.min()) + 1) * (1 + 2 * margin) - 1e-9))
    top = math.floor((ys.min() + ys.max() + 1) / 2 - side / 2 + 0.5)  # centred; halves round up
    left = math.floor((xs.min() + xs.max() + 1) / 2 - side / 2 + 0.5)
    return _crop(image, top, left, side, 0), _crop(label, top, left, side, pad_label)


# ----------------------------------------------------------------------------------------------
# Shared pieces.


def _read_rgb(path: pathlib.Path) -> Image.Image:
    # gsd.io.sources holds the project's one conversion of any Pillow mode to RGB; imported here because it
    # pulls in grain (seconds), which code that only wants the class tuples should not pay for.
    from gsd.io.sources import to_rgb

    if not path.is_file():
        raise FileNotFoundError(f'{path}: no such file; expected the image of this annotation')
    try:
        with Image.open(path) as img:
            img.load()
            # No EXIF rotation: the annotations were drawn on the stored pixel grid.
            return to_rgb(img, path)
    except Exception as e:  # noqa: BLE001 - whatever Pillow fails with, the image is unreadable
        raise AnnotationError([(path, f'cannot read as an image ({type(e).__name__}: {e})')]) from None


def _check_resolution(resolution) -> None:
    if not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise ValueError(f'resolution must be a positive int, got {resolution!r}')


def _crop(a: np.ndarray, top: int, left: int, side: int, fill: int) -> np.ndarray:
    """a[top:top+side, left:left+side], with what lies outside `a` filled with `fill`."""
    out = np.full((side, side) + a.shape[2:], fill, a.dtype)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + side, a.shape[0]), min(left + side, a.shape[1])
    if y1 > y0 and x1 > x0:
        out[y0 - top : y1 - top, x0 - left : x1 - left] = a[y0:y1, x0:x1]
    return out


def _resize_image(img: Image.Image, resolution: int) -> np.ndarray:
    # BOX is the exact area average when shrinking (no aliasing of hair or grille texture).
    if img.size != (resolution, resolution):
        shrink = min(img.size) > resolution
        img = img.resize((resolution, resolution), Image.BOX if shrink else Image.BILINEAR)
    return np.array(img, np.uint8)


def _resize_mask(mask: np.ndarray, resolution: int) -> np.ndarray:
    # NEAREST: class ids must not be blended into other (or invalid) ids.
    img = Image.fromarray(np.asarray(mask, np.uint8), 'L')
    if img.size != (resolution, resolution):
        img = img.resize((resolution, resolution), Image.NEAREST)
    return np.array(img, np.uint8)
