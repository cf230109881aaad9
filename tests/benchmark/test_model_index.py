"""model-index.yml and the families' metafile.yml: committed files match what
mmeff.benchmark.model_index generates, every config they name exists, the counted parameters and
FLOPs are the complexity module's, and every classifier has a timm tag that timm knows."""
from pathlib import Path

import pytest
import timm
import yaml

from mmeff.benchmark.complexity import count_macs
from mmeff.benchmark.model_index import FAMILIES, family_metafile, metafile_path, model_index
from mmeff.models.zoo import build_classifier

REPO = Path(__file__).resolve().parents[2]


def _committed(rel: str) -> dict:
    return yaml.safe_load((REPO / rel).read_text())


def _without_counts(metafile: dict) -> dict:
    return {**metafile, 'Models': [{k: v for k, v in m.items() if k != 'Metadata'}
                                   for m in metafile['Models']]}


def test_model_index_imports_every_family_metafile():
    assert _committed('model-index.yml') == model_index()
    assert all((REPO / rel).is_file() for rel in model_index()['Import'])


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_metafile_is_in_step_with_the_catalogue(family):
    committed = _committed(metafile_path(family))
    assert _without_counts(committed) == family_metafile(family, with_counts=False)
    for model in committed['Models']:
        assert (REPO / model['Config']).is_file(), model['Config']
        assert model['Results'] and model['Metadata']
        tag = model.get('Converted From', {}).get('timm')
        if tag:
            assert tag[len('timm:'):] in timm.list_pretrained(tag[len('timm:'):])


def test_counted_metadata_is_the_complexity_modules():
    entry = next(m for m in _committed(metafile_path('EfficientViT'))['Models']
                 if m['Name'] == 'efficientvit_m0_in1k')
    counted = count_macs(build_classifier('efficientvit_m0'))
    assert entry['Metadata']['Parameters'] == counted.params
    assert entry['Metadata']['FLOPs'] == counted.macs
