"""tools/setup_env.sh's install path end to end, with pip replaced by a recorder.

The "venv" is a wrapper around the interpreter running these tests: `python -m pip ...` goes to a
fake pip that records its arguments and the build environment (and fakes `download` and `wheel`:
an mmcv sdist whose setup.py asks for C++14, a wheel whose _ext library holds device code exactly
when FORCE_CUDA=1); everything else (the plan's torch lookup, `pip freeze`, the stack check) runs
on this environment, read-only. So the script's real sequence runs: plan, cache lookup, the C++20
patch, the build environment, the ops check of the built wheel, caching under the right key, the
final stack check and the stamp, without downloading or compiling anything.
"""
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'tools' / 'setup_env.sh'

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec('mmcv') is None or importlib.util.find_spec('torch') is None,
    reason='the stack check at the end needs the installed OpenMMLab stack')

FAKE_PIP = r'''
import io, json, os, sys, tarfile, zipfile
log, args = sys.argv[1], sys.argv[2:]
with open(log, 'a') as f:
    keys = ('MMCV_WITH_OPS', 'FORCE_CUDA', 'TORCH_CUDA_ARCH_LIST', 'CUDA_HOME',
            'CUDA_VISIBLE_DEVICES')
    f.write(json.dumps({'args': args, 'env': {k: os.environ.get(k) for k in keys}}) + '\n')
cmd = args[0]
if cmd == 'freeze':
    os.execv(sys.executable, [sys.executable, '-m', 'pip', 'freeze'])
if cmd == 'download':
    dest = args[args.index('-d') + 1]
    data = b"extra_compile_args = {'cxx': ['-std=c++14'], 'nvcc': ['-std=c++14']}\n"
    with tarfile.open(os.path.join(dest, 'mmcv-2.1.0.tar.gz'), 'w:gz') as tf:
        info = tarfile.TarInfo('mmcv-2.1.0/setup.py')
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
if cmd == 'wheel':
    dest = args[args.index('-w') + 1]
    with open(os.path.join(args[-1], 'setup.py')) as f:
        assert '-std=c++14' not in f.read(), 'the C++20 patch was not applied'
    os.makedirs(dest, exist_ok=True)
    device = b'.nv_fatbin __cudaRegisterFatBinary' if os.environ.get('FORCE_CUDA') == '1' else b''
    with zipfile.ZipFile(os.path.join(dest, 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl'), 'w') as z:
        z.writestr('mmcv/_ext.cpython-311-x86_64-linux-gnu.so', b'\x7fELF ' + device)
'''


class FakeEnv:
    def __init__(self, root: Path):
        self.root, self.venv, self.cache = root, root / 'venv', root / 'cache'
        self.log = root / 'pip.log'
        self.path = []
        (root / 'fake_pip.py').write_text(FAKE_PIP)
        (self.venv / 'bin').mkdir(parents=True)
        self._script(self.venv / 'bin' / 'python',
                     'if [ "$1" = -m ] && [ "$2" = pip ]; then shift 2; '
                     f'exec {sys.executable} {root / "fake_pip.py"} {self.log} "$@"; fi\n'
                     f'exec {sys.executable} "$@"')
        self.torch_version, self.torch_cuda = subprocess.run(
            [sys.executable, '-c', 'import torch; print(torch.__version__, torch.version.cuda)'],
            capture_output=True, text=True, check=True).stdout.split()
        self.pytag = 'cp%d%d' % sys.version_info[:2]

    @staticmethod
    def _script(path, body):
        path.write_text('#!/bin/sh\n' + body + '\n')
        path.chmod(0o755)

    def key(self, ops):
        return f'mmcv-2.1.0-torch-{self.torch_version}-{self.pytag}' + (f'-{ops}' if ops else '')

    def run(self, **env_extra):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(('MMEFF_', 'CUDA_', 'TORCH_CUDA_')) and k != 'PYTHONPATH'}
        env.update(PATH=':'.join(self.path + ['/usr/bin', '/bin']), MMEFF_VENV=str(self.venv),
                   MMEFF_CACHE=str(self.cache), MAX_JOBS='1')
        env.update(env_extra)
        if self.log.exists():
            self.log.unlink()
        proc = subprocess.run(['bash', str(SCRIPT)], env=env, capture_output=True, text=True,
                              timeout=600)
        calls = [json.loads(line) for line in self.log.read_text().splitlines()] \
            if self.log.exists() else []
        return proc, calls


def installs_of(calls):
    return [c['args'] for c in calls if c['args'][0] == 'install']


