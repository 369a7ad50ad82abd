"""Trained parameters on disk: a directory with an orbax checkpoint `params/` and JSON sidecars.

Written to a temporary sibling directory and renamed over the old one (`gsd.io.atomic.directory`), so a
reader sees either the previous complete directory or the new complete one, never a half-written mix.
"""

from __future__ import annotations

import json
import pathlib

from gsd import errors
from gsd.io import atomic


def checkpointer():
    """An orbax StandardCheckpointer for this process alone. Orbax's default saves are collective (every
    process must call them), but gsd's parameter files are host arrays that process 0 writes and every
    process may read on its own, so the checkpointer must not wait for the others."""
    import jax
    import orbax.checkpoint as ocp

    me = jax.process_index()
    return ocp.StandardCheckpointer(
        multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    )


def write(out, params, sidecars: dict) -> pathlib.Path:
    """params (host arrays) -> out/params; sidecars {file name: JSON-able object} -> out/<name>."""

    out = pathlib.Path(out).absolute()
    with atomic.directory(out) as tmp:
        with checkpointer() as ckpt:
            ckpt.save(tmp / 'params', params)
        for name, value in sidecars.items():
            (tmp / name).write_text(json.dumps(value, indent=1))
    return out


def read_params(out):
    """The parameters of `out/params` as host arrays."""

    path = (pathlib.Path(out) / 'params').absolute()
    if not path.is_dir():
        raise errors.MissingInputError(f'{path}: no saved parameters here')
    try:
        with checkpointer() as ckpt:
            return ckpt.restore(path)
    except Exception as e:  # noqa: BLE001 - orbax raises many types; the user needs the folder and the reason
        first = str(e).splitlines()[0] if str(e) else ''
        raise errors.BadFileError(
            f'{path}: cannot restore the orbax checkpoint ({type(e).__name__}: {first})'
        ) from None
