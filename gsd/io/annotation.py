"""Few-shot labels a person paints for generated samples: reading them strictly, and the templates to paint.

A label for sample `stem` is either ONE mask file `{stem}.png` (indexed, colour-coded or greyscale, see
`read_mask`) or one binary PNG per part `{stem}_{part}.png` (CelebAMask-HQ's form, see
`read_part_masks`). Reading is strict, because a few wrong pixels in one of one to ten training
labels are a large share of what the head learns: every pixel must be an exact class colour or id,
sizes must match, parts may not overlap unless asked for, and `read_annotations` checks every file
before it fails, so one AnnotationError lists everything to fix at once.

Transparency: a fully transparent pixel is background (what an editor shows as unpainted when labels
are painted on their own layer); a partly transparent one is an error (a soft brush edge).
"""

from __future__ import annotations

import json
import pathlib
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from gsd import errors
from gsd.io import atomic, images

ON_OVERLAP = ('error', 'first')
_ID_MODES = ('1', 'L', 'LA', 'I', 'I;16', 'I;16L', 'I;16B')  # pixel values are class ids
_MODES = _ID_MODES + ('P', 'PA', 'RGB', 'RGBA')


class AnnotationError(errors.GsdError, ValueError):
    """Bad label files: one message line per file, "<path>: <problem>"; `.problems` holds the pairs."""

    def __init__(self, problems: Sequence[tuple[object, str]]):
        # One line per file even if a library message (Pillow's) had line breaks in it.
        self.problems = [(str(p), ' '.join(str(m).split())) for p, m in problems]
        super().__init__('\n'.join(f'{p}: {m}' for p, m in self.problems))


class _Problem(Exception):
    """A problem with the file being read; public functions attach the path."""


def _hw(size) -> tuple[int, int]:
    """int (square) or (height, width)."""
    return (int(size), int(size)) if np.ndim(size) == 0 else (int(size[0]), int(size[1]))


def _open(path: pathlib.Path, size) -> Image.Image:
    if not path.is_file():
        raise _Problem('no such file')
    try:
        with Image.open(path) as img:
            img.load()
    except Exception as e:  # noqa: BLE001 - whatever Pillow fails with, the file is unreadable
        raise _Problem(f'cannot read as an image ({type(e).__name__}: {e})') from None
    if img.format in ('JPEG', 'MPO'):
        # Compression noise changes colours and ids near every edge: no exact labels survive it.
        raise _Problem('is a JPEG: labels need a lossless format (PNG)')
    if img.mode not in _MODES:
        raise _Problem(f'unsupported image mode {img.mode!r} (expected one of {", ".join(_MODES)})')
    h, w = _hw(size)
    if img.size != (w, h):
        raise _Problem(f'is {img.size[0]}x{img.size[1]} pixels, expected {w}x{h} (width x height)')
    return img


def _split_alpha(img: Image.Image):
    """(pixels, alpha or None): (H, W) ids / palette indices or (H, W, 3) RGB, and the opacity."""
    if img.mode == 'P' and 'transparency' in img.info:
        alpha = np.asarray(img.convert('RGBA'))[..., 3]  # tRNS gives alpha per palette index
        return np.asarray(img), alpha
    a = np.asarray(img)
    if img.mode in ('LA', 'PA', 'RGBA'):
        pixels = a[..., 0] if img.mode != 'RGBA' else a[..., :3]
        return pixels, a[..., -1]
    return (a.astype(np.uint8) if img.mode == '1' else a), None


