"""The auto-shot dataset on disk: generated images with the few-shot heads' soft labels, as the TFDS
ArrayRecord dataset `gsd_autoshot` (written by the `autoshot_data` stage, read by `autoshot`).

Features: image uint8 (S, S', 3), logits float16 (S, S', K), z float32 (z_dim,), w float32 (w_dim,),
index int64, uncertainty float32; splits 'train' and 'validation'. `Tensor` features only, so neither
writing nor reading needs TensorFlow. `dataset.json` beside `tfds/` is written only once the dataset
is complete, and `sources` reads nothing without it.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import tensorflow_datasets as tfds

DATASET = 'gsd_autoshot'


class GsdAutoshot(tfds.core.GeneratorBasedBuilder):
    """Generated images with the few-shot heads' soft labels (see gsd.pipeline.autoshot_data). Built from the
    staged chunks; read back by name without this class (TFDS rebuilds the builder from its files)."""

    VERSION = tfds.core.Version('1.0.0')
    RELEASE_NOTES = {'1.0.0': 'First release.'}
    code_path = None  # nothing to download (and see gsd.toy.dataset on TFDS's code-path lookup)

    def __init__(
        self,
        *,
        staging=None,
        shapes: dict | None = None,
        keep=None,
        num_val: int = 0,
        classes=(),
        description: str = '',
        **kwargs,
    ):
        kwargs.setdefault('file_format', 'array_record')
        self._staging, self._shapes, self._keep, self._num_val = staging, shapes, keep, num_val
        self._classes, self._description = list(classes), description
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        s = self._shapes
        features = tfds.features.FeaturesDict(
            {
                'image': tfds.features.Tensor(shape=tuple(s['image']), dtype=np.uint8),
                'logits': tfds.features.Tensor(shape=tuple(s['logits']), dtype=np.float16),
                'z': tfds.features.Tensor(shape=tuple(s['z']), dtype=np.float32),
                'w': tfds.features.Tensor(shape=tuple(s['w']), dtype=np.float32),
                'index': np.int64,
                'uncertainty': np.float32,
            }
        )
        return tfds.core.DatasetInfo(
            builder=self,
            description=self._description,
            features=features,
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(classes=self._classes),
        )

    def _split_generators(self, dl_manager):
        keep = np.asarray(self._keep)
        cut = len(keep) - self._num_val
        return {'train': self._generate_examples(keep[:cut]), 'validation': self._generate_examples(keep[cut:])}

    def _generate_examples(self, indices):
        wanted = set(int(i) for i in indices)
        for path in sorted(pathlib.Path(self._staging).glob('chunk_*.npz')):
            with np.load(path) as z:
                for j, i in enumerate(z['index']):
                    if int(i) in wanted:
                        yield (
                            int(i),
                            {k: z[k][j] for k in ('image', 'logits', 'z', 'w', 'uncertainty')} | {'index': int(i)},
                        )


def materialised(out: pathlib.Path):
    """The dataset.json of a complete dataset, else None (dataset.json is written after TFDS's rename)."""
    path = out / 'dataset.json'
    return json.loads(path.read_text()) if path.exists() else None


def sources(dataset_dir) -> tuple[dict, object, object]:
    """(dataset.json, train source, validation source): TFDS random-access sources (records are
    dicts of numpy arrays) of the complete auto-shot dataset in `dataset_dir` (WORKDIR/autoshot_data)."""
    out = pathlib.Path(dataset_dir)
    meta = materialised(out)
    if meta is None:
        raise FileNotFoundError(
            f'{out}: no complete auto-shot dataset here; run the autoshot_data stage (an interrupted one resumes)'
        )
    train = tfds.data_source(meta['name'], split='train', data_dir=meta['data_dir'], download=False)
    val = (
        tfds.data_source(meta['name'], split='validation', data_dir=meta['data_dir'], download=False)
        if meta['validation']
        else None
    )
    return meta, train, val
