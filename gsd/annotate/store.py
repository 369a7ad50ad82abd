"""The shots folder (the `shots` stage's WORKDIR/shots) as the annotator reads and writes it.

Shots are addressed by their index in the shot list (`latents.npz`, as `gsd.io.annotation.read_shots` counts
them), never by a name or path from a request: the only files read are `images/NNNNN.png` and
`labels/NNNNN.png` of those indices, the only files written are those label files and `annotate_state.json`,
and a symbolic link anywhere below the shots folder is refused rather than followed.

A label is saved as the indexed PNG in the class palette that the `shots` stage writes, after the encoded
file has been read back with `gsd.io.annotation.read_mask` exactly as the `fewshot` stage reads it (size,
known classes), and written atomically: a refused label leaves the file on disk as it was.

Each shot has a state, kept in `annotate_state.json`: 'empty' (no pixel labelled), 'in_progress' or 'done'
(the person says its label is right), and who labelled it last: 'person', 'assist' (a prediction nobody has
corrected yet) or 'file' (a label already on disk when the annotator first saw it, e.g. the toy annotator's or
an imported one, which counts as done).
"""

from __future__ import annotations

import json
import os
import pathlib
import stat
import tempfile
import threading
import zlib
from typing import Sequence

import numpy as np
from PIL import Image

from gsd import errors
from gsd.io import annotation, atomic
from gsd.io import images as image_io

STATE_FILE = 'annotate_state.json'
STATES = ('empty', 'in_progress', 'done')
RAW = 'application/octet-stream'  # one class id (uint8) per pixel, row by row
PNG = 'image/png'
_IMAGE_LIMIT = 256 << 20  # a shot image bigger than this is not one the shots stage wrote


class LabelRefused(errors.GsdError, ValueError):
    """A request the store refuses (a bad label, a state change that does not apply): '<file>: <problem>'."""


