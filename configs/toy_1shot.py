"""One-shot part segmentation in the toy world: gsd's demo, end to end on a laptop CPU.

Command:
    python -m gsd.main --config=configs/toy_1shot.py --workdir=/tmp/toy_1shot
Stages: `shots` samples one image from the shipped toy generator (gsd.toy.pretrained) and the
scripted toy annotator labels it (the person's job in the paper's workflow); `fewshot` trains the
paper's MLP head on that one image's GAN features and the image itself (RGB and local contrast);
`autoshot_data` has the GAN and the head label 600 generated images (a TFDS dataset) and `autoshot`
trains a UNet on them with a class-balanced loss (paper 3.3); `report`
projects 100 held-out real toy images into the GAN and segments them (`fewshot`), runs the UNet on
them (`autoshot`, no GAN) and the baselines, segments one 192x128 canvas with three faces with the
UNet, and writes WORKDIR/metrics.json, WORKDIR/eval/ and WORKDIR/report.html.
Result on the test seeds (`--seeds=test`, mean +- std of mean IoU over all classes): fewshot 85.8 +- 4.1,
autoshot 85.6 +- 2.6, rgb_baseline 48.7 +- 5.0, supervised_10shot 78.2 +- 6.9; per class, runtime and
how the settings were chosen on the validation seeds: README ("The toy demo"), docs/experiments.md.

`--config.seed=N` changes every random choice: which generated sample is labelled, head
initialisation, projection noise and which real toy images are the test and supervised sets.
`:smoke` shrinks it to a seconds-long run (few epochs, 4 test images, few projection steps).
"""

import ml_collections

from configs import common
from gsd import toy  # class names and colours of the toy world


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return build(shots=1, arg=arg, name='toy_1shot')


