"""`pip install -e .` into an existing OpenMMLab environment keeps its torch and mmcv.

A user's environment (torch 2.1.0, torchvision 0.16.0, a prebuilt mmcv 2.1.0, mmengine 0.10.3,
mmdet 3.3.0, mmsegmentation 1.2.2, timm 0.9.16) is made of small locally generated stub wheels in a
throwaway venv. A wheel directory that also holds newer releases (the tested stack's torch 2.15.0,
torchvision 0.29.2, timm 1.0.31, mmengine 0.10.7, and an mmcv 2.2.0 that mmdet 3.x rejects) stands
in for the package index, so a requirement that is too tight (an exact torch pin) or too loose (no
mmcv upper bound) would show up as an upgrade in pip's report.

pip resolves the real `setup.py` with `--dry-run --report`, `--no-index`, `--find-links` the stub
directory and no pip configuration: nothing is downloaded and nothing is installed.
"""
import base64
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: what the user's environment holds; none of these may be installed, upgraded or downgraded
USER_ENV = {
    'torch': ('2.1.0', []),
    'torchvision': ('0.16.0', ['torch==2.1.0']),
    'mmengine': ('0.10.3', []),
    'mmcv': ('2.1.0', ['mmengine>=0.3.0']),
    'mmdet': ('3.3.0', ['mmcv<2.2.0,>=2.0.0rc4', 'mmengine<1.0.0,>=0.7.1']),
    'mmsegmentation': ('1.2.2', ['mmcv<2.2.0,>=2.0.0rc4', 'mmengine<1.0.0,>=0.5.0']),
    'timm': ('0.9.16', ['torch>=1.7', 'torchvision']),
}
#: the stand-in index: the user's versions plus newer releases pip would pick if it were allowed
INDEX = [(name, version, requires) for name, (version, requires) in USER_ENV.items()] + [
    ('torch', '2.15.0', []),
    ('torchvision', '0.29.2', ['torch==2.15.0']),
    ('mmengine', '0.10.7', []),
    ('mmcv', '2.2.0', ['mmengine>=0.3.0']),
    ('timm', '1.0.31', ['torch', 'torchvision']),
    ('ftfy', '6.3.1', []),
    ('regex', '2024.11.6', []),
    ('setuptools', '80.9.0', []),
]
TOP_LEVEL = {'mmsegmentation': 'mmseg'}


