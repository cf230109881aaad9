"""tools/setup_env.sh's mmcv build plan (`--print-plan`): CPU or CUDA ops, arch list, cache key.

No GPU and no real CUDA toolkit are needed: each case builds a throwaway "venv" whose python sees
only the standard library and a stub torch (version, CUDA tag, visible devices), a fake CUDA
toolkit whose nvcc only answers --version, and a fake nvidia-smi; PATH holds only those and
/usr/bin:/bin, so a toolkit installed on the machine is not seen. --print-plan builds and installs
nothing.
"""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'tools' / 'setup_env.sh'
SYSTEM_PATH = ['/usr/bin', '/bin']
PYTAG = 'cp%d%d' % sys.version_info[:2]


class Machine:
    """A temp dir with a stub-torch venv, optional fake CUDA toolkits and an optional nvidia-smi."""

    def __init__(self, root: Path, torch_version='2.1.0+cu121', torch_cuda='12.1', torch_gpus=()):
        self.root = root
        self.venv = root / 'venv'
        self.cache = root / 'cache'
        self.path = []
        stub = root / 'stub-site'
        (stub / 'torch').mkdir(parents=True)
        (stub / 'torch' / 'version.py').write_text(
            f'__version__ = {torch_version!r}\ncuda = {torch_cuda!r}\n')
        (stub / 'torch' / '__init__.py').write_text(
            'from .version import __version__\n'
            'class cuda:\n'
            f'    _caps = {list(torch_gpus)!r}\n'
            '    is_available = staticmethod(lambda: bool(cuda._caps))\n'
            '    device_count = staticmethod(lambda: len(cuda._caps))\n'
            '    get_device_capability = staticmethod(lambda i: cuda._caps[i])\n')
        (self.venv / 'bin').mkdir(parents=True)
        self._script(self.venv / 'bin' / 'python',
                     f'PYTHONPATH={stub} exec {sys.executable} -S "$@"')

    @staticmethod
    def _script(path: Path, body: str):
        path.write_text('#!/bin/sh\n' + body + '\n')
        path.chmod(0o755)

    def toolkit(self, version: str, on_path=True) -> Path:
        """A CUDA home whose bin/nvcc reports `version`."""
        home = self.root / f'cuda-{version}'
        (home / 'bin').mkdir(parents=True)
        (home / 'include').mkdir()
        (home / 'include' / 'cuda_runtime.h').write_text('')
        self._script(home / 'bin' / 'nvcc',
                     'if [ "$1" = --version ]; then\n'
                     '  echo "nvcc: NVIDIA (R) Cuda compiler driver"\n'
                     f'  echo "Cuda compilation tools, release {version}, V{version}.0"; exit 0\n'
                     'fi\nexit 1')
        if on_path:
            self.path.append(str(home / 'bin'))
        return home

    def nvidia_smi(self, caps=(), fail=False):
        bindir = self.root / 'driver-bin'
        bindir.mkdir(exist_ok=True)
        if fail:
            body = 'echo "No devices were found"; exit 6'
        else:
            body = 'case "$*" in *compute_cap*) printf "%s\\n" ' + ' '.join(caps) + ';; esac'
        self._script(bindir / 'nvidia-smi', body)
        self.path.append(str(bindir))

    def plan(self, expect_rc=0, **env_extra):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(('MMEFF_', 'CUDA_', 'TORCH_CUDA_')) and k != 'PYTHONPATH'}
        env.update(PATH=':'.join(self.path + SYSTEM_PATH), MMEFF_VENV=str(self.venv),
                   MMEFF_CACHE=str(self.cache), HOME=str(self.root))
        env.update(env_extra)
        proc = subprocess.run(['bash', str(SCRIPT), '--print-plan'], env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == expect_rc, proc.stdout + proc.stderr
        if expect_rc:
            return proc.stderr
        return dict(line.split('=', 1) for line in proc.stdout.splitlines())


def fake_mmcv_wheel(directory: Path, device_code: bool) -> Path:
    """An mmcv wheel whose _ext library does or does not hold CUDA device code."""
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl'
    device = b'\0.nv_fatbin\0__cudaRegisterFatBinary\0' if device_code else b'\0.text\0'
    body = b'\x7fELF' + device
    with zipfile.ZipFile(wheel, 'w') as zf:
        zf.writestr('mmcv/__init__.py', '')
        zf.writestr('mmcv/_ext.cpython-311-x86_64-linux-gnu.so', body)
    return wheel


@pytest.fixture
def machine(tmp_path):
    return Machine(tmp_path)


def test_no_nvcc_builds_cpu_ops_under_a_cpu_key(machine):
    plan = machine.plan()
    assert plan['MMCV_OPS'] == 'cpu' and 'no nvcc' in plan['REASON']
    assert plan['WHEEL_KEY'] == f'mmcv-2.1.0-torch-2.1.0+cu121-{PYTAG}-cpu'
    assert plan['WHEEL_DIR'] == f'{machine.cache}/wheels/{plan["WHEEL_KEY"]}'
    # a CPU build hides GPUs from mmcv's setup.py, which would otherwise compile CUDA ops
    assert plan['BUILD_ENV'].split() == ['MMCV_WITH_OPS=1', 'FORCE_CUDA=0', 'CUDA_VISIBLE_DEVICES=']
    assert plan['WHEEL_SOURCE'] == 'build' and plan['ARCH_LIST'] == ''
    # --print-plan writes nothing: no cache, nothing new in the venv
    assert not machine.cache.exists()
    assert sorted(p.name for p in machine.venv.rglob('*')) == ['bin', 'python']


def test_nvcc_and_visible_gpus_give_their_archs(machine):
    home = machine.toolkit('12.1')
    machine.nvidia_smi(caps=['9.0', '8.0', '8.0'])
    plan = machine.plan()
    assert plan['MMCV_OPS'] == 'cuda'
    assert plan['NVCC'] == f'{home}/bin/nvcc' and plan['CUDA_HOME'] == str(home)
    assert plan['NVCC_VERSION'] == '12.1'
    assert plan['ARCH_LIST'] == '8.0;9.0+PTX' and plan['ARCH_SOURCE'] == 'nvidia-smi'
    assert plan['WHEEL_KEY'] == f'mmcv-2.1.0-torch-2.1.0+cu121-{PYTAG}-cuda8.0_9.0+PTX'
    assert plan['BUILD_ENV'].split() == [
        'MMCV_WITH_OPS=1', 'FORCE_CUDA=1', 'TORCH_CUDA_ARCH_LIST=8.0;9.0+PTX', f'CUDA_HOME={home}']


@pytest.mark.parametrize('smi', ['absent', 'fails'])
def test_login_node_without_gpu_uses_the_documented_default(machine, smi):
    machine.toolkit('12.1')
    if smi == 'fails':
        machine.nvidia_smi(fail=True)
    plan = machine.plan()
    assert plan['MMCV_OPS'] == 'cuda'
    assert plan['ARCH_LIST'] == '7.0;7.5;8.0;8.6;8.9;9.0+PTX'
    assert plan['ARCH_SOURCE'] == 'default for CUDA 12.1 (no GPU visible)'
    assert plan['WHEEL_KEY'].endswith('-cuda7.0_7.5_8.0_8.6_8.9_9.0+PTX')


@pytest.mark.parametrize('nvcc, torch_tag, archs', [
    ('11.7', '11.7', '7.0;7.5;8.0;8.6+PTX'),
    ('11.8', '11.8', '7.0;7.5;8.0;8.6;8.9;9.0+PTX'),
    ('12.8', '12.8', '7.0;7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX'),
    ('13.0', '13.2', '7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX'),
])
def test_default_arch_list_follows_nvcc(tmp_path, nvcc, torch_tag, archs):
    machine = Machine(tmp_path, torch_version=f'2.5.1+cu{torch_tag.replace(".", "")}',
                      torch_cuda=torch_tag)
    machine.toolkit(nvcc)
    assert machine.plan()['ARCH_LIST'] == archs


def test_gpu_seen_by_torch_when_nvidia_smi_is_missing(tmp_path):
    machine = Machine(tmp_path, torch_gpus=[(8, 6)])
    machine.toolkit('12.1')
    plan = machine.plan()
    assert plan['ARCH_LIST'] == '8.6+PTX' and plan['ARCH_SOURCE'] == 'torch'


def test_torch_cuda_arch_list_wins_and_is_normalised(machine):
    machine.toolkit('12.1')
    machine.nvidia_smi(caps=['8.6'])
    plan = machine.plan(TORCH_CUDA_ARCH_LIST='9.0 8.0;8.0')
    assert plan['ARCH_LIST'] == '8.0;9.0' and plan['ARCH_SOURCE'] == 'TORCH_CUDA_ARCH_LIST'
    assert plan['WHEEL_KEY'].endswith('-cuda8.0_9.0')
    assert 'TORCH_CUDA_ARCH_LIST=8.0;9.0' in plan['BUILD_ENV'].split()


def test_cuda_home_outside_path_is_found(machine):
    home = machine.toolkit('12.4', on_path=False)
    plan = machine.plan(CUDA_HOME=str(home))
    assert plan['MMCV_OPS'] == 'cuda' and plan['NVCC'] == f'{home}/bin/nvcc'


def test_cpu_and_cuda_plans_never_share_a_cache_key(machine):
    machine.toolkit('12.1')
    machine.nvidia_smi(caps=['8.0'])
    cuda, cpu = machine.plan(), machine.plan(MMEFF_MMCV_CUDA='0')
    assert cpu['MMCV_OPS'] == 'cpu' and cpu['REASON'] == 'MMEFF_MMCV_CUDA=0'
    assert cuda['WHEEL_KEY'].endswith('-cuda8.0+PTX') and cpu['WHEEL_KEY'].endswith('-cpu')
    assert cuda['WHEEL_DIR'] != cpu['WHEEL_DIR']


def test_cpu_only_torch_gets_cpu_ops_even_with_nvcc(tmp_path):
    machine = Machine(tmp_path, torch_version='2.1.0+cpu', torch_cuda=None)
    machine.toolkit('12.1')
    plan = machine.plan()
    assert plan['MMCV_OPS'] == 'cpu' and 'CPU-only build' in plan['REASON']
    assert plan['WHEEL_KEY'] == f'mmcv-2.1.0-torch-2.1.0+cpu-{PYTAG}-cpu'
    assert 'CUDA build of torch' in machine.plan(expect_rc=1, MMEFF_MMCV_CUDA='1')


def test_forced_cuda_without_nvcc_fails_clearly(machine):
    err = machine.plan(expect_rc=1, MMEFF_MMCV_CUDA='1')
    assert 'MMEFF_MMCV_CUDA=1 but no nvcc' in err and 'CUDA_HOME' in err


def test_nvcc_of_another_cuda_major_fails_clearly(machine):
    machine.toolkit('11.8')
    err = machine.plan(expect_rc=1)
    assert 'does not match torch 2.1.0+cu121' in err and 'MMEFF_MMCV_CUDA=0' in err


def test_bad_mode_is_rejected(machine):
    assert 'auto, 1 or 0' in machine.plan(expect_rc=1, MMEFF_MMCV_CUDA='yes')


def test_plan_needs_an_environment_with_torch(tmp_path):
    machine = Machine(tmp_path)
    assert 'no environment at' in machine.plan(expect_rc=1, MMEFF_VENV=str(tmp_path / 'nowhere'))
    for path in sorted((tmp_path / 'stub-site' / 'torch').iterdir()):
        path.unlink()
    (tmp_path / 'stub-site' / 'torch').rmdir()
    assert 'no torch in' in machine.plan(expect_rc=1)


def test_cached_wheel_under_the_new_key_is_used(machine):
    wheel = fake_mmcv_wheel(machine.cache / 'wheels' / f'mmcv-2.1.0-torch-2.1.0+cu121-{PYTAG}-cpu',
                            device_code=False)
    plan = machine.plan()
    assert plan['WHEEL_SOURCE'] == 'cache' and plan['WHEEL'] == str(wheel)


def test_cpu_wheel_under_the_old_key_is_reused_for_cpu_plans_only(machine):
    """The key before it recorded the ops (what this machine's cache holds) stays usable for a
    CPU-only plan after a look inside the wheel; a CUDA plan never takes it."""
    legacy = machine.cache / 'wheels' / f'mmcv-2.1.0-torch-2.1.0+cu121-{PYTAG}'
    wheel = fake_mmcv_wheel(legacy, device_code=False)
    plan = machine.plan()
    assert plan['MMCV_OPS'] == 'cpu'
    assert plan['WHEEL_SOURCE'] == 'legacy' and plan['WHEEL'] == str(wheel)
    assert plan['WHEEL_DIR'] != str(legacy)
    machine.toolkit('12.1')
    assert machine.plan()['WHEEL_SOURCE'] == 'build'


def test_cuda_wheel_under_the_old_key_is_not_taken_for_a_cpu_plan(machine):
    fake_mmcv_wheel(machine.cache / 'wheels' / f'mmcv-2.1.0-torch-2.1.0+cu121-{PYTAG}',
                    device_code=True)
    assert machine.plan()['WHEEL_SOURCE'] == 'build'
