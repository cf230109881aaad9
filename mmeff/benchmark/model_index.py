"""OpenMMLab model index: ``model-index.yml`` and one ``configs/<family>/metafile.yml`` per
family, as MMDetection and mmpretrain ship them (what ``mim search`` / ``mim download`` read).

Each metafile lists the family's collection (paper, official code) and its models: the
ImageNet classifiers (``configs/cls/``) with parameters and FLOPs counted here by
:mod:`mmeff.benchmark.complexity` (multiply-accumulates at 224x224, the papers' convention),
and the dense configs (``configs/*_coco.py``, ``*_ade20k.py``) with their backbone's parameter
count. Results are the papers' (or the official repositories' where the paper has none),
weights the official files (docs/weights.md). ``tools/make_model_index.py`` writes the files;
``tests/benchmark/test_model_index.py`` keeps them in step with this module.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from mmeff.benchmark.complexity import count_macs, count_params
from mmeff.models.zoo import Variant, build_backbone, build_classifier, variants

SNAP_CODE = 'https://github.com/snap-research/EfficientFormer'
CREAM_CODE = 'https://github.com/microsoft/Cream/tree/main/EfficientViT'
EVIT_ZOO = 'https://github.com/xinyuliu-jeffrey/EfficientViT_Model_Zoo/releases/download/v1.0/'
DRIVE = 'https://drive.google.com/file/d/{}/view'
#: Google Drive folders linked from snap-research/EfficientFormer detection/ and segmentation/
SNAP_COCO_FOLDER = 'https://drive.google.com/drive/folders/1eajQgA39bkPpyonzl8UnpiEwngVGaMdm'
SNAP_ADE_FOLDER = 'https://drive.google.com/drive/folders/1sklA_2Q8_2f-RaOYSj4n8rDGAsV-wh5g'


@dataclass(frozen=True)
class Collection:
    """A family's paper and official code (metafile ``Collections``)."""
    name: str
    title: str
    paper: str
    code: str
    architecture: Tuple[str, ...]


@dataclass(frozen=True)
class Classifier:
    """The paper's ImageNet-1k result and the official weights of one variant."""
    top1: float
    weights: str
    timm_tag: str


@dataclass(frozen=True)
class Dense:
    """One dense config's published result and where its official weights live."""
    config: str
    task: str  # 'Instance Segmentation' (Mask R-CNN), 'Object Detection', 'Semantic Segmentation'
    metrics: Dict[str, float]
    source: str
    weights: Optional[str] = None


@dataclass(frozen=True)
class FamilyIndex:
    collection: Collection
    directory: str  # configs/<directory>/metafile.yml
    cls_prefix: str  # configs/cls/<cls_prefix><arch>_in1k.py
    classifiers: Dict[str, Classifier] = field(default_factory=dict)
    dense: Dict[str, List[Dense]] = field(default_factory=dict)


V1_TABLE2 = 'EfficientFormer paper, Table 2'
V2_TEXT = 'EfficientFormerV2 paper, section 5 (S2 / L versus PoolFormer-S12 / EfficientFormer)'