@pytest.mark.slow
def test_cpu_build_is_cached_under_the_cpu_key_and_stamped(tmp_path):
    env = FakeEnv(tmp_path)
    proc, calls = env.run(MMEFF_MMCV_CUDA='0')
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    (wheel_call,) = [c for c in calls if c['args'][0] == 'wheel']
    assert wheel_call['env'] == {'MMCV_WITH_OPS': '1', 'FORCE_CUDA': '0',
                                 'CUDA_VISIBLE_DEVICES': '',  # mmcv's setup.py must see no GPU
                                 'TORCH_CUDA_ARCH_LIST': None, 'CUDA_HOME': None}
    cached = env.cache / 'wheels' / env.key('cpu') / 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl'
    assert cached.is_file()
    # the cached wheel is what gets installed, under the torch constraints
    assert any(str(cached) in args and '-c' in args for args in installs_of(calls)), calls
    assert 'RoIAlign and nms' in out and (env.venv / '.mmeff-stamp').is_file()
    # a second run finds the stamp (which records the plan) and does nothing
    proc, calls = env.run(MMEFF_MMCV_CUDA='0')
    assert proc.returncode == 0 and 'is up to date' in proc.stderr and calls == []
    # another plan (here: CUDA ops wanted but no nvcc -> fails) is not "up to date"
    proc, _ = env.run(MMEFF_MMCV_CUDA='1')
    assert proc.returncode == 1 and 'MMEFF_MMCV_CUDA=1 but no nvcc' in proc.stderr


@pytest.mark.slow
def test_cpu_wheel_under_the_old_key_is_copied_not_rebuilt(tmp_path):
    env = FakeEnv(tmp_path)
    legacy = env.cache / 'wheels' / env.key(None)
    legacy.mkdir(parents=True)
    old = legacy / 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl'
    with zipfile.ZipFile(old, 'w') as zf:
        zf.writestr('mmcv/_ext.cpython-311-x86_64-linux-gnu.so', b'\x7fELF cpu only')
    proc, calls = env.run(MMEFF_MMCV_CUDA='0')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not [c for c in calls if c['args'][0] in ('download', 'wheel')]
    assert 'previous key' in proc.stderr
    copied = env.cache / 'wheels' / env.key('cpu') / old.name
    assert copied.read_bytes() == old.read_bytes() and old.is_file()
    assert any(str(copied) in args for args in installs_of(calls))


def test_cuda_build_gets_force_cuda_archs_and_its_own_key(tmp_path):
    """nvcc found (a fake one of torch's CUDA major version), a GPU listed by a fake nvidia-smi:
    the build runs with FORCE_CUDA=1 and that GPU's arch and is cached under the cuda key. The
    stack check then runs this environment's real mmcv; when that has CPU-only ops it must fail
    the install (MMEFF_EXPECT_OPS=cuda) and leave no stamp."""
    env = FakeEnv(tmp_path)
    if env.torch_cuda == 'None':
        pytest.skip('this torch is a CPU-only build')
    home = tmp_path / 'cuda'
    (home / 'bin').mkdir(parents=True)
    (home / 'include').mkdir()
    (home / 'include' / 'cuda_runtime.h').write_text('')
    env._script(home / 'bin' / 'nvcc', f'echo "Cuda compilation tools, release {env.torch_cuda}, '
                                       f'V{env.torch_cuda}.0"')
    (tmp_path / 'drv').mkdir()
    env._script(tmp_path / 'drv' / 'nvidia-smi', 'echo 8.6')
    env.path += [str(home / 'bin'), str(tmp_path / 'drv')]
    proc, calls = env.run()
    (wheel_call,) = [c for c in calls if c['args'][0] == 'wheel']
    assert wheel_call['env'] == {'MMCV_WITH_OPS': '1', 'FORCE_CUDA': '1',
                                 'CUDA_VISIBLE_DEVICES': None,
                                 'TORCH_CUDA_ARCH_LIST': '8.6+PTX', 'CUDA_HOME': str(home)}
    assert (env.cache / 'wheels' / env.key('cuda8.6+PTX')).is_dir()
    assert not (env.cache / 'wheels' / env.key('cpu')).exists()
    if proc.returncode == 0:  # this environment's mmcv really has CUDA ops
        assert 'mmcv ops (CUDA' in proc.stdout
    else:
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert 'was to be built with CUDA ops, but it has CPU-only ops' in proc.stderr
        assert not (env.venv / '.mmeff-stamp').exists()
