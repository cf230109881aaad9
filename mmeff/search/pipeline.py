"""The whole search: supernet training, latency table, slimming, outputs (arch, configs, plot).

Kept free of argument parsing so that ``tools/search.py``, the end-to-end script and the slow
test share it. Every step is logged (latency, params, accuracy) through ``log``.
"""
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ..models.classifiers import efficientformer_classifier
from ..registry import MODELS
from .lut import LatencyLUT, build_lut, measure_network_ms, width_grid
from .slimming import Step, importance_scores, initial_subnet, slim
from .space import Subnet
from .supernet import EfficientFormerSupernet
from .toy_data import make_toy_classification
from .train import accuracy, train_classifier


@dataclass
class SearchResult:
    target_ms: float
    arch: Dict
    history: List[Step]
    files: Dict[str, str] = field(default_factory=dict)


def supernet_of(model: torch.nn.Module) -> EfficientFormerSupernet:
    backbone = getattr(model, 'backbone', model)
    if not isinstance(backbone, EfficientFormerSupernet):
        raise ValueError('the config model must be a classifier whose backbone is '
                         f'EfficientFormerSupernet, got {type(backbone).__name__}')
    return backbone


def load_data(cfg) -> Dict[str, torch.Tensor]:
    images, labels = make_toy_classification(**cfg.toy_data)
    n_val = cfg.val_images
    if not 0 < n_val < len(images):
        raise ValueError(f'val_images={n_val} must be between 1 and the {len(images)} toy images')
    return dict(train_x=images[:-n_val], train_y=labels[:-n_val], val_x=images[-n_val:],
                val_y=labels[-n_val:])


def get_supernet(cfg, data, work_dir: Path, log: Callable[[str], None],
                 resume: bool = True) -> torch.nn.Module:
    """Train the supernet (Gumbel-softmax MetaPaths) or reuse ``work_dir/supernet.pth``."""
    model = MODELS.build(cfg.model)
    ckpt = work_dir / 'supernet.pth'
    if resume and ckpt.is_file():
        model.load_state_dict(torch.load(ckpt, map_location='cpu', weights_only=True))
        log(f'[supernet] reusing {ckpt}')
    else:
        log(f'[supernet] training {sum(p.numel() for p in model.parameters()) / 1e6:.3f} M '
            f'params on {len(data["train_x"])} toy images')
        train_classifier(model, data['train_x'], data['train_y'], log=log, **cfg.supernet_train)
        torch.save(model.state_dict(), ckpt)
    log(f'[supernet] val accuracy (expected mixture): '
        f'{accuracy(model, data["val_x"], data["val_y"]):.2f}%')
    return model


def get_lut(cfg, supernet: EfficientFormerSupernet, lut_path: Optional[str], work_dir: Path,
            log: Callable[[str], None]) -> LatencyLUT:
    if lut_path and Path(lut_path).is_file():
        log(f'[lut] loading {lut_path}')
        return LatencyLUT.load(lut_path)
    lut_cfg = dict(cfg.lut)
    log(f'[lut] measuring on this CPU: {lut_cfg}')
    lut = build_lut(max_widths=supernet.widths, num_classes=cfg.model['head']['num_classes'],
                    log=log, **lut_cfg)
    path = Path(lut_path) if lut_path else work_dir / 'lut.json'
    lut.save(path)
    lut.save(path.with_suffix('.csv'))
    log(f'[lut] {len(lut.entries)} entries -> {path} (+ .csv)')
    return lut


def check_lut(lut: LatencyLUT, arch: Dict, cfg, log: Callable[[str], None]) -> Dict:
    """LUT prediction vs a direct measurement of the whole classifier (same settings)."""
    lut_cfg = cfg.lut
    predicted = lut.predict(Subnet.from_arch(arch))
    measured = measure_network_ms(arch, lut_cfg['img_size'], lut_cfg['batch'],
                                  lut_cfg['backend'], cfg.model['head']['num_classes'],
                                  lut_cfg['runs'], lut_cfg['warmup'], lut_cfg['threads'])
    log(f'[lut-check] {arch}: predicted {predicted:.3f} ms, measured {measured:.3f} ms, '
        f'error {100 * (predicted - measured) / measured:+.1f}%')
    return dict(arch=arch, predicted_ms=predicted, measured_ms=measured)


def params_m(arch: Dict, num_classes: int) -> float:
    model = efficientformer_classifier(arch, num_classes, distillation=False)
    return sum(p.numel() for p in model.parameters()) / 1e6


