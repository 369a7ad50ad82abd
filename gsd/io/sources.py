"""Training images for the GAN trainer: grain random-access sources (folder, toy, TFDS) and the loader."""

from __future__ import annotations

import os
import pathlib
import struct
import sys
import threading
import warnings

import grain.python as grain
import numpy as np
from PIL import Image, ImageOps

from gsd import toy

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.webp')
KINDS = ('toy', 'folder', 'tfds')


class UnreadableImageWarning(UserWarning):
    """One image file was skipped: the message names the file and says why.

    Problems are reported with `warnings.warn` (not absl logging) so that they reach stderr in any
    program, pytest can check them, and a program can turn them into errors with a warnings filter.
    Each message names its own file, so Python's default once-per-message filter still shows every one.
    """


# ----------------------------------------------------------------------------------------------
# Any decoded PIL image -> square uint8 RGB at the training resolution.


def _png_significant_bits(path) -> int | None:
    """The greyscale entry of a PNG's sBIT chunk (the bits the writer really used), or None.

    A 12-bit camera or scanner image stored in a 16-bit PNG declares sBIT = 12; its white is 4095,
    not 65535. Pillow skips sBIT when reading, so the chunks before the image data are walked here.
    """
    try:
        with open(path, 'rb') as f:
            if f.read(8) != b'\x89PNG\r\n\x1a\n':
                return None
            while True:
                header = f.read(8)
                if len(header) < 8:
                    return None
                length, kind = struct.unpack('>I4s', header)
                if kind in (b'IDAT', b'IEND'):
                    return None  # sBIT must come before the image data
                data = f.read(length)
                f.seek(4, os.SEEK_CUR)  # CRC
                if kind == b'sBIT' and len(data) >= 1:
                    return data[0] if 1 <= data[0] <= 16 else None
    except OSError:
        return None


def _high_depth_grey_to_rgb(img: Image.Image, path) -> Image.Image:
    """High-depth greyscale ('I;16*', or 'I' as older Pillows open 16-bit PNGs) -> 8-bit RGB.

    Pillow's own convert('L') clips everything above 255 (a 16-bit photo turns almost white), so the
    values are scaled instead: white of the declared depth (PNG sBIT, else 16 bits) becomes 255;
    anything beyond it (only possible in 32-bit 'I' images) saturates.
    """
    bits = (_png_significant_bits(path) if path is not None else None) or 16
    x = np.asarray(img, np.float64)
    grey = np.round(np.clip(x * (255.0 / (2**bits - 1)), 0, 255)).astype(np.uint8)
    return Image.fromarray(grey, 'L').convert('RGB')


def to_rgb(img: Image.Image, path=None) -> Image.Image:
    """Any Pillow mode -> RGB. Transparent images are composited over white (a transparent
    background is most often blank paper or a web page, and white keeps it from reading as black)."""
    if img.mode in ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I'):
        return _high_depth_grey_to_rgb(img, path)
    has_alpha = img.mode in ('RGBA', 'RGBa', 'LA', 'La', 'PA') or 'transparency' in img.info
    if has_alpha:
        rgba = np.asarray(img.convert('RGBA'), np.float64)
        alpha = rgba[..., 3:] / 255.0
        rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
        return Image.fromarray(np.round(rgb).astype(np.uint8), 'RGB')
    # L, 1, P, CMYK (Pillow undoes Adobe's inverted CMYK JPEGs when decoding), YCbCr, ...
    return img.convert('RGB') if img.mode != 'RGB' else img


def _square_resize(img: Image.Image, resolution: int) -> Image.Image:
    """Centre crop to a square, then resize: BOX (an exact average) when shrinking by a whole
    factor, LANCZOS otherwise."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    if side != w or side != h:
        img = img.crop((left, top, left + side, top + side))
    if side == resolution:
        return img
    resample = Image.BOX if side > resolution and side % resolution == 0 else Image.LANCZOS
    return img.resize((resolution, resolution), resample)


def array_to_square(image: np.ndarray, resolution: int | None) -> np.ndarray:
    """uint8 (H, W), (H, W, 1) or (H, W, 3) -> (R, R, 3) uint8 (unchanged size when resolution is None)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f'expected uint8 images, got {image.dtype}: refusing to guess their range')
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f'expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape {image.shape}')
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    if resolution is not None and image.shape[:2] != (resolution, resolution):
        image = np.array(_square_resize(Image.fromarray(image, 'RGB'), resolution))
    return image


