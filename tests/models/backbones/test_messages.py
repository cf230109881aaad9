"""Bad input and bad checkpoints get a message that says what is wrong and what to do
(issue 15, "Found" 4). Argument checks (in_channels=0, frozen_stages=-2, out_indices=1.5) are
tested for every family in test_contract.py."""
from pathlib import Path

import pytest
import torch

from mmeff.checkpoint import CheckpointIntegrityError
from mmeff.models.backbones import EfficientFormer, EfficientFormerV2, EfficientViT
from mmeff.testing import load_script

REPO = Path(__file__).resolve().parents[3]
FAMILIES = [(EfficientFormer, 'l1'), (EfficientFormerV2, 's0'), (EfficientViT, 'm0')]
IDS = [cls.__name__ for cls, _ in FAMILIES]


@pytest.fixture(scope='module')
def models():
    """One model per family, built once (the refusals below leave a model unchanged)."""
    return {cls: cls(arch) for cls, arch in FAMILIES}


@pytest.fixture(scope='module')
def l1(models):
    return models[EfficientFormer]


@pytest.fixture(scope='module')
def l1_state(l1):
    """An EfficientFormer-L1 backbone state dict in the canonical ('backbone.*') layout."""
    return {'backbone.' + k: v for k, v in l1.state_dict().items()}


@pytest.mark.parametrize('cls, arch', FAMILIES, ids=IDS)
@pytest.mark.parametrize('x, match', [
    (torch.zeros(0, 3, 64, 64), r'empty batch \(input shape \(0, 3, 64, 64\)\)'),
    (torch.zeros(1, 3, 64, 64, dtype=torch.float64),
     r'torch.float32 weights but got torch.float64 input; cast the input'),
    (torch.zeros(1, 3, 64, 64, dtype=torch.bfloat16),
     r'torch.float32 weights but got torch.bfloat16 input'),
    (torch.zeros(1, 3, 64, 64, dtype=torch.uint8),
     r'floating-point images, got torch.uint8 input; convert and normalize'),
], ids=['empty-batch', 'float64', 'bfloat16', 'uint8'])
def test_bad_input_is_named(models, cls, arch, x, match):
    model = models[cls]
    with pytest.raises(ValueError, match=match):
        model(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):  # mixed precision: dtypes may differ
        if x.is_floating_point() and x.shape[0]:
            model.check_input(x)


def _load(tmp_path, state, name='ckpt.pth'):
    path = tmp_path / name
    torch.save({'state_dict': state} if state is not None else None, path)
    return str(path)


def _first_stage(state):
    """Enough of a state dict for layout detection (the first stage), saved in no time."""
    return {k: v for k, v in state.items() if k.startswith('backbone.stages.0.')}


def test_first_block_key_difference_is_named(l1, l1_state, tmp_path):
    missing = _first_stage(l1_state)
    del missing['backbone.stages.0.blocks.0.ls1.gamma']
    with pytest.raises(ValueError, match=r"checkpoint '.*missing.pth': the first EfficientFormer "
                                         r"block .* missing \['ls1.gamma'\], unexpected \[\]"):
        l1.load_checkpoint(_load(tmp_path, missing, 'missing.pth'))
    extra = dict(_first_stage(l1_state))
    extra['backbone.stages.0.blocks.0.extra.weight'] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['extra.weight'\]"):
        l1.load_checkpoint(_load(tmp_path, extra))


def test_same_arch_with_a_wrong_shape_is_not_called_another_arch(l1, l1_state, tmp_path):
    edited = dict(l1_state, **{'backbone.stages.1.blocks.0.ls1.gamma': torch.zeros(3)})
    with pytest.raises(ValueError) as info:
        l1.load_checkpoint(_load(tmp_path, edited))
    message = str(info.value)
    assert 'has the layers of EfficientFormer-l1, like the model, but 1 tensor(s) have other ' \
           'shapes (stages.1.blocks.0.ls1.gamma: checkpoint (3,) vs model (96,))' in message
    assert 'looks like' not in message


def test_empty_file_gives_a_reason(l1, tmp_path):
    path = tmp_path / 'empty.pth'
    path.write_bytes(b'')
    with pytest.raises(CheckpointIntegrityError, match=r"'.*empty.pth' is an empty \(zero-byte\)"):
        l1.load_checkpoint(str(path))


def test_another_familys_weights_name_the_file_and_the_family(models, l1, tmp_path):
    v2 = _first_stage({'backbone.' + k: v
                       for k, v in models[EfficientFormerV2].state_dict().items()})
    with pytest.raises(ValueError, match=r"checkpoint '.*v2.pth' holds EfficientFormerV2 "
                                         r"\('mmeff' layout\) weights, not EfficientFormer ones"):
        l1.load_checkpoint(_load(tmp_path, v2, 'v2.pth'))


@pytest.fixture(scope='module')
def convert_tool():
    return load_script(REPO / 'tools' / 'convert_checkpoint.py')


def test_convert_tool_exits_2_with_a_message(convert_tool, tmp_path, capsys):
    (tmp_path / 'empty.pth').write_bytes(b'')
    assert convert_tool.main([str(tmp_path / 'empty.pth'), str(tmp_path / 'out.pth')]) == 2
    assert 'error: checkpoint' in capsys.readouterr().err
    garbage = _load(tmp_path, {'foo.weight': torch.zeros(1)}, 'garbage.pth')
    assert convert_tool.main([garbage, str(tmp_path / 'out.pth')]) == 2
    assert f'error: {garbage}: cannot tell which model' in capsys.readouterr().err
    assert not (tmp_path / 'out.pth').exists()
