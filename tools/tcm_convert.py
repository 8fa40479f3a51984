#!/usr/bin/env python3
"""tcm-convert: turns a released NVlabs TCM checkpoint into a tcm-serve model directory.

The model directory holds
  config.pbtxt         a tcm.v1.ModelConfig (proto/tcm/v1/model_config.proto) in protobuf text format
  weights.safetensors  the reference ECMPrecond state_dict, key names unchanged, every tensor F32
  labels.txt           optional, one class name per line

Inputs: an NVlabs `network-snapshot-*.pkl` (a pickled dict whose `ema` entry is the
ECMPrecond network), a `.pth`/`.pt` file holding a state dict or a network, or a
`.safetensors` state dict. The architecture comes from the checkpoint when it carries
one (the network's `init_kwargs`, or the safetensors `config` metadata), else from
--preset or --config-json. The architecture is held to tcm-serve's size limits and the
state dict checked against it (names, shapes, finite values) before anything is written,
and the directory appears all at once or not at all.

Needs numpy; PyTorch only for .pkl/.pth/.pt inputs. A .pth/.pt is read with
torch.load(weights_only=True), which builds tensors and containers only. Full unpickling
runs code from the file: an NVlabs .pkl always needs it (its persistence classes are code),
and so does a .pth/.pt holding a network; both are refused unless --trust-pickle is given,
which is for files from a trusted source only.
"""

import argparse
import copy
import json
import math
import os
import pickle
import re
import shutil
import struct
import sys
import tempfile
from collections.abc import Mapping

try:
    import numpy as np
except ImportError:  # pragma: no cover - depends on the interpreter
    sys.exit('tcm-convert: error: needs numpy (Debian: apt-get install python3-numpy python3-torch)')

PROG = 'tcm-convert'
WEIGHTS_FORMAT = 'state_dict of ECMPrecond'

# The three released TCM models, as NVlabs/TCM ct_train.py builds them.
PRESETS = {
    'tcm-ddpmpp-cifar10': dict(
        img_resolution=32, img_channels=3, label_dim=0, model_type='SongUNet',
        embedding_type='positional', encoder_type='standard', decoder_type='standard',
        channel_mult_noise=1, resample_filter=[1, 1], model_channels=128, channel_mult=[2, 2, 2]),
    'tcm-edm2-s-img64': dict(
        img_resolution=64, img_channels=3, label_dim=1000, model_type='EDM2UNet', model_channels=192),
    'tcm-edm2-xl-img64': dict(
        img_resolution=64, img_channels=3, label_dim=1000, model_type='EDM2UNet', model_channels=384),
}
SAMPLING_DEFAULTS = dict(t_max=80.0, mid_t=0.821, default_steps=1)

# ECMPrecond's own arguments: positional order, and those the server has no use for.
PRECOND_POSITIONAL = ('img_resolution', 'img_channels', 'label_dim', 'use_fp16',
                      'sigma_min', 'sigma_max', 'sigma_data', 'model_type')
PRECOND_DROPPED = ('use_fp16', 'sigma_min', 'sigma_max')

# Per architecture: the proto block name; (kwarg, proto field, kind) in proto field
# order; what a None kwarg becomes (None = omit the field); the reference defaults of
# fields that proto3 cannot mark as unset (so they must be written out); kwargs that
# are dropped; kwargs accepted with one value only.
NETWORKS = {
    'EDM2UNet': dict(
        block='edm2',
        fields=[('model_channels', 'model_channels', 'uint'), ('channel_mult', 'channel_mult', 'uints'),
                ('channel_mult_noise', 'channel_mult_noise', 'uint'),
                ('channel_mult_emb', 'channel_mult_emb', 'uint'), ('num_blocks', 'num_blocks', 'uint'),
                ('attn_resolutions', 'attn_resolutions', 'uints'), ('label_balance', 'label_balance', 'float'),
                ('concat_balance', 'concat_balance', 'float'), ('emb_norm', 'emb_norm', 'bool'),
                ('scale', 'fourier_scale', 'float'), ('learnable_scale', 'learnable_scale', 'bool'),
                ('channels_per_head', 'channels_per_head', 'uint'), ('res_balance', 'res_balance', 'float'),
                ('attn_balance', 'attn_balance', 'float'), ('clip_act', 'clip_act', 'float'),
                ('resample_filter', 'resample_filter', 'floats'), ('dropout', 'dropout', 'float'),
                ('dout_resolutions', 'dout_resolutions', 'uints')],
        nulls=dict(channel_mult_noise=None, channel_mult_emb=None, clip_act=0.0),
        implicit=dict(model_channels=192, channel_mult=[1, 2, 3, 4], num_blocks=3, attn_resolutions=[16, 8]),
        dropped=(), fixed={}),
    'SongUNet': dict(
        block='song',
        fields=[('model_channels', 'model_channels', 'uint'), ('channel_mult', 'channel_mult', 'uints'),
                ('channel_mult_emb', 'channel_mult_emb', 'uint'), ('num_blocks', 'num_blocks', 'uint'),
                ('attn_resolutions', 'attn_resolutions', 'uints'), ('embedding_type', 'embedding_type', 'str'),
                ('channel_mult_noise', 'channel_mult_noise', 'uint'), ('encoder_type', 'encoder_type', 'str'),
                ('decoder_type', 'decoder_type', 'str'), ('resample_filter', 'resample_filter', 'floats'),
                ('scale', 'fourier_scale', 'float'), ('learnable_scale', 'learnable_scale', 'bool'),
                ('emb_norm', 'emb_norm', 'bool'), ('augment_dim', 'augment_dim', 'uint'),
                ('dropout', 'dropout', 'float')],
        nulls={},
        implicit=dict(model_channels=128, channel_mult=[1, 2, 2, 2], num_blocks=4, attn_resolutions=[16],
                      dropout=0.1),
        dropped=('label_dropout',), fixed=dict(attn_type='dot')),
}
SONG_CHOICES = dict(embedding_type=('positional', 'fourier'), encoder_type=('standard', 'skip', 'residual'),
                    decoder_type=('standard', 'skip'))


