"""Safe readers of StyleGAN2 checkpoint containers: plain dicts and numpy arrays out, no code from a file ever run.

Format facts these readers rely on:

* torch.save zip format (torch >= 1.6): a zip archive whose one top folder (any name) holds ``data.pkl``
  (pickle protocol 2), ``byteorder`` ('little' or 'big'; older files lack it and are little-endian) and
  ``data/<key>``, one raw record per storage. Persistent ids are ``('storage', <storage class>, key, location,
  numel)``; numel counts elements of the class (bytes for ``torch.storage.UntypedStorage``).
* torch.save legacy format (before 1.6): consecutive pickles -- magic number 0x1950a86a20f9469cfc6c, protocol
  version 1001, a sys_info dict (``little_endian``, ``type_sizes``), the main pickle with persistent ids
  ``('storage', <storage class>, root_key, location, numel, view_metadata)`` (view_metadata None or ``(view_key,
  element_offset, view_numel)``), then the list of root keys; then per key, in that order, an int64 element
  count and the raw bytes.
* Tensors are ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, meta])``;
  ``_rebuild_tensor_v3`` appends a dtype global (``torch float32``...) read over an untyped storage. Offset and
  stride count elements, so tensors may be overlapping views of one storage (rosinality_public.pt is).
* stylegan2-ada-pytorch / stylegan3 snapshots: a dict whose networks are
  ``torch_utils.persistence._reconstruct_persistent_obj(meta)``. The original loader exec()s
  ``meta['module_src']``; here it stays text. ``meta['state']`` is the torch module's ``__dict__``; each tensor's
  storage is ``torch.storage._load_from_bytes(blob)``, blob being a legacy torch.save of that storage alone.
* TensorFlow StyleGAN2 pickles: a tuple (G, D, Gs) of ``dnnlib.tflib.network.Network``, pickled through
  ``__getstate__`` (NVlabs/stylegan2 dnnlib/tflib/network.py): {version, name, static_kwargs, components,
  build_module_src, build_func_name, variables}. ``variables`` holds only the network's own variables as (name
  relative to its scope, value); ``components`` are nested Networks (Gs: 'mapping' named 'G_mapping',
  'synthesis' named 'G_synthesis'). ``Network.vars`` -- what rosinality/stylegan2-pytorch convert_weight.py
  indexes: 'G_mapping/Dense0/weight', 'G_synthesis/4x4/Const/const', 'G_synthesis/noise0', 'dlatent_avg';
  D: '1024x1024/FromRGB/weight', '4x4/Dense0/weight', 'Output/weight' -- is the own variables followed by each
  component's vars prefixed with the component's *name* (not its key) and '/'; the state_dict here is exactly that.
"""

import functools
import io
import math
import os
import pickle
import struct
import zipfile

import numpy as np

from gsd import errors

__all__ = ['CheckpointError', 'read_checkpoint_file', 'read_pickle_file', 'read_torch_file']

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_LEGACY_HEAD = pickle.dumps(_LEGACY_MAGIC, protocol=2)  # torch's legacy writer always uses protocol 2
_ZIP_MAGIC = (b'PK\x03\x04', b'PK\x05\x06')  # a local file header; an empty archive's end record

# torch element type -> numpy type code, byte order added per file. bfloat16 is read as its 16 raw bits.
_ELEMENTS = {
    'float32': 'f4',
    'float64': 'f8',
    'float16': 'f2',
    'bfloat16': 'u2',
    'int64': 'i8',
    'int32': 'i4',
    'int16': 'i2',
    'int8': 'i1',
    'uint8': 'u1',
    'bool': 'b1',
    'complex64': 'c8',
    'complex128': 'c16',
    'uint16': 'u2',
    'uint32': 'u4',
    'uint64': 'u8',
}
_STORAGE_CLASSES = {
    'FloatStorage': 'float32',
    'DoubleStorage': 'float64',
    'HalfStorage': 'float16',
    'BFloat16Storage': 'bfloat16',
    'LongStorage': 'int64',
    'IntStorage': 'int32',
    'ShortStorage': 'int16',
    'CharStorage': 'int8',
    'ByteStorage': 'uint8',
    'BoolStorage': 'bool',
    'ComplexFloatStorage': 'complex64',
    'ComplexDoubleStorage': 'complex128',
}


