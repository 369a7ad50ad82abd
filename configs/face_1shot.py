"""One-shot face part segmentation in the paper's setting (Table 1): FFHQ StyleGAN2, CelebAMask-HQ test set.

You bring the files (gsd never downloads): NVIDIA's `stylegan2-ffhq-config-f.pkl` (or its
rosinality .pt conversion, or a directory from tools/convert_checkpoint.py) and CelebAMask-HQ.
1. Sample the shot and paint its label (WORKDIR/shots/labels/00000.png; palette and legend in
   WORKDIR/shots/classes.json; or one binary PNG per part, see gsd.io.annotation):
    python -m gsd.main --config=configs/face_1shot.py --workdir=/tmp/face1 \
        --config.generator.checkpoint=/data/stylegan2-ffhq-config-f.pkl --config.stages=shots
2. Train the head and evaluate on the CelebAMask-HQ test split:
    python -m gsd.main --config=configs/face_1shot.py --workdir=/tmp/face1 \
        --config.generator.checkpoint=/data/stylegan2-ffhq-config-f.pkl \
        --config.report.data_root=/data/CelebAMask-HQ --config.stages=fewshot,report
`:3class` (default) uses the paper's 3 parts (eye, mouth, nose; weighted IoU without background,
paper 71.7 for the CNN head); `:10class` its 10 classes (paper 77.9, reported with background).
Expected runtime: head training minutes on a GPU; projection at 1024 px is ~1000 steps per image
(see README's speed table), so `report.num_test` defaults to 100 test images (0 = the whole split).
`:smoke` (e.g. `face_1shot.py:smoke`) shrinks epochs, steps and the test set for a quick check.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return build(shots=1, arg=arg, name='face_1shot')


def build(shots: int, arg: str | None, name: str) -> ml_collections.ConfigDict:
    from gsd.io import part_datasets

    args = common.parse_arg(arg, name, ('smoke', '3class', '10class'))
    kind = '10class' if '10class' in args else '3class'
    c = ml_collections.ConfigDict()
    c.stages = ('shots', 'fewshot', 'report')
    c.seed = 0

    g = c.generator = ml_collections.ConfigDict()
    g.checkpoint = ''  # required: --config.generator.checkpoint=PATH
    g.official = 'stylegan2-ffhq-config-f.pkl (NVIDIA StyleGAN2, FFHQ 1024 px)'
    g.which = 'G_ema'
    g.dtype = 'float32'  # the synthesis convs' compute dtype; 'bfloat16' on TPU/GPU (README: bfloat16)
    # The architecture of the official file (shape checks before it is read; the file's own wins).
    g.expected = ml_collections.ConfigDict(
        dict(resolution=1024, channel_base=32768, channel_max=512, z_dim=512, w_dim=512, n_mlp=8)
    )

    k = c.classes = ml_collections.ConfigDict()
    k.names = part_datasets.celebamask_classes(kind)
    k.colours = [
        (0, 0, 0),
        (230, 25, 75),
        (60, 180, 75),
        (255, 225, 25),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
    ][: len(k.names)]
    k.flip_permutation = tuple(range(len(k.names)))  # merged classes have no left/right pairs

    s = c.shots = ml_collections.ConfigDict()
    s.num = shots
    s.truncation_psi = 0.7
    s.annotator = 'none'  # you paint WORKDIR/shots/labels/*.png
    s.batch_size = 1
    s.max_candidates = shots
    common.annotate_block(c)  # the browser annotator (stage annotate)

    f = c.fewshot = ml_collections.ConfigDict()
    f.head = 'cnn'
    f.ensemble = 1
    f.layers = ()
    f.groups = ''
    f.res_range = ()
    f.feature_size = 512  # the authors resized every activation to 512 px
    f.upsample = 'bilinear'
    f.align_corners = True
    # The paper's heads read the generator's features only; True adds the image as 3 more channels
    # (the photo, on projected real images; measured in the toy world: configs/toy_1shot.py).
    f.image_channels = False
    f.image_weight = 1.0
    f.contrast_weight = 0.0  # > 0: also the image's local contrast (gsd.features.local_contrast)
    f.contrast_size = 9
    # Storage of the shots' activations; the heads compute in float32. 10 shots of every layer at 512 px
    # are 2.6 GB in float32, 1.3 GB in bfloat16 (tools/bench_fewshot.py).
    f.feature_dtype = 'bfloat16'
    f.epochs = 1000
    f.lr = 1e-3
    f.weight_decay = 1e-3
    f.lr_decay_every = 50
    f.lr_decay_factor = 0.1
    f.batch_size = 1

    p = common.projection_block(c, steps=1000, batch_size=4)

    c.segment = ml_collections.ConfigDict()
    c.segment.input = ''

    r = c.report = ml_collections.ConfigDict()
    r.data = 'celebamask'
    r.data_root = ''  # required for the report stage: CelebAMask-HQ's root folder
    r.kind = kind
    r.split = 'test'
    r.num_test = 100
    r.methods = ('fewshot', 'rgb_baseline')
    r.num_shown = 16

    if 'smoke' in args:
        f.epochs, f.lr_decay_every = 6, 2
        p.steps, p.batch_size = 5, 1
        r.num_test, r.num_shown = 2, 2
    return c