class ServerLimits:
    """The sizes tcm-serve accepts: a copy of ConfigLimits in model/model_config.h, applied
    as CheckLimits in model/model_config.cc does. Keep the numbers in step with it. Checked
    before the state dict check builds shapes, whose loops run num_blocks x levels times."""
    MAX_RESOLUTION = 4096         # img_resolution, attn/dout_resolutions entries
    IMAGE_CHANNELS = (1, 3, 4)    # img_channels (kImageChannelChoices): grey, RGB, RGBA
    MAX_CLASSES = 100000          # num_classes (label_dim)
    MAX_MODEL_CHANNELS = 4096     # model_channels
    MAX_CHANNEL_MULT = 64         # each channel_mult entry, channel_mult_emb/noise
    MAX_LEVELS = 8                # entries of channel_mult
    MAX_LEVEL_CHANNELS = 16384    # model_channels x any multiplier
    MAX_BLOCKS = 64               # num_blocks
    MAX_CHANNELS_PER_HEAD = 4096  # edm2 channels_per_head
    MAX_AUGMENT_DIM = 1024        # song augment_dim
    MAX_FILTER_TAPS = 16          # resample_filter entries
    MAX_LIST_ENTRIES = 16         # attn_resolutions, dout_resolutions entries
    MAX_PARAMETERS = 4e9          # estimated weights of the network
    MAX_BATCH_ACTIVATION_VALUES = 2.0 ** 32  # estimated activation values of a whole batch
    DEFAULT_MAX_BATCH_SIZE = 16   # kDefaultMaxBatchSize (common/batching_defaults.h): no batching block is written
    MAX_T_MAX = 1e4               # t_max

# A name tcm-serve serves a model under (CheckModelName in model/model_config.cc);
# one starting with "." (".", "..", a hidden staging folder's) is refused besides.
MODEL_NAME = re.compile(r'[A-Za-z0-9._-]{1,200}')


class ConvertError(Exception):
    """A bad input or option; main() reports it as one `tcm-convert: error:` line."""


# ---------------------------------------------------------------------------
# safetensors

SAFETENSORS_DTYPES = {
    'F64': '<f8', 'F32': '<f4', 'F16': '<f2', 'BF16': '<u2', 'I64': '<i8', 'I32': '<i4', 'I16': '<i2',
    'I8': 'i1', 'U64': '<u8', 'U32': '<u4', 'U16': '<u2', 'U8': 'u1', 'BOOL': '?',
}


def read_safetensors(path):
    """Returns ({name: ndarray}, metadata) of a safetensors file, in header order.

    Arrays are read-only views of a memory map (BF16 is widened to float32).
    Raises ConvertError naming the file and the tensor for a truncated or malformed file."""
    size = os.path.getsize(path)
    if size < 8:
        raise ConvertError(f'{path}: truncated safetensors file ({size} bytes, no header)')
    with open(path, 'rb') as f:
        header_len = struct.unpack('<Q', f.read(8))[0]
        if header_len > size - 8:
            raise ConvertError(f'{path}: truncated safetensors file (header of {header_len} bytes, '
                               f'file has {size - 8} after the length)')
        header = _parse_json(f.read(header_len), f'{path}: bad safetensors header')
    if not isinstance(header, dict):
        raise ConvertError(f'{path}: bad safetensors header: not a JSON object')
    metadata = header.pop('__metadata__', None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ConvertError(f'{path}: bad safetensors header: "__metadata__" must map strings to strings')
    start = 8 + header_len
    data = np.memmap(path, np.uint8, 'r', offset=start) if size > start else np.zeros(0, np.uint8)
    return {name: _safetensors_array(path, name, spec, data) for name, spec in header.items()}, metadata


def _parse_json(data, what):
    """The JSON value in `data` (bytes or str); ConvertError starting with `what` when it is
    not UTF-8 JSON or is nested too deeply for the parser."""
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError) as e:
        raise ConvertError(f'{what}: {e}') from e
    except RecursionError as e:
        raise ConvertError(f'{what}: nested too deeply') from e


def _is_index_list(value):
    """True for a JSON list of non-negative integers (not bools, not floats)."""
    return isinstance(value, list) and all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value)


