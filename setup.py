"""mmeff: fast mobile vision transformers as OpenMMLab 3.x dense-prediction backbones."""
import re
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def read_requirements(name: str) -> list:
    lines = (ROOT / 'requirements' / name).read_text().splitlines()
    return [ln.split('#')[0].strip() for ln in lines if ln.split('#')[0].strip()]


version = re.search(r"__version__ = '([^']+)'", (ROOT / 'mmeff' / 'version.py').read_text()).group(1)

setup(
    name='mmeff',
    version=version,
    description='EfficientFormer, EfficientFormerV2 and EfficientViT backbones for MMDetection 3 '
                'and MMSegmentation 1, with pretraining, export and benchmarks',
    long_description=(ROOT / 'README.md').read_text() if (ROOT / 'README.md').exists() else '',
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    packages=find_packages(include=['mmeff', 'mmeff.*']),
    include_package_data=True,
    # Ranges, not the tested pins: `pip install -e .` into an existing OpenMMLab environment keeps
    # its torch and mmcv. The exact stack (requirements/torch.txt, runtime.txt) is what
    # tools/setup_env.sh installs on a fresh machine; it satisfies these ranges.
    install_requires=read_requirements('install.txt'),
    extras_require={
        'export': read_requirements('export.txt'),
        'tests': read_requirements('tests.txt'),
    },
    license='Apache-2.0',
    zip_safe=False,
)
