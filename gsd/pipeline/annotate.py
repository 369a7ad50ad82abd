"""Annotate stage: a local web page on which a person labels the shots (after `shots`, before `fewshot`).

    python -m gsd.main --config=configs/toy_1shot.py --workdir=DIR --config.stages=annotate \\
        --config.shots.annotator=none

prints `annotate: open http://127.0.0.1:PORT/?token=TOKEN`; open it in a browser (on a remote machine, forward
the port first: `ssh -L 8000:127.0.0.1:8000 user@gpu-box` and `--config.annotate.port=8000`). The page paints
class ids on each shot of DIR/shots (brush, eraser, polygon, flood fill, a colour wand; undo, zoom, pan), saves
them as the palette PNGs the `fewshot` stage reads (DIR/shots/labels/NNNNN.png, checked and written atomically,
`gsd.annotate.store`) and keeps each shot's state in DIR/shots/annotate_state.json. Its Assist button trains
the configured head on the labelled shots (`annotate.assist_epochs` epochs) and pre-fills the empty shots with
its prediction for the person to correct.

The stage ends when the person presses Done on the page once every shot is marked done; the next stages of
the run then go on. Ctrl-C or SIGTERM stop the server and end the run (labels saved so far stay; running the
stage again resumes). The server listens on `annotate.host` (127.0.0.1: this machine only) and every request
needs the printed token (`gsd.annotate.server`).
"""

from __future__ import annotations

import ipaddress
import pathlib
import signal
import warnings

import ml_collections

from gsd import errors, head_features, segmenters
from gsd.annotate import assist as assist_lib
from gsd.annotate import server as server_lib
from gsd.annotate import store as store_lib
from gsd.io import annotation
from gsd.stylegan2 import generator


def models(config) -> dict:
    return {}  # the stage builds no model of its own; the assist's head is the fewshot stage's


def check(config) -> None:
    """Refuse settings the annotator cannot run with, before any stage of the run starts."""
    a = config.annotate
    import jax

    if jax.process_count() > 1:  # one person, one page: the others would wait on a human inside a collective
        raise errors.SettingError(
            f'stages: the annotate stage runs in one process, this run has {jax.process_count()}; '
            'label the shots in a single-process run, then start the multi-process run without annotate'
        )

    def need(ok: bool, field: str, what: str) -> None:
        if not ok:
            raise errors.SettingError(f'annotate.{field}: must be {what}, got {a[field]!r}')

    def integer(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float('inf')

    need(integer(a.port) and 0 <= a.port <= 65535, 'port', 'an integer port, 0 to 65535 (0: a free one)')
    need(isinstance(a.host, str) and a.host.strip() != '', 'host', "an address to listen on, e.g. '127.0.0.1'")
    need(number(a.max_body_mb) and a.max_body_mb > 0, 'max_body_mb', 'a number of megabytes > 0')
    need(integer(a.assist_epochs) and a.assist_epochs >= 0, 'assist_epochs', 'an integer >= 0 (0: no assist)')
    need(number(a.autosave_seconds) and a.autosave_seconds > 0, 'autosave_seconds', 'a number of seconds > 0')
    annotation.palette(config.classes.names, config.classes.colours)


def _loopback(host: str) -> bool:
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _assistant(config, store: store_lib.ShotStore):
    """The assist for this run: the `fewshot` block's head and training, for `annotate.assist_epochs` epochs."""
    f = config.get('fewshot')
    if not config.annotate.assist_epochs or f is None:
        return None

    def load():
        module, variables = generator.build_generator(config.generator)
        extractor = head_features.extractor_for(module, f)
        head = segmenters.make_head(f.head, len(config.classes.names), extractor.layout)
        return extractor, variables, head

    return assist_lib.Assistant(
        load,
        store.ws,
        seed=config.seed,
        ensemble=f.ensemble,
        epochs=config.annotate.assist_epochs,
        lr=f.lr,
        weight_decay=f.weight_decay,
        lr_decay_every=f.lr_decay_every,
        lr_decay_factor=f.lr_decay_factor,
        batch_size=f.batch_size,
        feature_dtype=f.feature_dtype,
    )


def run(config: ml_collections.ConfigDict, workdir) -> dict:
    """Serve the page until the person presses Done; see the module doc."""
    check(config)
    a = config.annotate
    store = store_lib.ShotStore(pathlib.Path(workdir) / 'shots', config.classes.names, config.classes.colours)
    annotator = server_lib.Annotator(
        store,
        host=a.host.strip(),
        port=a.port,
        max_body_bytes=int(a.max_body_mb * 2**20),
        assist=_assistant(config, store),
        assist_epochs=a.assist_epochs,
        autosave_seconds=a.autosave_seconds,
    )
    if not _loopback(annotator.host):
        warnings.warn(
            f'annotate.host={annotator.host}: the page is reachable beyond this machine (anyone with the token '
            f'can change the labels); 127.0.0.1 with SSH port forwarding keeps it private',
            errors.GsdWarning,
            stacklevel=2,
        )
    annotator.start()
    try:
        print(f'annotate: open {annotator.url}', flush=True)
        while not annotator.finished.wait(0.5):  # a timeout, so Ctrl-C and SIGTERM are seen promptly
            pass
    except KeyboardInterrupt:
        print(f'annotate: stopped (Ctrl-C); the labels saved so far are in {store.root / "labels"}', flush=True)
        raise SystemExit(128 + signal.SIGINT) from None  # the shell's status for Ctrl-C, without a traceback
    except SystemExit:  # SIGTERM (gsd.training.stop)
        print(f'annotate: stopped; the labels saved so far are in {store.root / "labels"}', flush=True)
        raise
    finally:
        annotator.close()
    shots = store.summary()
    print(f'annotate: all {len(shots)} shots done; labels in {store.root / "labels"}', flush=True)
    return {'shots': len(shots), 'by': {s['name']: s['by'] for s in shots}}
