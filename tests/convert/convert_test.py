"""Tests of tools/tcm-convert (checkpoint -> model directory).

Run from the repository root:  python3 -m unittest tests/convert/convert_test.py -v

Uses the reference fixtures in <repo>/../shared/fixtures/reference. Tests that build
.pth inputs need PyTorch and skip without it; the others need numpy only. Optional parts:
  TCM_PARITY_BIN=path      also run `$TCM_PARITY_BIN --model_dir OUT --io FIXTURE.io.safetensors`
                           on every converted fixture and expect exit code 0;
  TCM_REFERENCE_REPO=dir   also convert real persistence pickles of reference ECMPrecond
                           networks built by an NVlabs/TCM checkout (needs its imports:
                           matplotlib, scipy, requests).
"""

import contextlib
import importlib.util
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from unittest import mock


def _ensure_torch():
    """`python3` may be an interpreter without PyTorch (e.g. a pyenv shim) while Debian's
    python3-torch lives in /usr/bin/python3: re-run the same unittest command there.
    Returns whether this interpreter has PyTorch (the tests that need it skip otherwise)."""
    if importlib.util.find_spec('torch') is not None:
        return True
    python = os.environ.get('TCM_PYTHON', '/usr/bin/python3')
    if (sys.argv[0].endswith('-m unittest') and os.access(python, os.X_OK)
            and os.path.realpath(python) != os.path.realpath(sys.executable)):
        print(f'convert_test: {sys.executable} has no torch; re-running under {python}', file=sys.stderr, flush=True)
        os.execv(python, [python, '-m', 'unittest', *sys.argv[1:]])
    return False


HAVE_TORCH = _ensure_torch()
needs_torch = unittest.skipUnless(HAVE_TORCH, 'PyTorch is not installed for this interpreter (set TCM_PYTHON)')

import numpy as np  # noqa: E402  (after the interpreter check)

if HAVE_TORCH:
    import torch

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO.parent / 'shared' / 'fixtures' / 'reference'
TOOL = REPO / 'tools' / 'tcm-convert'
FIXTURE_NAMES = ('edm2_img64_tiny', 'ddpmpp_cifar_tiny', 'ddpmpp_cond_tiny')


def config_text(name, architecture, resolution, classes, block, *fields):
    """The config.pbtxt tcm-convert writes (comment lines aside) with default sampling settings."""
    return '\n'.join([f'name: "{name}"', f'architecture: "{architecture}"', f'img_resolution: {resolution}',
                      'img_channels: 3', f'num_classes: {classes}', 'sigma_data: 0.5', 't_max: 80.0',
                      'mid_t: 0.821', 'default_steps: 1', f'{block} {{', *(f'  {f}' for f in fields), '}']) + '\n'


SONG_DDPMPP = ('embedding_type: "positional"', 'channel_mult_noise: 1', 'encoder_type: "standard"',
               'decoder_type: "standard"', 'resample_filter: [1.0, 1.0]')
EXPECTED_FIXTURE_CONFIGS = {
    'edm2_img64_tiny': config_text(
        'edm2_img64_tiny', 'EDM2UNet', 64, 1000, 'edm2', 'model_channels: 32', 'channel_mult: [1, 2, 3, 4]',
        'num_blocks: 1', 'attn_resolutions: [16, 8]', 'dropout: 0.0'),
    'ddpmpp_cifar_tiny': config_text(
        'ddpmpp_cifar_tiny', 'SongUNet', 32, 0, 'song', 'model_channels: 32', 'channel_mult: [2, 2, 2]',
        'num_blocks: 2', 'attn_resolutions: [16]', *SONG_DDPMPP, 'dropout: 0.0'),
    'ddpmpp_cond_tiny': config_text(
        'ddpmpp_cond_tiny', 'SongUNet', 32, 10, 'song', 'model_channels: 32', 'channel_mult: [2, 2, 2]',
        'num_blocks: 1', 'attn_resolutions: [16]', *SONG_DDPMPP, 'dropout: 0.0'),
}
# Presets spell out the reference defaults proto3 cannot leave unset (num_blocks, ...).
EXPECTED_PRESET_CONFIGS = {
    'tcm-ddpmpp-cifar10': config_text(
        'tcm-ddpmpp-cifar10', 'SongUNet', 32, 0, 'song', 'model_channels: 128', 'channel_mult: [2, 2, 2]',
        'num_blocks: 4', 'attn_resolutions: [16]', *SONG_DDPMPP, 'dropout: 0.1'),
    'tcm-edm2-s-img64': config_text(
        'tcm-edm2-s-img64', 'EDM2UNet', 64, 1000, 'edm2', 'model_channels: 192', 'channel_mult: [1, 2, 3, 4]',
        'num_blocks: 3', 'attn_resolutions: [16, 8]'),
    'tcm-edm2-xl-img64': config_text(
        'tcm-edm2-xl-img64', 'EDM2UNet', 64, 1000, 'edm2', 'model_channels: 384', 'channel_mult: [1, 2, 3, 4]',
        'num_blocks: 3', 'attn_resolutions: [16, 8]'),
}


