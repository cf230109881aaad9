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


def _snap_classifiers(timm_prefix: str, table: Dict[str, Tuple[float, str]]
                      ) -> Dict[str, Classifier]:
    """arch -> (top-1, Google Drive file id) of the snap-research README's table."""
    return {arch: Classifier(top1, DRIVE.format(file_id), f'{timm_prefix}{arch}.snap_dist_in1k')
            for arch, (top1, file_id) in table.items()}


def _snap_dense(key: str, source: str, box_mask: Tuple[float, float],
                miou: Optional[float] = None) -> List[Dense]:
    """Mask R-CNN (and Semantic FPN) results of one snap-research backbone."""
    out = [Dense(f'maskrcnn_{key}_coco', 'Instance Segmentation',
                 {'box AP': box_mask[0], 'mask AP': box_mask[1]}, source, SNAP_COCO_FOLDER)]
    if miou is not None:
        out.append(Dense(f'semfpn_{key}_ade20k', 'Semantic Segmentation', {'mIoU': miou},
                         source, SNAP_ADE_FOLDER))
    return out


FAMILIES: Dict[str, FamilyIndex] = {
    'EfficientFormer': FamilyIndex(
        Collection('EfficientFormer', 'EfficientFormer: Vision Transformers at MobileNet Speed',
                   'https://arxiv.org/abs/2206.01191', SNAP_CODE,
                   ('Pooling', 'Multi-Head Self-Attention', 'Attention Bias', 'Layer Scale')),
        'efficientformer', 'efficientformer_',
        classifiers=_snap_classifiers('efficientformer_', {
            'l1': (79.2, '1wtEmkshLFEYFsX5YhBttBOGYaRvDR7nu'),
            'l3': (82.4, '1OyyjKKxDyMj-BcfInp4GlDdwLu3hc30m'),
            'l7': (83.3, '1cVw-pctJwgvGafeouynqWWCwgkcoFMM5')}),
        dense={'l1': _snap_dense('l1', V1_TABLE2, (37.9, 35.4), 38.9),
               'l3': _snap_dense('l3', V1_TABLE2, (41.4, 38.1), 43.5),
               'l7': _snap_dense('l7', V1_TABLE2, (42.6, 39.0), 45.1)}),
    'EfficientFormerV2': FamilyIndex(
        Collection('EfficientFormerV2', 'Rethinking Vision Transformers for MobileNet Size and '
                   'Speed', 'https://arxiv.org/abs/2212.08059', SNAP_CODE,
                   ('Depth-wise Convolution FFN', 'Multi-Head Self-Attention', 'Attention Bias',
                    'Stride Attention', 'Attention Downsampling')),
        'efficientformer_v2', 'efficientformer_v2_',
        classifiers=_snap_classifiers('efficientformerv2_', {
            's0': (75.7, '1PXb7b9pv9ZB4cfkRkYEdwgWuVwvEiazq'),
            's1': (79.0, '1EKe1vt-3mG7iceVIMaET_DyISzVTJMn8'),
            's2': (81.6, '1gjbFyB5T_yAkmzHNuXEljqScYVQZafMQ'),
            'l': (83.3, '1sRXNBHl_ewHBMwwYZVsOJo1k6JpcNJn-')}),
        dense={'s2': _snap_dense('v2s2', V2_TEXT, (43.4, 39.5), 42.4),
               'l': _snap_dense('v2l', V2_TEXT, (44.7, 40.4))}),
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