def _safetensors_array(path, name, spec, data):
    """One tensor of a safetensors file: `spec` is its header entry, `data` the data section."""
    fields = spec if isinstance(spec, dict) else {}
    dtype_name, shape, offsets = fields.get('dtype'), fields.get('shape'), fields.get('data_offsets')
    if (not isinstance(dtype_name, str) or dtype_name not in SAFETENSORS_DTYPES or not _is_index_list(shape)
            or not _is_index_list(offsets) or len(offsets) != 2):
        raise ConvertError(f'{path}: bad safetensors header entry for {name!r} (needs a known dtype and '
                           f'non-negative integer shape and data_offsets): {_brief(spec)}')
    dtype = np.dtype(SAFETENSORS_DTYPES[dtype_name])
    begin, end = offsets
    nbytes = math.prod(shape) * dtype.itemsize
    if begin < 0 or end - begin != nbytes:
        raise ConvertError(f'{path}: tensor {name!r} has byte range [{begin}, {end}) but its '
                           f'{spec["dtype"]} shape {shape} needs {nbytes} bytes')
    if end > len(data):
        raise ConvertError(f'{path}: truncated safetensors file: tensor {name!r} ends at byte {end} '
                           f'of a data section of {len(data)} bytes')
    try:
        array = data[begin:end].view(dtype).reshape(shape)
    except ValueError as e:  # e.g. more dimensions than numpy supports
        raise ConvertError(f'{path}: tensor {name!r}: shape {_brief(shape)}: {e}') from e
    if dtype_name == 'BF16':
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _brief(value, limit=200):
    """repr(value), cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + '...'


def write_safetensors(path, tensors, metadata):
    """Writes {name: float ndarray} as F32 little-endian tensors, in the given order.

    `metadata` ({str: str}) becomes `__metadata__`; the header is space-padded so
    that the data section starts on an 8-byte boundary."""
    header = {'__metadata__': metadata}
    offset = 0
    for name, array in tensors.items():
        header[name] = dict(dtype='F32', shape=list(array.shape), data_offsets=[offset, offset + 4 * array.size])
        offset += 4 * array.size
    text = json.dumps(header, separators=(',', ':')).encode('utf-8')
    text += b' ' * (-len(text) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(text)))
        f.write(text)
        for array in tensors.values():
            f.write(np.asarray(array, dtype='<f4').tobytes())


# ---------------------------------------------------------------------------
# Reading checkpoints

def load_checkpoint(path, reference_repo, trust_pickle=False):
    """Returns ({name: ndarray}, ECMPrecond kwargs or None) read from a checkpoint file.

    Raises ConvertError for a missing, unreadable or unrecognised file, and for one that
    needs full unpickling when not `trust_pickle` (see _unpickle)."""
    if not os.path.isfile(path):
        raise ConvertError(f'input {path} does not exist or is not a file')
    ext = os.path.splitext(path)[1].lower()
    if ext == '.safetensors':
        tensors, metadata = read_safetensors(path)
        return tensors, _metadata_kwargs(path, metadata)
    if ext not in ('.pkl', '.pth', '.pt'):
        raise ConvertError(f'input {path}: unknown file type {ext!r} (expected .pkl, .pth, .pt or .safetensors)')
    obj = _unpickle(path, reference_repo, trust_pickle)
    state, kwargs = extract_network(obj, os.path.basename(path))
    return _to_numpy(state), kwargs


def _metadata_kwargs(path, metadata):
    """The ECMPrecond kwargs in a safetensors `config` metadata entry, or None without one."""
    if 'config' not in metadata:
        return None
    kwargs = _parse_json(metadata['config'], f'{path}: metadata "config" is not valid JSON')
    if not isinstance(kwargs, dict):
        raise ConvertError(f'{path}: metadata "config" is not a JSON object')
    return kwargs


def _unpickle(path, reference_repo, trust_pickle):
    """Loads a .pkl (pickle) or .pth/.pt (torch.load) file on the CPU.

    Without `trust_pickle` a .pkl is refused unread, and a .pth/.pt is read with
    torch.load(weights_only=True) and refused if it holds more than tensors and plain
    containers: full unpickling runs code from the file. With it, both are fully unpickled.
    `reference_repo` (an NVlabs/TCM checkout) goes first on sys.path, since NVlabs
    snapshots refer to its `torch_utils` and `dnnlib` modules."""
    is_pkl = path.lower().endswith('.pkl')
    if is_pkl and not trust_pickle:
        raise _untrusted(path, 'a .pkl snapshot can only be read by full unpickling')
    if reference_repo is not None:
        if not os.path.isdir(reference_repo):
            raise ConvertError(f'--reference-repo {reference_repo} is not a directory')
        sys.path.insert(0, os.path.abspath(reference_repo))
    try:
        import torch
    except ImportError as e:
        raise ConvertError(f'reading {path} needs PyTorch (Debian: apt-get install python3-torch)') from e
    try:
        if not trust_pickle:
            return _load_weights_only(torch, path)
        if is_pkl:
            with open(path, 'rb') as f:
                return pickle.load(f)
        return torch.load(path, map_location='cpu', weights_only=False)
    except ConvertError:
        raise
    except ModuleNotFoundError as e:
        if reference_repo is None:
            raise ConvertError(f'cannot unpickle {path}: module {e.name!r} not found; pass --reference-repo DIR '
                               f'(a checkout of https://github.com/NVlabs/TCM)') from e
        package = f'python3-{(e.name or "").split(".")[0]}'
        raise ConvertError(f'cannot unpickle {path}: module {e.name!r} is neither in --reference-repo '
                           f'{reference_repo} nor installed (Debian: apt-get install {package})') from e
    except Exception as e:  # pickle and torch.load raise many types for corrupt files
        raise ConvertError(f'cannot read {path} (truncated or not a checkpoint?): {type(e).__name__}: {e}') from e


def _load_weights_only(torch, path):
    """torch.load(path, weights_only=True); ConvertError if the file holds anything else."""
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:  # what weights_only raises for a global it does not allow
        raise _untrusted(path, 'it holds more than tensors (weights_only loading refused it), and reading '
                               'it needs full unpickling') from e


def _untrusted(path, why):
    """The ConvertError refusing to fully unpickle `path`."""
    return ConvertError(f'{path}: {why}, which runs code from the file; pass --trust-pickle only for '
                        f'a file from a trusted source')


CONTAINER_KEYS = ('ema', 'state_dict', 'model')


def extract_network(obj, source):
    """Returns (state dict, ECMPrecond kwargs or None) from an unpickled checkpoint.

    `obj` is a state dict, a network (anything with state_dict()), or a dict
    holding one of those under 'ema', 'state_dict' or 'model'."""
    if isinstance(obj, Mapping):
        for key in CONTAINER_KEYS:
            if key in obj:
                return extract_network(obj[key], f'{source}[{key!r}]')
        return obj, None
    if callable(getattr(obj, 'state_dict', None)):
        return obj.state_dict(), _module_kwargs(obj, source)
    raise ConvertError(f'{source} is a {type(obj).__name__}, not a state dict or a network')


def _module_kwargs(module, source):
    """The ECMPrecond kwargs a torch_utils.persistence network recorded, or None."""
    try:
        kwargs = module.init_kwargs
    except Exception:  # persistence asserts when recording was disabled
        return None
    if kwargs is None:
        return None
    if type(module).__name__ != 'ECMPrecond':
        raise ConvertError(f'{source} is a {type(module).__name__}; tcm-serve serves ECMPrecond networks')
    try:
        args = tuple(module.init_args or ())
    except Exception:
        args = ()
    return {**dict(zip(PRECOND_POSITIONAL, args)), **_plain(dict(kwargs))}


def _to_numpy(state):
    """{name: ndarray} of a torch state dict; floating tensors become float32, others keep their dtype."""
    import torch
    arrays = {}
    for name, value in state.items():
        if not torch.is_tensor(value):
            raise ConvertError(f'state dict entry {name!r} is a {type(value).__name__}, not a tensor')
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.to(torch.float32)
        try:
            arrays[name] = value.numpy()
        except (TypeError, RuntimeError) as e:
            raise ConvertError(f'tensor {name!r} has dtype {value.dtype}; every tensor must be floating point') from e
    return arrays


def _plain(value):
    """`value` with tuples as lists, mappings as dicts and numpy scalars as Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---------------------------------------------------------------------------
# Architecture: ECMPrecond kwargs -> ModelConfig

def explicit_kwargs(preset, config_json):
    """Returns (kwargs, flag name) from --preset or --config-json, or (None, None)."""
    if preset is not None:
        return copy.deepcopy(PRESETS[preset]), f'--preset {preset}'
    if config_json is None:
        return None, None
    if os.path.isfile(config_json):
        with open(config_json, 'rb') as f:
            text = f.read()
    elif config_json.lstrip().startswith('{'):
        text = config_json
    else:
        raise ConvertError(f'--config-json {config_json!r} is neither a file nor a JSON object')
    kwargs = _parse_json(text, '--config-json: not valid JSON')
    if not isinstance(kwargs, dict):
        raise ConvertError('--config-json: expected a JSON object of ECMPrecond keyword arguments')
    return kwargs, '--config-json'