FAMILIES: Dict[str, FamilyIndex] = {
    'EfficientFormer': FamilyIndex(
        Collection('EfficientFormer', 'EfficientFormer: Vision Transformers at MobileNet Speed',
                   'https://arxiv.org/abs/2206.01191', SNAP_CODE,
                   ('Pooling', 'Multi-Head Self-Attention', 'Attention Bias', 'Layer Scale')),
        'efficientformer', 'efficientformer_',
        classifiers={
            'l1': Classifier(79.2, DRIVE.format('1wtEmkshLFEYFsX5YhBttBOGYaRvDR7nu'),
                             'efficientformer_l1.snap_dist_in1k'),
            'l3': Classifier(82.4, DRIVE.format('1OyyjKKxDyMj-BcfInp4GlDdwLu3hc30m'),
                             'efficientformer_l3.snap_dist_in1k'),
            'l7': Classifier(83.3, DRIVE.format('1cVw-pctJwgvGafeouynqWWCwgkcoFMM5'),
                             'efficientformer_l7.snap_dist_in1k')},
        dense={
            'l1': [Dense('maskrcnn_l1_coco', 'Instance Segmentation',
                         {'box AP': 37.9, 'mask AP': 35.4}, V1_TABLE2, SNAP_COCO_FOLDER),
                   Dense('semfpn_l1_ade20k', 'Semantic Segmentation', {'mIoU': 38.9},
                         V1_TABLE2, SNAP_ADE_FOLDER)],
            'l3': [Dense('maskrcnn_l3_coco', 'Instance Segmentation',
                         {'box AP': 41.4, 'mask AP': 38.1}, V1_TABLE2, SNAP_COCO_FOLDER),
                   Dense('semfpn_l3_ade20k', 'Semantic Segmentation', {'mIoU': 43.5},
                         V1_TABLE2, SNAP_ADE_FOLDER)],
            'l7': [Dense('maskrcnn_l7_coco', 'Instance Segmentation',
                         {'box AP': 42.6, 'mask AP': 39.0}, V1_TABLE2, SNAP_COCO_FOLDER),
                   Dense('semfpn_l7_ade20k', 'Semantic Segmentation', {'mIoU': 45.1},
                         V1_TABLE2, SNAP_ADE_FOLDER)]}),
    'EfficientFormerV2': FamilyIndex(
        Collection('EfficientFormerV2', 'Rethinking Vision Transformers for MobileNet Size and '
                   'Speed', 'https://arxiv.org/abs/2212.08059', SNAP_CODE,
                   ('Depth-wise Convolution FFN', 'Multi-Head Self-Attention', 'Attention Bias',
                    'Stride Attention', 'Attention Downsampling')),
        'efficientformer_v2', 'efficientformer_v2_',
        classifiers={
            's0': Classifier(75.7, DRIVE.format('1PXb7b9pv9ZB4cfkRkYEdwgWuVwvEiazq'),
                             'efficientformerv2_s0.snap_dist_in1k'),
            's1': Classifier(79.0, DRIVE.format('1EKe1vt-3mG7iceVIMaET_DyISzVTJMn8'),
                             'efficientformerv2_s1.snap_dist_in1k'),
            's2': Classifier(81.6, DRIVE.format('1gjbFyB5T_yAkmzHNuXEljqScYVQZafMQ'),
                             'efficientformerv2_s2.snap_dist_in1k'),
            'l': Classifier(83.3, DRIVE.format('1sRXNBHl_ewHBMwwYZVsOJo1k6JpcNJn-'),
                            'efficientformerv2_l.snap_dist_in1k')},
        dense={
            's2': [Dense('maskrcnn_v2s2_coco', 'Instance Segmentation',
                         {'box AP': 43.4, 'mask AP': 39.5}, V2_TEXT, SNAP_COCO_FOLDER),
                   Dense('semfpn_v2s2_ade20k', 'Semantic Segmentation', {'mIoU': 42.4},
                         V2_TEXT, SNAP_ADE_FOLDER)],
            'l': [Dense('maskrcnn_v2l_coco', 'Instance Segmentation',
                        {'box AP': 44.7, 'mask AP': 40.4}, V2_TEXT, SNAP_COCO_FOLDER)]}),
    'EfficientViT': FamilyIndex(
        Collection('EfficientViT', 'EfficientViT: Memory Efficient Vision Transformer with '
                   'Cascaded Group Attention', 'https://arxiv.org/abs/2305.07027', CREAM_CODE,
                   ('Sandwich Layout', 'Cascaded Group Attention', 'Attention Bias')),
        'efficientvit', 'efficientvit_',
        classifiers={arch: Classifier(top1, f'{EVIT_ZOO}efficientvit_{arch}.pth',
                                      f'efficientvit_{arch}.r224_in1k')
                     for arch, top1 in (('m0', 63.2), ('m1', 68.4), ('m2', 70.8), ('m3', 73.4),
                                        ('m4', 74.3), ('m5', 77.1))},
        dense={'m4': [
            Dense('retinanet_m4_coco', 'Object Detection', {'box AP': 32.7},
                  'EfficientViT paper, Table 5',
                  f'{EVIT_ZOO}retinanet_efficientvit_m4_fpn_1x_coco.pth'),
            Dense('maskrcnn_m4_coco', 'Instance Segmentation', {'mask AP': 31.0},
                  'microsoft/Cream EfficientViT/downstream/README.md',
                  f'{EVIT_ZOO}mask_rcnn_efficientvit_m4_fpn_1x_coco.pth')]}),
}