class ShotStore:
    """The shots of one workdir, by index; every method is safe to call from several threads at once."""

    def __init__(self, shots_dir, class_names: Sequence[str], colours):
        self.root = pathlib.Path(shots_dir)
        self.class_names = list(class_names)
        self.colours = annotation.palette(self.class_names, colours)
        if len(self.class_names) > 256:
            raise errors.SettingError(f'classes.names: {len(self.class_names)} classes; a palette PNG holds 256')
        if not (self.root / 'shots.json').is_file():
            raise errors.MissingInputError(f'{self.root}: no shots here; run the shots stage first')
        self._real_root = pathlib.Path(os.path.realpath(self.root))
        with np.load(self._checked('latents.npz')) as lat:
            self.ws = lat['ws']
        self.names = [f'{k:05d}' for k in range(self.ws.shape[0])]
        self.sizes = [self._image_size(i) for i in range(len(self.names))]
        self._lock = threading.RLock()
        self._entries = self._read_state()
        self._blank, self._problem = {}, {}
        for i in range(len(self.names)):
            try:
                self._blank[i] = not self._read_label(i).any()
                self._problem[i] = None
            except (annotation.AnnotationError, LabelRefused) as e:
                self._blank[i], self._problem[i] = True, ' '.join(str(e).split())

    # -- paths: every file the annotator touches is built here from a checked index ---------------------------

    def index(self, value) -> int:
        """A shot index from a request (a string of digits or an int), checked against the shot list."""
        text = str(value)
        if not text.isdigit() or not text.isascii() or int(text) >= len(self.names):
            raise LabelRefused(f'{self.root}: no shot {text!r} (shots 0 to {len(self.names) - 1})')
        return int(text)

    def _checked(self, relative: str) -> pathlib.Path:
        """root/relative, refused when a symbolic link anywhere below the shots folder would redirect it."""
        path = self.root / relative
        if os.path.realpath(path) != str(self._real_root / relative):
            raise LabelRefused(f'{path}: is (or lies under) a symbolic link; the annotator only uses the shots folder')
        return path

    def image_path(self, index: int) -> pathlib.Path:
        return self._checked(f'images/{self.names[index]}.png')

    def label_path(self, index: int) -> pathlib.Path:
        return self._checked(f'labels/{self.names[index]}.png')

    def image_bytes(self, index: int) -> bytes:
        """The shot's PNG file as it is on disk (no symbolic link followed, only a regular file)."""
        path = self.image_path(index)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0))
        except OSError as e:
            raise LabelRefused(f'{path}: cannot open ({e.strerror})') from None
        with os.fdopen(fd, 'rb') as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise LabelRefused(f'{path}: not a regular file')
            data = f.read(_IMAGE_LIMIT + 1)
        if len(data) > _IMAGE_LIMIT:
            raise LabelRefused(f'{path}: larger than {_IMAGE_LIMIT >> 20} MB')
        return data

    def _image_size(self, index: int) -> tuple[int, int]:
        path = self.image_path(index)
        try:
            with Image.open(path) as img:
                w, h = img.size
        except (OSError, SyntaxError, ValueError) as e:
            raise errors.BadFileError(f'{path}: cannot read the shot ({e}); run the shots stage again') from None
        return h, w

    # -- labels -------------------------------------------------------------------------------------------------

    def _read_label(self, index: int) -> np.ndarray:
        """The shot's label as uint8 ids, read as the fewshot stage reads it (an indexed, colour or id PNG, or
        one PNG per part); no file yet reads as all background."""
        others, main = self._other_label_files(index), self.label_path(index)
        if not others and not main.exists():
            return np.zeros(self.sizes[index], np.uint8)
        for path in others:
            self._checked(f'labels/{path.name}')
        ids = annotation.read_annotations(
            main.parent, [self.names[index]], size=self.sizes[index], class_names=self.class_names, colours=self.colours
        )[0]
        return ids.astype(np.uint8)

    def _other_label_files(self, index: int) -> list[pathlib.Path]:
        """Files besides labels/NNNNN.png that the fewshot stage would read as this shot's label (a suffix in
        another case, one PNG per part)."""
        name, labels = self.names[index], self.root / 'labels'
        if not labels.is_dir():
            return []
        return sorted(
            p
            for p in labels.iterdir()
            if p.suffix.lower() == '.png'
            and p.name != f'{name}.png'
            and (p.stem == name or p.stem.startswith(f'{name}_'))
        )

    def label_ids(self, index: int) -> np.ndarray:
        """(H, W) uint8 class ids of the shot's label; all background when it is missing or unreadable (its
        problem is in `summary`)."""
        with self._lock:
            if self._problem[index]:
                return np.zeros(self.sizes[index], np.uint8)
            return self._read_label(index)

    def decode(self, index: int, body: bytes, content_type: str, encoding: str = '') -> np.ndarray:
        """A label as a request sends it -> (H, W) uint8 ids, checked; LabelRefused names what is wrong.

        content_type RAW: one class id per pixel, row by row (encoding 'deflate': zlib-compressed);
        PNG: any label PNG the fewshot stage reads (indexed in the class palette, colour-coded, ids)."""
        target = f'{self.root / "labels" / self.names[index]}.png'
        h, w = self.sizes[index]
        if content_type == PNG:
            with tempfile.TemporaryDirectory(prefix='gsd_annotate_') as tmp:
                path = pathlib.Path(tmp) / 'upload.png'
                path.write_bytes(body)
                try:
                    ids = annotation.read_mask(
                        path,
                        size=(h, w),
                        num_classes=len(self.class_names),
                        colours=self.colours,
                        class_names=self.class_names,
                    )
                except annotation.AnnotationError as e:
                    raise LabelRefused(f'{target}: refused, {e.problems[0][1]}') from None
            return ids.astype(np.uint8)
        if content_type != RAW:
            raise LabelRefused(f'{target}: refused, a label is sent as {RAW} or {PNG}, not {content_type or "?"}')
        if encoding == 'deflate':
            inflate = zlib.decompressobj()
            try:
                # At most one byte more than a whole label: a small body must not inflate into gigabytes.
                raw = inflate.decompress(body, h * w + 1)
            except zlib.error as e:
                raise LabelRefused(f'{target}: refused, the compressed label is damaged ({e})') from None
            if len(raw) == h * w and not inflate.eof:
                raw += b'?'  # more data follows: too long, reported below
        elif encoding in ('', 'identity'):
            raw = body
        else:
            raise LabelRefused(f'{target}: refused, unknown label encoding {encoding!r} (deflate or none)')
        if len(raw) != h * w:
            what = 'more than' if len(raw) > h * w else f'{len(raw)} bytes, not'
            raise LabelRefused(f'{target}: refused, the label is {what} {w}x{h} = {h * w} (one class id per pixel)')
        ids = np.frombuffer(raw, np.uint8).reshape(h, w)
        stray = ids >= len(self.class_names)
        if stray.any():
            values = ', '.join(str(v) for v in np.unique(ids[stray])[:8])
            raise LabelRefused(
                f'{target}: refused, {int(stray.sum())} pixels hold ids {values} outside the '
                f'{len(self.class_names)} classes'
            )
        return ids

    def _write(self, index: int, ids: np.ndarray) -> None:
        """Encode as the shots stage does, read back as the fewshot stage does, then replace the file whole."""
        target = self.label_path(index)
        others = self._other_label_files(index)
        if others:
            raise LabelRefused(
                f"{others[0]}: the fewshot stage would read this file as shot {self.names[index]}'s label too; "
                f'move it away to label the shot here'
            )
        with tempfile.TemporaryDirectory(prefix='gsd_annotate_') as tmp:
            encoded = image_io.write_png(pathlib.Path(tmp) / target.name, ids, palette=self.colours)
            try:
                back = annotation.read_mask(
                    encoded,
                    size=self.sizes[index],
                    num_classes=len(self.class_names),
                    colours=self.colours,
                    class_names=self.class_names,
                )
            except annotation.AnnotationError as e:
                raise LabelRefused(f'{target}: refused, {e.problems[0][1]}') from None
            if not np.array_equal(back, ids):
                raise AssertionError(f'{target}: the encoded label does not read back as painted')
            atomic.write_bytes(target, encoded.read_bytes())

    def save(self, index: int, ids: np.ndarray) -> dict:
        """The person's label for the shot: written, and the shot's state updated (a done shot stays done, a
        label with no class pixel is empty); returns the shot's summary."""
        with self._lock:
            self._write(index, ids)
            name, blank = self.names[index], not ids.any()
            before = self._state(index)
            self._blank[index], self._problem[index] = blank, None
            if blank:
                self._entries.pop(name, None)
            else:
                self._entries[name] = {'state': 'done' if before == 'done' else 'in_progress', 'by': 'person'}
            self._write_state()
            return self.shot(index)

    def prefill(self, index: int, ids: np.ndarray) -> bool:
        """The assist's prediction for a shot, written only if the shot is still empty (never over anything a
        person painted, or over a file that could not be read); whether it was written."""
        with self._lock:
            if not self._blank[index] or self._problem[index] or not ids.any():
                return False
            self._write(index, ids)
            self._blank[index] = False
            self._entries[self.names[index]] = {'state': 'in_progress', 'by': 'assist'}
            self._write_state()
            return True

    def set_state(self, index: int, state: str) -> dict:
        """Mark a labelled shot 'done' or back 'in_progress' (the person has looked at it either way)."""
        if state not in ('done', 'in_progress'):
            raise LabelRefused(f'{self.root / STATE_FILE}: unknown state {state!r} (done or in_progress)')
        with self._lock:
            if self._blank[index]:
                raise LabelRefused(f'shot {self.names[index]}: nothing is labelled yet')
            self._entries[self.names[index]] = {'state': state, 'by': 'person'}
            self._write_state()
            return self.shot(index)

    # -- states -------------------------------------------------------------------------------------------------

    def _read_state(self) -> dict:
        path = self._checked(STATE_FILE)
        if not path.exists():
            return {}
        try:
            entries = json.loads(path.read_text())['shots']
            ok = all(e['state'] in STATES[1:] and e['by'] in ('person', 'assist') for e in entries.values())
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise errors.BadFileError(f'{path}: damaged ({e}); delete it to start the shot states afresh') from None
        if not ok:
            raise errors.BadFileError(f'{path}: holds an unknown state; delete it to start the shot states afresh')
        return {n: dict(e) for n, e in entries.items() if n in self.names}

    def _write_state(self) -> None:
        atomic.write_json(self._checked(STATE_FILE), {'version': 1, 'shots': self._entries})

    def _state(self, index: int) -> str:
        if self._blank[index]:
            return 'empty'
        entry = self._entries.get(self.names[index])
        return entry['state'] if entry else 'done'

    def shot(self, index: int) -> dict:
        with self._lock:
            entry = self._entries.get(self.names[index])
            h, w = self.sizes[index]
            return {
                'index': index,
                'name': self.names[index],
                'width': w,
                'height': h,
                'state': self._state(index),
                'by': None if self._blank[index] else (entry['by'] if entry else 'file'),
                'problem': self._problem[index],
            }

    def summary(self) -> list[dict]:
        return [self.shot(i) for i in range(len(self.names))]

    def unfinished(self) -> list[str]:
        """'NNNNN (state)' for each shot not marked done."""
        with self._lock:
            states = [self._state(i) for i in range(len(self.names))]
            return [f'{n} ({s.replace("_", " ")})' for n, s in zip(self.names, states) if s != 'done']

    def assist_plan(self) -> tuple[list[int], np.ndarray, list[int]]:
        """(shots to train on: labelled, and not an uncorrected prediction; all labels (K, H, W) int32, zeros
        where none; shots to pre-fill: empty ones whose file could be read)."""
        with self._lock:
            train = [
                i
                for i in range(len(self.names))
                if not self._blank[i] and self._entries.get(self.names[i], {}).get('by') != 'assist'
            ]
            targets = [i for i in range(len(self.names)) if self._blank[i] and not self._problem[i]]
            if len({self.sizes[i] for i in range(len(self.names))}) != 1:
                raise LabelRefused(f'{self.root / "images"}: shots of different sizes; the assist needs one size')
            labels = np.zeros((len(self.names),) + self.sizes[0], np.int32)
            for i in train:
                labels[i] = self._read_label(i)
            return train, labels, targets