def resolve_kwargs(embedded, explicit, flag, source):
    """The ECMPrecond kwargs to convert with: the checkpoint's own when it has them.

    An explicit --preset/--config-json then only cross-checks them: it must agree on every
    key both define and set no key the checkpoint lacks. Such a key is an error rather than
    merged in: the embedded kwargs are those the network was built with, so a key absent
    from them took its reference default, and a value for it would at best repeat that
    default and at worst describe another network."""
    if embedded is None and explicit is None:
        raise ConvertError(f'{source} carries no architecture; pass --preset NAME or --config-json FILE|JSON')
    if embedded is None:
        return explicit
    if explicit is not None:
        for key in sorted(embedded.keys() & explicit.keys()):
            if _plain(embedded[key]) != _plain(explicit[key]):
                raise ConvertError(f'{flag} sets {key}={explicit[key]!r} but {source} was built with '
                                   f'{key}={embedded[key]!r}')
        extra = sorted(explicit.keys() - embedded.keys())
        if extra:
            raise ConvertError(f'{flag} sets {", ".join(extra)}, which the architecture recorded in {source} '
                               f'does not list; the recorded one is used as is, so leave them out')
    return embedded


def model_config(kwargs, name, t_max, mid_t, default_steps):
    """Returns the ModelConfig for ECMPrecond(**kwargs) as an ordered dict (field -> value;
    a dict value is a sub-message, a list a repeated field), ready for format_pbtxt.

    Raises ConvertError naming the first argument that is unknown, of the wrong type,
    or outside what the server supports."""
    allowed = ', '.join(NETWORKS)
    if 'model_type' not in kwargs:
        raise ConvertError(f'the ECMPrecond arguments lack model_type (its default DhariwalUNet is not '
                           f'supported; allowed: {allowed})')
    architecture = kwargs['model_type']
    if not isinstance(architecture, str) or architecture not in NETWORKS:
        raise ConvertError(f'model_type {_brief(architecture)} is not supported (allowed: {allowed})')
    network = NETWORKS[architecture]
    check_model_name(name)
    # The server reads both as float32: still 0 < mid_t < t_max there, t_max at most its limit.
    if (not 0 < t_max <= ServerLimits.MAX_T_MAX or not 0 < mid_t < t_max
            or not 0 < float(np.float32(mid_t)) < float(np.float32(t_max))):
        raise ConvertError(f'need 0 < mid_t < t_max <= {ServerLimits.MAX_T_MAX:g} (tcm-serve\'s limit), '
                           f'got mid_t={mid_t}, t_max={t_max}')
    if default_steps not in (1, 2):
        raise ConvertError(f'default_steps must be 1 or 2, got {default_steps}')
    for key in ('img_resolution', 'img_channels'):
        if key not in kwargs:
            raise ConvertError(f'the ECMPrecond arguments lack {key!r}')
    config = dict(name=name, architecture=architecture,
                  img_resolution=_typed(kwargs, 'img_resolution', 'uint'),
                  img_channels=_typed(kwargs, 'img_channels', 'uint'),
                  num_classes=_typed(kwargs, 'label_dim', 'uint', 0),
                  sigma_data=_typed(kwargs, 'sigma_data', 'float', 0.5),
                  t_max=float(t_max), mid_t=float(mid_t), default_steps=default_steps)
    if config['sigma_data'] <= 0:
        raise ConvertError(f'sigma_data must be positive, got {config["sigma_data"]}')
    config[network['block']] = _network_fields(kwargs, architecture, network)
    _check_limits(config, network['block'])
    _check_sizes(config, network['block'])
    return config


def check_model_name(name):
    """Raises ConvertError unless tcm-serve accepts `name` as a model name."""
    if not MODEL_NAME.fullmatch(name) or name.startswith('.'):
        raise ConvertError(f"model name {_brief(name, 80)} must be 1 to 200 letters, digits, '-', '_' and '.' "
                           f"not starting with '.'; it is --name, or else the output directory's name")


def _network_fields(kwargs, architecture, network):
    """The network sub-message: kwargs set by the caller, plus the implicit defaults."""
    known = set(PRECOND_POSITIONAL) | {kwarg for kwarg, _, _ in network['fields']}
    known |= set(network['dropped']) | set(network['fixed'])
    for key in kwargs:
        if key not in known:
            raise ConvertError(f'unknown {architecture} argument {key!r}')
    for key, allowed in network['fixed'].items():
        if key in kwargs and kwargs[key] != allowed:
            raise ConvertError(f'{key}={kwargs[key]!r} is not supported (only {allowed!r})')
    fields = {}
    for kwarg, field, kind in network['fields']:
        value = kwargs.get(kwarg, network['implicit'].get(kwarg))
        if value is None and kwarg in kwargs:
            if kwarg not in network['nulls']:
                raise ConvertError(f'{kwarg} must not be null')
            value = network['nulls'][kwarg]
        if value is None or value == []:
            continue
        fields[field] = _typed({kwarg: value}, kwarg, kind)
    for key, allowed in SONG_CHOICES.items():
        if network['block'] == 'song' and fields.get(key, allowed[0]) not in allowed:
            raise ConvertError(f'{key}={fields[key]!r} is not one of {", ".join(allowed)}')
    return fields


def _typed(kwargs, key, kind, default=None):
    """kwargs[key] (or `default` when absent) checked against a proto field kind:
    uint, float, bool, str, or a list of uints / floats."""
    value = kwargs.get(key, default)
    if kind in ('uints', 'floats'):
        if not isinstance(value, list):
            raise ConvertError(f'{key} must be a list, got {value!r}')
        return [_typed({key: v}, key, kind[:-1]) for v in value]
    ok = {'uint': lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2 ** 32,
          'float': _is_float32,
          'bool': lambda v: isinstance(v, bool),
          'str': lambda v: isinstance(v, str)}[kind]
    if not ok(value):
        wanted = dict(uint='a non-negative integer', float='a finite number within the float32 range',
                      bool='true or false', str='a string')
        raise ConvertError(f'{key} must be {wanted[kind]}, got {_brief(value)}')
    return float(value) if kind == 'float' else value


def _is_float32(value):
    """True for a finite number that stays finite as a float32 (the server's fields are float32)."""
    return _is_finite_number(value) and abs(value) <= float(np.finfo(np.float32).max)


