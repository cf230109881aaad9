"""What a search writes per target: arch JSON, a classification config, a Mask R-CNN config
and a plot of the slimming steps.

The classification config inherits ``search_config.py``, the search's own config dumped next
to it (the ``configs/cls`` recipe + the data the search used), and replaces the supernet by
the searched ``EfficientFormer`` / ``EfficientFormerV2`` (:data:`FAMILIES`): it is complete and
runs with ``tools/train.py``.
"""
import json
from pathlib import Path
from typing import Dict, List, Optional, Union

from mmeff.search.slimming import Goal, Step

#: per family: backbone and head types, the extra backbone settings of the classification
#: config, of the Mask R-CNN config (the family's configs/_base_/<family>/maskrcnn.py choices)
#: and its detection weight decay
FAMILIES = {
    'efficientformer': dict(backbone='mmeff.EfficientFormer', head='mmeff.EfficientFormerClsHead',
                            cls_extra=' img_size={img},', det_extra='norm_eval=False, ',
                            weight_decay=1e-4),
    'efficientformerv2': dict(backbone='mmeff.EfficientFormerV2',
                              head='mmeff.EfficientFormerV2ClsHead', cls_extra=' img_size={img},',
                              det_extra='norm_eval=True, with_out_norms=False, ',
                              weight_decay=0.05),
}

SEARCH_CONFIG_NAME = 'search_config.py'

CLS_TEMPLATE = '''# Classifier of the architecture found by tools/search.py ({note}).
# The recipe and data are the search's (./{base}: configs/cls pieces); train it with
#   python tools/train.py THIS_FILE
_base_ = ['./{base}']
custom_imports = dict(imports=['mmeff'], allow_failed_imports=False)
arch = {arch!r}
model = dict(
    _delete_=True,
    type='mmeff.ImageClassifier',
    backbone=dict(type='{backbone}', arch=arch, out_indices=(3, ),{cls_extra}
                  with_out_norms=False, drop_path_rate=0.0, layer_scale_init={ls!r}),
    head=dict(type='{head}', in_channels=arch['widths'][-1],
              num_classes={num_classes}, distillation=False))
'''

MASKRCNN_TEMPLATE = '''# Mask R-CNN (MMDetection 3.x, 1x COCO) on the architecture found by
# tools/search.py ({note}).
# Set backbone.init_cfg to the classifier checkpoint trained with the _cls config.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmeff.models'], allow_failed_imports=False)
arch = {arch!r}
model = dict(
    backbone=dict(_delete_=True, type='{backbone}', arch=arch,
                  out_indices=(0, 1, 2, 3), frozen_stages=-1, {det_extra}
                  drop_path_rate=0.0, img_size=800, init_cfg=None),
    neck=dict(in_channels=arch['widths']))
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=2e-4, weight_decay={weight_decay!r}))
'''


def write_outputs(arch: Dict, target: Union[float, Goal], history: List[Step], out_dir: Path,
                  name: str, num_classes: int, layer_scale_init: Optional[float], note: str,
                  family: str = 'efficientformer', img_size: int = 224) -> Dict[str, str]:
    """Write the files of one searched network (``out_dir`` must hold the search config).

    ``target``: the latency target in ms (V1) or the :class:`Goal` of the search; ``family``
    one of :data:`FAMILIES`; ``img_size`` the search's (supernet's) pretraining grid: it sizes
    the attention-bias tables of both families, hence the parameter count that was searched.
    """
    if family not in FAMILIES:
        raise ValueError(f'unknown family {family!r}; choose one of {sorted(FAMILIES)}')
    if not (out_dir / SEARCH_CONFIG_NAME).is_file():
        raise ValueError(f'{out_dir / SEARCH_CONFIG_NAME} is missing: the classification '
                         'config inherits it; dump the search config there first')
    goal = target if isinstance(target, Goal) else Goal('latency', float(target))
    fam = dict(FAMILIES[family])
    fam['cls_extra'] = fam['cls_extra'].format(img=img_size)
    files = {}
    arch_path = out_dir / f'{name}_arch.json'
    arch_path.write_text(json.dumps({
        'arch': arch, ('target_ms' if goal.kind == 'latency' else f'target_{goal.kind}'):
            goal.target, 'steps': [dict(action=s.action, latency_ms=s.latency_ms,
                                        params_m=s.params_m, accuracy=s.accuracy, mes=s.mes,
                                        arch=s.subnet.to_arch()) for s in history]}, indent=1))
    files['arch'] = str(arch_path)
    cls_path = out_dir / f'{name}_cls.py'
    cls_path.write_text(CLS_TEMPLATE.format(arch=arch, num_classes=num_classes, note=note,
                                            ls=layer_scale_init, base=SEARCH_CONFIG_NAME, **fam))
    files['cls_config'] = str(cls_path)
    det_path = out_dir / f'maskrcnn_{name}_coco.py'
    det_path.write_text(MASKRCNN_TEMPLATE.format(arch=arch, note=note, **fam))
    files['maskrcnn_config'] = str(det_path)
    if history:
        files['plot'] = plot_history(history, goal, arch, out_dir / f'{name}_steps.png')
    return files


def plot_history(history: List[Step], goal: Goal, arch: Dict, path: Path) -> str:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    steps = list(range(len(history)))
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
    series = (('latency_ms', 'LUT latency (ms)', 'latency'), ('params_m', 'params (M)', 'params'),
              ('mes', 'MES', 'mes'), ('accuracy', 'supernet val acc (%)', None))
    for ax, (attr, label, kind) in zip(axes, series):
        ax.plot(steps, [getattr(s, attr) for s in history], marker='o')
        ax.set_xlabel('slimming step')
        ax.set_title(label)
        if kind == goal.kind:
            ax.axhline(goal.target, color='r', ls='--', label='target')
            ax.legend()
    fig.suptitle(f'slimming to {goal.text()}: {arch}', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)
