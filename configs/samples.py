"""Sample a grid of images from a StyleGAN2 generator.

Command (about 15 s on 2 CPU cores, mostly compilation):
    python -m gsd.main --config=configs/samples.py --workdir=/tmp/gsd_samples
Result: /tmp/gsd_samples/samples/grid.png (16 images), latents.npz (z, ws), summary.json.

With `generator.checkpoint` unset it builds a 64 px generator with random weights (the images are
textured noise: it shows the machinery works, not a trained model). Point it at any checkpoint
`gsd.stylegan2.load` reads to sample a trained model:
    python -m gsd.main --config=configs/samples.py --workdir=/tmp/ffhq \
        --config.generator.checkpoint=stylegan2-ffhq-config-f.pkl --config.samples.truncation_psi=0.7
`:smoke` shrinks it to a 16 px generator and 4 samples (a few seconds).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.stages = ('samples',)
    c.seed = 0  # drives z; override with --config.seed=N

    g = c.generator = ml_collections.ConfigDict()
    g.checkpoint = ''  # any file or directory gsd.stylegan2.load reads; '' = random weights
    g.which = 'G_ema'
    g.dtype = 'float32'  # the synthesis convs' compute dtype; 'bfloat16' on TPU/GPU (README: bfloat16)
    g.crop_rows = ()  # (64, 448) for the car models
    # Architecture of the random-weights generator (ignored when a checkpoint is given).
    g.resolution = 64
    g.channel_base = 4096
    g.channel_max = 128
    g.z_dim = 128
    g.w_dim = 128
    g.n_mlp = 4
    g.init_seed = 0

    s = c.samples = ml_collections.ConfigDict()
    s.num = 16
    s.batch_size = 8
    s.truncation_psi = 1.0

    if 'smoke' in common.parse_arg(arg, 'samples'):
        g.resolution, g.channel_max, g.z_dim, g.w_dim, g.n_mlp = 16, 32, 32, 32, 2
        s.num, s.batch_size = 4, 4
    return c