def _is_finite_number(value):
    """True for an int or float (not a bool) that is finite as a double."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int past the double range
        return False


def _check_limits(config, block):
    """Rejects a model_config() dict past ServerLimits (as CheckLimits in model/model_config.cc
    does) with the field, the limit and the value; `block` is 'edm2' or 'song'."""
    limits, net = ServerLimits, config[block]
    _at_most(config['img_resolution'], limits.MAX_RESOLUTION, 'img_resolution')
    if config['img_channels'] not in limits.IMAGE_CHANNELS:
        raise ConvertError(f"img_channels must be 1 (grey), 3 (RGB) or 4 (RGBA) (tcm-serve's rule), "
                           f"got {config['img_channels']}")
    _at_most(config['num_classes'], limits.MAX_CLASSES, 'num_classes (label_dim)')
    _at_most(net.get('model_channels', 0), limits.MAX_MODEL_CHANNELS, f'{block}.model_channels')
    _list_at_most(net.get('channel_mult', []), limits.MAX_LEVELS, limits.MAX_CHANNEL_MULT, f'{block}.channel_mult')
    _at_most(net.get('num_blocks', 0), limits.MAX_BLOCKS, f'{block}.num_blocks')
    for field in ('channel_mult_emb', 'channel_mult_noise'):
        _at_most(net.get(field, 0), limits.MAX_CHANNEL_MULT, f'{block}.{field}')
    _list_at_most(net.get('attn_resolutions', []), limits.MAX_LIST_ENTRIES, limits.MAX_RESOLUTION,
                  f'{block}.attn_resolutions')
    _at_most(len(net.get('resample_filter', [])), limits.MAX_FILTER_TAPS, f'{block}.resample_filter taps')
    if block == 'edm2':
        _at_most(net.get('channels_per_head', 0), limits.MAX_CHANNELS_PER_HEAD, 'edm2.channels_per_head')
        _list_at_most(net.get('dout_resolutions', []), limits.MAX_LIST_ENTRIES, limits.MAX_RESOLUTION,
                      'edm2.dout_resolutions')
    else:
        _at_most(net.get('augment_dim', 0), limits.MAX_AUGMENT_DIM, 'song.augment_dim')
    _check_network_size(config, block)


def _at_most(value, limit, field):
    """ConvertError unless value <= limit."""
    if value > limit:
        raise ConvertError(f"{field} must be at most {limit} (tcm-serve's limit), got {value}")


def _list_at_most(values, max_entries, max_value, field):
    """ConvertError unless `values` has at most `max_entries` entries, each at most `max_value`."""
    _at_most(len(values), max_entries, f'the number of {field} entries')
    for value in values:
        _at_most(value, max_value, field)


def _check_network_size(config, block):
    """The server's rough weight count (CheckNetworkLimits in model/model_config.cc): two 3x3
    convolutions and an embedding projection per block, encoder and decoder, plus the embedding
    network and the class embedding; and its activation estimate for a batch of the default size
    (CheckBatchActivations), as the config written sets no batching.max_batch_size."""
    limits, net = ServerLimits, config[block]
    default_emb_mult = max([1, *net.get('channel_mult', [])]) if block == 'edm2' else 4
    emb = _level_width(net, net.get('channel_mult_emb') or default_emb_mult, f'{block}.channel_mult_emb')
    weights = 2.0 * emb * emb + config['num_classes'] * emb
    for mult in net.get('channel_mult', []):
        width = _level_width(net, mult, f'{block}.channel_mult')
        weights += 2.0 * (net.get('num_blocks', 0) + 1) * (2 * 9.0 * width * width + emb * width)
    if weights > limits.MAX_PARAMETERS:
        raise ConvertError(f"{block}: a network of about {weights:.3g} weights is past tcm-serve's limit of "
                           f'{limits.MAX_PARAMETERS:.3g} (model_channels, channel_mult, channel_mult_emb, '
                           f'num_blocks, num_classes)')
    per_image, batch = activation_values(config, block), limits.DEFAULT_MAX_BATCH_SIZE
    if per_image * batch > limits.MAX_BATCH_ACTIVATION_VALUES:
        resolution = config['img_resolution']
        raise ConvertError(f'batching.max_batch_size (unset: the default {batch}): a batch of {batch} images of '
                           f'{resolution}x{resolution} needs about {per_image * batch:.3g} activation values at once '
                           f'({per_image:.3g} per image), past tcm-serve\'s limit of '
                           f'{limits.MAX_BATCH_ACTIVATION_VALUES:.3g} values for a whole batch; a smaller '
                           f'img_resolution, model_channels, channel_mult or num_blocks, or fewer attn_resolutions, '
                           f'need fewer')


def activation_values(config, block):
    """The server's estimate of the activation values one image's forward pass holds at once
    (EstimatedActivationValues in model/model_config.cc): the skips (num_blocks + 1 per level),
    8 activations of the widest level, and the attention score matrices and their softmax at
    the attention resolutions and the lowest level."""
    net, resolution = config[block], config['img_resolution']
    mults, attn = net.get('channel_mult', []), net.get('attn_resolutions', [])
    per_head = net.get('channels_per_head', 64)
    skips = widest = scores = previous = 0.0
    for level, mult in enumerate(mults):
        res = resolution >> level
        pixels, width = float(res) * res, float(net.get('model_channels', 0) * mult)
        skips += pixels * ((width if level == 0 else previous) + net.get('num_blocks', 0) * width)
        widest = max(widest, pixels * width)
        if level == len(mults) - 1 or res in attn:
            heads = (math.floor(width / per_head) if per_head else 0.0) if block == 'edm2' else 1.0
            scores = max(scores, 2.0 * heads * pixels * pixels)
        previous = width
    return skips + 8.0 * widest + scores


def _level_width(net, mult, field):
    """model_channels x mult, at most ServerLimits.MAX_LEVEL_CHANNELS."""
    width = net.get('model_channels', 0) * mult
    if width > ServerLimits.MAX_LEVEL_CHANNELS:
        raise ConvertError(f"model_channels x {field} must be at most {ServerLimits.MAX_LEVEL_CHANNELS} "
                           f"(tcm-serve's limit), got {net.get('model_channels', 0)} x {mult} = {width}")
    return width


def _check_sizes(config, block):
    """Rejects sizes no network can have, before the state dict check relies on them."""
    net = config[block]
    mults = net.get('channel_mult', [])
    if not net.get('model_channels') or not net.get('num_blocks') or not mults or 0 in mults:
        raise ConvertError('model_channels, num_blocks and channel_mult (a non-empty list) must be positive')
    divisor = 2 ** (len(mults) - 1)
    if config['img_channels'] == 0 or config['img_resolution'] == 0 or config['img_resolution'] % divisor:
        raise ConvertError(f'img_resolution {config["img_resolution"]} must be a positive multiple of {divisor} '
                           f'and img_channels positive')


def format_pbtxt(config, comment=None, indent=''):
    """Protobuf text format of a model_config() dict; repeated fields use `[a, b]` lists.
    `comment` becomes one comment line, its non-printable characters escaped."""
    lines = [f'# {_one_line(comment)}'] if comment else []
    for field, value in config.items():
        if isinstance(value, dict):
            lines += [f'{indent}{field} {{', format_pbtxt(value, indent=indent + '  ').rstrip('\n'), f'{indent}}}']
        else:
            lines.append(f'{indent}{field}: {_pbtxt_value(value)}')
    return '\n'.join(lines) + '\n'


def _one_line(text):
    """`text` with each non-printable character (line breaks included) written as its
    Python escape, so that it cannot end a comment line."""
    return ''.join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _pbtxt_value(value):
    """One scalar or repeated value in protobuf text format."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return '[' + ', '.join(_pbtxt_value(v) for v in value) + ']'
    return '"' + value.replace('\\', '\\\\').replace('"', '\\"') + '"'