def build(shots: int, arg: str | None, name: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.stages = ('shots', 'fewshot', 'autoshot_data', 'autoshot', 'report')
    c.seed = 0

    g = c.generator = ml_collections.ConfigDict()
    g.checkpoint = 'gsd:toy'  # the shipped toy generator; any gsd.stylegan2.load path works
    g.which = 'G_ema'
    g.dtype = 'float32'  # the synthesis convs' compute dtype; 'bfloat16' on TPU/GPU (README: bfloat16)

    k = c.classes = ml_collections.ConfigDict()
    k.names = toy.CLASSES
    k.colours = [tuple(int(v) for v in col) for col in toy.PALETTE]
    # Class ids swapped by a horizontal flip (left_eye <-> right_eye), for augmentation.
    k.flip_permutation = (0, 1, 2, 4, 3, 5, 6)

    s = c.shots = ml_collections.ConfigDict()
    s.num = shots  # labelled generated images
    s.truncation_psi = 0.7
    s.annotator = 'toy'  # 'none': write label templates for a person to paint
    s.batch_size = 8
    s.max_candidates = 400
    common.annotate_block(c)  # the browser annotator (stage annotate)

    f = c.fewshot = ml_collections.ConfigDict()
    # The paper's per-pixel MLP head (its Table 1: MLP 75.3 vs CNN 71.7 for one shot, 3 classes). Its
    # CNN head ('cnn') sees 61 px around each pixel: at 512 px a local view, at this world's 64 px
    # the whole image, so from one shot it learns where parts were rather than what they look like
    # (30 weighted IoU on 100 annotated generated faces, against 87 for the MLP; 1 shot, 200 epochs at / 10).
    f.head = 'mlp'
    f.ensemble = 1  # heads trained at once (vmapped, over devices); predictions averaged
    f.layers = ()  # explicit conv names; or:
    f.groups = ''  # Table 7's groups, e.g. 'AB'; or:
    f.res_range = ()  # (min_px, max_px); all empty = the authors' set (8 px .. full)
    f.feature_size = 0  # 0 = the generator's resolution
    f.upsample = 'bilinear'
    f.align_corners = True
    f.feature_dtype = 'float32'  # 448 channels at 64 px: 7 MB a shot, nothing to save
    # The image itself as 3 more channels (gsd.features.IMAGE): the generator's output on the shots, the photo
    # on a projected real image. The toy generator draws noses and mouth outlines faintly and a 200-step
    # reconstruction blurs them further, so the convs alone miss them on photos; the photo's colour, read
    # where the convs place the face, finds them. Chosen on validation seeds (docs/experiments.md).
    f.image_channels = True
    f.image_weight = 3.0  # the image channels' scale against the convs' activations (1: [-1, 1])
    # And the image's local contrast (minus its 9x9 box mean), 3 more channels: "darker than around it" is
    # what a nose is, whatever the skin's own colour (gsd.features.local_contrast).
    f.contrast_weight = 10.0
    f.contrast_size = 9
    # The paper's Adam 1e-3 and weight decay 1e-3, with its authors' code's decay (lr x 0.9 every 50
    # epochs; the paper's text says / 10) for 300 of the 1000 epochs. With one shot an epoch is one
    # step, so / 10 leaves ~100 useful steps: measured on 100 annotated generated faces, / 10 for 200
    # epochs gave 86.9 weighted IoU (nose 0), x 0.9 for 300 epochs 91.5 (nose 65) and for all 1000
    # epochs 91.8; on the real test images 71.4, 74.0 (constant lr, 300 epochs) and 73.9.
    f.epochs = 300
    f.lr = 1e-3
    f.weight_decay = 1e-3
    f.lr_decay_every = 50
    f.lr_decay_factor = 0.9
    f.batch_size = 1

    p = common.projection_block(c, steps=200, batch_size=50)  # 200: the standard schedule compressed

    # Auto-shot (paper 3.3): the heads label generated images, a UNet learns from them (gsd.pipeline.autoshot).
    # class_balance 1.0 and 10 epochs (350 steps) chosen on validation seed 100 (docs/experiments.md): the plain
    # loss after 175 steps found no eye, nose or mouth (mean IoU 41.1); balanced, 350 steps: 81.3.
    common.autoshot_blocks(c, num_images=600, base_width=16, epochs=10, batch_size=16, class_balance=1.0)

    c.segment = ml_collections.ConfigDict()
    c.segment.input = ''  # folder of images for the `segment` stage

    r = c.report = ml_collections.ConfigDict()
    r.data = 'toy'
    r.num_test = 100
    r.test_seed = c.get_ref('seed') + 2_000_000  # toy.sample streams; the GAN trained on seed 1000's
    r.supervised_seed = c.get_ref('seed') + 3_000_000
    # supervised_<k>shot for any k also works (--config.report.methods=...); the demo keeps one supervised
    # UNet, on 10 real labels, within its 10 minutes.
    r.methods = ('fewshot', 'rgb_baseline', 'supervised_10shot', 'autoshot')
    r.composite = True  # also segment 3 toy faces on a 192x128 canvas (auto-shot's UNet)
    r.supervised_steps = 400
    r.supervised_batch = 8
    # Cross-entropy weights share**-0.5 (gsd.nn.unet.balanced_class_weights), as the auto-shot UNet's: on
    # validation seed 100, 10 real labels, 400 steps: mean IoU 74.3 without (left / right eye 27 / 34), 84.9 with.
    r.supervised_class_balance = 0.5
    r.unet_width = 16
    r.num_shown = 16
    # A folder where `fewshot` keeps the test images' projections, reused by any later report with the same
    # images, generator and projection settings (a study's variants share them); '' = project every time.
    r.projection_cache = ''

    if 'smoke' in common.parse_arg(arg, name):
        f.epochs, f.lr_decay_every = 6, 2
        p.steps, p.batch_size = 5, 4
        c.autoshot_data.num_images, c.autoshot_data.chunk_size, c.autoshot_data.batch_size = 24, 8, 4
        c.autoshot.epochs, c.autoshot.batch_size = 2, 4
        r.num_test, r.supervised_steps, r.supervised_batch, r.num_shown = 4, 3, 2, 4
    return c
