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
    # mmcv must be the full build with compiled ops (tools/setup_env.sh builds and caches it).
    install_requires=read_requirements('torch.txt') + read_requirements('runtime.txt')
    + ['setuptools>=77,<81'],
    extras_require={
        'export': read_requirements('export.txt'),
        'tests': read_requirements('tests.txt'),
    },
    license='Apache-2.0',
    zip_safe=False,
)
