"""Atomic writes: a file or a directory appears whole under its name, or not at all.

Everything is written beside its destination under a hidden temporary name and renamed into place,
so a crash, a full disk or a kill never leaves a half-written file that a rerun would trust. The
temporary files get the permissions a plain `open()` would give (0666 / 0777 minus the umask), not
mkstemp's private 0600 / 0700.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import tempfile


def _umask() -> int:
    """The process's umask, read without changing it: setting it to read it back would, for that instant,
    give files other threads create (orbax's async saves) the wrong permissions."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc (macOS): the brief window gets the common default, not 0
    os.umask(mask)
    return mask


@contextlib.contextmanager
def open_atomic(path, mode: str = 'wb'):
    """`with open_atomic(path) as f: ...` writes `path` atomically (parents created)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes(path, data: bytes) -> pathlib.Path:
    with open_atomic(path, 'wb') as f:
        f.write(data)
    return pathlib.Path(path)


def write_text(path, text: str) -> pathlib.Path:
    return write_bytes(path, text.encode())


def write_json(path, value, indent: int = 1) -> pathlib.Path:
    return write_text(path, json.dumps(value, indent=indent, default=str))


@contextlib.contextmanager
def directory(path):
    """`with directory(out) as tmp: <write into tmp>`: on success `out` is replaced by tmp whole (an older
    `out` is removed only after the new one is complete); on failure tmp goes and `out` is untouched."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{path.name}.', dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        if path.exists():
            old = pathlib.Path(tempfile.mkdtemp(prefix=f'.{path.name}.old.', dir=path.parent))
            os.rename(path, old / path.name)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
