"""The two install paths agree: setup.py's ranges (requirements/install.txt) admit the exact stack
that tools/setup_env.sh installs on a fresh machine (requirements/torch.txt, runtime.txt,
build.txt), and pin nothing that a user's environment would have to give up."""
from pathlib import Path

from packaging.requirements import Requirement

REQ = Path(__file__).resolve().parents[2] / 'requirements'


def read(name):
    out = {}
    for line in (REQ / name).read_text().splitlines():
        line = line.split('#')[0].strip()
        if line:
            req = Requirement(line)
            out[req.name.lower()] = req
    return out


def test_ranges_admit_the_tested_pins():
    ranges = read('install.txt')
    fresh = {**read('torch.txt'), **read('runtime.txt'), **read('build.txt')}
    for name, rng in ranges.items():
        assert name in fresh, f'{name} is required by setup.py but not installed by setup_env.sh'
        pins = [s.version for s in fresh[name].specifier if s.operator == '==']
        for version in pins:
            assert rng.specifier.contains(version, prereleases=True), \
                f'tested {name}=={version} is outside setup.py\'s range {rng}'


def test_no_exact_pins_in_setup_requirements():
    for name, req in read('install.txt').items():
        assert not any(s.operator in ('==', '===', '~=') for s in req.specifier), \
            f'setup.py pins {req}: `pip install -e .` would replace a user\'s {name}'
    assert 'torchvision' not in read('install.txt')


def test_setup_py_reads_install_txt():
    text = (REQ.parent / 'setup.py').read_text()
    assert "install_requires=read_requirements('install.txt')" in text
