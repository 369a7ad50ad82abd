"""Writers of checkpoint files in the public formats, for tests: no torch, TensorFlow or dnnlib involved.

* :class:`Globals` pickles throwaway classes under the global names real checkpoints use
  ('torch FloatStorage', 'dnnlib.tflib.network Network', ...). It subclasses Python's pure-Python pickler and
  writes those names itself, so nothing is registered in ``sys.modules`` and any pickle protocol works.
* :func:`write_torch_zip`: a torch >= 1.6 ``torch.save`` zip archive of a nested dict of float32 arrays.
* :func:`legacy_torch_file`: the bytes of a pre-1.6 ``torch.save`` stream.
* :func:`write_tf_pickle`: a TensorFlow StyleGAN2 network pickle, a tuple (G, D, Gs) of
  ``dnnlib.tflib.network.Network`` objects pickled through their ``__getstate__`` dicts.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
import struct
import zipfile
from typing import Any, Mapping, Optional

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
# A build_module_src that would leave this file behind if a loader ever executed it.
MARKER = 'gsd_readers_test_marker'
EVIL_MODULE_SRC = f'import os\nos.system("touch {MARKER}")\n'


class _Pickler(pickle._Pickler):  # the pure-Python pickler: its save_global can be overridden
    def __init__(self, file, protocol, names, module_renames, persistent_id=None):
        super().__init__(file, protocol=protocol, fix_imports=False)  # keep Python 3 module names
        self._names, self._module_renames = names, module_renames
        if persistent_id is not None:
            self.persistent_id = persistent_id

    def save_global(self, obj, name=None):
        real = self._names.get(obj)
        if real is None:
            qualname = name or getattr(obj, '__qualname__', None) or obj.__name__
            module = pickle.whichmodule(obj, qualname)
            if module not in self._module_renames or '.' in qualname:
                return super().save_global(obj, name)
            real = (self._module_renames[module], qualname)
        module, qualname = real
        if self.proto >= 4:
            self.save(module)
            self.save(qualname)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f'{module}\n{qualname}\n'.encode())
        self.memoize(obj)


class Globals:
    """Makes classes that pickle as given globals, and pickles objects holding them.

    ``g = Globals(); cls = g('torch', 'FloatStorage')`` gives a fresh class (subclass of `base`) that pickles as the
    global ``torch.FloatStorage``; ``g.dumps(obj)`` pickles `obj` with those names written in.
    """

    def __init__(self):
        self.names: dict[type, tuple[str, str]] = {}

    def __call__(self, module: str, name: str, base=object) -> type:
        cls = type(name, (base,), {'__module__': f'gsd_test_scratch.{module}', '__qualname__': name})
        self.names[cls] = (module, name)
        return cls

    def dumps(self, obj, persistent_id=None, protocol: int = 2, module_renames: Optional[dict] = None) -> bytes:
        """`module_renames`, e.g. {'numpy._core.multiarray': 'numpy.core.multiarray'}, respells real globals."""
        buffer = io.BytesIO()
        _Pickler(buffer, protocol, self.names, module_renames or {}, persistent_id).dump(obj)
        return buffer.getvalue()


# ---- torch ---------------------------------------------------------------------------------------------------


class Storage:
    """A torch storage: pickled as the persistent id ('storage', cls, key, 'cpu', numel[, view])."""

    def __init__(self, cls, key, data, view=None):
        self.cls, self.key, self.data, self.view = cls, key, np.asarray(data), view


class Tensor:
    """Pickles as torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""

    def __init__(self, rebuild, storage, offset, size, stride, *more):
        self.args = (rebuild, (storage, offset, size, stride, False, collections.OrderedDict(), *more))

    def __reduce__(self):
        return self.args


def torch_globals(g: Globals):
    """(_rebuild_tensor_v2, FloatStorage, BFloat16Storage, LongStorage) stand-ins."""
    rebuild = g('torch._utils', '_rebuild_tensor_v2')
    return rebuild, g('torch', 'FloatStorage'), g('torch', 'BFloat16Storage'), g('torch', 'LongStorage')


def _zip_persistent_id(x):
    if isinstance(x, Storage):
        return ('storage', x.cls, x.key, 'cpu', x.data.size)
    return None


def legacy_torch_file(g: Globals, obj, storages, storage_ids) -> bytes:
    """A pre-1.6 torch.save stream around `obj`, whose Storage objects become persistent ids."""

    def persistent_id(x):
        if isinstance(x, Storage):
            return ('storage', x.cls, x.key, 'cpu', x.data.size, x.view)
        return None

    out = io.BytesIO()
    for header in (
        LEGACY_MAGIC,
        1001,
        {'protocol_version': 1001, 'little_endian': True, 'type_sizes': {'short': 2, 'int': 4, 'long': 4}},
    ):
        pickle.dump(header, out, protocol=2)
    out.write(g.dumps(obj, persistent_id))
    pickle.dump(storage_ids, out, protocol=2)
    for s in storages:
        out.write(struct.pack('<q', s.data.size) + s.data.tobytes())
    return out.getvalue()


