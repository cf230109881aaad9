"""What a search writes per target: arch JSON, a classification config, a Mask R-CNN config
and a plot of the slimming steps.

The classification config inherits ``search_config.py``, the search's own config dumped next
to it (the ``configs/cls`` recipe + the data the search used), and replaces the supernet by
the searched ``EfficientFormer``: it is complete and runs with ``tools/train.py``.
"""
import json
from pathlib import Path
from typing import Dict, List

from mmeff.search.slimming import Step

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
    backbone=dict(type='mmeff.EfficientFormer', arch=arch, out_indices=(3, ),
                  with_out_norms=False, drop_path_rate=0.0, layer_scale_init={ls!r}),
    head=dict(type='mmeff.EfficientFormerClsHead', in_channels=arch['widths'][-1],
              num_classes={num_classes}, distillation=False))
'''

MASKRCNN_TEMPLATE = '''# Mask R-CNN (MMDetection 3.x, 1x COCO) on the architecture found by
# tools/search.py ({note}).
# Set backbone.init_cfg to the classifier checkpoint trained with the _cls config.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmeff.models'], allow_failed_imports=False)
arch = {arch!r}
model = dict(
    backbone=dict(_delete_=True, type='mmeff.EfficientFormer', arch=arch,
                  out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_eval=False,
                  drop_path_rate=0.0, img_size=800, init_cfg=None),
    neck=dict(in_channels=arch['widths']))
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4))
'''


def write_outputs(arch: Dict, target_ms: float, history: List[Step], out_dir: Path, name: str,
                  num_classes: int, layer_scale_init: float, note: str) -> Dict[str, str]:
    """Write the files of one searched network (``out_dir`` must hold the search config)."""
    if not (out_dir / SEARCH_CONFIG_NAME).is_file():
        raise ValueError(f'{out_dir / SEARCH_CONFIG_NAME} is missing: the classification '
                         'config inherits it; dump the search config there first')
    files = {}
    arch_path = out_dir / f'{name}_arch.json'
    arch_path.write_text(json.dumps(dict(
        arch=arch, target_ms=target_ms,
        steps=[dict(action=s.action, latency_ms=s.latency_ms, params_m=s.params_m,
                    accuracy=s.accuracy, mes=s.mes, arch=s.subnet.to_arch())
               for s in history]), indent=1))
    files['arch'] = str(arch_path)
    cls_path = out_dir / f'{name}_cls.py'
    cls_path.write_text(CLS_TEMPLATE.format(arch=arch, num_classes=num_classes, note=note,
                                            ls=layer_scale_init, base=SEARCH_CONFIG_NAME))
    files['cls_config'] = str(cls_path)
    det_path = out_dir / f'maskrcnn_{name}_coco.py'
    det_path.write_text(MASKRCNN_TEMPLATE.format(arch=arch, note=note))
    files['maskrcnn_config'] = str(det_path)
    if history:
        files['plot'] = plot_history(history, target_ms, arch, out_dir / f'{name}_steps.png')
    return files


def plot_history(history: List[Step], target_ms: float, arch: Dict, path: Path) -> str:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    steps = list(range(len(history)))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    series = (('latency_ms', 'LUT latency (ms)'), ('params_m', 'params (M)'),
              ('accuracy', 'supernet val acc (%)'))
    for ax, (attr, label) in zip(axes, series):
        ax.plot(steps, [getattr(s, attr) for s in history], marker='o')
        ax.set_xlabel('slimming step')
        ax.set_title(label)
    axes[0].axhline(target_ms, color='r', ls='--', label='target')
    axes[0].legend()
    fig.suptitle(f'latency-driven slimming to {target_ms:.2f} ms: {arch}', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)
