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
from jax.sharding import Mesh, NamedSharding

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


def is_writer() -> bool:
    """Whether this process writes the run's files: process 0 only, so each file is written once; the
    others compute the same values (or gather them) and wait at `barrier`."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Every process waits here until all reach the same `name` (a no-op for one process): after process 0
    writes files that the others read next."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def global_array(x, sharding: NamedSharding):
    """`x`, the same value on every process, as one global array with `sharding` (which may span devices of
    other processes; each process fills only its own). One process: a plain device_put."""
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):  # typed PRNG keys travel as their raw data
        impl = jax.random.key_impl(x)
        data = global_array(jax.random.key_data(x), sharding)
        return jax.jit(lambda d: jax.random.wrap_key_data(d, impl=impl), out_shardings=sharding)(data)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def host_copy(tree):
    """Host numpy copies of a pytree of global arrays, with the shards other processes hold (an all-gather
    when several processes share the arrays)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def split_over_processes(fn: Callable, items: int) -> list:
    """[fn(i) for i in range(items)], item i computed by process i mod N and the results gathered to every
    process: independent work (projections, say) split over hosts. fn(i) returns a pytree of host arrays
    whose structure and trailing shapes do not depend on i (leading sizes may: a shorter last chunk)."""
    n, me = jax.process_count(), jax.process_index()
    if n == 1:
        return [fn(i) for i in range(items)]
    from jax.experimental import multihost_utils

    out = []
    for start in range(0, items, n):
        mine = start + me
        # A process with no item left repeats the last one (and drops it): every process joins each gather.
        local = jax.tree.map(np.asarray, fn(min(mine, items - 1)))
        sizes = multihost_utils.process_allgather(np.asarray([np.shape(x)[0] for x in jax.tree.leaves(local)]))
        longest = sizes.max(axis=0)
        padded = jax.tree.unflatten(
            jax.tree.structure(local),
            [
                np.concatenate([x, np.zeros((m - x.shape[0],) + x.shape[1:], x.dtype)]) if x.shape[0] < m else x
                for x, m in zip(jax.tree.leaves(local), longest)
            ],
        )
        gathered = multihost_utils.process_allgather(padded)  # leading axis: process
        for q in range(min(n, items - start)):
            leaves = [x[q][: sizes[q][j]] for j, x in enumerate(jax.tree.leaves(gathered))]
            out.append(jax.tree.unflatten(jax.tree.structure(local), leaves))
    return out


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