def _contiguous_strides(shape):
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def torch_zip_bytes(obj, archive_name: str = 'archive') -> bytes:
    """What ``torch.save(obj)`` writes for `obj`, a nested dict/list of float32 arrays and plain values.

    Each distinct array object gets one FloatStorage record; the same array object reached twice (e.g. 'g' and
    'g_ema' holding the same dict) shares its storage, as torch's shared tensors do. Dict types are kept
    (OrderedDict for state_dicts, dict for the outer checkpoint).
    """
    g = Globals()
    rebuild, float_storage = g('torch._utils', '_rebuild_tensor_v2'), g('torch', 'FloatStorage')
    storages: dict[int, Storage] = {}

    def convert(x):
        if isinstance(x, np.ndarray):
            if x.dtype != np.float32:
                raise TypeError(f'torch_zip_bytes writes float32 arrays only, got {x.dtype}')
            if id(x) not in storages:
                storages[id(x)] = Storage(float_storage, str(len(storages)), np.ascontiguousarray(x).reshape(-1))
            return Tensor(rebuild, storages[id(x)], 0, tuple(x.shape), _contiguous_strides(x.shape))
        if isinstance(x, dict):
            return type(x)((k, convert(v)) for k, v in x.items())
        if isinstance(x, (list, tuple)):
            return type(x)(convert(v) for v in x)
        return x

    data_pkl = g.dumps(convert(obj), _zip_persistent_id, protocol=2)  # torch's DEFAULT_PROTOCOL
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as archive:
        archive.writestr(f'{archive_name}/data.pkl', data_pkl)
        archive.writestr(f'{archive_name}/byteorder', 'little')
        for s in storages.values():
            archive.writestr(f'{archive_name}/data/{s.key}', s.data.astype('<f4').tobytes())
        archive.writestr(f'{archive_name}/version', '3\n')
    return out.getvalue()


def write_torch_zip(path, obj, archive_name: str = 'archive'):
    """Write :func:`torch_zip_bytes` of `obj` to `path`; returns `path`."""
    with open(path, 'wb') as f:
        f.write(torch_zip_bytes(obj, archive_name))
    return path


# ---- TensorFlow (dnnlib.tflib.network.Network) ----------------------------------------------------------------


class FakeNetwork:
    """Stands in for dnnlib.tflib.network.Network: pickled through its __getstate__ dict."""

    def __init__(self, state):
        self.state = state

    def __getstate__(self):
        return self.state

    def __setstate__(self, state):
        self.state = state


def tf_network(cls, name, func, variables, components=None, build_module_src=EVIL_MODULE_SRC, **kwargs):
    """A Network's pickled state (dnnlib/tflib/network.py __getstate__, version 4); `variables` is a list of
    (name relative to the network's scope, value)."""
    return cls(
        {
            'version': 4,
            'name': name,
            'static_kwargs': kwargs,
            'components': components or {},
            'build_module_src': build_module_src,
            'build_func_name': func,
            'variables': variables,
        }
    )


@dataclasses.dataclass
class TFNet:
    """One Network: own variables (relative names), components {key: TFNet} (named by their own `name`)."""

    name: str
    build_func_name: str
    variables: Mapping[str, Any]
    components: Mapping[str, 'TFNet'] = dataclasses.field(default_factory=dict)
    static_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def tf_net_from_vars(name: str, flat: Mapping[str, Any], **static_kwargs) -> TFNet:
    """Split a flat ``Network.vars``-style dict into the Network a TF StyleGAN2 pickle holds.

    Generators ('G_mapping/...', 'G_synthesis/...', 'dlatent_avg') become a 'G_main' network owning the
    remaining variables, with components 'mapping' (named G_mapping) and 'synthesis' (named G_synthesis);
    anything else is a 'D_stylegan2' network owning all its variables.
    """
    components = {}
    for key, comp, func in (
        ('mapping', 'G_mapping', 'G_mapping'),
        ('synthesis', 'G_synthesis', 'G_synthesis_stylegan2'),
    ):
        own = {k[len(comp) + 1 :]: v for k, v in flat.items() if k.startswith(comp + '/')}
        if own:
            components[key] = TFNet(comp, func, own)
    own = {k: v for k, v in flat.items() if k.split('/')[0] not in ('G_mapping', 'G_synthesis')}
    func = 'G_main' if components else 'D_stylegan2'
    return TFNet(name, func, own, components, static_kwargs)


def tf_pickle_bytes(
    networks: Mapping[str, Any], protocol: int = 4, numpy1: bool = True, build_module_src: str = EVIL_MODULE_SRC
) -> bytes:
    """The pickle of the tuple (G, D, Gs) (or a single network when `networks` has one entry).

    `networks` maps 'G', 'D', 'Gs' to a TFNet or to a flat ``Network.vars``-style dict (split with
    :func:`tf_net_from_vars`). Arrays are pickled by numpy itself, spelled as numpy 1.x wrote them when `numpy1`.
    protocol 4 is what dnnlib's save_pkl (pickle.HIGHEST_PROTOCOL under Python 3.6) wrote.
    """
    g = Globals()
    network_cls = g('dnnlib.tflib.network', 'Network', FakeNetwork)

    def build(net: TFNet):
        comps = {k: build(c) for k, c in net.components.items()}
        variables = [(k, np.asarray(v)) for k, v in net.variables.items()]
        return tf_network(
            network_cls,
            net.name,
            net.build_func_name,
            variables,
            comps,
            build_module_src=build_module_src,
            **net.static_kwargs,
        )

    nets = []
    for key in [k for k in ('G', 'D', 'Gs') if k in networks] + [k for k in networks if k not in ('G', 'D', 'Gs')]:
        spec = networks[key]
        nets.append(build(spec if isinstance(spec, TFNet) else tf_net_from_vars(key, spec)))
    renames = {'numpy._core.multiarray': 'numpy.core.multiarray', 'numpy._core.numeric': 'numpy.core.numeric'}
    return g.dumps(
        nets[0] if len(nets) == 1 else tuple(nets), protocol=protocol, module_renames=renames if numpy1 else None
    )


def write_tf_pickle(path, networks: Mapping[str, Any], **kwargs):
    """Write :func:`tf_pickle_bytes` to `path`; returns `path`."""
    with open(path, 'wb') as f:
        f.write(tf_pickle_bytes(networks, **kwargs))
    return path