def import_tool():
    """tools/tcm_convert.py as a module, for tests of its functions."""
    spec = importlib.util.spec_from_file_location('tcm_convert', REPO / 'tools' / 'tcm_convert.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(*args, env=None):
    """Runs tools/tcm-convert; returns the CompletedProcess (text output)."""
    return subprocess.run([str(TOOL), *map(str, args)], capture_output=True, text=True, env=env, check=False)


def read_safetensors(path):
    """(tensors, metadata, header length) of a safetensors file; independent of the tool's reader."""
    raw = Path(path).read_bytes()
    header_len = struct.unpack('<Q', raw[:8])[0]
    header = json.loads(raw[8:8 + header_len])
    metadata = header.pop('__metadata__', {})
    data = raw[8 + header_len:]
    dtypes = {'F32': '<f4', 'F64': '<f8', 'I64': '<i8'}
    tensors = {}
    for name, spec in header.items():
        begin, end = spec['data_offsets']
        tensors[name] = np.frombuffer(data[begin:end], dtype=dtypes[spec['dtype']]).reshape(spec['shape'])
    return tensors, metadata, header_len


def write_raw_safetensors(path, header, data=b''):
    """Writes a safetensors file from its header (a JSON-able value, or raw bytes) and data section."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    Path(path).write_bytes(struct.pack('<Q', len(text)) + text + data)


def write_safetensors(path, tensors, metadata):
    """Writes {name: F32 or F64 ndarray} and `metadata`; independent of the tool's writer."""
    codes = {np.dtype('<f4'): 'F32', np.dtype('<f8'): 'F64'}
    header, blobs, offset = {'__metadata__': metadata}, [], 0
    for name, array in tensors.items():
        blob = array.tobytes()
        header[name] = dict(dtype=codes[array.dtype], shape=list(array.shape), data_offsets=[offset, offset + len(blob)])
        blobs.append(blob)
        offset += len(blob)
    write_raw_safetensors(path, header, b''.join(blobs))


def config_body(path):
    """config.pbtxt without its comment lines."""
    return ''.join(line for line in Path(path).read_text().splitlines(True) if not line.startswith('#'))


def fixture(name):
    """(state dict as torch tensors, ECMPrecond kwargs JSON) of a reference fixture."""
    tensors, metadata, _ = read_safetensors(FIXTURES / f'{name}.weights.safetensors')
    return {k: torch.from_numpy(v.copy()) for k, v in tensors.items()}, metadata['config']


class ToolTestCase(unittest.TestCase):
    """Temporary directory per test plus assertions on tool runs."""

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix='tcm-convert-test-'))
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def assertSucceeded(self, result):
        self.assertEqual(result.returncode, 0, result.stderr)

    def assertFailed(self, result, *fragments, out_dir=None):
        """Non-zero exit, exactly one `tcm-convert: error:` line containing every fragment,
        and (when out_dir is given) nothing left behind in out_dir's parent."""
        self.assertNotEqual(result.returncode, 0, result.stdout)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertTrue(lines[0].startswith('tcm-convert: error: '), lines[0])
        for fragment in fragments:
            self.assertIn(fragment, lines[0])
        if out_dir is not None:
            self.assertFalse(out_dir.exists())
            self.assertEqual(list(out_dir.parent.iterdir()) if out_dir.parent.exists() else [], [])

    def assertWeightsEqual(self, weights_path, expected, expected_config_json):
        """weights.safetensors holds exactly `expected` ({name: tensor}) as F32, with the metadata."""
        tensors, metadata, header_len = read_safetensors(weights_path)
        self.assertEqual(header_len % 8, 0)
        self.assertEqual(list(tensors), list(expected))
        for name, value in expected.items():
            self.assertEqual(tensors[name].dtype, np.dtype('<f4'), name)
            self.assertTrue(np.array_equal(tensors[name], value.numpy()), name)
        self.assertEqual(metadata['format'], 'state_dict of ECMPrecond')
        self.assertEqual(json.loads(metadata['config']), json.loads(expected_config_json))


@needs_torch
class FixtureConversionTest(ToolTestCase):
    """(a) Every reference fixture, as a .pth with --config-json and as a flag-less .safetensors."""

    @classmethod
    def setUpClass(cls):
        cls.work = Path(tempfile.mkdtemp(prefix='tcm-convert-fixtures-'))
        cls.runs = {}
        for name in FIXTURE_NAMES:
            state, config_json = fixture(name)
            pth = cls.work / f'{name}.pth'
            torch.save(state, pth)
            cls.runs[name, 'pth'] = run_tool('--input', pth, '--config-json', config_json,
                                             '--output', cls.work / 'pth' / name)
            cls.runs[name, 'safetensors'] = run_tool('--input', FIXTURES / f'{name}.weights.safetensors',
                                                     '--output', cls.work / 'safetensors' / name)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work, ignore_errors=True)

    def for_each_conversion(self, check):
        """Calls check(fixture name, output directory) for every successful conversion, as subtests."""
        for (name, kind), result in self.runs.items():
            with self.subTest(fixture=name, input=kind):
                self.assertSucceeded(result)
                check(name, self.work / kind / name)

    def test_config_has_expected_fields(self):
        def check(name, out):
            self.assertEqual(sorted(p.name for p in out.iterdir()), ['config.pbtxt', 'weights.safetensors'])
            self.assertEqual(config_body(out / 'config.pbtxt'), EXPECTED_FIXTURE_CONFIGS[name])
        self.for_each_conversion(check)

    def test_weights_round_trip_exactly(self):
        def check(name, out):
            state, config_json = fixture(name)
            self.assertWeightsEqual(out / 'weights.safetensors', state, config_json)
        self.for_each_conversion(check)

    def test_summary_names_the_model(self):
        def check(name, out):
            self.assertIn(f'wrote {out}: ', self.runs[name, out.parent.name].stdout)
        self.for_each_conversion(check)

    @unittest.skipUnless(shutil.which('protoc'), 'protoc not installed')
    def test_config_parses_with_the_schema(self):
        def check(_, out):
            with open(out / 'config.pbtxt', 'rb') as text:
                result = subprocess.run(['protoc', f'--proto_path={REPO / "proto"}', '--encode=tcm.v1.ModelConfig',
                                         'tcm/v1/model_config.proto'], stdin=text, capture_output=True, check=False)
            self.assertEqual(result.returncode, 0, result.stderr.decode())
        self.for_each_conversion(check)

    @unittest.skipUnless(os.environ.get('TCM_PARITY_BIN'), 'TCM_PARITY_BIN not set')
    def test_parity_binary_loads_converted_fixtures(self):
        parity_bin = os.environ['TCM_PARITY_BIN']
        self.assertTrue(os.access(parity_bin, os.X_OK), f'TCM_PARITY_BIN={parity_bin} is not executable')

        def check(name, out):
            io = FIXTURES / f'{name}.io.safetensors'
            result = subprocess.run([parity_bin, '--model_dir', str(out), '--io', str(io)],
                                    capture_output=True, text=True, check=False)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.for_each_conversion(check)