def search(cfg, model: torch.nn.Module, lut: LatencyLUT, data, target_ms: float,
           objective: str, log: Callable[[str], None]) -> List[Step]:
    """Alg. 1 with the supernet's weights as accuracy estimator (cached per subnet)."""
    supernet = supernet_of(model)
    num_classes = cfg.model['head']['num_classes']
    probs = supernet.probabilities()
    importance = importance_scores(probs)
    log('[search] importance (alpha ratios) per stage: '
        + ' | '.join(' '.join(f'{s:.2f}' for s in row) for row in importance))
    acc_cache: Dict[Subnet, float] = {}
    size_cache: Dict[tuple, float] = {}

    def acc_fn(sub: Subnet) -> float:
        if sub not in acc_cache:
            supernet.set_subnet(sub)
            acc_cache[sub] = accuracy(model, data['val_x'], data['val_y'])
            supernet.set_subnet(None)
        return acc_cache[sub]

    def size_fn(sub: Subnet) -> float:
        arch = sub.to_arch()
        key = (tuple(arch['widths']), tuple(arch['depths']), arch['num_vit'])
        if key not in size_cache:
            size_cache[key] = params_m(arch, num_classes)
        return size_cache[key]

    start = initial_subnet(supernet.widths, probs)
    step = cfg.lut.get('step', 16)
    return slim(start, importance, target_ms, lut.predict, acc_fn, size_fn, objective,
                step=step, min_width=cfg.lut.get('min_width', step), log=log)


def random_archs(lut: LatencyLUT, supernet: EfficientFormerSupernet, target_ms: float,
                 count: int, tolerance: float, step: int, min_width: int,
                 seed: int = 0, tries: int = 20000) -> List[Dict]:
    """Random points of the search space whose LUT latency is within ``tolerance`` of
    ``target_ms`` (the paper's Table 5 baselines: same cost, other depth/width)."""
    rng = random.Random(seed)
    found: List[Dict] = []
    for _ in range(tries):
        widths = [rng.choice(width_grid(w, step, min_width)) for w in supernet.widths]
        depths = [rng.randint(1, d) for d in supernet.depths]
        arch = dict(widths=widths, depths=depths,
                    num_vit=rng.randint(0, depths[2] + depths[3]))
        lat = lut.predict(Subnet.from_arch(arch))
        if abs(lat - target_ms) <= tolerance * target_ms and arch not in found:
            found.append(arch)
            if len(found) == count:
                break
    return found


def train_from_scratch(cfg, arch: Dict, data, seed: int = 0) -> float:
    model = efficientformer_classifier(arch, cfg.model['head']['num_classes'],
                                       distillation=False, img_size=cfg.toy_data['img_size'],
                                       layer_scale_init=cfg.get('final_layer_scale_init', 1e-5))
    train_classifier(model, data['train_x'], data['train_y'], seed=seed, **cfg.final_train)
    return accuracy(model, data['val_x'], data['val_y'])


# ------------------------------------------------------------------------------------ outputs
CLS_TEMPLATE = '''# Classifier of the architecture found by tools/search.py ({note}).
# Train it with the classification pretraining recipe (configs/cls/*): this file only fixes
# the model; the backbone arch is the searched one.
custom_imports = dict(imports=['mmeff.models'], allow_failed_imports=False)
arch = {arch!r}
model = dict(
    type='mmeff.MobileClassifierNet',
    backbone=dict(type='mmeff.EfficientFormer', arch=arch, out_indices=(3, ),
                  with_out_norms=False, drop_path_rate=0.0),
    head=dict(type='mmeff.EfficientFormerClsHead', in_channels=arch['widths'][-1],
              num_classes={num_classes}, distillation=False))
'''

