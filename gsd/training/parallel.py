"""How work is split: a one-axis device mesh, each process's share of a global batch, and fixed-shape
batches so that any number of items runs through one compiled program.

Data parallelism in gsd is one `jax.jit` over a 1-D Mesh: the batch is sharded along the mesh axis,
parameters replicated, so 1 or 8 devices compute the same numbers. Multi-host, each process feeds its
own slice of the global batch (`local_batch_size`).
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from gsd import errors


def mesh(devices: Optional[Sequence[jax.Device]] = None, axis: str = 'data') -> Mesh:
    """A 1-D Mesh over `devices` (default: every device of every process) with axis `axis`."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (axis,))


def local_batch_size(batch_size: int, setting: str, data_mesh: Optional[Mesh] = None) -> int:
    """This process's share of the global `batch_size`. The batch must split evenly over the devices of
    `data_mesh` (default: all) and over the processes; otherwise a SettingError (a ValueError) naming
    `setting`, for the caller to raise before anything heavy is built."""
    n_dev = (data_mesh or mesh()).size
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1 or batch_size % n_dev:
        raise errors.SettingError(f'{setting}: must be a positive multiple of the {n_dev} devices, got {batch_size!r}')
    if batch_size % jax.process_count():
        raise errors.SettingError(
            f'{setting}: must be divisible by the {jax.process_count()} processes, got {batch_size!r}'
        )
    return batch_size // jax.process_count()


def padded_batches(arrays: Sequence[np.ndarray], batch_size: int) -> Iterator[tuple[tuple[np.ndarray, ...], int]]:
    """Consecutive `batch_size` slices of `arrays` (equal leading sizes), the last one padded with zeros,
    as (slices, number of real items): every batch has one shape, so a jitted consumer compiles once
    whatever the number of items."""
    arrays = [np.asarray(a) for a in arrays]
    n = arrays[0].shape[0]
    for start in range(0, n, batch_size):
        chunk = [a[start : start + batch_size] for a in arrays]
        count = chunk[0].shape[0]
        if count < batch_size:
            chunk = [np.concatenate([c, np.zeros((batch_size - count,) + c.shape[1:], c.dtype)]) for c in chunk]
        yield tuple(chunk), count


def map_padded(fn: Callable, arrays: Sequence[np.ndarray], batch_size: int):
    """fn(*batch) over `padded_batches`, with the padding dropped from every output (a pytree of arrays
    with the batch leading) and the batches' outputs concatenated on the host."""
    outputs = [
        jax.tree.map(lambda x, n=count: np.asarray(x)[:n], fn(*chunk))
        for chunk, count in padded_batches(arrays, batch_size)
    ]
    return jax.tree.map(lambda *xs: np.concatenate(xs), *outputs)
