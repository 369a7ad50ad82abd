"""Auto-shot face part segmentation in the paper's setting (sec. 4.3, Table 3: 10-class weighted IoU
84.5 auto-shot vs 85.2 for the 10-shot head it learns from).

The ten shots are labelled as in configs/face_10shot.py (read configs/face_1shot.py's docstring):
1. python -m gsd.main --config=configs/face_autoshot.py:10class --workdir=/tmp/faceauto \
       --config.generator.checkpoint=/data/stylegan2-ffhq-config-f.pkl --config.stages=shots
   then paint WORKDIR/shots/labels/*.png.
2. python -m gsd.main --config=configs/face_autoshot.py:10class --workdir=/tmp/faceauto \
       --config.generator.checkpoint=/data/stylegan2-ffhq-config-f.pkl \
       --config.report.data_root=/data/CelebAMask-HQ \
       --config.stages=fewshot,autoshot_data,autoshot,report
The paper's recipe: 5,000 generated images labelled by the head's logits (stored at the head's
512 px, images resized to match), a UNet trained 300 epochs with flips, scales 0.5-2, rotations
+-10 degrees and translations up to 50%, Adam 1e-3, lr x0.1 after 20 epochs without validation
gain. The report segments the whole CelebAMask-HQ test split with the UNet alone (no projection).
Generation and training want an accelerator: about 5,000 generator + head passes at 1024 px, then
300 epochs of 5,000 images at 512 px. Every stage resumes after a kill.
Arguments: `:3class` (default) or `:10class`, optionally with `,smoke`.
"""

from configs import common, face_1shot


def get_config(arg: str | None = None):
    c = face_1shot.build(shots=10, arg=arg, name='face_autoshot')
    c.stages = ('shots', 'fewshot', 'autoshot_data', 'autoshot', 'report')
    common.autoshot_blocks(
        c, num_images=5000, base_width=32, epochs=300, batch_size=16, generation_batch=8, dtype='bfloat16'
    )
    c.report.methods = ('autoshot',)
    c.report.num_test = 0  # the whole test split: the UNet needs no projection
    if 'smoke' in common.parse_arg(arg, 'face_autoshot', ('smoke', '3class', '10class')):
        c.autoshot_data.num_images, c.autoshot_data.chunk_size, c.autoshot_data.batch_size = 8, 4, 1
        c.autoshot.epochs, c.autoshot.batch_size = 1, 2
        c.report.num_test = 2
    return c