MASKRCNN_TEMPLATE = '''# Mask R-CNN (MMDetection 3.x, 1x COCO) on the architecture found by tools/search.py
# ({note}). Set backbone.init_cfg to the classifier checkpoint trained with the _cls config.
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


def write_outputs(result: SearchResult, out_dir: Path, name: str, num_classes: int,
                  note: str) -> Dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    arch_path = out_dir / f'{name}_arch.json'
    arch_path.write_text(json.dumps(dict(
        arch=result.arch, target_ms=result.target_ms,
        steps=[dict(action=s.action, latency_ms=s.latency_ms, params_m=s.params_m,
                    accuracy=s.accuracy, mes=s.mes, arch=s.subnet.to_arch())
               for s in result.history]), indent=1))
    files['arch'] = str(arch_path)
    cls_path = out_dir / f'{name}_cls.py'
    cls_path.write_text(CLS_TEMPLATE.format(arch=result.arch, num_classes=num_classes,
                                            note=note))
    files['cls_config'] = str(cls_path)
    det_path = out_dir / f'maskrcnn_{name}_coco.py'
    det_path.write_text(MASKRCNN_TEMPLATE.format(arch=result.arch, note=note))
    files['maskrcnn_config'] = str(det_path)
    files['plot'] = plot_history(result, out_dir / f'{name}_steps.png')
    return files


def plot_history(result: SearchResult, path: Path) -> str:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    steps = list(range(len(result.history)))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    series = (('latency_ms', 'LUT latency (ms)'), ('params_m', 'params (M)'),
              ('accuracy', 'supernet val acc (%)'))
    for ax, (attr, label) in zip(axes, series):
        ax.plot(steps, [getattr(s, attr) for s in result.history], marker='o')
        ax.set_xlabel('slimming step')
        ax.set_title(label)
    axes[0].axhline(result.target_ms, color='r', ls='--', label='target')
    axes[0].legend()
    fig.suptitle(f'latency-driven slimming to {result.target_ms:.2f} ms: {result.arch}',
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def run(cfg, targets_ms: Sequence[float] = (), target_ratios: Sequence[float] = (),
        objective: str = 'latency', lut_path: Optional[str] = None,
        work_dir: str = 'work_dirs/search', resume: bool = True,
        compare: bool = False, log: Callable[[str], None] = print) -> Dict:
    """The whole pipeline; ``target_ratios`` are fractions of the starting subnet's LUT
    latency. With ``compare`` the derived and random same-latency networks are trained from
    scratch and measured (Table 5)."""
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    data = load_data(cfg)
    model = get_supernet(cfg, data, work, log, resume)
    supernet = supernet_of(model)
    lut = get_lut(cfg, supernet, lut_path, work, log)
    start = initial_subnet(supernet.widths, supernet.probabilities())
    start_ms = lut.predict(start)
    report: Dict = dict(start=dict(arch=start.to_arch(), lut_ms=start_ms), searches=[])
    report['lut_check'] = check_lut(lut, start.to_arch(), cfg, log)
    targets = list(targets_ms) + [r * start_ms for r in target_ratios]
    if not targets:
        raise ValueError('give at least one --target-latency (ms) or --target-ratio')
    num_classes = cfg.model['head']['num_classes']
    for t in targets:
        log(f'[search] target {t:.3f} ms (objective {objective}); start {start_ms:.3f} ms')
        history = search(cfg, model, lut, data, t, objective, log)
        res = SearchResult(t, history[-1].subnet.to_arch(), history)
        name = f'searched_{objective}_{t:.3f}ms'.replace('.', 'p')
        res.files = write_outputs(res, work, name, num_classes, f'target {t:.3f} ms, '
                                  f'objective {objective}, LUT {lut.meta}')
        entry = dict(target_ms=t, arch=res.arch, lut_ms=history[-1].latency_ms,
                     params_m=history[-1].params_m, supernet_acc=history[-1].accuracy,
                     files=res.files, steps=len(history) - 1)
        log(f'[search] final arch {res.arch}: LUT {entry["lut_ms"]:.3f} ms, '
            f'{entry["params_m"]:.3f} M params, written {res.files}')
        if compare:
            entry.update(compare_with_random(cfg, lut, supernet, res.arch, t, data, log))
        report['searches'].append(entry)
    (work / 'search_report.json').write_text(json.dumps(report, indent=1, default=str))
    return report


def compare_with_random(cfg, lut, supernet, arch: Dict, target_ms: float, data,
                        log: Callable[[str], None]) -> Dict:
    lut_cfg = cfg.lut
    scfg = cfg.search
    nc = cfg.model['head']['num_classes']

    def measured(a: Dict) -> float:
        return measure_network_ms(a, lut_cfg['img_size'], lut_cfg['batch'], lut_cfg['backend'],
                                  nc, lut_cfg['runs'], lut_cfg['warmup'], lut_cfg['threads'])

    rows = []
    candidates = [('searched', arch)] + [
        (f'random {k + 1}', a) for k, a in enumerate(random_archs(
            lut, supernet, target_ms, scfg['num_random'], scfg['random_tolerance'],
            lut_cfg.get('step', 16), lut_cfg.get('min_width', 16), scfg.get('seed', 0)))]
    for label, a in candidates:
        row = dict(model=label, arch=a, lut_ms=lut.predict(Subnet.from_arch(a)),
                   measured_ms=measured(a), params_m=params_m(a, nc),
                   top1=train_from_scratch(cfg, a, data))
        row['vs_target'] = (row['measured_ms'] - target_ms) / target_ms
        log(f'[table5] {label:<9} measured {row["measured_ms"]:.3f} ms '
            f'({100 * row["vs_target"]:+.1f}% vs target {target_ms:.3f}), LUT '
            f'{row["lut_ms"]:.3f} ms, {row["params_m"]:.3f} M, toy top-1 {row["top1"]:.2f}%  '
            f'{a}')
        rows.append(row)
    return dict(table5=rows)