class CheckpointError(errors.GsdError, ValueError):
    """One-line message: '<path>: <problem>'."""


class _Bad(Exception):
    """A problem in the file's content; the public reader adds the path."""


def _error(path, problem):
    return CheckpointError(' '.join(f'{path}: {problem}'.splitlines()))


def _reader(read):
    """Turns every failure on corrupt input into one CheckpointError naming the file."""

    @functools.wraps(read)
    def guarded(path):
        try:
            return read(os.fspath(path))
        except CheckpointError:
            raise
        except _Bad as e:
            raise _error(path, e) from None
        except FileNotFoundError:
            raise _error(path, 'no such file') from None
        except OSError as e:
            raise _error(path, f'cannot read ({e.strerror or e})') from None
        except (pickle.UnpicklingError, EOFError) as e:
            raise _error(path, f'truncated or corrupt pickle ({e})') from e
        except zipfile.BadZipFile as e:
            raise _error(path, f'truncated or corrupt zip archive ({e})') from e
        except Exception as e:  # noqa: BLE001 -- struct, numpy, recursion... on a corrupt file: one error type
            raise _error(path, f'corrupt file ({type(e).__name__}: {e})') from e

    return guarded


def _is_count(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


# ---- stand-ins: the only objects find_class hands out ----------------------------------------------------------


class _Sealed:
    # pickle's BUILD would otherwise write into these objects' attributes; the ones handed out by find_class are
    # shared by every later read, so a file could tamper with how other files are read.
    __slots__ = ()

    def __setstate__(self, state):
        raise _Bad(f'refuses to set the state of a {type(self).__name__.lstrip("_")}')


class _Call(_Sealed):
    """A stand-in function the file may call."""

    __slots__ = ('_fn',)

    def __init__(self, fn):
        self._fn = fn

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)


class _Marker(_Sealed):
    """A global the file may name but never call: a storage class, a torch dtype, numpy.ndarray."""

    __slots__ = ('qualname', 'kind', 'element')

    def __init__(self, qualname, kind, element=None):
        self.qualname, self.kind, self.element = qualname, kind, element

    def __call__(self, *args, **kwargs):
        raise _Bad(f'{self.qualname} may only be named, not called')


class _Mapping(dict):
    """collections.OrderedDict, dnnlib EasyDict; their pickled attributes (torch's _metadata) are not needed."""

    def __setstate__(self, state):
        pass


