"""Model names, family availability, and building the model a tool is pointed at."""
import pytest
import timm
import torch

from mmeff.models import zoo
from mmeff.models.loading import load_model
from mmeff.models.backbones.base import MobileBackbone
from mmeff.testing import randomize_

pytestmark = pytest.mark.usefixtures('one_thread')


def test_thirteen_variants_with_timm_names():
    names = zoo.variant_names()
    assert len(names) == 13 and len(set(names)) == 13
    assert names[:3] == ['efficientformer_l1', 'efficientformer_l3', 'efficientformer_l7']
    assert {v.timm_name for v in zoo.variants()} <= set(timm.list_models())


def test_variants_are_the_arch_tables_with_paper_figures():
    from mmeff.models.backbones.efficientformer.arch import ARCH_SETTINGS as V1
    from mmeff.models.backbones.efficientformer_v2.arch import ARCH_SETTINGS as V2
    from mmeff.models.backbones.efficientvit.arch import EFFICIENTVIT_ARCHS as VIT
    assert [(v.family.name, v.arch) for v in zoo.variants()] == \
        [('EfficientFormer', a) for a in V1] + [('EfficientFormerV2', a) for a in V2] + \
        [('EfficientViT', a) for a in VIT]
    assert all(v.paper_params_m and v.paper_gmacs for v in zoo.variants())
    assert [v.config_key for v in zoo.variants('EfficientFormerV2')] == \
        ['v2s0', 'v2s1', 'v2s2', 'v2l']


def test_aliases_and_unknown_names():
    assert zoo.get_variant('EfficientFormer_V2-S0').name == 'efficientformerv2_s0'
    assert zoo.get_variant('efficientvit_m5').paper_gmacs == pytest.approx(0.522)
    with pytest.raises(ValueError, match='unknown model name .*efficientvit_m0'):
        zoo.get_variant('efficientvit_m9')


def test_a_family_without_code_is_reported_by_name():
    fake = zoo.Family('Imaginary', 'imaginary_', 'ImaginaryNet', 'imaginary_classifier',
                      'imaginary_', {'t': (1.0, 0.1)})
    zoo.register_family(fake)
    try:
        assert 'Imaginary' in zoo.zoo_status().missing
        with pytest.raises(zoo.FamilyUnavailableError, match='no imaginary_classifier'):
            zoo.build_classifier('imaginary_t')
        with pytest.raises(zoo.FamilyUnavailableError, match='mmeff.ImaginaryNet'):
            zoo.build_backbone('imaginary_t')
    finally:
        zoo.FAMILIES[:] = [f for f in zoo.FAMILIES if f.name != 'Imaginary']
    assert 'Imaginary' not in zoo.zoo_status().missing


def test_dense_backbone_has_every_stage():
    backbone = zoo.build_backbone('efficientformer_l1')
    assert isinstance(backbone, MobileBackbone) and not backbone.training
    outs = backbone(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [48, 96, 224, 448]


def test_name_with_timm_checkpoint_reproduces_timm(tmp_path):
    """A timm state dict given to the tool is converted and gives timm's outputs."""
    # perturbed BN statistics and bias tables: at init (identity BNs, zero tables) a wrong
    # mapping of either gives the same outputs
    reference = randomize_(timm.create_model('efficientvit_m0')).eval()
    path = tmp_path / 'timm_m0.pth'
    torch.save(reference.state_dict(), path)
    model = load_model('efficientvit_m0', str(path))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = reference(x), model(x)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_name_with_a_dense_part_is_refused():
    with pytest.raises(ValueError, match='--part segmentor needs a config file'):
        load_model('efficientformer_l1', part='segmentor')


def test_neither_file_nor_name():
    with pytest.raises(ValueError, match='neither a config file nor a model name'):
        load_model('configs/does_not_exist.py')


def test_classification_config_builds_the_student_only(tmp_path):
    """configs/cls-style model with a teacher: the teacher is not built (no weights needed)."""
    config = tmp_path / 'cls.py'
    config.write_text(
        "model = dict(type='mmeff.ImageClassifier',\n"
        "    backbone=dict(type='mmeff.EfficientViT', arch='m0', out_indices=(-1, )),\n"
        "    head=dict(type='mmeff.EfficientViTClsHead', in_channels=192, num_classes=10),\n"
        "    teacher=dict(name='regnety_160', checkpoint='missing/teacher.pth'))\n"
        "default_scope = 'mmeff'\n")
    model = load_model(str(config))
    assert type(model).__name__ == 'MobileClassifierNet'
    assert model.head.distillation and not hasattr(model, 'teacher')
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 10)


def test_config_without_model_entry_is_named(tmp_path):
    path = tmp_path / 'no_model.py'
    path.write_text('default_scope = "mmeff"\n')
    with pytest.raises(ValueError, match=r"config '.*no_model.py' has no `model` entry"):
        load_model(str(path))


def test_family_with_a_builder_but_no_registered_backbone_is_reported_by_name():
    """Its classifier builder exists (borrowed), its backbone type is not registered."""
    fake = zoo.Family('Imaginary', 'imaginary_', 'ImaginaryNet', 'efficientformer_classifier',
                      'imaginary_', {'t': (1.0, 0.1)})
    zoo.register_family(fake)
    try:
        with pytest.raises(zoo.FamilyUnavailableError,
                           match='Imaginary is not available: no backbone mmeff.ImaginaryNet'):
            zoo.build_classifier('imaginary_t')
    finally:
        zoo.FAMILIES[:] = [f for f in zoo.FAMILIES if f.name != 'Imaginary']
