"""Config blocks shared by gsd's configs, and the `file.py:arg` switch parsing.

Each `*_block` function adds one block with the paper's recipe and the settings a config passes;
every field stays overridable from the command line (`--config.autoshot.epochs=20`).
"""

from __future__ import annotations

from typing import Iterable

import ml_collections


def parse_arg(arg: str | None, name: str, allowed: Iterable[str] = ('smoke',)) -> set[str]:
    """`configs/NAME.py:a,b` -> {'a', 'b'}; a switch the config does not know is refused, naming the file."""
    args = {a.strip() for a in (arg or '').split(',')} - {''}
    allowed = tuple(allowed)
    unknown = sorted(args - set(allowed))
    if unknown:
        raise ValueError(
            f'configs/{name}.py: unknown config argument(s) {", ".join(map(repr, unknown))}; '
            f'known: {", ".join(":" + a for a in allowed)} (combine with commas)'
        )
    return args


def projection_block(c: ml_collections.ConfigDict, *, steps: int, batch_size: int) -> ml_collections.ConfigDict:
    """The `projection` block (gsd.projection): W+ with noise, the standard schedule compressed to `steps`."""
    p = c.projection = ml_collections.ConfigDict()
    p.loss = 'pixel'  # 'lpips' + the two weight files below for the standard recipe (see gsd.projection)
    p.vgg16_path = ''  # torchvision vgg16-397923af.pth
    p.lpips_path = ''  # the lpips package's weights/v0.1/vgg.pth
    p.space = 'w+'
    p.optimize_noise = True
    p.steps = steps  # the standard recipe is 1000 steps for photos
    p.lr = 0.1
    p.batch_size = batch_size  # images projected together in one program
    # An image -> w+ encoder (the encoder stage's WORKDIR/encoder, or 'gsd:toy_encoder' for the toy
    # generator) whose guess starts the projection instead of w_avg, so far fewer steps suffice; '' = none.
    p.encoder = ''
    return p


def annotate_block(c: ml_collections.ConfigDict, *, assist_epochs: int = 100) -> ml_collections.ConfigDict:
    """The `annotate` block (gsd.pipeline.annotate): the browser annotator's server and its assist."""
    a = c.annotate = ml_collections.ConfigDict()
    # 127.0.0.1: this machine only. Anything else makes the page reachable from the network (a warning says so);
    # for a remote machine forward the port instead: ssh -L 8000:127.0.0.1:8000 user@host, and port = 8000.
    a.host = '127.0.0.1'
    a.port = 0  # 0: a free port, printed with the address
    a.max_body_mb = 64.0  # largest request the server reads (a 1024 px label is 1 MB uncompressed)
    a.autosave_seconds = 1.0  # the page saves this long after the last stroke
    # The Assist button trains the fewshot block's head for this many epochs on the labelled shots and pre-fills
    # the empty ones with its prediction; 0: no assist.
    a.assist_epochs = assist_epochs
    return a


def autoshot_blocks(
    c: ml_collections.ConfigDict,
    *,
    num_images: int,
    base_width: int,
    epochs: int,
    batch_size: int,
    truncation_psi: float = 1.0,
    chunk_size: int = 100,
    generation_batch: int = 10,
    dtype: str = 'float32',
    class_balance: float = 0.0,
) -> ml_collections.ConfigDict:
    """Add the auto-shot blocks (autoshot_data, autoshot, autoshot_segment) to config `c`, with these
    settings and the paper's training recipe; every field is then overridable with --config.X=..."""
    a = c.autoshot_data = ml_collections.ConfigDict()
    a.num_images = num_images  # generated images labelled by the heads
    a.truncation_psi = truncation_psi  # 1.0: the GAN's whole distribution, as varied as real data
    a.batch_size = generation_batch  # images per generation program, split over the local devices
    a.chunk_size = chunk_size  # images per staged file: the unit a killed run resumes by
    a.filter_fraction = 0.0  # drop this share of the most uncertain images (needs fewshot.ensemble >= 2)
    a.val_fraction = 0.05  # the last 5% (by index) of the kept images: validation

    u = c.autoshot = ml_collections.ConfigDict()
    u.base_width = base_width  # UNet widths base_width * 2**level (gsd.nn.unet)
    u.depth = 4
    u.norm_groups = 8
    u.dtype = dtype  # compute dtype: 'bfloat16' on TPU/GPU
    u.conv_impl = 'xla'  # XLA's conv (gsd.nn.layers.Conv3x3): fastest for a standalone jitted step
    u.batch_size = batch_size  # global, sharded over all devices
    u.epochs = epochs
    u.lr = 1e-3  # the paper: Adam 1e-3,
    # Cross-entropy weights share**-class_balance per class (gsd.nn.unet.balanced_class_weights), counted on
    # class_balance_images records: 0 = the paper's plain loss; 0.5 lets the small parts pull harder.
    u.class_balance = class_balance
    u.class_balance_images = 500
    u.plateau_patience = 20  # x0.1 after 20 epochs without validation improvement
    u.plateau_factor = 0.1
    u.flip = True  # the paper's augmentation (gsd.augment): flips,
    u.scale = (0.5, 2.0)  # scales,
    u.log_scale = True  # (drawn log-uniform; False: uniform, as torchvision)
    u.rotate = 10.0  # rotations in degrees,
    u.translate = 0.5  # translations, as a fraction of the size
    u.checkpoint_every = 1  # epochs
    u.max_validation = 500  # validation images scored per epoch
    u.data_workers = 0  # grain worker processes

    c.autoshot_segment = ml_collections.ConfigDict()
    c.autoshot_segment.input = ''  # folder of images for the `autoshot_segment` stage
    return c


def study_block(
    c: ml_collections.ConfigDict,
    *,
    name: str,
    title: str,
    plot: str,
    variants: Iterable[str],
    stages: Iterable[str],
) -> ml_collections.ConfigDict:
    """Turn run config `c` into a study (gsd.pipeline.study): stages = ('study',), and each variant (its
    overrides of `c`) run with `stages` on the test seeds, one projection of the test images per seed."""
    c.stages = ('study',)
    s = c.study = ml_collections.ConfigDict()
    s.name = name  # WORKDIR/study_<name>.json, .md, .png
    s.title = title
    s.plot = plot  # 'labels_curve' | 'bars' | 'per_class'
    s.seeds = 'test'  # 0, 1, 2 (gsd.protocol); 'val' for the validation seeds
    s.stages = tuple(stages)
    s.variants = tuple(variants)
    return s