# ----------------------------------------------------------------------------------------------
# Sources (grain's RandomAccessDataSource protocol: __len__ and __getitem__).


class ImageFolderSource:
    """Every image under `root` (recursively; .png .jpg .jpeg .bmp .webp, any case), sorted by path,
    as (resolution, resolution, 3) uint8 after a centre crop and resize, or at its own size and
    aspect with ``resolution=None`` (for segmenters that take any size).

    Each header is read once at construction; files Pillow cannot open are warned about
    (UnreadableImageWarning, one line each), recorded in `.skipped` as (path, reason) and excluded.
    A file that opened but fails to decode later (a truncated JPEG) is warned about once, added to
    `.skipped`, and index i then yields the next readable file (wrapping around): a training run
    never stops for one bad file, and what index i yields does not depend on which index met the
    bad file first. With grain worker processes each worker keeps its own `.skipped`.

    Modes: RGBA, LA, PA and P with transparency are composited over white; 16-bit
    greyscale is scaled by its bit depth (a PNG's sBIT chunk, else 16 bits); EXIF orientation is
    applied (photos come out upright, as viewers show them); everything else goes through
    Pillow's convert('RGB').
    """

    def __init__(self, root, resolution: int | None):
        self.root = pathlib.Path(root)
        self.resolution = None if resolution is None else int(resolution)
        self.skipped: list[tuple[str, str]] = []
        self._lock = threading.Lock()  # grain reads with several threads
        self._bad: set[int] = set()
        candidates = sorted(p for p in self.root.rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        self.paths: list[pathlib.Path] = []
        self.sizes: list[tuple[int, int]] = []
        self.modes: list[str] = []
        for path in candidates:
            try:
                with Image.open(path) as img:
                    size, mode = img.size, img.mode
            except Exception as e:  # noqa: BLE001 - any failure of a foreign file means "skip it"
                self._skip(path, f'cannot open: {type(e).__name__}: {e}')
                continue
            if min(size) < 1:
                self._skip(path, f'empty image {size}')
                continue
            self.paths.append(path)
            self.sizes.append(size)
            self.modes.append(mode)
        if not self.paths:
            raise ValueError(
                f'no readable image (.png .jpg .jpeg .bmp .webp) under {self.root} '
                f'({len(candidates)} candidate files, {len(self.skipped)} unreadable)'
            )

    def _skip(self, path, reason: str) -> None:
        self.skipped.append((str(path), reason))
        warnings.warn(f'skipping image {path}: {reason}', UnreadableImageWarning, stacklevel=3)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> np.ndarray:
        """Decode file i (raises if it cannot be decoded)."""
        path = self.paths[i]
        with Image.open(path) as img:
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            # np.array: an owned, writable copy (arrays viewing PIL's buffer are read-only).
            rgb = to_rgb(img, path)
            return np.array(rgb if self.resolution is None else _square_resize(rgb, self.resolution), np.uint8)

    def __getitem__(self, i) -> np.ndarray:
        n = len(self.paths)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f'index {i} out of range for {n} images')
        i %= n
        for k in range(n):
            j = (i + k) % n
            if j in self._bad:
                continue
            try:
                return self.load(j)
            except Exception as e:  # noqa: BLE001 - truncated/corrupt data: skip the file, keep training
                with self._lock:
                    if j not in self._bad:
                        self._bad.add(j)
                        self._skip(self.paths[j], f'cannot decode: {type(e).__name__}: {e}')
        raise ValueError(f'no image under {self.root} can be decoded ({len(self.skipped)} unreadable)')

    def __getstate__(self):
        state = dict(self.__dict__)
        del state['_lock']  # locks do not pickle (grain sends the source to worker processes)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f'ImageFolderSource({str(self.root)!r}, {self.resolution}: {len(self)} images)'


def read_folder(folder, resolution: int | None):
    """Decode every image under `folder` (see ImageFolderSource; unreadable files are warned about and
    skipped): (images, relative paths, skipped [(path, reason)]). A missing folder, or one where no file
    decodes, is an error naming the folder."""
    root = pathlib.Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f'{root}: no such folder')
    with warnings.catch_warnings():
        warnings.simplefilter('always', UnreadableImageWarning)
        source = ImageFolderSource(root, resolution)
        images, paths = [], []
        for i, path in enumerate(source.paths):
            try:
                images.append(source.load(i))
                paths.append(path.relative_to(root))
            except Exception as e:  # noqa: BLE001 - a bad file is named and skipped, never stops the batch
                source._skip(path, f'cannot decode: {type(e).__name__}: {e}')
    if not images:
        raise ValueError(f'no image under {root} can be decoded ({len(source.skipped)} unreadable)')
    return images, paths, source.skipped