class _Namespace(dict):
    """argparse.Namespace (the 'args' of rosinality training checkpoints): its attributes become the items."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise _Bad('argparse.Namespace state is not a dict')
        self.update(state)


class _Storage(_Sealed):
    """A torch storage read as `element`; bytes live on `root`, a legacy view starts `offset` elements in."""

    __slots__ = ('element', 'key', 'root', 'offset', 'data', 'order')

    def __init__(self, element, key, root=None, offset=0, data=None, order='<'):
        self.element, self.key, self.offset = element, key, offset
        self.root = root if root is not None else self
        self.data, self.order = data, order


class _Tensor(_Sealed):
    """A _rebuild_tensor call, made an array once the storage bytes are known (legacy: after the pickle)."""

    __slots__ = ('storage', 'offset', 'size', 'stride', 'element')

    def __init__(self, storage, offset, size, stride, element=None):
        if not isinstance(storage, _Storage):
            raise _Bad(f'tensor over a {type(storage).__name__}, not a storage')
        size, stride = tuple(size), tuple(stride)
        if not (_is_count(offset) and len(size) == len(stride) and all(map(_is_count, size + stride))):
            raise _Bad(f'bad tensor geometry (offset {offset!r}, size {size!r}, stride {stride!r})')
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.element = element or storage.element


class _PersistentObj(_Sealed):
    """An NVIDIA persistent network: its meta dict, module_src kept as text only."""

    __slots__ = ('meta',)

    def __init__(self, meta):
        self.meta = meta


class _NumpyArray:
    """numpy.core.multiarray._reconstruct's result; the array's content arrives later through BUILD."""

    state = None

    def __setstate__(self, state):
        self.state = state


class _TFNetwork:
    """dnnlib.tflib.network.Network: the __getstate__ dict, build_module_src kept as text only."""

    state = None

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise _Bad('dnnlib.tflib.network.Network state is not a dict')
        self.state = state


def _rebuild_tensor(storage, offset, size, stride, *_requires_grad_hooks_metadata):
    return _Tensor(storage, offset, size, stride)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    if not (isinstance(dtype, _Marker) and dtype.kind == 'dtype'):
        raise _Bad(f'_rebuild_tensor_v3 dtype is a {type(dtype).__name__}')
    return _Tensor(storage, offset, size, stride, dtype.element)


def _rebuild_parameter(data, requires_grad, hooks, state=None):
    if not isinstance(data, _Tensor):
        raise _Bad(f'parameter over a {type(data).__name__}, not a tensor')
    return data


def _reconstruct_persistent_obj(meta):
    if not (
        isinstance(meta, dict)
        and meta.get('type') == 'class'
        and isinstance(meta.get('class_name'), str)
        and isinstance(meta.get('state'), dict)
    ):
        raise _Bad('persistent object meta is not {type: class, class_name, state, ...}')
    return _PersistentObj(meta)


def _load_from_bytes(blob):
    if not isinstance(blob, bytes):
        raise _Bad('torch.storage._load_from_bytes without bytes')
    try:
        storage = _read_legacy(io.BytesIO(blob))
    except _Bad as e:
        raise _Bad(f'embedded storage: {e}') from None
    if not isinstance(storage, _Storage):
        raise _Bad(f'embedded storage blob holds a {type(storage).__name__}')
    return storage


def _as_bytes(data):
    if isinstance(data, str):  # a Python 2 pickle's str, read with encoding='latin1'
        return data.encode('latin1')
    if not isinstance(data, (bytes, bytearray)):
        raise _Bad(f'array data is a {type(data).__name__}, not bytes')
    return bytes(data)


def _checked_dtype(dtype):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise _Bad(f'refuses numpy dtype {dtype!r} (only plain data is read)')
    return dtype


def _np_dtype(spec, align=False, copy=True):
    if not isinstance(spec, str):
        raise _Bad(f'numpy.dtype of a {type(spec).__name__}')
    # Always a copy: BUILD then runs dtype.__setstate__, which must never touch numpy's shared builtin dtypes.
    return _checked_dtype(np.dtype(spec, align=bool(align), copy=True))


def _np_reconstruct(subtype, shape, code):
    if not (isinstance(subtype, _Marker) and subtype.kind == 'ndarray'):
        raise _Bad('numpy _reconstruct of something other than numpy.ndarray')
    return _NumpyArray()


def _np_scalar(dtype, data=b''):
    dtype, data = _checked_dtype(dtype), _as_bytes(data)
    if len(data) != dtype.itemsize:
        raise _Bad(f'numpy scalar of {dtype} with {len(data)} bytes')
    return np.frombuffer(data, dtype)[0].copy()


def _np_frombuffer(buf, dtype, shape, order):
    dtype, data = _checked_dtype(dtype), _as_bytes(buf)
    count = math.prod(shape)
    if len(data) != count * dtype.itemsize:
        raise _Bad(f'numpy array of shape {shape} with {len(data)} bytes')
    return np.frombuffer(data, dtype, count).reshape(shape, order=order).copy()


def _ndarray_from_state(state):
    if not (isinstance(state, tuple) and len(state) in (4, 5)):  # numpy writes (version, shape, dtype, F, data)
        raise _Bad('numpy array without a valid state')
    shape, dtype, fortran, data = state[-4:]
    shape = tuple(shape)
    if not all(map(_is_count, shape)):
        raise _Bad(f'numpy array of shape {shape!r}')
    return _np_frombuffer(data, dtype, shape, 'F' if fortran else 'C')


def _codecs_encode(text, encoding='utf-8'):
    # Protocol-2 pickles spell bytes as _codecs.encode(latin1_text, 'latin1'); nothing else is needed.
    if not (isinstance(text, str) and encoding in ('latin1', 'latin-1')):
        raise _Bad(f'_codecs.encode other than (text, latin1): encoding {encoding!r}')
    return text.encode('latin1')


def _set(items=()):
    if not isinstance(items, (list, tuple)):
        raise _Bad(f'builtins.set of a {type(items).__name__}')
    return set(items)


# ---- allowlists ----------------------------------------------------------------------------------------------

_TENSORS = {
    ('torch._utils', '_rebuild_tensor'): _Call(_rebuild_tensor),
    ('torch._utils', '_rebuild_tensor_v2'): _Call(_rebuild_tensor),
    ('torch._utils', '_rebuild_tensor_v3'): _Call(_rebuild_tensor_v3),
    ('torch._utils', '_rebuild_parameter'): _Call(_rebuild_parameter),
    ('torch._utils', '_rebuild_parameter_with_state'): _Call(_rebuild_parameter),
    ('torch.storage', 'UntypedStorage'): _Marker('torch.storage.UntypedStorage', 'storage', 'uint8'),
}
_TENSORS.update(
    {('torch', name): _Marker(f'torch.{name}', 'storage', element) for name, element in _STORAGE_CLASSES.items()}
)
_TENSORS.update({('torch', element): _Marker(f'torch.{element}', 'dtype', element) for element in _ELEMENTS})

_TORCH_GLOBALS = {**_TENSORS, ('collections', 'OrderedDict'): _Mapping, ('argparse', 'Namespace'): _Namespace}

_PICKLE_COMMON = {
    ('collections', 'OrderedDict'): _Mapping,
    ('dnnlib.util', 'EasyDict'): _Mapping,
    ('builtins', 'set'): _Call(_set),
    ('__builtin__', 'set'): _Call(_set),
    ('_codecs', 'encode'): _Call(_codecs_encode),
    ('numpy', 'dtype'): _Call(_np_dtype),
    ('numpy', 'ndarray'): _Marker('numpy.ndarray', 'ndarray'),
}
for _core in ('numpy.core', 'numpy._core'):  # numpy 1.x and 2.x spellings
    _PICKLE_COMMON.update(
        {
            (f'{_core}.multiarray', '_reconstruct'): _Call(_np_reconstruct),
            (f'{_core}.multiarray', 'scalar'): _Call(_np_scalar),
            (f'{_core}.numeric', '_frombuffer'): _Call(_np_frombuffer),
        }
    )

# The first format-specific global decides which format a pickle is; the other format's globals are then refused.
_PICKLE_FORMATS = {
    'nvidia-pytorch': {
        **_TENSORS,
        ('torch.storage', '_load_from_bytes'): _Call(_load_from_bytes),
        ('torch_utils.persistence', '_reconstruct_persistent_obj'): _Call(_reconstruct_persistent_obj),
    },
    'nvidia-tf': {('dnnlib.tflib.network', 'Network'): _TFNetwork},
}


class _Unpickler(pickle.Unpickler):
    """Resolves globals only through `allowed` and persistent ids only through `storage`."""

    def __init__(self, file, label, allowed, storage=None):
        super().__init__(file, encoding='latin1')  # latin1: Python 2 numpy data must arrive as raw bytes
        self.label, self._allowed, self._storage = label, allowed, storage

    def _refuse(self, module, name):
        return _Bad(f"refuses global '{module}.{name}' (not allowed in a {self.label} file)")

    def find_class(self, module, name):
        if (module, name) not in self._allowed:
            raise self._refuse(module, name)
        return self._allowed[module, name]

    def persistent_load(self, pid):
        if self._storage is None:
            raise _Bad(f'refuses persistent id {pid!r:.80} (not allowed in a {self.label} file)')
        return self._storage(pid)


class _NetworkUnpickler(_Unpickler):
    def __init__(self, file):
        super().__init__(file, 'NVIDIA network pickle', _PICKLE_COMMON)

    def find_class(self, module, name):
        if self._allowed is _PICKLE_COMMON:  # format not known yet: its first own global decides it
            for label, table in _PICKLE_FORMATS.items():
                if (module, name) in table:
                    self.label, self._allowed = label, {**_PICKLE_COMMON, **table}
                    break
        return super().find_class(module, name)


def _load_plain(f):
    return _Unpickler(f, 'torch', {}).load()


def _storage_pid(pid, length):
    if not (isinstance(pid, tuple) and len(pid) == length and pid[0] == 'storage'):
        raise _Bad(f'refuses persistent id {pid!r:.80} (not a torch storage id)')
    _, kind, key, _location, numel = pid[:5]
    if not (isinstance(kind, _Marker) and kind.kind == 'storage' and isinstance(key, str) and _is_count(numel)):
        raise _Bad(f'refuses persistent id {pid!r:.80} (not a torch storage id)')
    return kind.element, key, numel


def _itemsize(element):
    return np.dtype(_ELEMENTS[element]).itemsize


# ---- containers ----------------------------------------------------------------------------------------------


def _read_exact(f, n, what):
    here = f.tell()
    left = f.seek(0, io.SEEK_END) - here
    f.seek(here)
    if n > left:  # checked before reading: a corrupt size must not make us allocate it
        raise _Bad(f'file ends inside {what} ({left} of {n} bytes)')
    return f.read(n)


def _read_legacy(f):
    """The pre-1.6 torch.save stream: header pickles, main pickle, key list, then the storage records."""
    if f.read(len(_LEGACY_HEAD)) != _LEGACY_HEAD:
        raise _Bad('not a torch.save file (neither a zip archive nor the legacy magic number)')
    if _load_plain(f) != _LEGACY_PROTOCOL:
        raise _Bad('unsupported legacy torch protocol version')
    sys_info = _load_plain(f)
    if not isinstance(sys_info, dict):
        raise _Bad('legacy torch sys_info is not a dict')
    order = '<' if sys_info.get('little_endian', True) else '>'
    roots, views = {}, {}

    def storage(pid):
        element, key, _ = _storage_pid(pid, 6)
        if key not in roots:
            roots[key] = _Storage(element, key, order=order)
        root = roots[key]
        if root.element != element:
            raise _Bad(f'storage {key!r} is read both as {root.element} and {element}')
        if pid[5] is None:
            return root
        view_key, offset, _view_numel = pid[5]
        if not (isinstance(view_key, str) and _is_count(offset)):
            raise _Bad(f'bad storage view {pid[5]!r:.80}')
        return views.setdefault(view_key, _Storage(element, view_key, root, offset))

    obj = _Unpickler(f, 'torch', _TORCH_GLOBALS, storage).load()
    keys = _load_plain(f)
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise _Bad('legacy torch storage key list is not a list of str')
    for key in keys:
        if key not in roots:
            raise _Bad(f'storage list names unknown storage {key!r}')
        root = roots[key]
        (count,) = struct.unpack(order + 'q', _read_exact(f, 8, f'storage {key!r} header'))
        if count < 0:
            raise _Bad(f'storage {key!r} has negative size {count}')
        root.data = np.frombuffer(_read_exact(f, count * _itemsize(root.element), f'storage {key!r}'), np.uint8)
    missing = sorted(k for k, s in roots.items() if s.data is None)
    if missing:
        raise _Bad(f'missing storage record(s) {missing}')
    return obj


def _read_zip(path):
    """The torch >= 1.6 zip format; storage records are read once per key, as the pickle names them."""
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        pickles = [n for n in names if n == 'data.pkl' or (n.endswith('/data.pkl') and n.count('/') == 1)]
        if len(pickles) != 1:
            raise _Bad(f'zip archive has {len(pickles) or "no"} data.pkl (not a torch.save file)')
        prefix = pickles[0][: -len('data.pkl')]
        order = '<'
        if prefix + 'byteorder' in names:
            order = {b'little': '<', b'big': '>'}.get(archive.read(prefix + 'byteorder').strip())
            if order is None:
                raise _Bad('unknown byteorder record')
        raw = {}

        def storage(pid):
            element, key, numel = _storage_pid(pid, 5)
            name = f'{prefix}data/{key}'
            if key not in raw:
                if name not in names:
                    raise _Bad(f'missing storage record {name!r}')
                raw[key] = np.frombuffer(archive.read(name), np.uint8)
            if raw[key].size < numel * _itemsize(element):
                raise _Bad(f'storage record {name!r} holds {raw[key].size} bytes, {numel} x {element} declared')
            return _Storage(element, key, data=raw[key], order=order)

        with archive.open(pickles[0]) as f:
            return _Unpickler(f, 'torch', _TORCH_GLOBALS, storage).load()


def _tensor_array(t):
    """Copy a (possibly strided, overlapping, offset) view out of its storage as an owned native-order array."""
    root = t.storage.root
    if root.data is None:
        raise _Bad(f'storage {root.key!r} has no data record')
    dtype = np.dtype(root.order + _ELEMENTS[t.element])
    start = t.storage.offset * _itemsize(t.storage.element) + t.offset * dtype.itemsize
    if 0 in t.size:
        return np.zeros(t.size, dtype.newbyteorder('='))
    end = start + (1 + sum((n - 1) * s for n, s in zip(t.size, t.stride))) * dtype.itemsize
    if end > root.data.size:
        raise _Bad(
            f'tensor of size {t.size}, stride {t.stride}, offset {t.offset} needs {end} bytes of storage '
            f'{root.key!r}, which holds {root.data.size}'
        )
    view = np.ndarray(
        t.size, dtype, buffer=root.data, offset=start, strides=tuple(s * dtype.itemsize for s in t.stride)
    )
    array = view.astype(dtype.newbyteorder('='), order='C', copy=True)
    if t.element == 'bfloat16':  # bfloat16 is the top half of a float32
        widened = np.empty(t.size, np.float32)
        widened.view(np.uint32)[...] = array.astype(np.uint32) << 16
        return widened
    return array


def _plain(obj, memo):
    """Stand-ins -> arrays, mappings -> dicts; networks stay wrapped for the caller. Shared objects stay shared."""
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, dict):
        out = memo[id(obj)] = {}
        out.update((_plain(k, memo), _plain(v, memo)) for k, v in obj.items())
        return out
    if isinstance(obj, list):
        out = memo[id(obj)] = []
        out.extend(_plain(v, memo) for v in obj)
        return out
    if isinstance(obj, (_PersistentObj, _TFNetwork)):
        memo[id(obj)] = obj
        attr = 'meta' if isinstance(obj, _PersistentObj) else 'state'
        setattr(obj, attr, _plain(getattr(obj, attr), memo))
        return obj
    if isinstance(obj, tuple):
        out = tuple(_plain(v, memo) for v in obj)
    elif isinstance(obj, (set, frozenset)):
        out = {_plain(v, memo) for v in obj}
    elif isinstance(obj, _Tensor):
        out = _tensor_array(obj)
    elif isinstance(obj, _Storage):
        count = (obj.root.data.size if obj.root.data is not None else 0) // _itemsize(obj.element) - obj.offset
        out = _tensor_array(_Tensor(obj, 0, (max(count, 0),), (1,), None))
    elif isinstance(obj, _NumpyArray):
        out = _ndarray_from_state(obj.state)
    elif isinstance(obj, _Marker):
        out = obj.qualname
    elif isinstance(obj, np.ndarray):
        _checked_dtype(obj.dtype)
        out = obj
    elif obj is None or isinstance(obj, (str, bytes, bytearray, int, float, complex, np.generic, np.dtype)):
        out = obj
    else:
        raise _Bad(f'unexpected {type(obj).__name__} object in the file')
    memo[id(obj)] = out
    return out


# ---- networks ------------------------------------------------------------------------------------------------


def _module_state_dict(state, prefix, out):
    """What torch's module.state_dict() gives: own parameters, persistent buffers, then children, dotted."""
    skip = state.get('_non_persistent_buffers_set') or set()
    for group in ('_parameters', '_buffers'):
        for name, value in (state.get(group) or {}).items():
            if value is None or (group == '_buffers' and name in skip):
                continue
            if not isinstance(value, np.ndarray):
                raise _Bad(f'{prefix}{name} is a {type(value).__name__}, not a tensor')
            out[prefix + name] = value
    for name, child in (state.get('_modules') or {}).items():
        if child is None:
            continue
        if not isinstance(child, _PersistentObj):
            raise _Bad(f'submodule {prefix}{name} is a {type(child).__name__}, not a persistent module')
        _module_state_dict(child.meta['state'], f'{prefix}{name}.', out)
    return out


