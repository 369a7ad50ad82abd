"""Labels made in other annotation tools into a workdir's shots, and the shots out to those tools.

`import_labels(fmt, src, workdir)` turns what labelme, CVAT, COCO or Label Studio exports into the label files the
`fewshot` stage reads: WORKDIR/shots/labels/NNNNN.png, indexed PNGs in the palette of WORKDIR/shots/classes.json.
`export_shots(fmt, workdir, out)` writes the shots as a folder the tool opens, with the class list in its format.

Matching: a label belongs to the shot whose image file has the same stem: the tools store the image's name or a
path to it ('C:\\data\\00003.png', 'images/00003.jpg', a Label Studio URL), maybe under another extension (a
JPEG copy); only the stem ('00003') counts. Label names are matched to the classes of classes.json by name, or
through `mapping` ({their name: our name}; our name None or '' drops their label). Where shapes overlap the later
one wins, as labelme and CVAT draw them; an unlabelled pixel is background (class 0).

Import is all or nothing: every file is checked first (unknown names, all listed at once; sizes; shots without a
label; labels for images that are no shot; damaged files) and one AnnotationError lists every problem, one line
each, naming its file. Only then are the labels written, each atomically.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import pathlib
import re
import shutil
import urllib.parse
import xml.sax.saxutils
from typing import Callable, Mapping

import numpy as np
from PIL import Image, ImageDraw

from gsd import errors
from gsd.io import annotation, atomic, images, rle

FORMATS = ('labelme', 'cvat', 'coco', 'labelstudio')
_CVAT_HEADER = '# label:color_rgb:parts:actions'
_LABELME_VERSION = '5.5.0'  # the labelme release whose file layout exported .json files follow
_LS_UPLOAD_PREFIX = re.compile(r'[0-9a-f]{8}-(.+)')  # Label Studio renames an uploaded file to '<8 hex>-<name>'


class _Problem(Exception):
    """A problem with the file (or the part of it) being read; the caller attaches the path."""


@dataclasses.dataclass(frozen=True)
class _Shots:
    folder: pathlib.Path
    stems: tuple[str, ...]
    sizes: dict  # stem -> (height, width)
    class_names: tuple[str, ...]
    colours: np.ndarray

    def stem_of(self, name: str) -> str:
        """The shot an image name (a path, Windows or POSIX, any extension) refers to; a _Problem if none."""
        stem = pathlib.PurePosixPath(str(name).replace('\\', '/')).stem
        if stem not in self.sizes:
            raise _Problem(f'{name!r} is not one of the shots ({self.stems[0]}.png to {self.stems[-1]}.png)')
        return stem


@dataclasses.dataclass
class _Label:
    """One shot's label as a tool stored it: (their label name, (H, W) bool) regions in drawing order."""

    source: pathlib.Path
    what: str  # where in `source` ('' when the file holds one label), for messages
    stem: str
    regions: list
    broken: bool = False  # a problem was found in it (already reported): the shot has a label, but not a usable one


def _load_shots(workdir) -> _Shots:
    folder = pathlib.Path(workdir) / 'shots'
    for name in ('shots.json', 'latents.npz', 'classes.json'):
        if not (folder / name).is_file():
            raise errors.MissingInputError(f'{folder / name}: no such file; run the shots stage first')
    try:
        with np.load(folder / 'latents.npz') as lat:
            count = int(lat['ws'].shape[0])
    except (OSError, ValueError, KeyError) as e:
        raise errors.BadFileError(f'{folder / "latents.npz"}: cannot read ({type(e).__name__}: {e})') from None
    try:
        class_names, colours = annotation.read_colour_legend(folder / 'classes.json')
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise errors.BadFileError(f'{folder / "classes.json"}: not a class legend ({type(e).__name__}: {e})') from None
    stems = tuple(f'{k:05d}' for k in range(count))
    sizes = {}
    for stem in stems:
        path = folder / 'images' / f'{stem}.png'
        try:
            with Image.open(path) as img:
                sizes[stem] = (img.height, img.width)
        except FileNotFoundError:
            raise errors.MissingInputError(f'{path}: no such file; the shots folder is incomplete') from None
        except (OSError, ValueError) as e:
            raise errors.BadFileError(f'{path}: cannot read as an image ({e})') from None
    return _Shots(folder, stems, sizes, class_names, colours)


