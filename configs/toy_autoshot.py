"""Auto-shot in the toy world without the demo's time budget: more generated images, longer UNet training.

Command:
    python -m gsd.main --config=configs/toy_autoshot.py --workdir=/tmp/toy_autoshot
Stages as configs/toy_1shot.py (one shot labelled by the scripted annotator, the paper's MLP head),
then `autoshot_data` labels 2,000 generated images and `autoshot` trains the UNet for 20 epochs
(2,375 steps of 16) with the paper's augmentation and plateau schedule; `report` compares `autoshot`
with `fewshot` on 100 held-out real toy images and segments the 192x128 three-face canvas.
Expected runtime on 2 CPU cores, from tools/bench_autoshot.py's rates: about 3 minutes of labelling,
10-15 minutes of UNet training, 4 minutes of report. Every stage resumes after a kill.
`:smoke` as in toy_1shot.py.
"""

from configs import common, toy_1shot


def get_config(arg: str | None = None):
    c = toy_1shot.build(shots=1, arg=arg, name='toy_autoshot')
    c.report.methods = ('fewshot', 'autoshot')
    if 'smoke' not in common.parse_arg(arg, 'toy_autoshot'):
        c.autoshot_data.num_images = 2000
        c.autoshot.epochs = 20
    return c