def _torch_network(obj):
    state = obj.meta['state']
    return {
        'class_name': obj.meta['class_name'],
        'init_kwargs': state.get('_init_kwargs') or {},
        'state_dict': _module_state_dict(state, '', {}),
    }


def _tf_variables(net, prefix, out):
    state = net.state or {}
    variables, components = state.get('variables'), state.get('components') or {}
    if not isinstance(variables, list):
        raise _Bad(f'TF network {prefix or state.get("name")!r} has no variables list')
    for name, value in variables:
        if not isinstance(value, (np.ndarray, np.generic, int, float)):
            raise _Bad(f'TF variable {prefix}{name} is a {type(value).__name__}')
        out[prefix + name] = np.array(value)
    for comp in components.values():
        if not (isinstance(comp, _TFNetwork) and isinstance((comp.state or {}).get('name'), str)):
            raise _Bad(f'TF network {prefix!r} has a component that is not a named Network')
        _tf_variables(comp, f'{prefix}{comp.state["name"]}/', out)
    return out


def _tf_network(net):
    return {
        'class_name': net.state.get('build_func_name'),
        'init_kwargs': net.state.get('static_kwargs') or {},
        'state_dict': _tf_variables(net, '', {}),
    }


def _unwrap_networks(obj):
    if isinstance(obj, _PersistentObj):
        return _torch_network(obj)
    if isinstance(obj, _TFNetwork):
        return _tf_network(obj)
    if isinstance(obj, dict):
        return {k: _unwrap_networks(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap_networks(v) for v in obj)
    return obj


def _describe(obj):
    if isinstance(obj, dict):
        return f'a dict with keys {sorted(map(str, obj))[:8]}'
    return f'a {type(obj).__name__}'


# ---- public API ----------------------------------------------------------------------------------------------


@_reader
def read_torch_file(path):
    """A torch.save file (zip or legacy format) as plain data: tensors and storages -> owned numpy arrays."""
    with open(path, 'rb') as f:
        if f.read(4) not in _ZIP_MAGIC:
            f.seek(0)
            return _plain(_read_legacy(f), {})
    return _plain(_read_zip(path), {})


@_reader
def read_pickle_file(path):
    """An NVIDIA network pickle (stylegan2-ada-pytorch/stylegan3 snapshot or TF StyleGAN2 (G, D, Gs))."""
    with open(path, 'rb') as f:
        if f.read(4) in _ZIP_MAGIC:
            raise _Bad('a zip archive (torch.save or .npz), not a pickle')
        f.seek(0)
        obj = _plain(_NetworkUnpickler(f).load(), {})
    if isinstance(obj, dict) and any(isinstance(v, _PersistentObj) for v in obj.values()):
        return {
            'format': 'nvidia-pytorch',
            'networks': {k: _torch_network(v) for k, v in obj.items() if isinstance(v, _PersistentObj)},
            'extra': {k: _unwrap_networks(v) for k, v in obj.items() if not isinstance(v, _PersistentObj)},
        }
    nets = (obj,) if isinstance(obj, _TFNetwork) else obj
    if isinstance(nets, (tuple, list)) and nets and all(isinstance(n, _TFNetwork) for n in nets):
        names = ('G', 'D', 'Gs') if len(nets) == 3 else [n.state.get('name') for n in nets]
        return {'format': 'nvidia-tf', 'networks': {k: _tf_network(n) for k, n in zip(names, nets)}, 'extra': {}}
    raise _Bad(f'not a StyleGAN2 network pickle: it holds {_describe(obj)}')


@_reader
def read_checkpoint_file(path):
    """Sniff the content: ('torch', obj), ('npz', {name: array}), ('nvidia-pytorch' | 'nvidia-tf', pickle dict)."""
    with open(path, 'rb') as f:
        head = f.read(len(_LEGACY_HEAD))
    if head[:4] in _ZIP_MAGIC:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(n == 'data.pkl' or n.endswith('/data.pkl') for n in names):
            return 'torch', read_torch_file(path)
        if names and all(n.endswith('.npy') for n in names):
            with np.load(path, allow_pickle=False) as npz:
                return 'npz', {name: npz[name] for name in npz.files}
        raise _Bad('zip archive is neither a torch.save file (no data.pkl) nor an .npz file')
    if head == _LEGACY_HEAD:
        return 'torch', read_torch_file(path)
    if head[:1] == b'\x80':
        result = read_pickle_file(path)
        return result['format'], result
    raise _Bad('empty file' if not head else 'not a torch checkpoint, .npz or pickle file')