def _load_json(path: pathlib.Path):
    try:
        return json.loads(path.read_text(encoding='utf-8'))
    except UnicodeDecodeError:
        raise _Problem('is not a text (UTF-8) file') from None
    except json.JSONDecodeError as e:
        raise _Problem(f'is not valid JSON ({e.msg} at line {e.lineno})') from None


def _one_json(src: pathlib.Path, tool: str) -> pathlib.Path:
    """The export file: `src` itself, or the one .json in the folder `src` (or in its annotations/ folder)."""
    if src.is_file():
        return src
    found = sorted(p for d in (src, src / 'annotations') if d.is_dir() for p in d.glob('*.json') if p.is_file())
    if len(found) != 1:
        listed = f' ({", ".join(p.name for p in found)})' if found else ''
        raise errors.BadFileError(f'{src}: holds {len(found)} .json files{listed}; give the {tool} export file itself')
    return found[0]


def _points(value, what: str, minimum: int) -> np.ndarray:
    """[[x, y], ...] (labelme, Label Studio) -> (N, 2) float, checked."""
    try:
        pts = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        pts = np.zeros((0,))
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < minimum or not np.isfinite(pts).all():
        raise _Problem(f'{what}: points must be at least {minimum} [x, y] pairs of numbers')
    return pts