def output_names(paths) -> list[str]:
    """Output names for relative input paths, unique: the path without its suffix ('a/x' for a/x.png),
    with the suffix kept where two files differ only by it ('x_png', 'x_jpg')."""
    stems = [str(pathlib.PurePosixPath(*p.parts).with_suffix('')) for p in paths]
    counts: dict = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    return [s if counts[s] == 1 else f'{s}_{p.suffix[1:].lower()}' for s, p in zip(stems, paths)]


class ToySource:
    """The procedural toy world: image i is toy.sample(..., seed, resolution)'s image i, rendered alone."""

    def __init__(self, resolution: int, seed: int, length: int = 2**31 - 1):
        self.resolution, self.seed, self.length = int(resolution), int(seed), int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i) -> np.ndarray:
        i = int(i)
        if not 0 <= i < self.length:
            raise IndexError(f'index {i} out of range for {self.length} toy images')
        return toy.render(toy.random_params(np.random.default_rng([self.seed, i]), self.resolution))[0]

    def __repr__(self) -> str:
        return f'ToySource({self.resolution}, seed={self.seed}, length={self.length})'


class TfdsSource:
    """Record i's `image_key` of a prepared TFDS dataset (ArrayRecord format), as uint8 (H, W, 3);
    centre-cropped and resized like the folder source when `resolution` is given and differs.

    `name` is what tfds.data_source takes: 'dataset', 'dataset/config' or 'dataset/config:version'
    (for a gsd.toy.dataset.build: 'toy_faces/<config name>', gsd.toy.dataset.load_name(builder)). Nothing is
    downloaded or generated here: a dataset that is not prepared under data_dir is an error,
    rather than a surprise download in the middle of a training launch.
    """

    def __init__(
        self, name: str, split: str = 'train', data_dir=None, image_key: str = 'image', resolution: int | None = None
    ):
        # Imported here: tensorflow_datasets takes a second to import and only this source needs it.
        import tensorflow_datasets as tfds

        self.name, self.split, self.data_dir, self.image_key = name, split, data_dir, image_key
        self.resolution = None if resolution is None else int(resolution)
        self._records = tfds.data_source(name, split=split, data_dir=data_dir, download=False)

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i) -> np.ndarray:
        record = self._records[int(i)]
        if self.image_key not in record:
            raise KeyError(f'{self.name}: records have no {self.image_key!r}; keys: {sorted(record)}')
        return array_to_square(record[self.image_key], self.resolution)

    def __repr__(self) -> str:
        return f'TfdsSource({self.name!r}, split={self.split!r}, {len(self)} records)'


# ----------------------------------------------------------------------------------------------
# Loader.


class ToUint8HWC(grain.MapTransform):
    """Record -> uint8 (H, W, 3): takes 'image' out of dict records (a raw TFDS data source) and
    repeats greyscale to three channels; other dtypes are refused, not rescaled by guesswork."""

    def map(self, record):
        if isinstance(record, dict):
            record = record['image']
        return array_to_square(record, None)