# ---------------------------------------------------------------------------
# State dict check

def check_state_dict(tensors, kwargs):
    """Raises ConvertError unless `tensors` ({name: ndarray}) are all floating point, have
    exactly the names and shapes of ECMPrecond(**kwargs).state_dict(), and are finite as F32."""
    for name, array in tensors.items():
        if array.dtype.kind != 'f':
            raise ConvertError(f'tensor {name!r} has dtype {array.dtype}; every tensor must be floating point')
    architecture = kwargs['model_type']
    expected = (edm2_shapes if architecture == 'EDM2UNet' else song_shapes)(kwargs)
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    hint = ' (wrong --preset or --config-json?)'
    if missing or unexpected:
        parts = [f'{what} {names[0]!r}' + (f' and {len(names) - 1} more' if len(names) > 1 else '')
                 for what, names in (('missing', missing), ('unexpected', unexpected)) if names]
        raise ConvertError(f'state dict does not match the {architecture} config: {", ".join(parts)}{hint}')
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ConvertError(f'tensor {name!r} has shape {list(tensors[name].shape)}, the config needs '
                               f'{list(shape)}{hint}')
    check_finite(tensors)


def check_finite(tensors):
    """Raises ConvertError naming the first tensor that holds a NaN or an infinity, or a
    value past the F32 range (weights.safetensors is F32); tcm-serve refuses such weights."""
    for name, array in tensors.items():
        if not np.isfinite(array).all():
            raise ConvertError(f'tensor {name!r} holds NaN or infinite values')
        if array.dtype.itemsize > 4:
            with np.errstate(over='ignore'):
                if not np.isfinite(array.astype(np.float32)).all():
                    raise ConvertError(f'tensor {name!r} holds values past the F32 range '
                                       f'(magnitude above {np.finfo(np.float32).max:.4g})')


def edm2_shapes(k):
    """{name: shape} of ECMPrecond(model_type='EDM2UNet', **k).state_dict() (k type-checked)."""
    img_channels, resolution, label_dim = k['img_channels'], k['img_resolution'], k.get('label_dim', 0)
    mc, num_blocks = k.get('model_channels', 192), k.get('num_blocks', 3)
    attn, per_head = k.get('attn_resolutions', [16, 8]), k.get('channels_per_head', 64)
    cblock = [mc * m for m in k.get('channel_mult', [1, 2, 3, 4])]
    cnoise = mc * k['channel_mult_noise'] if k.get('channel_mult_noise') is not None else cblock[0]
    cemb = mc * k['channel_mult_emb'] if k.get('channel_mult_emb') is not None else max(cblock)
    s = {'model.out_gain': (), 'model.emb_fourier.freqs': (cnoise,), 'model.emb_fourier.phases': (cnoise,)}
    if k.get('learnable_scale'):
        s['model.emb_fourier.scale'] = ()
    s['model.emb_noise.weight'] = (cemb, cnoise)
    if label_dim:
        s['model.emb_label.weight'] = (cemb, label_dim)

    def block(name, cin, cout, encoder, attention):
        p = f'model.{name}.'
        s[p + 'emb_gain'] = ()
        s[p + 'conv_res0.weight'] = (cout, cout if encoder else cin, 3, 3)
        s[p + 'emb_linear.weight'] = (cout, cemb)
        s[p + 'conv_res1.weight'] = (cout, cout, 3, 3)
        if cin != cout:
            s[p + 'conv_skip.weight'] = (cout, cin, 1, 1)
        if attention and cout // per_head:
            s[p + 'attn_qkv.weight'] = (3 * cout, cout, 1, 1)
            s[p + 'attn_proj.weight'] = (cout, cout, 1, 1)
        return cout

    skips, cout = [], img_channels + 1
    for level, channels in enumerate(cblock):
        res = resolution >> level
        if level == 0:
            s[f'model.enc.{res}x{res}_conv.weight'] = (channels, cout, 3, 3)
            cout = channels
        else:
            block(f'enc.{res}x{res}_down', cout, cout, True, False)
        skips.append(cout)
        for i in range(num_blocks):
            skips.append(cout := block(f'enc.{res}x{res}_block{i}', cout, channels, True, res in attn))
    for level in reversed(range(len(cblock))):
        res = resolution >> level
        if level == len(cblock) - 1:
            block(f'dec.{res}x{res}_in0', cout, cout, False, True)
            block(f'dec.{res}x{res}_in1', cout, cout, False, False)
        else:
            block(f'dec.{res}x{res}_up', cout, cout, False, False)
        for i in range(num_blocks + 1):
            cout = block(f'dec.{res}x{res}_block{i}', cout + skips.pop(), cblock[level], False, res in attn)
    s['model.out_conv.weight'] = (img_channels, cout, 3, 3)
    return s


