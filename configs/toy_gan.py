"""Train a small StyleGAN2 on the procedural toy world (cartoon faces, 64x64).

Command:
    python -m gsd.main --config=configs/toy_gan.py --workdir=/tmp/toy_gan
Rerunning the same command after a kill resumes from the last checkpoint (every 100 steps).
Result: WORKDIR/generator/ (the EMA generator, `gsd.stylegan2.load(WORKDIR/'generator')`),
WORKDIR/samples/step_*.png grids, TensorBoard events in WORKDIR/tensorboard/.
Runtime and result (2-core CPU; `python tools/toy_quality.py WORKDIR/generator` measures quality):
  1.76 s per step alone on the 2 cores (64 channels max, batch 32; measured over steps 3510-3600),
  so the 3600 steps take about 106 minutes plus a minute of start-up.
  The shipped generator (gsd/toy/assets/toy_generator, 1.7 MB) is step 3600 of this command with this
  config, started 2026-11-29 19:57. It ran in three sittings (stopped and resumed from its
  checkpoints) on a CPU shared with development work, about 190 minutes of wall clock in all;
  rerunning its steps 3500-3600 alone from the step-3500 checkpoint reproduced the shipped weights
  exactly (largest difference 0.0). Quality at truncation 0.7 over 1000 samples: the scripted
  annotator accepts 98.5% (refusals: no nose 13, eyes not either side of the axis 2); class pixel
  shares vs the real toy data: background -0.2%, skin +9.4%, hair -13.5%, left_eye -7.4%,
  right_eye -4.9%, nose -0.3%, mouth -16.1% (targets: >= 90%, each within 20%). Acceptance on the
  way (200 samples): 0.5% at step 1000, 5.5% at 1500, 0.5% at 2200, 17.5% at 2700: the eyes form late.
  An earlier run with r1_gamma 0.05 collapsed to one blurry face by step 1400 (D won); 0.3 and 1.0
  were then run side by side for 400 steps and 1.0 kept forming faces while 0.3 stayed blurry.

`:smoke` shrinks everything to a seconds-long CPU run (16 px, tiny channels, 6 steps).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.stages = ('train_gan',)
    c.seed = 0  # drives initialisation, latents and data order

    g = c.gan = ml_collections.ConfigDict()
    # Architecture (NVIDIA channel rule: min(channel_base // R, channel_max) per resolution R).
    g.resolution = 64
    g.channel_base = 2048  # channels 64, 64, 64, 64, 32 at 4..64 px: ~1.8 s per step on 2 CPU cores
    g.channel_max = 64
    g.z_dim = 128
    g.w_dim = 128
    g.n_mlp = 4
    g.mapping_lr_mul = 0.01
    g.mbstd_group_size = 4
    # Optimisation (StyleGAN2-ADA's recipe; lr and betas get the lazy-regularisation correction).
    g.batch_size = 32  # global, over all devices
    g.total_steps = 3600  # 115k images
    g.lr_g = 0.0025
    g.lr_d = 0.0025
    g.r1_gamma = 1.0  # ADA's heuristic (0.026 here) let D win and G collapse; 1.0 keeps D smooth
    g.r1_interval = 16
    g.pl_weight = 0.0  # path-length regularisation off: it doubles the G cost on CPU
    g.pl_interval = 4
    g.pl_batch_shrink = 2
    g.pl_decay = 0.01
    g.style_mixing_prob = 0.9
    g.ema_kimg = 10.0
    g.ema_rampup = 0.05
    g.w_avg_beta = 0.995
    # Bookkeeping.
    g.log_every = 10
    g.sample_every = 200
    g.checkpoint_every = 100
    g.keep_checkpoints = 3
    g.sample_grid = 16
    g.data_workers = 1  # grain worker processes: rendering overlaps the training step
    d = g.data = ml_collections.ConfigDict()
    d.kind = 'toy'  # 'toy' renders on the fly; 'folder' and 'tfds' read images
    d.resolution = g.get_ref('resolution')
    d.seed = 1000

    if 'smoke' in common.parse_arg(arg, 'toy_gan'):
        g.resolution, g.channel_base, g.channel_max, g.z_dim, g.w_dim, g.n_mlp = 16, 256, 16, 16, 16, 2
        g.batch_size, g.total_steps = 8, 6
        g.log_every, g.sample_every, g.checkpoint_every, g.sample_grid = 2, 3, 3, 4
        g.r1_interval, g.pl_weight, g.pl_interval = 4, 2.0, 3
        g.data_workers = 0
    return c