def _colour_ids(rgb: np.ndarray, colours: np.ndarray, indexed: bool) -> np.ndarray:
    """(H, W, 3) uint8 -> class ids by exact colour match; unknown colours are a _Problem."""
    keys = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = (colours[:, 0].astype(np.int64) << 16) | (colours[:, 1].astype(np.int64) << 8) | colours[:, 2]
    order = np.argsort(table)
    pos = np.clip(np.searchsorted(table[order], keys), 0, len(table) - 1)
    known = table[order][pos] == keys
    if not known.all():
        bad, counts = np.unique(keys[~known], return_counts=True)
        top = np.argsort(-counts, kind='stable')[:5]
        listed = ', '.join(
            f'({k >> 16}, {(k >> 8) & 255}, {k & 255}) in {c} pixels' for k, c in zip(bad[top], counts[top])
        )
        more = f' and {len(bad) - len(top)} more' if len(bad) > len(top) else ''
        hint = '; or pass colours=None to read the palette indices as class ids' if indexed else ''
        raise _Problem(
            f'{int(counts.sum())} pixels have colours that are no class colour: {listed}{more} '
            f'(soft or antialiased brush edges, or unpainted pixels? paint with a hard-edged '
            f'pencil in the exact class colours{hint})'
        )
    return order[pos]


def _decode(img: Image.Image, num_classes: int, colours, class_names, background: int) -> np.ndarray:
    pixels, alpha = _split_alpha(img)
    clear = np.zeros(pixels.shape[:2], bool) if alpha is None else alpha == 0
    if alpha is not None:
        soft = (alpha > 0) & (alpha < 255)
        if soft.any():
            raise _Problem(
                f'{int(soft.sum())} pixels are partly transparent (a soft brush edge?): '
                f'labels must be opaque, or fully transparent for background'
            )
    if img.mode in ('P', 'PA') and colours is not None:
        # Read indexed files by the colour the user SAW: an editor may reorder or extend the palette,
        # and a palette that disagrees with the class colours must not pass silently.
        palette = np.asarray(img.getpalette() or [], np.uint8).reshape(-1, 3)
        if pixels.max(initial=0) >= len(palette):
            raise _Problem(f'palette index {int(pixels.max())} beyond its {len(palette)}-colour palette')
        pixels = palette[pixels]
    elif img.mode in ('RGB', 'RGBA') and colours is None:
        raise _Problem(f'is colour-coded ({img.mode}) but no class colour table was given (colours=...)')
    if pixels.ndim == 3:
        # Transparent pixels keep whatever colour was erased: they are matched as background.
        ids = _colour_ids(
            np.where(clear[..., None], colours[background], pixels), colours, indexed=img.mode in ('P', 'PA')
        )
    else:
        ids = np.where(clear, background, pixels.astype(np.int64))
    stray = (ids < 0) | (ids >= num_classes)
    if stray.any():
        values = ', '.join(str(v) for v in np.unique(ids[stray])[:8])
        names = f' ({", ".join(class_names)})' if class_names is not None else ''
        hint = ' (a 0/255 binary mask? one file per part is {stem}_{part}.png)' if 255 in ids[stray] else ''
        raise _Problem(f'{int(stray.sum())} pixels hold ids {values} outside the {num_classes} classes{names}{hint}')
    return ids.astype(np.int32)


def _check_table(num_classes: int, colours, class_names):
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f'{len(class_names)} class names for {num_classes} classes')
    if colours is None:
        return None
    colours = np.asarray(colours)
    if colours.shape != (num_classes, 3) or colours.min() < 0 or colours.max() > 255:
        raise ValueError(f'colours must be {num_classes} RGB triples in 0-255, got shape {colours.shape}')
    if len(np.unique(colours, axis=0)) != num_classes:
        raise ValueError('two classes share a colour: colour-coded labels could not tell them apart')
    return colours.astype(np.uint8)


def read_mask(
    path, *, size, num_classes: int, colours=None, class_names: Sequence[str] | None = None, background: int = 0
) -> np.ndarray:
    """One label file -> int32 (H, W) class ids.

    Indexed (palette) PNG: with `colours` (an (num_classes, 3) RGB table, index = class id) each pixel's
    palette colour must be a class colour exactly; without, palette indices are the class ids.
    RGB(A) PNG: needs `colours`; every pixel must match a table colour exactly.
    Greyscale PNG (modes 1, L, I, I;16): values are the class ids.
    size: int or (height, width). Raises AnnotationError naming the file (unreadable, wrong size,
    unknown colours with their pixel counts, ids >= num_classes, soft alpha).
    """
    path = pathlib.Path(path)
    colours = _check_table(num_classes, colours, class_names)
    try:
        return _decode(_open(path, size), num_classes, colours, class_names, background)
    except _Problem as e:
        raise AnnotationError([(path, str(e))]) from None