class PresetTest(ToolTestCase):
    """(b) Config emission for the released models' presets (--config-only: no weights needed)."""

    def test_presets_emit_expected_config(self):
        for preset, expected in EXPECTED_PRESET_CONFIGS.items():
            with self.subTest(preset=preset):
                out = self.tmp / preset
                self.assertSucceeded(run_tool('--preset', preset, '--config-only', '--output', out))
                self.assertEqual([p.name for p in out.iterdir()], ['config.pbtxt'])
                self.assertEqual(config_body(out / 'config.pbtxt'), expected)

    def test_flags_override_sampling_settings_and_name(self):
        out = self.tmp / 'dir'
        self.assertSucceeded(run_tool('--preset', 'tcm-edm2-s-img64', '--config-only', '--output', out, '--name',
                                      'imagenet64', '--t-max', '70', '--mid-t', '1.5', '--default-steps', '2'))
        lines = config_body(out / 'config.pbtxt').splitlines()
        for line in ('name: "imagenet64"', 't_max: 70.0', 'mid_t: 1.5', 'default_steps: 2', '  model_channels: 192'):
            self.assertIn(line, lines)

    @needs_torch
    def test_preset_not_matching_the_state_dict_is_caught(self):
        state, _ = fixture('ddpmpp_cifar_tiny')
        pth = self.tmp / 'sd.pth'
        torch.save(state, pth)
        out = self.tmp / 'models' / 'cifar'
        # The preset is full size (4 blocks of 128 channels), the fixture tiny (2 blocks of 32).
        self.assertFailed(run_tool('--input', pth, '--preset', 'tcm-ddpmpp-cifar10', '--output', out),
                          'does not match the SongUNet config', "missing 'model.enc.32x32_block2",
                          'wrong --preset or --config-json', out_dir=out)

    def test_labels_are_copied_when_the_count_matches(self):
        labels = self.tmp / 'labels.txt'
        labels.write_text(''.join(f'class {i}\n' for i in range(1000)))
        out = self.tmp / 'out'
        self.assertSucceeded(run_tool('--preset', 'tcm-edm2-xl-img64', '--config-only', '--output', out,
                                      '--labels', labels))
        self.assertEqual((out / 'labels.txt').read_text(), labels.read_text())