class GlobalBatchSampler:
    """This process's items of a global batch order that does not depend on the number of processes.

    The global order is one shuffled IndexSampler over all records; global batch b is positions
    [b * B, (b + 1) * B), and process p of N reads the contiguous slice [p * B / N, (p + 1) * B / N) of
    every batch, the rows `jax.make_array_from_process_local_data` places on its devices. So 1 process with
    4 devices and 2 processes with 2 devices train on the same global batches, and 1 process reads exactly
    the order a plain IndexSampler gives. (grain's own process sharding deals each process a shard of the
    records instead, so the global batches change with the process count.)"""

    def __init__(
        self,
        num_records: int,
        local_batch: int,
        process_index: int,
        process_count: int,
        *,
        shuffle: bool,
        seed: int,
        num_epochs: int | None,
        drop_remainder: bool = True,
    ):
        self._global = grain.IndexSampler(
            num_records, shard_options=grain.NoSharding(), shuffle=shuffle, seed=seed, num_epochs=num_epochs
        )
        self._local, self._p, self._n = local_batch, process_index, process_count
        self._num_records, self._shuffle, self._seed, self._num_epochs = num_records, shuffle, seed, num_epochs
        total = None if num_epochs is None else num_epochs * num_records
        self._max_index = None
        if total is not None:
            # Whole global batches (every process then reads as many batches), and with `drop_remainder` off
            # this process's rows of the last, partial one.
            full, rest = divmod(total, local_batch * process_count)
            tail = 0 if drop_remainder else max(0, min(local_batch, rest - process_index * local_batch))
            self._max_index = full * local_batch + tail

    def __len__(self) -> int:
        return sys.maxsize if self._max_index is None else self._max_index

    def __repr__(self) -> str:
        # grain stores this in the iterator's checkpoint and restores only into an equal sampler. One process
        # reads exactly what gsd's earlier loader (an IndexSampler sharded by JAX process) read, so it keeps
        # that sampler's name: checkpoints written before this class existed still resume.
        if self._n == 1:
            return repr(
                grain.IndexSampler(
                    self._num_records,
                    shard_options=grain.ShardByJaxProcess(drop_remainder=True),
                    shuffle=self._shuffle,
                    seed=self._seed,
                    num_epochs=self._num_epochs,
                )
            )
        return f'GlobalBatchSampler({self._global!r}, local_batch={self._local}, process={self._p} of {self._n})'

    def __getitem__(self, index: int):
        if index < 0 or (self._max_index is not None and index >= self._max_index):
            raise IndexError(f'sampler index {index} out of range')
        step, k = divmod(index, self._local)
        record = self._global[(step * self._n + self._p) * self._local + k]
        return grain.RecordMetadata(index=index, record_key=record.record_key, rng=record.rng)


def make_loader(
    source,
    batch_size: int,
    seed: int,
    *,
    shuffle: bool = True,
    num_epochs: int | None = None,
    worker_count: int = 0,
    drop_remainder: bool = True,
    transform: grain.MapTransform | None = None,
) -> grain.DataLoader:
    """A grain DataLoader of batches of `transform`ed records (default `ToUint8HWC`: (batch_size, H, W, 3)
    uint8 numpy batches; a transform returning a dict gives dicts of batched arrays); batch_size is per
    process.

    Each JAX process reads its own rows of every global batch (`GlobalBatchSampler`): the global batches
    are the same whatever the number of processes. The iterator's state (iter(loader).get_state(), or
    orbax via grain.PyGrainCheckpointSave) resumes exactly where it stopped; the order depends on the
    source's length, seed and shuffle, not on the transform.
    """
    import jax

    sampler = GlobalBatchSampler(
        len(source),
        batch_size,
        jax.process_index(),
        jax.process_count(),
        shuffle=shuffle,
        seed=seed,
        num_epochs=num_epochs,
        drop_remainder=drop_remainder,
    )
    transform = ToUint8HWC() if transform is None else transform
    operations = [transform, grain.Batch(batch_size, drop_remainder=drop_remainder)]
    return grain.DataLoader(
        data_source=source,
        sampler=sampler,
        shard_options=grain.NoSharding(),  # the sampler already gives this process's rows
        operations=operations,
        worker_count=worker_count,
    )


def source_from_config(cfg):
    """The source a data config block describes (ml_collections ConfigDict or a plain dict):

    kind='toy':    resolution, seed
    kind='folder': path, resolution
    kind='tfds':   name, split ('train'), data_dir (None), image_key ('image'), resolution (None)
    """
    kind = cfg['kind']
    if kind == 'toy':
        return ToySource(cfg['resolution'], cfg['seed'])
    if kind == 'folder':
        if not cfg.get('path'):
            raise ValueError('data.kind is "folder" but data.path is empty: pass --config.gan.data.path=DIR')
        return ImageFolderSource(cfg['path'], cfg['resolution'])
    if kind == 'tfds':
        return TfdsSource(
            cfg['name'],
            split=cfg.get('split', 'train'),
            data_dir=cfg.get('data_dir') or None,
            image_key=cfg.get('image_key', 'image'),
            resolution=cfg.get('resolution'),
        )
    raise ValueError(f'unknown data kind {kind!r}; expected one of {", ".join(KINDS)}')