def song_shapes(k):
    """{name: shape} of ECMPrecond(model_type='SongUNet', **k).state_dict() (k type-checked)."""
    img_channels, resolution, label_dim = k['img_channels'], k['img_resolution'], k.get('label_dim', 0)
    mc, num_blocks, mults = k.get('model_channels', 128), k.get('num_blocks', 4), k.get('channel_mult', [1, 2, 2, 2])
    attn = k.get('attn_resolutions', [16])
    emb, noise = mc * k.get('channel_mult_emb', 4), mc * k.get('channel_mult_noise', 1)
    encoder, decoder = k.get('encoder_type', 'standard'), k.get('decoder_type', 'standard')
    taps = len(k.get('resample_filter', [1, 1]))
    s = {}

    def linear(name, fin, fout, bias=True):
        s[f'model.{name}.weight'] = (fout, fin)
        if bias:
            s[f'model.{name}.bias'] = (fout,)

    def conv(name, cin, cout, kernel, resample=False):
        if kernel:
            s[f'model.{name}.weight'] = (cout, cin, kernel, kernel)
            s[f'model.{name}.bias'] = (cout,)
        if resample:
            s[f'model.{name}.resample_filter'] = (1, 1, taps, taps)

    def norm(name, channels):
        s[f'model.{name}.weight'] = s[f'model.{name}.bias'] = (channels,)

    def block(name, cin, cout, resample=False, attention=False):
        norm(f'{name}.norm0', cin)
        conv(f'{name}.conv0', cin, cout, 3, resample)
        linear(f'{name}.affine', emb, cout)
        norm(f'{name}.norm1', cout)
        conv(f'{name}.conv1', cout, cout, 3)
        if cin != cout or resample:
            conv(f'{name}.skip', cin, cout, 1, resample)
        if attention:
            norm(f'{name}.norm2', cout)
            conv(f'{name}.qkv', cout, 3 * cout, 1)
            conv(f'{name}.proj', cout, cout, 1)
        return cout

    if k.get('embedding_type', 'positional') == 'fourier':
        s['model.map_noise.freqs'] = (noise // 2,)
        if k.get('learnable_scale'):
            s['model.map_noise.scale'] = ()
    if label_dim:
        linear('map_label', label_dim, noise)
    if k.get('augment_dim'):
        linear('map_augment', k['augment_dim'], noise, bias=False)
    linear('map_layer0', noise, emb)
    linear('map_layer1', emb, emb)
    skips, cout, caux = [], img_channels, img_channels
    for level, mult in enumerate(mults):
        r = f'{resolution >> level}x{resolution >> level}'
        if level == 0:
            conv(f'enc.{r}_conv', cout, mc, 3)
            cout = mc
        else:
            block(f'enc.{r}_down', cout, cout, resample=True)
            if encoder == 'skip':
                conv(f'enc.{r}_aux_down', caux, caux, 0, resample=True)
                conv(f'enc.{r}_aux_skip', caux, cout, 1)
            if encoder == 'residual':
                conv(f'enc.{r}_aux_residual', caux, cout, 3, resample=True)
                caux = cout
        skips.append(cout)
        for i in range(num_blocks):
            skips.append(cout := block(f'enc.{r}_block{i}', cout, mc * mult, attention=(resolution >> level) in attn))
    last = len(mults) - 1
    for level in reversed(range(len(mults))):
        r = f'{resolution >> level}x{resolution >> level}'
        if level == last:
            block(f'dec.{r}_in0', cout, cout, attention=True)
            block(f'dec.{r}_in1', cout, cout)
        else:
            block(f'dec.{r}_up', cout, cout, resample=True)
        for i in range(num_blocks + 1):
            attention = i == num_blocks and (resolution >> level) in attn
            cout = block(f'dec.{r}_block{i}', cout + skips.pop(), mc * mults[level], attention=attention)
        if decoder == 'skip' or level == 0:
            if decoder == 'skip' and level < last:
                conv(f'dec.{r}_aux_up', img_channels, img_channels, 0, resample=True)
            norm(f'dec.{r}_aux_norm', cout)
            conv(f'dec.{r}_aux_conv', cout, img_channels, 3)
    return s


# ---------------------------------------------------------------------------
# Output

def read_labels(path, num_classes):
    """The text of a labels file with one non-empty line per class (newline-terminated).

    Lines are read as tcm-serve reads labels.txt (ReadLabels in model/model_repository.cc):
    split at '\\n' only (not at the other line breaks str.splitlines() knows, such as \\x0c
    or U+2028), one '\\r' cut from each line's end, each line UTF-8 without control
    characters, and empty lines at the end dropped."""
    if num_classes == 0:
        raise ConvertError(f'--labels {path}: the model is unconditional (num_classes 0)')
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise ConvertError(f'--labels {path}: {e}') from e
    lines = data.split(b'\n')
    if lines[-1] == b'':  # after the last newline (or an empty file): no line
        lines.pop()
    lines = [line[:-1] if line.endswith(b'\r') else line for line in lines]
    for number, raw in enumerate(lines, 1):
        _check_label(path, number, raw)
    lines = [line.decode('utf-8') for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) != num_classes:
        raise ConvertError(f'--labels {path} has {len(lines)} lines, the model has {num_classes} classes')
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise ConvertError(f'--labels {path}: line {number} is empty')
    return '\n'.join(lines) + '\n'


def _check_label(path, number, raw):
    """ConvertError unless line `number` (bytes) of a labels file is UTF-8 without control
    characters (C0, DEL, C1): IsPrintableUtf8 in common/utf8.h, which tcm-serve applies."""
    why = None
    try:
        text = raw.decode('utf-8')  # strict: no overlong forms, surrogates or code points past U+10FFFF
    except UnicodeDecodeError as e:
        why = f'byte {e.start + 1} is not UTF-8'
    else:
        for column, char in enumerate(text, 1):
            if ord(char) < 0x20 or ord(char) == 0x7f or 0x80 <= ord(char) <= 0x9f:
                why = f'control character U+{ord(char):04X} at character {column}'
                break
    if why is not None:
        raise ConvertError(f'--labels {path}: line {number}: must be UTF-8 text without control characters, '
                           f'as tcm-serve requires ({why})')


def weights_metadata(kwargs):
    """The `__metadata__` of weights.safetensors: the kwargs as JSON (non-finite numbers,
    which JSON cannot hold, are left out: only sigma_max=inf is expected) and the format."""
    finite = {k: v for k, v in _plain(kwargs).items() if not (isinstance(v, float) and not math.isfinite(v))}
    return {'config': json.dumps(finite), 'format': WEIGHTS_FORMAT}


def write_model_dir(out_dir, files, force):
    """Creates `out_dir` holding `files` ({file name: function(path) writing it}) all at once.

    Everything is written to a temporary sibling directory that is renamed into place, so
    a failure or interrupt leaves no partial directory. An existing `out_dir` is replaced
    only when `force`."""
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(out_dir)}.', suffix='.tmp', dir=parent)
    try:
        for name, write in files.items():
            write(os.path.join(tmp, name))
            with open(os.path.join(tmp, name), 'rb+') as f:
                os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        _move_into_place(tmp, out_dir, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _move_into_place(tmp, out_dir, force):
    """Renames directory `tmp` to `out_dir`, first moving an existing `out_dir` aside if `force`."""
    if not os.path.lexists(out_dir):
        os.rename(tmp, out_dir)
        return
    if not force:
        raise ConvertError(f'{out_dir} already exists (pass --force to replace it)')
    old = tmp + '.old'
    os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    if os.path.isdir(old) and not os.path.islink(old):
        shutil.rmtree(old)
    else:
        os.remove(old)


def _write_text(text):
    """A `files` writer for write_model_dir that writes `text` as UTF-8."""
    def write(path):
        with open(path, 'w', encoding='utf-8') as f:
            f.write(text)
    return write


# ---------------------------------------------------------------------------
# Command line

class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are a single `tcm-convert: error:` line (exit 2)."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message} (see --help)\n')


def parse_args(argv):
    """Parses the command line; exits 2 with one `tcm-convert: error:` line on misuse."""
    parser = _Parser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Convert a released NVlabs TCM checkpoint into a tcm-serve model directory\n'
                    '(config.pbtxt, weights.safetensors and optionally labels.txt).',
        epilog='examples:\n'
               '  tcm-convert --input network-snapshot-edm2s.pkl --trust-pickle --reference-repo ~/src/TCM \\\n'
               '      --output models/tcm-edm2-s-img64 --labels imagenet_classes.txt\n'
               '  tcm-convert --input ema.pth --preset tcm-ddpmpp-cifar10 --output models/cifar10 --default-steps 2\n'
               '  tcm-convert --preset tcm-edm2-xl-img64 --config-only --output models/xl\n\n'
               '.pth/.pt files are read with torch.load(weights_only=True). Full unpickling, which every .pkl\n'
               'and a .pth/.pt holding a network need, runs code from the file: it happens only with\n'
               '--trust-pickle, for checkpoints from a trusted source.')
    parser.add_argument('--input', metavar='PATH',
                        help='checkpoint to convert: an NVlabs network-snapshot .pkl (its "ema" network), a '
                             '.pth/.pt state dict or network (also inside a dict under "ema", "state_dict" or '
                             '"model"), or a .safetensors state dict. Required unless --config-only.')
    parser.add_argument('--output', metavar='DIR', required=True,
                        help='model directory to create; it must not exist unless --force (required)')
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--preset', choices=sorted(PRESETS),
                        help='architecture of a released model. Default: none, the architecture is read from '
                             'the checkpoint (.pkl init_kwargs or .safetensors "config" metadata); when the '
                             'checkpoint has one too, the preset may only repeat its values.')
    source.add_argument('--config-json', metavar='FILE|JSON',
                        help='ECMPrecond keyword arguments as a JSON object, inline or in a file (the form of '
                             'the fixtures\' "config" metadata). Default: none; same precedence as --preset.')
    parser.add_argument('--reference-repo', metavar='DIR',
                        help='checkout of https://github.com/NVlabs/TCM, put first on sys.path so that .pkl '
                             'snapshots unpickle. Default: none.')
    parser.add_argument('--trust-pickle', action='store_true',
                        help='allow full unpickling, which runs code from the file: needed for NVlabs .pkl '
                             'snapshots and for .pth/.pt files holding more than tensors. Pass it only for '
                             'files from a trusted source. Default: off (a .pkl is refused, a .pth/.pt is read '
                             'with torch.load(weights_only=True)).')
    parser.add_argument('--name', help='model name in config.pbtxt: 1 to 200 letters, digits, "-", "_" and '
                                       '"." (not starting with "."). Default: the output directory\'s name.')
    parser.add_argument('--t-max', type=float, default=SAMPLING_DEFAULTS['t_max'], metavar='T',
                        help='first-step noise level. Default: %(default)s (all released models).')
    parser.add_argument('--mid-t', type=float, default=SAMPLING_DEFAULTS['mid_t'], metavar='T',
                        help='second-step noise level. Default: %(default)s (all released models).')
    parser.add_argument('--default-steps', type=int, choices=(1, 2), default=SAMPLING_DEFAULTS['default_steps'],
                        help='sampling steps when a request asks for none. Default: %(default)s.')
    parser.add_argument('--labels', metavar='FILE',
                        help='class names, one per line, copied to labels.txt; the line count must equal the '
                             'number of classes. Default: none (no labels.txt).')
    parser.add_argument('--config-only', action='store_true',
                        help='write only config.pbtxt (and labels.txt); --input is then optional. Default: off.')
    parser.add_argument('--force', action='store_true',
                        help='replace an existing output directory. Default: off.')
    args = parser.parse_args(argv)
    if args.input is None and not args.config_only:
        parser.error('--input is required (unless --config-only)')
    if args.input is None and args.preset is None and args.config_json is None:
        parser.error('--config-only without --input needs --preset or --config-json')
    return args


