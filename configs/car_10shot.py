"""Ten-shot car part segmentation in the paper's setting (Table 4): LSUN-car StyleGAN2, PASCAL-Part cars.

You bring the files: NVIDIA's `stylegan2-car-config-f.pkl` (512x384 pictures inside 512x512 frames:
gsd crops rows 64..447, `generator.crop_rows`) and PASCAL-Part (Annotations_Part/*.mat) with the
PASCAL VOC 2010 JPEGImages. Classes: background, body, plate, light, wheel, window (gsd's grouping of
PASCAL-Part's parts is documented in gsd.io.part_datasets; the paper does not state its own).
1. python -m gsd.main --config=configs/car_10shot.py --workdir=/tmp/car10 \
       --config.generator.checkpoint=/data/stylegan2-car-config-f.pkl --config.stages=shots
   then paint WORKDIR/shots/labels/*.png (legend in WORKDIR/shots/classes.json).
2. python -m gsd.main --config=configs/car_10shot.py --workdir=/tmp/car10 \
       --config.generator.checkpoint=/data/stylegan2-car-config-f.pkl \
       --config.report.data_root=/data/VOC2010 --config.stages=fewshot,report
Paper: average IoU 52.2 (10-shot). Each test object is cropped square around its mask and resized
to the generator's resolution; projection ~1000 steps per image, so `report.num_test` defaults to 100.
`:smoke` shrinks epochs, steps and the test set.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return build(
        'car',
        arg,
        'car_10shot',
        'stylegan2-car-config-f.pkl (NVIDIA StyleGAN2, LSUN car 512 px)',
        resolution=512,
        crop_rows=(64, 448),
    )


def build(category: str, arg, name: str, official: str, resolution: int, crop_rows=()) -> ml_collections.ConfigDict:
    from gsd.io import part_datasets

    args = common.parse_arg(arg, name)
    c = ml_collections.ConfigDict()
    c.stages = ('shots', 'fewshot', 'report')
    c.seed = 0

    g = c.generator = ml_collections.ConfigDict()
    g.checkpoint = ''  # required: --config.generator.checkpoint=PATH
    g.official = official
    g.which = 'G_ema'
    g.dtype = 'float32'  # the synthesis convs' compute dtype; 'bfloat16' on TPU/GPU (README: bfloat16)
    # The architecture of the official file (shape checks before it is read; the file's own wins).
    g.expected = ml_collections.ConfigDict(
        dict(resolution=resolution, channel_base=32768, channel_max=512, z_dim=512, w_dim=512, n_mlp=8)
    )
    g.crop_rows = crop_rows

    k = c.classes = ml_collections.ConfigDict()
    k.names = part_datasets.pascal_part_classes(category)
    k.colours = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48)][: len(k.names)]
    k.flip_permutation = tuple(range(len(k.names)))

    s = c.shots = ml_collections.ConfigDict()
    s.num = 10
    s.truncation_psi = 0.7
    s.annotator = 'none'
    s.batch_size = 1
    s.max_candidates = 10
    common.annotate_block(c)  # the browser annotator (stage annotate)

    f = c.fewshot = ml_collections.ConfigDict()
    f.head = 'cnn'
    f.ensemble = 1
    f.layers = ()
    f.groups = ''
    f.res_range = ()
    f.feature_size = 0  # the generator's resolution (256 horse, 512 car)
    f.upsample = 'bilinear'
    f.align_corners = True
    # The paper's heads read the generator's features only; True adds the image as 3 more channels
    # (the photo, on projected real images; measured in the toy world: configs/toy_1shot.py).
    f.image_channels = False
    f.image_weight = 1.0
    f.contrast_weight = 0.0  # > 0: also the image's local contrast (gsd.features.local_contrast)
    f.contrast_size = 9
    # Storage of the shots' activations; the heads compute in float32. bfloat16 halves it (face_1shot.py).
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
    r.data = 'pascal_part'
    r.data_root = ''  # required for report: the folder with Annotations_Part/ and JPEGImages/
    r.category = category
    r.num_test = 100
    # The crop's padding outside the photo: 'ignore' (unscored) or 'background'. As background it would
    # score much of the crop of a wide or edge object as correct background, which no method has to see.
    r.pad = 'ignore'
    # A text file of PASCAL image ids, one a line (e.g. the paper's test split): the test items, in its
    # order (num_test still caps them; 0: all). '': every annotation with the category, sorted.
    r.split_file = ''
    r.methods = ('fewshot', 'rgb_baseline')
    r.num_shown = 16

    if 'smoke' in args:
        f.epochs, f.lr_decay_every = 6, 2
        p.steps, p.batch_size = 5, 1
        r.num_test, r.num_shown = 2, 2
    return c
