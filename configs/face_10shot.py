"""Ten-shot face part segmentation (paper Table 1: CNN 83.5 for 3 classes, 85.2 for 10).

Same steps as configs/face_1shot.py (read its docstring), with ten shots to paint:
    python -m gsd.main --config=configs/face_10shot.py:10class --workdir=/tmp/face10 \
        --config.generator.checkpoint=/data/stylegan2-ffhq-config-f.pkl --config.stages=shots
then `--config.stages=fewshot,report --config.report.data_root=/data/CelebAMask-HQ`.
Arguments: `:3class` (default) or `:10class`, optionally with `,smoke`.
"""

from configs import face_1shot


def get_config(arg: str | None = None):
    return face_1shot.build(shots=10, arg=arg, name='face_10shot')