_DENSE_DATASET = {'Instance Segmentation': 'COCO', 'Object Detection': 'COCO',
                  'Semantic Segmentation': 'ADE20K'}


def _classifier_entry(variant: Variant, info: Classifier, with_counts: bool) -> dict:
    entry = {'Name': f'{variant.name}_in1k', 'In Collection': variant.family.name,
             'Config': f'configs/cls/{FAMILIES[variant.family.name].cls_prefix}'
                       f'{variant.arch}_in1k.py'}
    if with_counts:
        complexity = count_macs(build_classifier(variant.name))
        entry['Metadata'] = {'Parameters': complexity.params, 'FLOPs': complexity.macs,
                             'Training Data': 'ImageNet-1k'}
    entry['Results'] = [{'Task': 'Image Classification', 'Dataset': 'ImageNet-1k',
                         'Metrics': {'Top 1 Accuracy': info.top1}}]
    entry['Weights'] = info.weights
    entry['Converted From'] = {'Weights': info.weights,
                               'Code': FAMILIES[variant.family.name].collection.code,
                               'timm': f'timm:{info.timm_tag}'}
    return entry


def _dense_entry(variant: Variant, info: Dense, with_counts: bool) -> dict:
    entry = {'Name': info.config, 'In Collection': variant.family.name,
             'Config': f'configs/{info.config}.py'}
    if with_counts:
        entry['Metadata'] = {'Backbone': variant.name,
                             'Backbone Parameters': count_params(build_backbone(variant.name))}
    entry['Results'] = [{'Task': info.task, 'Dataset': _DENSE_DATASET[info.task],
                         'Metrics': dict(info.metrics)}]
    entry['Results Source'] = info.source
    if info.weights:
        entry['Weights'] = info.weights
    return entry


def family_metafile(name: str, with_counts: bool = True) -> dict:
    """The metafile of one family (``with_counts=False`` leaves out the counted metadata)."""
    index = FAMILIES[name]
    c = index.collection
    out = {'Collections': [{'Name': c.name,
                            'Metadata': {'Training Data': ['ImageNet-1k', 'COCO', 'ADE20K'],
                                         'Architecture': list(c.architecture)},
                            'Paper': {'Title': c.title, 'URL': c.paper},
                            'Code': {'URL': c.code}}],
           'Models': []}
    for variant in variants(name):
        if variant.arch in index.classifiers:
            out['Models'].append(_classifier_entry(variant, index.classifiers[variant.arch],
                                                   with_counts))
        for dense in index.dense.get(variant.arch, []):
            out['Models'].append(_dense_entry(variant, dense, with_counts))
    return out


def metafile_path(name: str) -> str:
    return f'configs/{FAMILIES[name].directory}/metafile.yml'


def model_index() -> dict:
    """The root ``model-index.yml``: the metafiles to import."""
    return {'Import': [metafile_path(name) for name in FAMILIES]}


def write_all(root: Path) -> List[Path]:
    """Write ``model-index.yml`` and every family's metafile under ``root`` (the repository)."""
    import yaml
    written = []
    files = {'model-index.yml': model_index()}
    files.update({metafile_path(name): family_metafile(name) for name in FAMILIES})
    for rel, content in files.items():
        path = Path(root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(content, sort_keys=False, width=100))
        written.append(path)
    return written
