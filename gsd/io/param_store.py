"""Trained parameters on disk: a directory with an orbax checkpoint `params/` and JSON sidecars.

Written to a temporary sibling directory and renamed over the old one, so a reader sees either
the previous complete directory or the new complete one, never a half-written mix.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import tempfile


def write(out, params, sidecars: dict) -> pathlib.Path:
    """params (host arrays) -> out/params; sidecars {file name: JSON-able object} -> out/<name>."""
    import orbax.checkpoint as ocp

    out = pathlib.Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{out.name}.', dir=out.parent))
    try:
        with ocp.StandardCheckpointer() as ckpt:
            ckpt.save(tmp / 'params', params)
        for name, value in sidecars.items():
            (tmp / name).write_text(json.dumps(value, indent=1))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_params(out):
    """The parameters of `out/params` as host arrays."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckpt:
        return ckpt.restore((pathlib.Path(out) / 'params').absolute())
