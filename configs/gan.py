"""Train StyleGAN2 on your own images: an image folder (PNG/JPEG of any size and mode) or a TFDS dataset.

Commands:
    python -m gsd.main --config=configs/gan.py --workdir=/tmp/my_gan --config.gan.data.path=/data/photos
    python -m gsd.main --config=configs/gan.py --workdir=/tmp/my_gan \
        --config.gan.data.kind=tfds --config.gan.data.name=toy_faces/s64_train10000_test1000_seed0 \
        --config.gan.data.data_dir=/data/tfds
Images are centre-cropped to squares and resized to `gan.resolution`; unreadable files are named
in a warning, counted and skipped. Defaults are StyleGAN2 config-f at 256 px (NVIDIA channel rule
16384/512, batch 32): an accelerator job (days on one GPU for a good model), not a CPU one.
Rerunning the same command resumes from the last checkpoint. Outputs as configs/toy_gan.py.

`:smoke` is a seconds-long CPU run of the same code on the built-in toy source (no data needed).
"""

import ml_collections

from configs import common, toy_gan


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    # The shared defaults live in toy_gan.py.
    smoke = 'smoke' in common.parse_arg(arg, 'gan')
    c = toy_gan.get_config('smoke' if smoke else None)
    if smoke:
        return c
    g = c.gan
    g.resolution = 256
    g.channel_base, g.channel_max = 16384, 512
    g.z_dim = g.w_dim = 512
    g.n_mlp = 8
    g.batch_size = 32
    g.total_steps = 200_000
    g.r1_gamma = 0.0002 * 256**2 / 32  # NVIDIA's heuristic for this resolution and batch
    g.pl_weight = 2.0
    g.ema_kimg = 10.0
    g.log_every, g.sample_every, g.checkpoint_every = 100, 2000, 2000
    g.data_workers = 4
    d = g.data = ml_collections.ConfigDict()
    d.kind = 'folder'  # or 'tfds'
    d.path = ''  # folder of images (kind='folder')
    d.name = ''  # TFDS name, e.g. 'toy_faces/<config>' (kind='tfds')
    d.split = 'train'
    d.data_dir = ''
    d.image_key = 'image'
    d.resolution = g.get_ref('resolution')
    return c