def _read_binary(path: pathlib.Path, size) -> np.ndarray:
    """A part mask: a pixel belongs to the part when it is neither black nor fully transparent."""
    img = _open(path, size)
    if img.mode in ('P', 'PA'):
        img = img.convert('RGBA')  # palette index 0 need not be black
    pixels, alpha = _split_alpha(img)
    part = pixels != 0 if pixels.ndim == 2 else (pixels != 0).any(-1)
    return part if alpha is None else part & (alpha > 0)


def _combine_parts(
    files: Mapping[str, pathlib.Path],
    where: pathlib.Path,
    stem: str,
    size,
    class_names: Sequence[str],
    background: int,
    merges,
    on_overlap: str,
) -> np.ndarray:
    """{part name: path} -> (H, W) int32; raises AnnotationError with one line per bad file."""
    if on_overlap not in ON_OVERLAP:
        raise ValueError(f'on_overlap must be one of {ON_OVERLAP}, got {on_overlap!r}')
    if merges is None:
        merges = {name: name for i, name in enumerate(class_names) if i != background}
    bad_targets = {v for v in merges.values() if v is not None and v not in class_names}
    if bad_targets:
        raise ValueError(f'merges map to unknown classes {sorted(bad_targets)}; classes: {list(class_names)}')
    if not files:
        raise AnnotationError(
            [(where / f'{stem}_*.png', f'no label for stem {stem!r}: expected {stem}.png or {stem}_<part>.png')]
        )
    problems, masks = [], {}
    for part, path in sorted(files.items()):
        if part not in merges:
            problems.append((path, f'part {part!r} is not a known part (known: {", ".join(merges)})'))
            continue
        try:
            masks[part] = _read_binary(path, size)
        except _Problem as e:
            problems.append((path, str(e)))
    if problems:
        raise AnnotationError(problems)
    kept = {p: m for p, m in masks.items() if merges[p] is not None}  # merges[p] None: dropped part
    if on_overlap == 'error':
        names = sorted(kept)
        for i, p in enumerate(names):
            clashes = [
                f'{files[q].name} in {n} pixels'
                for q in names[i + 1 :]
                if merges[q] != merges[p] and (n := int((kept[p] & kept[q]).sum()))
            ]
            if clashes:
                problems.append((files[p], f'part {p!r} overlaps ' + ', '.join(clashes)))
        if problems:
            raise AnnotationError(problems)
    # Earlier classes in class_names win where parts overlap (CelebAMask-HQ's merge rule).
    mask = np.full(_hw(size), background, np.int32)
    taken = np.zeros(_hw(size), bool)
    for c, name in enumerate(class_names):
        for p in (p for p in kept if merges[p] == name):
            mask[kept[p] & ~taken] = c
            taken |= kept[p]
    if not (mask != background).any():
        raise AnnotationError([(where / f'{stem}_*.png', 'every part mask is empty (no labelled pixel)')])
    return mask


def read_part_masks(
    directory,
    *,
    stem: str,
    size,
    class_names: Sequence[str],
    background: int = 0,
    merges: Mapping[str, str | None] | None = None,
    on_overlap: str = 'error',
) -> np.ndarray:
    """One binary PNG per part, `{directory}/{stem}_{part}.png` -> int32 (H, W) class ids.

    A pixel is in a part when it is neither black nor fully transparent. Without `merges` each part
    file is named after its class (`class_names` minus background); `merges` maps file part names to
    class names, or to None to drop a part (e.g. CelebAMask-HQ's 'hat' -> None, 'l_eye' -> 'eye').
    A part file missing means the part is absent; a part file not in the mapping is an error (a
    misspelt name must not vanish silently). on_overlap='error' (for hand labels) names both parts
    and the pixel count; 'first' gives the pixel to the earlier class in class_names. Every
    mask empty, or no file for the stem at all, is an error. A stem that is another stem + '_x' would
    read that stem's files as parts: `read_annotations` sorts such files out.
    """
    directory = pathlib.Path(directory)
    files, problems = {}, []
    for path in _png_files(directory):
        name = path.name[: -len('.png')]
        if name.startswith(f'{stem}_'):
            _add_once(files, name[len(stem) + 1 :], path, problems)
    if problems:
        raise AnnotationError(problems)
    return _combine_parts(files, directory, stem, size, class_names, background, merges, on_overlap)