def convert(args):
    """Performs the conversion the parsed command line asks for; returns a summary line."""
    out_dir = os.path.abspath(args.output)
    if os.path.lexists(out_dir) and not args.force:
        raise ConvertError(f'{args.output} already exists (pass --force to replace it)')
    explicit, flag = explicit_kwargs(args.preset, args.config_json)
    tensors, embedded = (load_checkpoint(args.input, args.reference_repo, args.trust_pickle)
                         if args.input else (None, None))
    kwargs = resolve_kwargs(embedded, explicit, flag, args.input or flag)
    name = args.name if args.name is not None else os.path.basename(out_dir)
    config = model_config(kwargs, name, args.t_max, args.mid_t, args.default_steps)
    source = os.path.basename(args.input) if args.input else flag
    if tensors is not None:
        check_state_dict(tensors, kwargs)
    files = {'config.pbtxt': _write_text(format_pbtxt(config, f'written by tcm-convert from {source}'))}
    if not args.config_only:
        metadata = weights_metadata(kwargs)
        files['weights.safetensors'] = lambda path: write_safetensors(path, tensors, metadata)
    if args.labels is not None:
        files['labels.txt'] = _write_text(read_labels(args.labels, config['num_classes']))
    write_model_dir(out_dir, files, args.force)
    params = sum(int(a.size) for a in tensors.values()) if tensors is not None and not args.config_only else 0
    weights = f', {len(tensors)} tensors, {params} parameters' if params else ''
    return (f'{PROG}: wrote {args.output}: {config["architecture"]} {config["img_resolution"]}x'
            f'{config["img_resolution"]}x{config["img_channels"]}, {config["num_classes"]} classes{weights}')


def main(argv=None):
    """Command-line entry point; returns the exit status (0 ok, 1 bad input, 2 bad usage).
    Every failure is reported as one `tcm-convert: error:` line on stderr."""
    args = parse_args(argv)
    try:
        print(convert(args))
    except ConvertError as e:
        message = str(e)
    except OSError as e:
        message = f'{e.strerror}: {e.filename}' if e.filename else str(e)
    except Exception as e:  # a bug or an input no check foresaw: still one line, naming the input
        message = f'unexpected {type(e).__name__} converting {args.input or args.preset or "--config-json"}: {e}'
    else:
        return 0
    print(f'{PROG}: error: {" ".join(message.split())}', file=sys.stderr)
    return 1


if __name__ == '__main__':
    sys.exit(main())