def stub_wheel(directory: Path, name: str, version: str, requires=()) -> Path:
    """A minimal valid pure-Python wheel: one empty module and the metadata pip reads."""
    dist_info = f'{name}-{version}.dist-info'
    files = {
        f'{TOP_LEVEL.get(name, name)}/__init__.py': f'__version__ = {version!r}\n',
        f'{dist_info}/METADATA': ''.join(
            [f'Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n']
            + [f'Requires-Dist: {req}\n' for req in requires]),
        f'{dist_info}/WHEEL': ('Wheel-Version: 1.0\nGenerator: mmeff-tests\n'
                               'Root-Is-Purelib: true\nTag: py3-none-any\n'),
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=')
        record.append(f'{path},sha256={digest.decode()},{len(text.encode())}')
    record.append(f'{dist_info}/RECORD,,')
    files[f'{dist_info}/RECORD'] = '\n'.join(record) + '\n'
    wheel = directory / f'{name}-{version}-py3-none-any.whl'
    with zipfile.ZipFile(wheel, 'w') as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


def isolated_env() -> dict:
    """No pip configuration (this machine's pip.conf adds find-links and local indexes), no
    PYTHONPATH (the checkout on it would look like an installed mmeff)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith('PIP_') and k not in ('PYTHONPATH', 'PYTHONHOME')}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK='1', PIP_NO_INPUT='1',
               PIP_NO_CACHE_DIR='1')
    return env


def copy_distribution(name: str, site_packages: Path) -> None:
    """Copy an installed distribution (its RECORD's files) into another environment."""
    dist = importlib.metadata.distribution(name)
    for rel in dist.files:
        if str(rel).startswith('..') or rel.suffix == '.pyc':
            continue
        src = Path(dist.locate_file(rel))
        if src.is_file():
            dst = site_packages / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def pip(python: Path, *args: str) -> subprocess.CompletedProcess:
    """This interpreter's pip acting on another environment (pip >= 22.3: --python)."""
    cmd = [sys.executable, '-m', 'pip', '--python', str(python), *args]
    proc = subprocess.run(cmd, env=isolated_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f'{" ".join(cmd)}\n{proc.stdout}\n{proc.stderr}'
    return proc


@pytest.fixture(scope='module')
def stub_index(tmp_path_factory) -> Path:
    index = tmp_path_factory.mktemp('stub-index')
    for name, version, requires in INDEX:
        stub_wheel(index, name, version, requires)
    return index


@pytest.fixture(scope='module')
def project_copy(tmp_path_factory) -> Path:
    """What `pip install -e .` reads, copied so that metadata generation writes nothing here."""
    dst = tmp_path_factory.mktemp('project') / 'mmeff-src'
    dst.mkdir()
    for name in ('setup.py', 'README.md'):
        shutil.copy2(ROOT / name, dst / name)
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc')
    for name in ('requirements', 'mmeff'):
        shutil.copytree(ROOT / name, dst / name, ignore=ignore)
    return dst


def make_env(path: Path, stub_index: Path, packages: dict) -> Path:
    """A venv without pip holding `packages` (stubs) and this environment's setuptools, which
    `--no-build-isolation` uses to read setup.py."""
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(path)
    python = path / 'bin' / 'python'
    site = Path(subprocess.run(
        [str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
        capture_output=True, text=True, check=True).stdout.strip())
    copy_distribution('setuptools', site)
    if packages:
        pip(python, 'install', '--quiet', '--no-index', '--no-deps',
            *[str(stub_index / f'{n}-{v}-py3-none-any.whl') for n, (v, _) in packages.items()])
    return python


def dry_run(python: Path, project: Path, stub_index: Path, report: Path) -> dict:
    pip(python, 'install', '--dry-run', '--report', str(report), '--no-index',
        '--find-links', str(stub_index), '--no-build-isolation', '-e', str(project))
    data = json.loads(report.read_text())
    return {item['metadata']['name'].lower(): item['metadata']['version']
            for item in data['install']}


def test_editable_install_keeps_users_torch_and_mmcv(tmp_path, stub_index, project_copy):
    python = make_env(tmp_path / 'user-env', stub_index, USER_ENV)
    would_install = dry_run(python, project_copy, stub_index, tmp_path / 'report.json')
    assert 'mmeff' in would_install, would_install
    replaced = {name: version for name, version in would_install.items() if name in USER_ENV}
    assert not replaced, (
        f'`pip install -e .` would replace the environment\'s {replaced} '
        f'(it holds {dict((n, v) for n, (v, _) in USER_ENV.items())}): a requirement in '
        'requirements/install.txt is pinned or bounded too tightly')
    assert 'setuptools' not in would_install, would_install
    # only mmeff and the small pure-Python packages mmsegmentation needs but does not declare
    assert set(would_install) <= {'mmeff', 'ftfy', 'regex'}, would_install


def test_fresh_env_resolves_to_the_tested_stack(tmp_path, stub_index, project_copy):
    """With nothing installed the ranges pick the newest stubs, i.e. the tested pins: the
    ranges do not exclude the tested stack, and mmcv 2.2.0 (which mmdet 3.x rejects) is not
    taken."""
    python = make_env(tmp_path / 'fresh-env', stub_index, {})
    would_install = dry_run(python, project_copy, stub_index, tmp_path / 'report.json')
    assert would_install['torch'] == '2.15.0'
    assert would_install['mmcv'] == '2.1.0'
    assert would_install['mmdet'] == '3.3.0' and would_install['mmsegmentation'] == '1.2.2'