@needs_torch
class ErrorTest(ToolTestCase):
    """(c) Bad inputs: non-zero exit, one line naming the problem, no output directory."""

    def setUp(self):
        super().setUp()
        self.state, self.config_json = fixture('edm2_img64_tiny')
        self.pth = self.tmp / 'in' / 'edm2.pth'
        self.pth.parent.mkdir()
        torch.save(self.state, self.pth)
        self.out = self.tmp / 'models' / 'edm2'

    def convert(self, *args):
        return run_tool('--output', self.out, *args)

    def test_truncated_pth(self):
        data = self.pth.read_bytes()
        self.pth.write_bytes(data[:len(data) // 2])
        self.assertFailed(self.convert('--input', self.pth, '--config-json', self.config_json),
                          'cannot read', 'edm2.pth', out_dir=self.out)

    def test_truncated_safetensors(self):
        truncated = self.tmp / 'in' / 'edm2.safetensors'
        truncated.write_bytes((FIXTURES / 'edm2_img64_tiny.weights.safetensors').read_bytes()[:100000])
        self.assertFailed(self.convert('--input', truncated), 'truncated', 'edm2.safetensors', out_dir=self.out)

    def test_truncated_pickle(self):
        pkl = self.tmp / 'in' / 'network-snapshot.pkl'
        pkl.write_bytes(pickle.dumps({'ema': self.state})[:5000])
        self.assertFailed(self.convert('--input', pkl, '--trust-pickle', '--config-json', self.config_json),
                          'cannot read', 'network-snapshot.pkl', out_dir=self.out)

    def test_unknown_preset(self):
        self.assertFailed(self.convert('--input', self.pth, '--preset', 'tcm-edm2-m-img64'),
                          '--preset', "'tcm-edm2-m-img64'", out_dir=self.out)

    def test_non_float_tensor(self):
        torch.save({**self.state, 'model.num_updates': torch.tensor([7])}, self.pth)
        self.assertFailed(self.convert('--input', self.pth, '--config-json', self.config_json),
                          "'model.num_updates'", 'int64', 'floating point', out_dir=self.out)

    def test_missing_input(self):
        self.assertFailed(self.convert('--input', self.tmp / 'nope.pth', '--config-json', self.config_json),
                          'nope.pth', 'does not exist', out_dir=self.out)

    def test_unknown_model_type(self):
        kwargs = json.dumps(dict(img_resolution=64, img_channels=3, model_type='DhariwalUNet'))
        self.assertFailed(self.convert('--config-only', '--config-json', kwargs),
                          "'DhariwalUNet'", 'EDM2UNet', 'SongUNet', out_dir=self.out)

    def test_unknown_argument(self):
        kwargs = json.dumps({**json.loads(self.config_json), 'attn_heads': 4})
        self.assertFailed(self.convert('--input', self.pth, '--config-json', kwargs),
                          "'attn_heads'", out_dir=self.out)

    def test_state_dict_of_another_architecture(self):
        kwargs = json.dumps({**json.loads(self.config_json), 'num_blocks': 2})
        self.assertFailed(self.convert('--input', self.pth, '--config-json', kwargs),
                          'missing', 'model.enc.64x64_block1', out_dir=self.out)

    def test_no_architecture(self):
        self.assertFailed(self.convert('--input', self.pth), '--preset', '--config-json', out_dir=self.out)

    def test_labels_count_mismatch(self):
        labels = self.tmp / 'labels.txt'
        labels.write_text('cat\ndog\nbird\n')
        self.assertFailed(self.convert('--input', self.pth, '--config-json', self.config_json, '--labels', labels),
                          'has 3 lines', '1000 classes', out_dir=self.out)

    def test_existing_output_needs_force(self):
        self.out.mkdir(parents=True)
        (self.out / 'stale.txt').write_text('old')
        self.assertFailed(self.convert('--input', self.pth, '--config-json', self.config_json),
                          'already exists', '--force')
        self.assertSucceeded(self.convert('--input', self.pth, '--config-json', self.config_json, '--force'))
        self.assertEqual(sorted(p.name for p in self.out.iterdir()), ['config.pbtxt', 'weights.safetensors'])
        self.assertEqual(sorted(p.name for p in self.out.parent.iterdir()), ['edm2'])

    def test_failed_write_leaves_nothing(self):
        sys.path.insert(0, str(REPO / 'tools'))
        self.addCleanup(sys.path.remove, str(REPO / 'tools'))
        import tcm_convert

        def fail(path):
            raise OSError(28, 'No space left on device', path)

        files = {'config.pbtxt': tcm_convert._write_text('name: "x"\n'), 'weights.safetensors': fail}
        with self.assertRaises(OSError):
            tcm_convert.write_model_dir(str(self.out), files, force=False)
        self.assertEqual(list(self.out.parent.iterdir()), [])


@needs_torch
class HalfPrecisionInputTest(ToolTestCase):
    """F16 and BF16 safetensors inputs are widened to F32 exactly."""

    def test_f16_and_bf16_are_widened(self):
        state, config_json = fixture('ddpmpp_cond_tiny')
        for dtype, torch_dtype in (('F16', torch.float16), ('BF16', torch.bfloat16)):
            with self.subTest(dtype=dtype):
                narrow = {k: v.to(torch_dtype) for k, v in state.items()}
                header, blobs, offset = {'__metadata__': {'config': config_json}}, [], 0
                for name, value in narrow.items():
                    blob = value.view(torch.int16).numpy().astype('<i2').tobytes()
                    header[name] = dict(dtype=dtype, shape=list(value.shape), data_offsets=[offset, offset + len(blob)])
                    blobs.append(blob)
                    offset += len(blob)
                text = json.dumps(header).encode()
                path = self.tmp / f'{dtype}.safetensors'
                path.write_bytes(struct.pack('<Q', len(text)) + text + b''.join(blobs))
                out = self.tmp / dtype
                self.assertSucceeded(run_tool('--input', path, '--output', out))
                widened = {k: v.to(torch.float32) for k, v in narrow.items()}
                self.assertWeightsEqual(out / 'weights.safetensors', widened, config_json)


FAKE_NETWORKS_PY = '''
class ECMPrecond:
    """Mimics a torch_utils.persistence network: recorded init_kwargs and a state_dict()."""

    def __init__(self, state, **kwargs):
        self.init_kwargs = dict(kwargs)
        self._state = state

    def state_dict(self):
        return self._state
'''


@needs_torch
class PickleTest(ToolTestCase):
    """(d) NVlabs-style snapshot: {'ema': network} whose class lives in the reference repo."""

    def setUp(self):
        super().setUp()
        self.state, self.config_json = fixture('edm2_img64_tiny')
        self.repo = self.tmp / 'TCM'
        (self.repo / 'training').mkdir(parents=True)
        (self.repo / 'training' / '__init__.py').write_text('')
        (self.repo / 'training' / 'networks.py').write_text(FAKE_NETWORKS_PY)
        self.pkl = self.tmp / 'network-snapshot-000100.pkl'
        sys.path.insert(0, str(self.repo))
        try:
            from training.networks import ECMPrecond
            ema = ECMPrecond(self.state, **json.loads(self.config_json))
            with open(self.pkl, 'wb') as f:
                pickle.dump({'ema': ema, 'loss_fn': None, 'augment_pipe': None}, f)
        finally:
            sys.path.remove(str(self.repo))
            for module in ('training.networks', 'training'):
                sys.modules.pop(module, None)

    def test_needs_reference_repo(self):
        out = self.tmp / 'models' / 'edm2_img64_tiny'
        self.assertFailed(run_tool('--input', self.pkl, '--trust-pickle', '--output', out),
                          "'training'", '--reference-repo', out_dir=out)

    def test_reference_repo_on_sys_path_and_init_kwargs_used(self):
        out = self.tmp / 'models' / 'edm2_img64_tiny'
        self.assertSucceeded(run_tool('--input', self.pkl, '--trust-pickle', '--reference-repo', self.repo,
                                      '--output', out))
        self.assertEqual(config_body(out / 'config.pbtxt'), EXPECTED_FIXTURE_CONFIGS['edm2_img64_tiny'])
        self.assertWeightsEqual(out / 'weights.safetensors', self.state, self.config_json)

    def test_conflicting_preset_is_an_error(self):
        out = self.tmp / 'models' / 'x'
        self.assertFailed(run_tool('--input', self.pkl, '--trust-pickle', '--reference-repo', self.repo,
                                   '--output', out, '--preset', 'tcm-edm2-s-img64'),
                          'model_channels=192', 'model_channels=32', out_dir=out)

    def test_pth_holding_a_dict_with_state_dict(self):
        pth = self.tmp / 'ckpt.pth'
        torch.save({'state_dict': self.state, 'step': 100}, pth)
        out = self.tmp / 'models' / 'edm2_img64_tiny'
        self.assertSucceeded(run_tool('--input', pth, '--config-json', self.config_json, '--output', out))
        self.assertWeightsEqual(out / 'weights.safetensors', self.state, self.config_json)

    def test_pth_holding_code_needs_trust_pickle(self):
        marker = self.tmp / 'unpickled'
        pth = self.tmp / 'ckpt.pth'
        torch.save({'state_dict': self.state, 'extra': CreatesFileWhenUnpickled(marker)}, pth)
        out = self.tmp / 'models' / 'edm2_img64_tiny'
        self.assertFailed(run_tool('--input', pth, '--config-json', self.config_json, '--output', out),
                          'ckpt.pth', 'weights_only', '--trust-pickle', out_dir=out)
        self.assertFalse(marker.exists())
        self.assertSucceeded(run_tool('--input', pth, '--trust-pickle', '--config-json', self.config_json,
                                      '--output', out))
        self.assertTrue(marker.exists())


class CreatesFileWhenUnpickled:
    """Pickles to a call of open(path, 'w'): stands for the code a hostile pickle runs."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, 'w')


class TrustPickleTest(ToolTestCase):
    """Nothing is fully unpickled without --trust-pickle (no PyTorch needed)."""

    def test_pkl_is_refused_unread_without_trust_pickle(self):
        marker = self.tmp / 'unpickled'
        pkl = self.tmp / 'network-snapshot.pkl'
        pkl.write_bytes(pickle.dumps(CreatesFileWhenUnpickled(marker)))
        out = self.tmp / 'models' / 'x'
        self.assertFailed(run_tool('--input', pkl, '--preset', 'tcm-edm2-s-img64', '--output', out),
                          'network-snapshot.pkl', '--trust-pickle', 'trusted source', out_dir=out)
        self.assertFalse(marker.exists())

    def test_help_describes_trust_pickle(self):
        result = run_tool('--help')
        self.assertSucceeded(result)
        text = ' '.join(result.stdout.split())
        self.assertIn('--trust-pickle allow full unpickling', text)
        self.assertIn('Default: off (a .pkl is refused, a .pth/.pt is read with torch.load(weights_only=True))', text)


class ServerLimitsTest(ToolTestCase):
    """Configs past tcm-serve's ConfigLimits are refused before any shape is built."""

    BASE = dict(model_type='EDM2UNet', img_resolution=8, img_channels=3, label_dim=0, model_channels=4,
                channel_mult=[1], num_blocks=1, attn_resolutions=[])
    # (changed kwargs, fragments of the error: the field, the limit, the value)
    CASES = [
        (dict(num_blocks=65), 'edm2.num_blocks', 'at most 64', 'got 65'),
        (dict(model_channels=4097), 'edm2.model_channels', 'at most 4096', 'got 4097'),
        (dict(channel_mult=[1] * 9, img_resolution=256), 'channel_mult entries', 'at most 8', 'got 9'),
        (dict(channel_mult=[65]), 'edm2.channel_mult', 'at most 64', 'got 65'),
        (dict(channel_mult_emb=65), 'edm2.channel_mult_emb', 'at most 64', 'got 65'),
        (dict(label_dim=100001), 'num_classes', 'at most 100000', 'got 100001'),
        (dict(img_resolution=8192), 'img_resolution', 'at most 4096', 'got 8192'),
        (dict(img_channels=2), 'img_channels', 'must be 1 (grey), 3 (RGB) or 4 (RGBA)', 'got 2'),
        (dict(img_channels=17), 'img_channels', 'must be 1 (grey), 3 (RGB) or 4 (RGBA)', 'got 17'),
        (dict(channels_per_head=4097), 'edm2.channels_per_head', 'at most 4096', 'got 4097'),
        (dict(attn_resolutions=[8] * 17), 'attn_resolutions entries', 'at most 16', 'got 17'),
        (dict(resample_filter=[1] * 18), 'resample_filter taps', 'at most 16', 'got 18'),
        (dict(model_type='SongUNet', augment_dim=1025), 'song.augment_dim', 'at most 1024', 'got 1025'),
        (dict(model_channels=4096, channel_mult=[5]), 'channel_mult', 'at most 16384', '= 20480'),
        (dict(model_channels=4096, channel_mult=[4, 4, 4, 4], num_blocks=64), 'edm2', 'weights', 'limit of 4e+09'),
        (dict(model_channels=16, img_resolution=4096), 'batching.max_batch_size (unset: the default 16)',
         'a batch of 16 images of 4096x4096 needs about 4.29e+10 activation values', '2.68e+09 per image',
         'limit of 4.29e+09'),
        # A one-level SongUNet attends at its full resolution: 2 x 65536^2 scores per image.
        (dict(model_type='SongUNet', model_channels=16, img_resolution=256), '256x256', '8.6e+09 per image'),
        (dict(label_balance=1e300), 'label_balance must be a finite number within the float32 range', '1e+300'),
        (dict(resample_filter=[1, 3.5e38]), 'resample_filter must be a finite number within the float32 range'),
    ]

    def test_config_past_a_limit_is_refused(self):
        for change, *fragments in self.CASES:
            with self.subTest(change=change):
                out = self.tmp / 'models' / 'x'
                kwargs = json.dumps({**self.BASE, **change})
                self.assertFailed(run_tool('--config-only', '--config-json', kwargs, '--output', out),
                                  *fragments, out_dir=out)

    def test_safetensors_config_past_a_limit_is_refused(self):
        path = self.tmp / 'blocks.safetensors'
        write_safetensors(path, {}, {'config': json.dumps({**self.BASE, 'num_blocks': 65})})
        out = self.tmp / 'models' / 'x'
        self.assertFailed(run_tool('--input', path, '--output', out), 'edm2.num_blocks', 'at most 64', 'got 65',
                          out_dir=out)

    def test_largest_allowed_sizes_pass(self):
        # 16 images of 128x128 with 65 skips of 64 channels: about 1.2e9 activation values, under 2^32.
        kwargs = dict(self.BASE, num_blocks=64, model_channels=64, img_channels=4, img_resolution=128,
                      label_dim=100000, channel_mult_noise=64, channels_per_head=4096)
        self.assertSucceeded(run_tool('--config-only', '--config-json', json.dumps(kwargs), '--output', self.tmp / 'x'))

    def test_activation_estimate_is_the_servers(self):
        tool = import_tool()
        # The one-level 4096x4096 network of model_config_test: 2 skips and 8 working activations of 2^28.
        config = dict(img_resolution=4096, edm2=dict(model_channels=16, channel_mult=[1], num_blocks=1))
        self.assertEqual(tool.activation_values(config, 'edm2'), 10 * 2 ** 28)
        # The EDM2-S preset: 64x64, 192 channels x [1, 2, 3, 4], 3 blocks, 9 and 12 heads at 16 and 8.
        s = dict(img_resolution=64, edm2=dict(model_channels=192, channel_mult=[1, 2, 3, 4], num_blocks=3,
                                              attn_resolutions=[16, 8]))
        skips = 64 ** 2 * 4 * 192 + 32 ** 2 * (192 + 3 * 384) + 16 ** 2 * (384 + 3 * 576) + 8 ** 2 * (576 + 3 * 768)
        self.assertEqual(tool.activation_values(s, 'edm2'), skips + 8 * 64 ** 2 * 192 + 2 * 9 * 16 ** 4)


class EmbeddedConfigTest(ToolTestCase):
    """--preset/--config-json against the architecture a checkpoint records."""

    def test_keys_the_checkpoint_does_not_record_are_an_error(self):
        out = self.tmp / 'models' / 'x'
        self.assertFailed(run_tool('--input', FIXTURES / 'edm2_img64_tiny.weights.safetensors', '--config-json',
                                   '{"num_blocks": 1, "label_balance": 0.5, "channels_per_head": 32}',
                                   '--output', out),
                          '--config-json sets channels_per_head, label_balance', 'leave them out', out_dir=out)

    def test_agreeing_keys_are_accepted(self):
        out = self.tmp / 'edm2_img64_tiny'
        self.assertSucceeded(run_tool('--input', FIXTURES / 'edm2_img64_tiny.weights.safetensors', '--config-json',
                                      '{"num_blocks": 1, "model_type": "EDM2UNet"}', '--output', out))
        self.assertEqual(config_body(out / 'config.pbtxt'), EXPECTED_FIXTURE_CONFIGS['edm2_img64_tiny'])


class OutputSafetyTest(ToolTestCase):
    """What is written is what the server accepts: one comment line, finite weights, a servable name."""

    def test_input_name_with_line_breaks_stays_in_the_comment(self):
        source = self.tmp / 'a\ninstance { precision: PRECISION_FP16 }\r#.safetensors'
        source.symlink_to(FIXTURES / 'edm2_img64_tiny.weights.safetensors')
        out = self.tmp / 'edm2_img64_tiny'
        self.assertSucceeded(run_tool('--input', source, '--output', out))
        text = (out / 'config.pbtxt').read_text()
        self.assertEqual(text.splitlines()[0],
                         r'# written by tcm-convert from a\ninstance { precision: PRECISION_FP16 }\r#.safetensors')
        self.assertEqual(text.count('\n'), len(EXPECTED_FIXTURE_CONFIGS['edm2_img64_tiny'].splitlines()) + 1)
        self.assertEqual(config_body(out / 'config.pbtxt'), EXPECTED_FIXTURE_CONFIGS['edm2_img64_tiny'])

    def test_non_finite_weights_are_refused(self):
        tensors, metadata, _ = read_safetensors(FIXTURES / 'ddpmpp_cond_tiny.weights.safetensors')
        name = 'model.map_label.weight'
        for value, dtype, fragment in ((np.nan, '<f4', 'NaN or infinite'), (-np.inf, '<f4', 'NaN or infinite'),
                                       (1e300, '<f8', 'past the F32 range')):
            with self.subTest(value=value, dtype=dtype):
                changed = dict(tensors, **{name: tensors[name].astype(dtype)})
                changed[name].flat[3] = value
                path = self.tmp / 'bad.safetensors'
                write_safetensors(path, changed, metadata)
                out = self.tmp / 'models' / 'x'
                self.assertFailed(run_tool('--input', path, '--output', out), repr(name), fragment, out_dir=out)

    def test_f64_weights_in_the_f32_range_are_converted(self):
        tensors, metadata, _ = read_safetensors(FIXTURES / 'ddpmpp_cond_tiny.weights.safetensors')
        path = self.tmp / 'f64.safetensors'
        write_safetensors(path, {k: v.astype('<f8') for k, v in tensors.items()}, metadata)
        out = self.tmp / 'ddpmpp_cond_tiny'
        self.assertSucceeded(run_tool('--input', path, '--output', out))
        written, _, _ = read_safetensors(out / 'weights.safetensors')
        self.assertTrue(all(np.array_equal(written[k], tensors[k]) for k in tensors))

    def test_names_the_server_refuses_are_refused(self):
        for name in ('', '.', '..', 'my model', 'x/y', 'na\u00efve', 'a' * 201, 'a\nb'):
            with self.subTest(name=name):
                out = self.tmp / 'models' / 'x'
                self.assertFailed(run_tool('--preset', 'tcm-edm2-s-img64', '--config-only', '--output', out,
                                           '--name', name), '1 to 200 letters', out_dir=out)
        out = self.tmp / 'models' / 'my model'
        self.assertFailed(run_tool('--preset', 'tcm-edm2-s-img64', '--config-only', '--output', out),
                          "'my model'", '--name', out_dir=out)

    def test_sampling_settings_the_server_refuses_are_refused(self):
        for t_max, mid_t in (('inf', '1'), ('1e39', '1'), ('nan', '1'), ('80', '0'), ('80', '80'), ('80', '1e-50'),
                             ('1', '0.99999999'), ('10001', '1'), ('1e38', '1')):
            with self.subTest(t_max=t_max, mid_t=mid_t):
                out = self.tmp / 'models' / 'x'
                self.assertFailed(run_tool('--preset', 'tcm-edm2-s-img64', '--config-only', '--output', out,
                                           '--t-max', t_max, '--mid-t', mid_t),
                                  'need 0 < mid_t < t_max <= 10000', out_dir=out)
        out = self.tmp / 'largest'
        self.assertSucceeded(run_tool('--preset', 'tcm-edm2-s-img64', '--config-only', '--output', out,
                                      '--t-max', '10000', '--mid-t', '9999'))
        self.assertIn('t_max: 10000.0', config_body(out / 'config.pbtxt').splitlines())

    LABELS_CONFIG = json.dumps(dict(ServerLimitsTest.BASE, label_dim=3))

    def test_labels_the_server_refuses_are_refused_before_writing(self):
        # Each as the second of three lines: tcm-serve's ReadLabels refuses all of them.
        for bad, why in ((b'red\x1b[31m', 'control character U+001B at character 4'),
                         (b'tab\tbed', 'control character U+0009 at character 4'),
                         (b'form\x0cfeed', 'control character U+000C at character 5'),
                         (b'csi\xc2\x9b', 'control character U+009B at character 4'),
                         (b'del\x7f', 'control character U+007F'),
                         (b'bad\xff', 'byte 4 is not UTF-8'),
                         (b'surrogate\xed\xa0\x80', 'byte 10 is not UTF-8'),
                         (b'overlong\xc0\xaf', 'byte 9 is not UTF-8')):
            with self.subTest(bad=bad):
                labels = self.tmp / 'labels.txt'
                labels.write_bytes(b'one\n' + bad + b'\nthree\n')
                out = self.tmp / 'models' / 'x'
                self.assertFailed(run_tool('--config-only', '--config-json', self.LABELS_CONFIG, '--output', out,
                                           '--labels', labels),
                                  'labels.txt: line 2: must be UTF-8 text without control characters', why,
                                  out_dir=out)

    def test_labels_split_at_newlines_only_as_the_server_does(self):
        # U+2028 and U+0085 are line breaks to str.splitlines() but one class name each to tcm-serve;
        # CRLF endings and blank lines at the end are what the server reads past too.
        labels = self.tmp / 'labels.txt'
        labels.write_bytes('line\u2028separator\r\nnext\u2029paragraph\r\ncaf\u00e9\r\n\r\n\n'.encode())
        out = self.tmp / 'x'
        self.assertSucceeded(run_tool('--config-only', '--config-json', self.LABELS_CONFIG, '--output', out,
                                      '--labels', labels))
        self.assertEqual((out / 'labels.txt').read_bytes(),
                         'line\u2028separator\nnext\u2029paragraph\ncaf\u00e9\n'.encode())
        labels.write_bytes(b'a\x85b\nc\n')  # not UTF-8 here: U+0085 would be \xc2\x85, a C1 control
        out = self.tmp / 'models' / 'y'
        self.assertFailed(run_tool('--config-only', '--config-json', self.LABELS_CONFIG, '--output', out,
                                   '--labels', labels), 'line 1', 'byte 2 is not UTF-8', out_dir=out)

    def test_longest_plain_name_is_accepted(self):
        name = 'a.b-C_9' + 'x' * 193
        out = self.tmp / 'x'
        self.assertSucceeded(run_tool('--preset', 'tcm-edm2-s-img64', '--config-only', '--output', out, '--name', name))
        self.assertIn(f'name: "{name}"', config_body(out / 'config.pbtxt').splitlines())


class MalformedInputTest(ToolTestCase):
    """Hostile inputs give one error line, never a traceback (no PyTorch needed)."""

    MODEL_TYPE_LIST = json.dumps(dict(ServerLimitsTest.BASE, model_type=['EDM2UNet']))
    # case -> (header, data section, fragments of the error beside the file name)
    CASES = {
        'model_type_list': ({'__metadata__': {'config': MODEL_TYPE_LIST}}, b'', ["model_type ['EDM2UNet']"]),
        'metadata_int': ({'__metadata__': 5}, b'', ['__metadata__']),
        'metadata_value_int': ({'__metadata__': {'config': 5}}, b'', ['__metadata__']),
        'deep_config': ({'__metadata__': {'config': '[' * 100000}}, b'', ['nested too deeply']),
        'deep_header': (b'[' * 100000, b'', ['nested too deeply']),
        'entry_list': ({'t': [1, 2]}, b'', ["'t'"]),
        'dtype_list': ({'t': dict(dtype=['F32'], shape=[1], data_offsets=[0, 4])}, b'\0' * 4, ["'t'"]),
        'negative_shape': ({'t': dict(dtype='F32', shape=[-2, -2], data_offsets=[0, 16])}, b'\0' * 16, ["'t'"]),
        'float_shape': ({'t': dict(dtype='F32', shape=[2.0], data_offsets=[0, 8])}, b'\0' * 8, ["'t'"]),
        'bool_shape': ({'t': dict(dtype='F32', shape=[True], data_offsets=[0, 4])}, b'\0' * 4, ["'t'"]),
        'infinite_shape': (b'{"t":{"dtype":"F32","shape":[1e999],"data_offsets":[0,4]}}', b'\0' * 4, ["'t'"]),
        'negative_offset': ({'t': dict(dtype='F32', shape=[1], data_offsets=[-4, 0])}, b'\0' * 4, ["'t'"]),
        'too_many_dims': ({'t': dict(dtype='F32', shape=[1] * 100, data_offsets=[0, 4])}, b'\0' * 4, ["'t'"]),
    }

    def test_malformed_safetensors_headers(self):
        for case, (header, data, fragments) in self.CASES.items():
            with self.subTest(case=case):
                path = self.tmp / f'{case}.safetensors'
                write_raw_safetensors(path, header, data)
                out = self.tmp / 'models' / case
                named = [] if case == 'model_type_list' else [path.name]
                self.assertFailed(run_tool('--input', path, '--output', out), *named, *fragments, out_dir=out)

    def test_binary_config_json_file(self):
        path = self.tmp / 'config.json'
        path.write_bytes(b'\xff\xfe{')
        out = self.tmp / 'models' / 'x'
        self.assertFailed(run_tool('--config-only', '--config-json', path, '--output', out), '--config-json',
                          out_dir=out)

    def test_unexpected_exception_is_one_line_naming_the_input(self):
        tool = import_tool()
        stderr = io.StringIO()
        with mock.patch.object(tool, 'convert', side_effect=KeyError('surprise\non two lines')), \
                contextlib.redirect_stderr(stderr):
            status = tool.main(['--input', 'in/model.safetensors', '--output', str(self.tmp / 'x')])
        self.assertEqual(status, 1)
        lines = stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith('tcm-convert: error: '), lines[0])
        self.assertIn('in/model.safetensors', lines[0])
        self.assertIn('KeyError', lines[0])


@unittest.skipUnless(os.environ.get('TCM_REFERENCE_REPO'), 'TCM_REFERENCE_REPO not set')
class ReferenceRepoTest(ToolTestCase):
    """Real torch_utils.persistence pickles of reference networks of several shapes."""

    VARIANTS = [
        dict(img_resolution=32, img_channels=1, label_dim=10, model_type='EDM2UNet', model_channels=16,
             channel_mult=[1, 2, 2], num_blocks=1, attn_resolutions=[8], channel_mult_noise=2, channel_mult_emb=3,
             learnable_scale=True, channels_per_head=16, dout_resolutions=[16, 8, 4, 2, 1], dropout=0.1),
        dict(img_resolution=32, img_channels=3, label_dim=10, model_type='SongUNet', model_channels=16,
             channel_mult=[1, 2, 2], num_blocks=1, embedding_type='fourier', channel_mult_noise=2,
             encoder_type='residual', resample_filter=[1, 3, 3, 1], learnable_scale=True, augment_dim=9),
        dict(img_resolution=32, img_channels=3, model_type='SongUNet', model_channels=16, channel_mult=[1, 2, 2, 2],
             num_blocks=2, encoder_type='skip', decoder_type='skip', attn_resolutions=[16, 8]),
    ]

    def test_reference_pickles_convert(self):
        repo = os.environ['TCM_REFERENCE_REPO']
        script = ('import pickle, sys, json; from training.networks import ECMPrecond\n'
                  'net = ECMPrecond(**json.loads(sys.argv[1]))\n'
                  'pickle.dump({"ema": net}, open(sys.argv[2], "wb"))\n')
        env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [repo, os.environ.get('PYTHONPATH')]))}
        for i, kwargs in enumerate(self.VARIANTS):
            with self.subTest(variant=kwargs):
                pkl = self.tmp / f'net{i}.pkl'
                made = subprocess.run([sys.executable, '-c', script, json.dumps(kwargs), str(pkl)],
                                      env=env, capture_output=True, text=True, check=False)
                if made.returncode != 0:
                    self.skipTest(f'reference networks do not import here: {made.stderr.strip().splitlines()[-1]}')
                out = self.tmp / f'out{i}'
                self.assertSucceeded(run_tool('--input', pkl, '--trust-pickle', '--reference-repo', repo,
                                              '--output', out))
                _, metadata, _ = read_safetensors(out / 'weights.safetensors')
                self.assertEqual(json.loads(metadata['config']), kwargs)


if __name__ == '__main__':
    unittest.main()
