"""The toy world (gsd.toy) as a real TFDS dataset `toy_faces` (ArrayRecord), built without TensorFlow."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from gsd import toy

# The test split draws toy.sample(n_test, seed + TEST_SEED_OFFSET): its faces come from other
# streams than the train split's toy.sample(n_train, seed), and than the train split of any build
# with a seed below the offset.
TEST_SEED_OFFSET = 1_000_000


@dataclasses.dataclass(eq=False)
class ToyFacesConfig(tfds.core.BuilderConfig):
    """One toy_faces variant. Its name spells every parameter (see `named`), so each variant gets its
    own directory data_dir/toy_faces/<name>/1.0.0 and a name alone finds it again."""

    size: int = 64
    n_train: int = 10_000
    n_test: int = 1_000
    seed: int = 0

    @classmethod
    def named(cls, size: int, n_train: int, n_test: int, seed: int) -> 'ToyFacesConfig':
        return cls(
            name=f's{size}_train{n_train}_test{n_test}_seed{seed}',
            size=size,
            n_train=n_train,
            n_test=n_test,
            seed=seed,
            description=f'{size}x{size} px, {n_train} train (seed {seed}), {n_test} test '
            f'(seed {seed + TEST_SEED_OFFSET})',
        )


DEFAULT_CONFIG = ToyFacesConfig.named(64, 10_000, 1_000, 0)


class ToyFaces(tfds.core.GeneratorBasedBuilder):
    """Procedural cartoon faces (gsd.toy) with exact part masks, generated here (nothing is downloaded).

    Parameters are chosen through builder configs, not constructor kwargs: tfds keys the dataset
    directory by config name, so different sizes or counts never overwrite each other and
    tfds.data_source('toy_faces/<config name>', data_dir=...) reads a variant back even in a
    process that never imported this module (TFDS then rebuilds the builder from the files).
    BUILDER_CONFIGS holds the default variant; `build` makes any other one.

    Records are stored in generation order (shuffling disabled): record i of 'train' is
    toy.sample(n_train, seed)[i], and its 'index' feature is i.
    """

    VERSION = tfds.core.Version('1.0.0')
    RELEASE_NOTES = {'1.0.0': 'First release.'}
    BUILDER_CONFIGS = [DEFAULT_CONFIG]
    DEFAULT_CONFIG_NAME = DEFAULT_CONFIG.name
    # No code directory with checksums.tsv or metadata files: nothing is downloaded. Saying so also
    # sidesteps TFDS 4.9.10 looking the directory up through `importlib_resources`, which it only
    # declares for Python < 3.9 (tensorflow/datasets#11212): ModuleNotFoundError in prepare otherwise.
    code_path = None

    def __init__(self, **kwargs):
        # ArrayRecord: random access for grain, and written without TensorFlow (TFRecord is not).
        kwargs.setdefault('file_format', 'array_record')
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        s = self.builder_config.size
        # Raw uint8 tensors, not tfds.features.Image: encoding Image features runs TensorFlow.
        features = tfds.features.FeaturesDict(
            {
                'image': tfds.features.Tensor(shape=(s, s, 3), dtype=np.uint8),
                'mask': tfds.features.Tensor(shape=(s, s), dtype=np.uint8),
                'index': np.int64,
            }
        )
        classes = ', '.join(f'{i} {name}' for i, name in enumerate(toy.CLASSES))
        # Built directly rather than through dataset_info_from_configs, which wants a dataset
        # package directory (README, CITATIONS.bib) beside the module.
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                'Procedural cartoon faces from gsd.toy: an RGB image and its part mask, '
                f'whose values index the classes {classes}.'
            ),
            features=features,
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(classes=list(toy.CLASSES), palette=toy.PALETTE.tolist()),
        )

    def _split_generators(self, dl_manager):
        c = self.builder_config
        return {
            'train': self._generate_examples(c.n_train, c.seed),
            'test': self._generate_examples(c.n_test, c.seed + TEST_SEED_OFFSET),
        }

    def _generate_examples(self, n: int, seed: int):
        # One example at a time: each face is rendered alone from its own stream [seed, i].
        size = self.builder_config.size
        for i in range(n):
            image, mask = toy.render(toy.random_params(np.random.default_rng([seed, i]), size))
            yield i, {'image': image, 'mask': mask, 'index': i}


def build(data_dir, size: int = 64, n_train: int = 10_000, n_test: int = 1_000, seed: int = 0) -> ToyFaces:
    """Generate toy_faces/<config> under data_dir (a no-op when already there) and return its builder.

    Read it back with builder.as_data_source('train'), or by name, 'toy_faces/<config name>' (see
    `load_name`), through tfds.data_source(name, data_dir=data_dir) or
    gsd.io.sources.TfdsSource(name, data_dir=data_dir); no import of this module is needed for those.
    Examples are rendered one at a time; TFDS's writer buffers their serialized bytes (about 16 KB
    per 64 px example) in memory up to 1 GB before spilling to temporary files.
    """
    config = ToyFacesConfig.named(int(size), int(n_train), int(n_test), int(seed))
    # tfds refuses a new config object named like a predefined one: reuse the predefined object.
    config = ToyFaces.builder_configs.get(config.name, config)
    builder = ToyFaces(config=config, data_dir=data_dir)
    builder.download_and_prepare()
    return builder


def load_name(builder: ToyFaces) -> str:
    """'toy_faces/<config name>', the name tfds.data_source and TfdsSource take (info.full_name
    appends '/1.0.0', which tfds's name parser rejects)."""
    return f'{builder.name}/{builder.builder_config.name}'
