"""Train an image -> w+ encoder (gsd.nn.encoder) for a generator: the start of a short projection.

Command:
    python -m gsd.main --config=configs/encoder.py --workdir=/tmp/encoder
Rerunning the same command after a kill resumes from the last checkpoint (every 200 steps).
Result: WORKDIR/encoder/ (params + encoder.json), which `--config.projection.encoder=WORKDIR/encoder`
hands to the projections of the `segment` and `report` stages; TensorBoard events in
WORKDIR/encoder_train/tensorboard/.
Runtime and result (2-core CPU shared with another experiment using about 1.2 cores):
  about 0.9 s per step (batch 32, pixel loss through the generator; 0.77 s, or 0.42 s with
  pixel_weight 0, measured at the start of the session), so the 1500 steps took 22 min 18 s of wall
  clock (started 2026-12-04 06:36:21). The shipped encoder (gsd/toy/assets/toy_encoder, 4.9 MB,
  1.35 M parameters) is this command with this config, for the shipped toy generator: final
  training losses w 0.429 (squared error over the spread of w; 0.57 over the first 20 steps) and
  pixel pyramid 0.115 (0.41 at first). Its w+ alone reconstructs the generator's own samples at
  24.6 dB (w_avg: 11.9 dB) and real toy images at 17.5 dB (w_avg: 11.2). On the 100 validation real
  toy images (`python tools/bench_projection.py --real 100 --plain-steps 200 50 --steps 100 50
  --lr 0.1 --encoder gsd:toy_encoder`), projected started from it: 50 steps 24.7 dB, 100 steps
  26.5 dB (lr 0.2: 26.8 dB); from w_avg: 200 steps 26.2 dB, 50 steps 21.4 dB. The scripted
  annotator on those reconstructions (weighted IoU over the parts, over the images it accepts;
  refused in brackets): 85.7 (40), 89.2 (31), 89.7 (32); from w_avg 88.9 (44), 79.0 (93).

`:smoke` shrinks it to a seconds-long CPU run (a 16 px random-weights generator, 4 steps).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.stages = ('encoder',)
    c.seed = 0  # drives initialisation and the generated samples

    g = c.generator = ml_collections.ConfigDict()
    g.checkpoint = 'gsd:toy'  # the generator to invert; any gsd.stylegan2.load path works
    g.which = 'G_ema'
    g.dtype = 'float32'  # the synthesis convs' compute dtype; 'bfloat16' on TPU/GPU (README: bfloat16)
    # Architecture of a random-weights generator (checkpoint ''): only the smoke run uses one.
    g.resolution = 64
    g.channel_base = 2048
    g.channel_max = 64
    g.z_dim = 128
    g.w_dim = 128
    g.n_mlp = 4
    g.init_seed = 0

    e = c.encoder = ml_collections.ConfigDict()
    e.widths = (32, 64, 96, 128)  # one residual block per width, each halving the size (64 -> 4 px)
    e.hidden = 256
    e.groups = 8  # GroupNorm groups (clamped to divide each width)
    e.batch_size = 32
    e.total_steps = 1500
    e.lr = 1e-3  # Adam, cosine decay to 1% over the run
    e.psi_min = 0.5  # truncation psi per sample, uniform in [psi_min, psi_max]: real images need psi ~1
    e.psi_max = 1.0
    e.mixing_prob = 0.5  # style mixing: w+ with rows from two z, so the encoder covers w+ not just w
    e.pixel_weight = 1.0  # pixel pyramid loss through the generator (0: w loss only, ~1.8x faster)
    e.log_every = 20
    e.checkpoint_every = 200
    e.keep_checkpoints = 2

    if 'smoke' in common.parse_arg(arg, 'encoder'):
        g.checkpoint = ''
        g.resolution, g.channel_base, g.channel_max, g.z_dim, g.w_dim, g.n_mlp = 16, 256, 16, 16, 16, 2
        e.widths, e.hidden, e.batch_size, e.total_steps = (8, 16), 32, 4, 4
        e.pixel_weight = 0.0  # w loss only: compiles in half the time (the full run covers the pixel loss)
        e.log_every, e.checkpoint_every = 2, 2
    return c
