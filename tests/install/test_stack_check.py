"""tools/setup_env.sh --check: the stack check that ends every install, run against the
environment running these tests (through a wrapper, so nothing is written to it).

It runs RoIAlign and nms on CPU, and on CUDA when a GPU is visible; an mmcv with CPU-only ops
where a GPU is visible must fail with a message that says what to do. Without a GPU here, that
case is staged by making torch report one (a sitecustomize on PYTHONPATH). The passing check runs
at the end of every install-flow test (test_setup_env_install_flow.py).
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'tools' / 'setup_env.sh'

pytestmark = pytest.mark.skipif(importlib.util.find_spec('mmcv') is None,
                                reason='needs the installed OpenMMLab stack')


def run_check(tmp_path: Path, pythonpath: str = '') -> subprocess.CompletedProcess:
    venv = tmp_path / 'venv'
    (venv / 'bin').mkdir(parents=True)
    wrapper = venv / 'bin' / 'python'
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'MMEFF_MMCV_CUDA')}
    env['MMEFF_VENV'] = str(venv)
    if pythonpath:
        env['PYTHONPATH'] = pythonpath
    return subprocess.run(['bash', str(SCRIPT), '--check'], env=env, capture_output=True,
                          text=True, timeout=600)


def test_cpu_only_ops_with_a_visible_gpu_fail_clearly(tmp_path):
    fake = tmp_path / 'fake-gpu'
    fake.mkdir()
    (fake / 'sitecustomize.py').write_text(
        'import torch\n'
        'if not torch.cuda.is_available():\n'
        '    torch.cuda.is_available = lambda: True\n'
        "    torch.cuda.get_device_name = lambda i=0: 'Fake GPU'\n"
        '    torch.cuda.get_device_capability = lambda i=0: (9, 0)\n')
    probe = subprocess.run(
        [sys.executable, '-c', 'from mmcv.ops import get_compiling_cuda_version as v; print(v())'],
        capture_output=True, text=True, timeout=300)
    if 'not available' not in probe.stdout:
        pytest.skip(f'this mmcv has CUDA ops ({probe.stdout.strip()} {probe.stderr[-200:]})')
    proc = run_check(tmp_path, pythonpath=str(fake))
    err = proc.stderr
    assert proc.returncode == 1, proc.stdout + err
    assert 'STACK CHECK FAILED' in err and 'Fake GPU' in err and 'CPU-only ops' in err
    assert 'nvcc' in err and 'tools/setup_env.sh again' in err