def _png_files(directory: pathlib.Path) -> list[pathlib.Path]:
    """The PNG files of a directory, whatever the suffix's case (an editor may save '00000.PNG'), sorted."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix.lower() == '.png' and p.is_file())


def _add_once(table: dict, key: str, path: pathlib.Path, problems: list) -> None:
    """table[key] = path, or a problem when another file (the same name but for the suffix's case) has it."""
    if key in table:
        problems.append((path, f'{table[key].name} is the same label: keep one of the two files'))
    else:
        table[key] = path


def read_annotations(
    directory,
    stems: Sequence[str],
    *,
    size,
    class_names: Sequence[str],
    colours=None,
    background: int = 0,
    merges: Mapping[str, str | None] | None = None,
    on_overlap: str = 'error',
) -> np.ndarray:
    """Labels of many samples -> int32 (K, H, W), in the order of `stems`.

    Per stem, `{stem}.png` is read with `read_mask` and `{stem}_*.png` with `read_part_masks` (both
    present is an error; the suffix may be in any case, '.PNG', but two files differing only by it are
    an error too). Each file goes to the longest stem it starts with, so stems '1' and '1_b'
    can share a directory. Every file is checked before anything fails: the AnnotationError lists
    each bad file on its own line.
    """
    directory, stems = pathlib.Path(directory), [str(s) for s in stems]
    if not stems or len(set(stems)) != len(stems):
        raise ValueError(f'expected distinct stems, got {stems}')
    if not directory.is_dir():
        raise AnnotationError([(directory, 'no such directory')])
    colours = _check_table(len(class_names), colours, class_names)
    singles, parts, problems = {}, {s: {} for s in stems}, []
    by_length = sorted(stems, key=len, reverse=True)
    for path in _png_files(directory):  # one listing for all stems
        name = path.name[: -len('.png')]
        stem = next((s for s in by_length if name == s or name.startswith(s + '_')), None)
        if stem == name:
            _add_once(singles, stem, path, problems)
        elif stem is not None:
            _add_once(parts[stem], name[len(stem) + 1 :], path, problems)
    masks = []
    for stem in stems:
        try:
            if stem in singles and parts[stem]:
                raise AnnotationError([(singles[stem], f'{stem}_<part>.png files exist too: keep one form')])
            if stem in singles:
                masks.append(
                    read_mask(
                        singles[stem],
                        size=size,
                        num_classes=len(class_names),
                        colours=colours,
                        class_names=class_names,
                        background=background,
                    )
                )
            else:
                masks.append(
                    _combine_parts(parts[stem], directory, stem, size, class_names, background, merges, on_overlap)
                )
        except AnnotationError as e:
            problems.extend(e.problems)
    if problems:
        raise AnnotationError(problems)
    return np.stack(masks)


def write_label_template(
    path, image: np.ndarray, palette, *, background: int = 0, show_image: bool = False
) -> pathlib.Path:
    """An indexed PNG the size of `image`, every pixel `background`, with the class palette embedded.

    Painting in an editor that keeps palette mode (GIMP 'Indexed', Aseprite, Krita's indexed
    filter...) can only produce palette colours, so labels come out exact, with no antialiased
    edges. show_image=True fills the template with the image itself, quantised into the palette
    entries after the classes (nudged off every class colour): the user paints over it, and
    `read_mask` with `colours` refuses any pixel left unpainted.
    """
    image, palette = np.asarray(image), np.asarray(palette, np.uint8).reshape(-1, 3)
    h, w = image.shape[:2]
    if not show_image:
        return images.write_png(path, np.full((h, w), background, np.uint8), palette=palette)
    free = 256 - len(palette)
    if free < 2:
        raise ValueError(f'{len(palette)} classes leave no palette entries for the image')
    rgb = Image.fromarray(image if image.ndim == 3 else np.repeat(image[..., None], 3, -1)).convert('RGB')
    quantised = rgb.quantize(colors=free, method=Image.Quantize.MEDIANCUT)
    shown = np.asarray(quantised.getpalette(), np.int32).reshape(-1, 3)[:free]
    # An image colour equal to a class colour would read back as a label the user never painted.
    taken = {tuple(c) for c in palette.tolist()}
    shown = np.array([_nudge(c, taken) for c in shown.tolist()], np.uint8)
    indices = np.asarray(quantised, np.uint8) + len(palette)
    return images.write_png(path, indices, palette=np.concatenate([palette, shown]))


def _nudge(colour: list, taken: set) -> list:
    """The nearest colour (one channel moved by the least amount) that is not in `taken`."""
    for d in range(256):
        for ch in range(3):
            for step in (d, -d):
                c = list(colour)
                c[ch] = min(max(c[ch] + step, 0), 255)
                if tuple(c) not in taken:
                    return c
    raise AssertionError('unreachable: at most 256 colours are taken')


def write_colour_legend(path, class_names: Sequence[str], colours) -> pathlib.Path:
    """The class table as JSON, [{"id", "name", "rgb", "hex"}, ...], written atomically.

    JSON rather than a swatch PNG: its exact RGB / hex values are what one types into an editor's
    colour picker, `read_colour_legend` feeds it straight back to `read_annotations`, the template's
    embedded palette already shows the swatches, and no font is needed.
    """
    colours = _check_table(len(class_names), colours, class_names)
    legend = [
        {'id': i, 'name': name, 'rgb': [int(v) for v in c], 'hex': '#{:02x}{:02x}{:02x}'.format(*c)}
        for i, (name, c) in enumerate(zip(class_names, colours))
    ]
    return atomic.write_json(path, legend)


def read_colour_legend(path) -> tuple[tuple[str, ...], np.ndarray]:
    """(class_names, (K, 3) uint8 colours) from a `write_colour_legend` file."""
    legend = sorted(json.loads(pathlib.Path(path).read_text()), key=lambda e: e['id'])
    return tuple(e['name'] for e in legend), np.array([e['rgb'] for e in legend], np.uint8)


def palette(class_names: Sequence[str], colours) -> np.ndarray:
    """colours as uint8 (K, 3), checked to give one RGB triple per class."""
    colours = np.asarray(colours, np.uint8)
    if colours.shape != (len(class_names), 3):
        raise ValueError(
            f'classes.colours must give one RGB triple per class ({len(class_names)}), got shape {colours.shape}'
        )
    return colours


def read_shots(shots_dir, class_names: Sequence[str], colours) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images uint8 (K, H, W, 3), ws (K, num_ws, w_dim), labels int32 (K, H, W)) of a shots folder (the
    `shots` stage's WORKDIR/shots), labels read and checked strictly (all problems reported at once,
    naming the files); an unpainted template is refused."""
    out = pathlib.Path(shots_dir)
    if not (out / 'shots.json').exists():
        raise errors.MissingInputError(f'{out}: no shots here; run the shots stage first')
    lat = np.load(out / 'latents.npz')
    stems = [f'{k:05d}' for k in range(lat['ws'].shape[0])]
    imgs = np.stack([images.read_rgb(out / 'images' / f'{s}.png') for s in stems])
    labels = read_annotations(
        out / 'labels', stems, size=imgs.shape[1:3], class_names=list(class_names), colours=colours
    )
    blank = [s for s, lab in zip(stems, labels) if not np.any(lab != 0)]
    if blank:  # an unpainted template reads as a valid all-background mask: refuse it
        raise AnnotationError([(out / 'labels' / f'{s}.png', 'no part labelled (still the template?)') for s in blank])
    return imgs, lat['ws'], labels