def _fill_polygon(points: np.ndarray, hw) -> np.ndarray:
    """(N, 2) x, y in continuous image coordinates (pixel i spans [i, i + 1)) -> (H, W) bool: the pixels whose
    centre is inside (even-odd rule), as COCO's and Label Studio's own rasterisers count them."""
    h, w = hw
    x0, y0 = points[:, 0], points[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    centre = np.arange(h) + 0.5
    # Half-open spans [low, high) so a vertex on a row's centre line is crossed once, not twice.
    rows, edges = np.nonzero((centre[:, None] >= np.minimum(y0, y1)) & (centre[:, None] < np.maximum(y0, y1)))
    t = (centre[rows] - y0[edges]) / (y1[edges] - y0[edges])
    xs = x0[edges] + t * (x1[edges] - x0[edges])
    first = np.clip(np.ceil(xs - 0.5), 0, w).astype(np.int64)  # the first pixel whose centre is right of it
    flips = np.zeros((h, w + 1), np.int32)
    np.add.at(flips, (rows, first), 1)
    return np.cumsum(flips, axis=1)[:, :w] % 2 == 1


# labelme ------------------------------------------------------------------------------------------------------------


def _b64_png(text, what: str) -> np.ndarray:
    """labelme's `mask`: a base64 PNG of the shape's box, non-zero = in the shape."""
    try:
        with Image.open(io.BytesIO(base64.b64decode(text, validate=True))) as img:
            patch = np.asarray(img)
    except (TypeError, ValueError, OSError) as e:
        raise _Problem(f'{what}: mask is not a base64 PNG ({type(e).__name__})') from None
    if patch.ndim != 2:
        raise _Problem(f'{what}: mask is a {patch.ndim}-D image, expected a one-channel PNG')
    return patch != 0


def _labelme_region(shape: dict, what: str, hw) -> np.ndarray:
    """A labelme shape -> (H, W) bool, drawn as labelme itself draws it (PIL, outline included)."""
    h, w = hw
    kind = shape.get('shape_type') or 'polygon'
    if kind == 'mask':
        x, y = np.round(_points(shape.get('points'), what, 1)[0]).astype(int)
        patch = _b64_png(shape.get('mask'), what)
        mask = np.zeros(hw, bool)
        ph, pw = patch.shape
        # The patch sits at its box's top-left corner; what falls outside the image is cut, as labelme does.
        y_lo, y_hi, x_lo, x_hi = max(y, 0), min(y + ph, h), max(x, 0), min(x + pw, w)
        if y_lo < y_hi and x_lo < x_hi:
            mask[y_lo:y_hi, x_lo:x_hi] = patch[y_lo - y : y_hi - y, x_lo - x : x_hi - x]
        return mask
    canvas = Image.new('L', (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    if kind in ('polygon', 'oriented_rectangle'):
        draw.polygon([tuple(p) for p in _points(shape.get('points'), what, 3).tolist()], outline=1, fill=1)
    elif kind == 'rectangle':
        (xa, ya), (xb, yb) = _points(shape.get('points'), what, 2)[:2].tolist()
        draw.rectangle(((min(xa, xb), min(ya, yb)), (max(xa, xb), max(ya, yb))), outline=1, fill=1)
    elif kind == 'circle':
        (cx, cy), (px, py) = _points(shape.get('points'), what, 2)[:2].tolist()
        r = float(np.hypot(px - cx, py - cy))
        draw.ellipse(((cx - r, cy - r), (cx + r, cy + r)), outline=1, fill=1)
    else:
        raise _Problem(f'{what} is a {kind}, which marks no area: use polygon, rectangle, circle or mask shapes')
    return np.asarray(canvas) > 0


def _read_labelme(src: pathlib.Path, shots: _Shots, problems: list) -> list[_Label]:
    if src.is_file():
        files = [src]
    else:
        files = sorted(p for p in src.iterdir() if p.suffix.lower() == '.json' and p.is_file())
        if not files:
            problems.append((src, 'no labelme .json files here'))
    labels = []
    for path in files:
        stem = None
        try:
            doc = _load_json(path)
            if not isinstance(doc, dict) or not isinstance(doc.get('shapes'), list) or 'imagePath' not in doc:
                raise _Problem('is not a labelme file (no "shapes" list and "imagePath")')
            stem = shots.stem_of(doc['imagePath'])
            h, w = shots.sizes[stem]
            if (doc.get('imageHeight'), doc.get('imageWidth')) != (h, w):
                raise _Problem(
                    f'image is {doc.get("imageWidth")}x{doc.get("imageHeight")} pixels (imageWidth x imageHeight), '
                    f'the shot {stem}.png is {w}x{h}'
                )
            regions = []
            for i, shape in enumerate(doc['shapes']):
                name = shape.get('label') if isinstance(shape, dict) else None
                if not isinstance(name, str):
                    raise _Problem(f'shape {i} has no "label" string')
                regions.append((name, _labelme_region(shape, f'shape {i} ({name!r})', (h, w))))
            labels.append(_Label(path, '', stem, regions))
        except _Problem as e:
            problems.append((path, str(e)))
            if stem is not None:
                labels.append(_Label(path, '', stem, [], broken=True))
    return labels


# CVAT (Segmentation mask 1.1) ---------------------------------------------------------------------------------------


def _colour_key(rgb) -> np.ndarray:
    rgb = np.asarray(rgb, np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _read_labelmap(path: pathlib.Path) -> dict:
    """labelmap.txt ('name:r,g,b:parts:actions' lines) -> {colour key: name}."""
    by_colour = {}
    for n, line in enumerate(path.read_text(encoding='utf-8', errors='replace').splitlines(), 1):
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        fields = line.rsplit(':', 3)  # from the right: a label name may hold a colon
        try:
            rgb = [int(v) for v in fields[1].split(',')] if len(fields) == 4 else []
        except ValueError:
            rgb = []
        if len(rgb) != 3 or not all(0 <= v < 256 for v in rgb):
            raise _Problem(f'line {n} is not "name:r,g,b::" ({line!r})')
        key = int(_colour_key(rgb))
        if key in by_colour:
            raise _Problem(f'labels {by_colour[key]!r} and {fields[0]!r} share the colour {tuple(rgb)}')
        by_colour[key] = fields[0]
    if not by_colour:
        raise _Problem('lists no labels')
    return by_colour


def _cvat_root(src: pathlib.Path) -> pathlib.Path:
    """The export folder: `src`, or its one subfolder holding labelmap.txt (a zip extracted into a folder)."""
    if src.is_file():
        raise errors.BadFileError(f'{src}: is a file; unzip the CVAT export and give its folder')
    if (src / 'labelmap.txt').is_file():
        return src
    inner = [d for d in src.iterdir() if d.is_dir() and (d / 'labelmap.txt').is_file()]
    if len(inner) != 1:
        raise errors.MissingInputError(f'{src / "labelmap.txt"}: no such file (not a CVAT Segmentation mask export?)')
    return inner[0]


def _read_cvat(src: pathlib.Path, shots: _Shots, problems: list) -> list[_Label]:
    root = _cvat_root(src)
    try:
        names = _read_labelmap(root / 'labelmap.txt')
    except _Problem as e:
        problems.append((root / 'labelmap.txt', str(e)))
        return []
    listing = root / 'ImageSets' / 'Segmentation' / 'default.txt'
    if listing.is_file():  # the images the export covers: each must be a shot
        for line in listing.read_text(encoding='utf-8', errors='replace').splitlines():
            try:
                if line.strip():
                    shots.stem_of(line.strip())
            except _Problem as e:
                problems.append((listing, str(e)))
    masks = root / 'SegmentationClass'
    files = sorted(p for p in masks.rglob('*') if p.suffix.lower() == '.png' and p.is_file()) if masks.is_dir() else []
    if not files:
        problems.append((masks, 'no .png masks here'))
    labels = []
    for path in files:
        stem = None
        try:
            stem = shots.stem_of(path.name)
            h, w = shots.sizes[stem]
            try:
                with Image.open(path) as img:
                    rgb = np.asarray(img.convert('RGB'))
            except (OSError, ValueError) as e:
                raise _Problem(f'cannot read as an image ({e})') from None
            if rgb.shape[:2] != (h, w):
                raise _Problem(f'is {rgb.shape[1]}x{rgb.shape[0]} pixels, the shot {stem}.png is {w}x{h}')
            keys, inverse, counts = np.unique(_colour_key(rgb), return_inverse=True, return_counts=True)
            inverse = inverse.reshape(h, w)
            stray = [(int(k), int(c)) for k, c in zip(keys, counts) if int(k) not in names]
            if stray:
                listed = ', '.join(f'({k >> 16}, {(k >> 8) & 255}, {k & 255}) in {c} pixels' for k, c in stray[:5])
                raise _Problem(f'colours that are no label of labelmap.txt: {listed}')
            labels.append(_Label(path, '', stem, [(names[int(k)], inverse == j) for j, k in enumerate(keys)]))
        except _Problem as e:
            problems.append((path, str(e)))
            if stem is not None:
                labels.append(_Label(path, '', stem, [], broken=True))
    return labels


# COCO ---------------------------------------------------------------------------------------------------------------


def _coco_region(seg, hw) -> np.ndarray:
    if isinstance(seg, dict):  # RLE: counts as a list, or pycocotools' compressed string
        if list(seg.get('size') or []) != list(hw):
            raise _Problem(f'RLE size {seg.get("size")} is not the image size {list(hw)} (height, width)')
        counts = seg.get('counts')
        if not isinstance(counts, (str, list)):
            raise _Problem('RLE "counts" is neither a list nor a string')
        try:
            return rle.coco_mask(counts, hw)
        except ValueError as e:
            raise _Problem(str(e)) from None
    if not isinstance(seg, list) or not seg:
        raise _Problem('has no segmentation (a box alone labels no pixel)')
    mask = np.zeros(hw, bool)
    for poly in seg:  # the polygons of one object are its parts: their union
        if not isinstance(poly, list) or len(poly) % 2:
            raise _Problem('a polygon is not a flat [x1, y1, x2, y2, ...] list')
        mask |= _fill_polygon(_points(np.reshape(poly, (-1, 2)).tolist(), 'a polygon', 3), hw)
    return mask


def _read_coco(src: pathlib.Path, shots: _Shots, problems: list) -> list[_Label]:
    path = _one_json(src, 'COCO')
    try:
        doc = _load_json(path)
        if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ('images', 'annotations')):
            raise _Problem('is not a COCO file (no "images" and "annotations" lists)')
        categories = {c.get('id'): c.get('name') for c in doc.get('categories') or [] if isinstance(c, dict)}
    except _Problem as e:
        problems.append((path, str(e)))
        return []
    labels, rejected = {}, set()  # by image id; rejected: images already reported, whose annotations are skipped
    for image in doc['images']:
        try:
            if not isinstance(image, dict) or 'file_name' not in image or 'id' not in image:
                raise _Problem(f'image entry {image!r:.60} has no "id" and "file_name"')
            rejected.add(image['id'])
            stem = shots.stem_of(image['file_name'])
            label = labels[image['id']] = _Label(path, f'image {image["file_name"]!r}', stem, [], broken=True)
            h, w = shots.sizes[stem]
            if (image.get('height'), image.get('width')) != (h, w):
                raise _Problem(
                    f'image {image["file_name"]!r} is {image.get("width")}x{image.get("height")} pixels, '
                    f'the shot {stem}.png is {w}x{h}'
                )
            label.broken = False
            rejected.discard(image['id'])
        except _Problem as e:
            problems.append((path, str(e)))
    for n, ann in enumerate(doc['annotations']):
        ident = ann.get('id', n) if isinstance(ann, dict) else n
        try:
            if not isinstance(ann, dict):
                raise _Problem('is not an object')
            if ann.get('image_id') in rejected:
                continue
            if ann.get('image_id') not in labels:
                raise _Problem(f'image_id {ann.get("image_id")!r} is no image of the file')
            label = labels[ann['image_id']]
            if ann.get('category_id') not in categories:
                label.broken = True
                raise _Problem(f'category_id {ann.get("category_id")!r} is no category of the file')
            try:
                region = _coco_region(ann.get('segmentation'), shots.sizes[label.stem])
            except _Problem:
                label.broken = True
                raise
            label.regions.append((str(categories[ann['category_id']]), region))
        except _Problem as e:
            problems.append((path, f'annotation {ident}: {e}'))
    return list(labels.values())


# Label Studio -------------------------------------------------------------------------------------------------------


def _ls_stem(url, shots: _Shots) -> str:
    """data.image -> shot stem: a local-files URL's ?d= path, or the URL's path; Label Studio's upload prefix
    ('1a2b3c4d-00003.png') is dropped when the name without it is a shot."""
    if not isinstance(url, str):
        raise _Problem('has no data.image')
    parsed = urllib.parse.urlparse(url)
    query = urllib.parse.parse_qs(parsed.query)
    name = query['d'][0] if 'd' in query else urllib.parse.unquote(parsed.path)
    stem = pathlib.PurePosixPath(name.replace('\\', '/')).stem
    upload = _LS_UPLOAD_PREFIX.fullmatch(stem)
    if stem not in shots.sizes and upload and upload.group(1) in shots.sizes:
        return upload.group(1)
    return shots.stem_of(name)


def _ls_region(result: dict, hw) -> tuple[str, np.ndarray]:
    h, w = hw
    kind, value = result.get('type'), result.get('value')
    if not isinstance(value, dict):
        raise _Problem(f'a {kind} result has no "value"')
    size = (result.get('original_height'), result.get('original_width'))
    if size != (None, None) and size != (h, w):
        raise _Problem(
            f'{kind} drawn on a {size[1]}x{size[0]} image (original_width x original_height), the shot is {w}x{h}'
        )
    names = value.get(kind)
    if not (isinstance(names, list) and len(names) == 1 and isinstance(names[0], str)):
        raise _Problem(f'a {kind} result must carry exactly one label name, has {names!r}')
    if kind == 'brushlabels':
        if value.get('format') != 'rle':
            raise _Problem(f'brush format {value.get("format")!r} is not read (only "rle")')
        try:
            rgba = rle.ls_decode(value.get('rle'))
        except ValueError as e:
            raise _Problem(str(e)) from None
        if rgba.size != h * w * 4:
            raise _Problem(f'brush RLE holds {rgba.size} values, a {w}x{h} RGBA image has {h * w * 4}')
        # The brush is the alpha channel; any coverage counts, as in Label Studio's own COCO export.
        return names[0], rgba.reshape(h, w, 4)[..., 3] > 0
    if kind == 'polygonlabels':
        pts = _points(value.get('points'), 'polygon', 3) * [w / 100.0, h / 100.0]  # stored in percent
        return names[0], _fill_polygon(pts, hw)
    raise _Problem(f'result type {kind!r} is not read: label with brush or polygon labels')


def _read_labelstudio(src: pathlib.Path, shots: _Shots, problems: list) -> list[_Label]:
    path = _one_json(src, 'Label Studio JSON')
    try:
        tasks = _load_json(path)
        tasks = [tasks] if isinstance(tasks, dict) and 'data' in tasks else tasks
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise _Problem('is not a Label Studio JSON export (a list of tasks)')
    except _Problem as e:
        problems.append((path, str(e)))
        return []
    labels = []
    for n, task in enumerate(tasks):
        what, stem = f'task {task.get("id", n)}', None
        try:
            data = task.get('data')
            stem = _ls_stem(data.get('image') if isinstance(data, dict) else None, shots)
            done = [a for a in task.get('annotations') or [] if isinstance(a, dict) and not a.get('was_cancelled')]
            if len(done) > 1:
                raise _Problem(f'has {len(done)} annotations of shot {stem}.png: delete all but one in Label Studio')
            if not done:
                continue  # the shot counts as unlabelled
            results = done[0].get('result') or []
            labels.append(_Label(path, what, stem, [_ls_region(r, shots.sizes[stem]) for r in results]))
        except _Problem as e:
            problems.append((path, f'{what}: {e}'))
            if stem is not None:
                labels.append(_Label(path, what, stem, [], broken=True))
    return labels


_READERS: dict[str, Callable] = {
    'labelme': _read_labelme,
    'cvat': _read_cvat,
    'coco': _read_coco,
    'labelstudio': _read_labelstudio,
}


# import -------------------------------------------------------------------------------------------------------------


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise errors.SettingError(f'format: {fmt!r} is not one of {", ".join(FORMATS)}')


def _lookup(used: set, shots: _Shots, mapping: Mapping, fmt: str) -> tuple[dict, list]:
    """{their name: class id or None (dropped)} for the names used, and the names that are no class."""
    ids = {name: i for i, name in enumerate(shots.class_names)}
    if fmt == 'cvat' and 'background' not in ids and 'background' not in mapping:
        mapping = dict(mapping, background=shots.class_names[0])  # CVAT adds 'background' to every labelmap
    table, unknown = {}, []
    for name in sorted(used):
        if name in mapping:
            table[name] = ids[mapping[name]] if mapping[name] else None
        elif name in ids:
            table[name] = ids[name]
        else:
            unknown.append(name)
    return table, unknown


def _unknown_names(unknown: list, labels: list, class_names) -> str:
    """One line for every label name that is no class, with (up to three of) the files using it."""
    listed = []
    for name in unknown:
        files = sorted({lab.source.name for lab in labels if any(r[0] == name for r in lab.regions)})
        listed.append(f'{name!r} (in {", ".join(files[:3])}{" ..." if len(files) > 3 else ""})')
    return (
        f'labels that are no class: {", ".join(listed)}; classes: {", ".join(class_names)}; map with --map THEIRS=OURS'
    )


def _prefix(label: _Label) -> str:
    return f'{label.what}: ' if label.what else ''


def _named(label: _Label) -> str:
    return f'{label.source.name} ({label.what})' if label.what else label.source.name


def _clashes(shots: _Shots, stems) -> list:
    """Files in labels/ the fewshot stage would read beside (or instead of) an imported NNNNN.png."""
    folder = shots.folder / 'labels'
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        name = path.name
        for stem in stems:
            if path.suffix.lower() == '.png' and (name.startswith(f'{stem}_') or name.lower() == f'{stem}.png'):
                if name != f'{stem}.png':
                    found.append((path, f'would be read with the imported {stem}.png: move it out of {folder}'))
    return found


def import_labels(fmt: str, src, workdir, mapping: Mapping[str, str | None] | None = None) -> list[pathlib.Path]:
    """Read a labelme / CVAT / COCO / Label Studio export and write WORKDIR/shots/labels/NNNNN.png for every shot.

    src: labelme: a folder of labelme .json files (one per image; polygon, rectangle, circle, mask shapes) or one
    file; cvat: the folder of a 'Segmentation mask 1.1' export (labelmap.txt, SegmentationClass/*.png colour
    masks, ImageSets/Segmentation/default.txt); coco: the COCO .json (polygons, RLE counts, compressed RLE
    strings), or a folder holding exactly one; labelstudio: Label Studio's JSON export (brushlabels in its RLE,
    polygonlabels in percent), or a folder holding exactly one. A label is matched to a shot by the stem of its
    image's file name ('images/00003.jpg' labels shot 00003.png); label names to classes.json's classes by name or
    through `mapping` {their name: class name, or None to drop it}. The later of overlapping shapes wins; unlabelled
    pixels are background. Every shot needs a label with at least one labelled pixel.
    Raises AnnotationError (one line per problem, naming its file; nothing written), SettingError (bad fmt or
    mapping), MissingInputError (no such src or shots). Returns the label files written.
    """
    _check_format(fmt)
    mapping = dict(mapping or {})
    shots = _load_shots(workdir)
    bad = [f'{k}={v}' for k, v in mapping.items() if v and v not in shots.class_names]
    if bad:
        raise errors.SettingError(
            f'mapping: {", ".join(bad)}: not a class of {shots.folder / "classes.json"} '
            f'(classes: {", ".join(shots.class_names)})'
        )
    src = pathlib.Path(src).expanduser()
    if not src.exists():
        raise errors.MissingInputError(f'{src}: no such file or folder')
    problems: list = []
    labels = _READERS[fmt](src, shots, problems)

    table, unknown = _lookup({name for label in labels for name, _ in label.regions}, shots, mapping, fmt)
    if unknown:
        problems.append((src, _unknown_names(unknown, labels, shots.class_names)))
    by_stem: dict = {}
    for label in labels:
        first = by_stem.setdefault(label.stem, label)
        if first is not label:
            problems.append(
                (label.source, f'{_prefix(label)}labels shot {label.stem}.png, as {_named(first)} does: keep one')
            )
    missing = [f'{s}.png' for s in shots.stems if s not in by_stem]
    if missing:
        problems.append((src, f'no label for shot{"s" if len(missing) > 1 else ""} {", ".join(missing)}'))
    masks = {}
    if not unknown:
        for stem, label in by_stem.items():
            if label.broken:
                continue
            mask = np.zeros(shots.sizes[stem], np.uint8)
            for name, region in label.regions:  # in drawing order: the later shape wins
                if table[name] is not None:
                    mask[region] = table[name]
            if not mask.any():
                problems.append((label.source, f'{_prefix(label)}no pixel of shot {stem}.png is labelled'))
            masks[stem] = mask
    problems += _clashes(shots, by_stem)
    if problems:
        raise annotation.AnnotationError(problems)
    return [
        images.write_png(shots.folder / 'labels' / f'{stem}.png', masks[stem], palette=shots.colours)
        for stem in shots.stems
    ]


# export -------------------------------------------------------------------------------------------------------------


def _existing_labels(shots: _Shots) -> dict:
    """{stem: (H, W) uint8 class ids} of the shots already labelled (an all-background template is no label)."""
    folder = shots.folder / 'labels'
    names = [p.name.lower() for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    found = {}
    for stem in shots.stems:
        if not any(n == f'{stem}.png' or (n.startswith(f'{stem}_') and n.endswith('.png')) for n in names):
            continue
        mask = annotation.read_annotations(
            folder, [stem], size=shots.sizes[stem], class_names=list(shots.class_names), colours=shots.colours
        )[0]
        if mask.any():
            found[stem] = mask.astype(np.uint8)
    return found


def _png_b64(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format='PNG')
    return base64.b64encode(buf.getvalue()).decode('ascii')


def _hex(colour) -> str:
    return '#{:02x}{:02x}{:02x}'.format(*(int(v) for v in colour))


def _parts(mask: np.ndarray):
    """(class id, its (H, W) bool) for every class in the mask but background."""
    return [(int(c), mask == c) for c in np.unique(mask) if c != 0]


def _export_labelme(tmp: pathlib.Path, shots: _Shots, existing: dict) -> None:
    atomic.write_text(tmp / 'labels.txt', ''.join(f'{n}\n' for n in shots.class_names[1:]))
    for stem in shots.stems:
        shutil.copyfile(shots.folder / 'images' / f'{stem}.png', tmp / f'{stem}.png')
        if stem not in existing:
            continue
        shapes = []
        for c, part in _parts(existing[stem]):
            ys, xs = np.nonzero(part)
            box = part[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.uint8)
            shapes.append(
                {
                    'label': shots.class_names[c],
                    'points': [[int(xs.min()), int(ys.min())], [int(xs.max()), int(ys.max())]],
                    'group_id': None,
                    'description': '',
                    'shape_type': 'mask',
                    'flags': {},
                    'mask': _png_b64(box),
                }
            )
        h, w = shots.sizes[stem]
        doc = {'version': _LABELME_VERSION, 'flags': {}, 'shapes': shapes, 'imagePath': f'{stem}.png'}
        atomic.write_json(tmp / f'{stem}.json', dict(doc, imageData=None, imageHeight=h, imageWidth=w), indent=2)


def _export_cvat(tmp: pathlib.Path, shots: _Shots, existing: dict) -> None:
    lines = [_CVAT_HEADER] + [
        f'{n}:{",".join(str(int(v)) for v in c)}::' for n, c in zip(shots.class_names, shots.colours)
    ]
    atomic.write_text(tmp / 'labelmap.txt', '\n'.join(lines) + '\n')
    atomic.write_text(tmp / 'ImageSets' / 'Segmentation' / 'default.txt', ''.join(f'{s}\n' for s in shots.stems))
    # The label list for CVAT's 'Raw' label editor, so a new task gets these names and colours.
    raw = [
        {'name': n, 'color': _hex(c), 'type': 'any', 'attributes': []}
        for n, c in zip(shots.class_names[1:], shots.colours[1:])
    ]
    atomic.write_json(tmp / 'cvat_labels.json', raw)
    (tmp / 'JPEGImages').mkdir()  # CVAT's name for the folder, whatever the image format
    for stem in shots.stems:
        shutil.copyfile(shots.folder / 'images' / f'{stem}.png', tmp / 'JPEGImages' / f'{stem}.png')
        if stem in existing:
            images.write_png(tmp / 'SegmentationClass' / f'{stem}.png', existing[stem], palette=shots.colours)


def _export_coco(tmp: pathlib.Path, shots: _Shots, existing: dict) -> None:
    doc = {
        'info': {'description': f'gsd shots of {shots.folder}'},
        'licenses': [],
        'categories': [{'id': c, 'name': n, 'supercategory': ''} for c, n in enumerate(shots.class_names) if c],
        'images': [],
        'annotations': [],
    }
    (tmp / 'images').mkdir()
    for k, stem in enumerate(shots.stems, 1):
        shutil.copyfile(shots.folder / 'images' / f'{stem}.png', tmp / 'images' / f'{stem}.png')
        h, w = shots.sizes[stem]
        doc['images'].append({'id': k, 'file_name': f'{stem}.png', 'height': h, 'width': w})
        for c, part in _parts(existing.get(stem, np.zeros((h, w), np.uint8))):
            ys, xs = np.nonzero(part)
            doc['annotations'].append(
                {
                    'id': len(doc['annotations']) + 1,
                    'image_id': k,
                    'category_id': c,
                    'segmentation': {'size': [h, w], 'counts': rle.coco_string(rle.coco_counts(part))},
                    'area': int(part.sum()),
                    'bbox': [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
                    'iscrowd': 1,  # COCO's flag for a mask given as RLE
                }
            )
    atomic.write_json(tmp / 'annotations.json', doc)


def _export_labelstudio(tmp: pathlib.Path, shots: _Shots, existing: dict) -> None:
    labels = ''.join(
        f'    <Label value={xml.sax.saxutils.quoteattr(n)} background="{_hex(c)}"/>\n'
        for n, c in zip(shots.class_names[1:], shots.colours[1:])
    )
    config = (
        '<View>\n'
        '  <Image name="image" value="$image" zoomControl="true"/>\n'
        f'  <BrushLabels name="brush" toName="image">\n{labels}  </BrushLabels>\n'
        f'  <PolygonLabels name="polygon" toName="image">\n{labels}  </PolygonLabels>\n'
        '</View>\n'
    )
    atomic.write_text(tmp / 'labeling_config.xml', config)
    tasks = []
    (tmp / 'images').mkdir()
    for stem in shots.stems:
        shutil.copyfile(shots.folder / 'images' / f'{stem}.png', tmp / 'images' / f'{stem}.png')
        task = {'data': {'image': f'/data/local-files/?d=images/{stem}.png'}}
        if stem in existing:
            h, w = shots.sizes[stem]
            result = [
                {
                    'id': f'{stem}_{c}',
                    'type': 'brushlabels',
                    'from_name': 'brush',
                    'to_name': 'image',
                    'original_width': w,
                    'original_height': h,
                    'image_rotation': 0,
                    # A brush is an RGBA image; Label Studio reads its alpha channel.
                    'value': {
                        'format': 'rle',
                        'rle': rle.ls_encode(np.repeat(part.ravel().astype(np.uint8) * 255, 4)),
                        'brushlabels': [shots.class_names[c]],
                    },
                }
                for c, part in _parts(existing[stem])
            ]
            task['annotations'] = [{'result': result}]
        tasks.append(task)
    atomic.write_json(tmp / 'tasks.json', tasks)


_EXPORTERS: dict[str, Callable] = {
    'labelme': _export_labelme,
    'cvat': _export_cvat,
    'coco': _export_coco,
    'labelstudio': _export_labelstudio,
}


def export_shots(fmt: str, workdir, out) -> pathlib.Path:
    """Write WORKDIR's shots as a folder `fmt`'s tool opens, with the class list (names, colours) in its format.

    labelme: the images, labels.txt (for `labelme OUT --labels OUT/labels.txt`), NNNNN.json mask shapes for the
    shots already labelled. cvat: a 'Segmentation mask 1.1' layout (labelmap.txt, ImageSets/Segmentation/
    default.txt, JPEGImages/, SegmentationClass/ for labelled shots) and cvat_labels.json for CVAT's Raw label
    editor. coco: images/ and annotations.json (categories; labelled shots as compressed RLE). labelstudio:
    images/, labeling_config.xml (brush and polygon labels in the class colours) and tasks.json (images as
    local-files URLs, labelled shots as brush annotations). `out` must not exist or be empty; it appears whole.
    """
    _check_format(fmt)
    shots = _load_shots(workdir)
    out = pathlib.Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise errors.BadFileError(f'{out}: {"is not empty" if out.is_dir() else "is a file"}; export into a new folder')
    existing = _existing_labels(shots)
    with atomic.directory(out) as tmp:
        _EXPORTERS[fmt](tmp, shots, existing)
    return out
