"""The whole search: supernet training, latency table (+ calibration), slimming with a
measured refinement, outputs (arch, configs, plot) and the Table-5 comparison.

Kept free of argument parsing so that ``tools/search.py``, the end-to-end run and the slow
test share it. Every step is logged (latency, params, accuracy) through ``log``.

Latency: the table is fitted to whole networks measured on the same machine
(:meth:`LatencyLUT.calibrate`, ``search.calibration_nets`` networks spanning the space), and
after slimming the result is measured directly; while it is above the target by more than
half of ``search.latency_tolerance`` (smaller gaps are timing noise on a shared CPU), slimming
continues to a target lowered by the measured/predicted ratio, at most
``search.refine_steps`` times; if the result ends below the tolerance band, the network
before the last action is measured too, and the measured network closest to the target
inside the band is kept.
"""
import copy
import json
import random
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config

from mmeff.search.lut import LatencyLUT, build_lut, measure_network_ms, width_grid
from mmeff.search.outputs import SEARCH_CONFIG_NAME, write_outputs
from mmeff.search.runs import accuracy, build_model, num_params_m, prepare_data, train_config, val_tensors
from mmeff.search.slimming import Step, importance_scores, initial_subnet, slim
from mmeff.search.space import Subnet
from mmeff.search.supernet import EfficientFormerSupernet

Log = Callable[[str], None]


def supernet_of(model: torch.nn.Module) -> EfficientFormerSupernet:
    backbone = getattr(model, 'backbone', model)
    if not isinstance(backbone, EfficientFormerSupernet):
        raise ValueError('the config model must be a classifier whose backbone is '
                         f'EfficientFormerSupernet, got {type(backbone).__name__}')
    return backbone


def num_classes_of(cfg: Config) -> int:
    return int(cfg.model['head']['num_classes'])


def get_supernet(cfg: Config, work: Path, log: Log, resume: bool = True) -> torch.nn.Module:
    """Train the supernet through tools/train.py's path, or reuse ``work/supernet.pth``."""
    ckpt = work / 'supernet.pth'
    if resume and ckpt.is_file():
        model = build_model(cfg)
        model.load_state_dict(torch.load(ckpt, map_location='cpu', weights_only=True))
        log(f'[supernet] reusing {ckpt}')
        return model
    log(f'[supernet] training {num_params_m(build_model(cfg)):.3f} M params with '
        f'mmeff.engine.launch.train ({cfg.train_cfg.max_epochs} epochs)')
    model = train_config(work / SEARCH_CONFIG_NAME, work / 'supernet')
    torch.save(model.state_dict(), ckpt)
    return model


def get_lut(cfg: Config, supernet: EfficientFormerSupernet, lut_path: Optional[str],
            work: Path, log: Log) -> Tuple[LatencyLUT, Path]:
    if lut_path and Path(lut_path).is_file():
        log(f'[lut] loading {lut_path}')
        return LatencyLUT.load(lut_path), Path(lut_path)
    lut_cfg = dict(cfg.lut)
    log(f'[lut] measuring on this CPU: {lut_cfg}')
    lut = build_lut(max_widths=supernet.widths, num_classes=num_classes_of(cfg), log=log,
                    **lut_cfg)
    path = Path(lut_path) if lut_path else work / 'lut.json'
    lut.save(path)
    log(f'[lut] {len(lut.entries)} entries -> {path}')
    return lut, path


def measure(cfg: Config, arch: Dict, family: str = 'efficientformer') -> float:
    """Direct latency of the classifier of ``arch`` with the table's settings (3x the runs:
    the fastest of more calls is steadier, and calibration uses this same measurement)."""
    c = cfg.lut
    return measure_network_ms(arch, c['img_size'], c['batch'], c['backend'],
                              num_classes_of(cfg), 3 * c['runs'], c['warmup'], c['threads'],
                              family)


def calibrate(cfg: Config, lut: LatencyLUT, supernet: EfficientFormerSupernet, start: Subnet,
              path: Path, log: Log) -> None:
    """Fit the table to whole networks: the start subnet and random ones from 25% to 90% of
    its table latency; prints the raw and calibrated error of each."""
    count = int(cfg.search.get('calibration_nets', 0))
    if count <= 0 or 'calibration_scale' in lut.meta:
        if 'calibration_scale' in lut.meta:
            log(f'[calibrate] table already calibrated: scales '
                f'{lut.meta["calibration_scale"]:.3f} (non-MB3D), '
                f'{lut.meta.get("calibration_scale_mb3d", 0):.3f} (MB3D)')
        return
    step, min_w = cfg.lut.get('step', 16), cfg.lut.get('min_width', 16)
    raw_start = lut.predict_raw(start)
    archs = [start.to_arch()]
    fractions = [0.25 + 0.65 * k / max(1, count - 2) for k in range(count - 1)]
    for k, f in enumerate(fractions):
        for tol in (0.1, 0.3, 100.0):  # a small space may have nothing close to f
            found = [a for a in random_archs(lut, supernet, f * raw_start, 3, tol, step, min_w,
                                             seed=100 + k, raw=True) if a not in archs]
            if found:
                archs.append(found[0])
                break
    measure(cfg, archs[0])  # the process's first timed network pays one-off start-up costs
    subs = [Subnet.from_arch(a) for a in archs]
    measured = [measure(cfg, a) for a in archs]
    scale, scale_3d = lut.calibrate(list(zip(subs, measured)))
    for a, sub, m in zip(archs, subs, measured):
        p, fit = lut.predict_raw(sub), lut.predict(sub)
        log(f'[calibrate] {a}: LUT sum {p:.3f} ms ({100 * (p - m) / m:+.1f}%), calibrated '
            f'{fit:.3f} ms ({100 * (fit - m) / m:+.1f}%), measured {m:.3f} ms')
    log(f'[calibrate] measured = {scale:.3f} x (LUT non-MB3D) + {scale_3d:.3f} x (LUT MB3D), '
        f'fitted on {len(archs)} networks -> saved in {path}')
    lut.save(path)


def search(cfg: Config, model: torch.nn.Module, lut: LatencyLUT, data: Dict,
           target_ms: float, objective: str, log: Log) -> Tuple[List[Step], float]:
    """Alg. 1 with the supernet's weights as accuracy estimator (cached per subnet), then
    the measured refinement; returns the steps and the final measured latency."""
    supernet = supernet_of(model)
    num_classes = num_classes_of(cfg)
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
            size_cache[key] = params_m(arch, num_classes, supernet.img_size)
        return size_cache[key]

    step = cfg.lut.get('step', 16)
    min_width = cfg.lut.get('min_width', step)
    history = slim(initial_subnet(supernet.widths, probs), importance, target_ms, lut.predict,
                   acc_fn, size_fn, objective, step=step, min_width=min_width, log=log,
                   stop_at_floor=True)
    tol = float(cfg.search.get('latency_tolerance', 0.1))
    measured = measure(cfg, history[-1].subnet.to_arch())
    seen = [(len(history), measured)]  # (steps kept, measured ms) of every measured network
    for k in range(int(cfg.search.get('refine_steps', 0))):
        if measured <= target_ms * (1 + tol / 2):
            break
        lut_target = history[-1].latency_ms * target_ms / measured
        log(f'[refine {k + 1}] measured {measured:.3f} ms > target {target_ms:.3f} ms: '
            f'continue slimming to LUT {lut_target:.3f} ms')
        more = slim(history[-1].subnet, importance, lut_target, lut.predict, acc_fn,
                    size_fn, objective, step=step, min_width=min_width, log=log,
                    stop_at_floor=True)
        if len(more) == 1:
            break
        history += more[1:]
        measured = measure(cfg, history[-1].subnet.to_arch())
        seen.append((len(history), measured))
    if measured < (1 - tol) * target_ms and len(history) > 1:  # the step before, too
        seen.append((len(history) - 1, measure(cfg, history[-2].subnet.to_arch())))
    inside = [(abs(m - target_ms), n, m) for n, m in seen
              if abs(m - target_ms) <= tol * target_ms]
    if abs(measured - target_ms) > tol * target_ms and inside:
        _, n, measured = min(inside)  # the last action overshot: keep the closest in tolerance
        log(f'[refine] {history[-1].subnet.describe()} undershoots; keeping step {n - 1} '
            f'({history[n - 1].subnet.describe()}, measured {measured:.3f} ms)')
        history = history[:n]
    log(f'[search] measured {measured:.3f} ms vs target {target_ms:.3f} ms '
        f'({100 * (measured - target_ms) / target_ms:+.1f}%)')
    return history, measured


def params_m(arch: Dict, num_classes: int, img_size: int) -> float:
    """Exact size of the classifier of ``arch`` at the search's ``img_size`` (the grid of its
    attention-bias tables: the written config builds it there too)."""
    from mmeff.models.classifiers import efficientformer_classifier
    return num_params_m(efficientformer_classifier(arch, num_classes, distillation=False,
                                                   img_size=img_size))


def random_archs(lut: LatencyLUT, supernet: EfficientFormerSupernet, target_ms: float,
                 count: int, tolerance: float, step: int, min_width: int, seed: int = 0,
                 tries: int = 20000, raw: bool = False) -> List[Dict]:
    """Random points of the search space whose (``raw``: uncalibrated) LUT latency is within
    ``tolerance`` of ``target_ms`` (Table 5's baselines: same cost, other depth/width)."""
    rng = random.Random(seed)
    predict = lut.predict_raw if raw else lut.predict
    found: List[Dict] = []
    for _ in range(tries):
        widths = [rng.choice(width_grid(w, step, min_width)) for w in supernet.widths]
        depths = [rng.randint(1, d) for d in supernet.depths]
        arch = dict(widths=widths, depths=depths,
                    num_vit=rng.randint(0, depths[2] + depths[3]))
        if abs(predict(Subnet.from_arch(arch)) - target_ms) <= tolerance * target_ms \
                and arch not in found:
            found.append(arch)
            if len(found) == count:
                break
    return found


def prepare_search(cfg: Config, work_dir: str, log: Log, resume: bool = True
                   ) -> Tuple[Config, Path, torch.nn.Module, Dict[str, torch.Tensor]]:
    """What every search starts with: the work dir holding the dumped search config, the
    data, the trained (or reused) supernet classifier and the validation tensors."""
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = str(work / 'supernet')
    cfg.dump(str(work / SEARCH_CONFIG_NAME))
    prepare_data(cfg)
    model = get_supernet(cfg, work, log, resume)
    data = dict(zip(('val_x', 'val_y'), val_tensors(cfg, model)))
    return cfg, work, model, data


def run(cfg: Config, targets_ms: Sequence[float] = (), target_ratios: Sequence[float] = (),
        objective: str = 'latency', lut_path: Optional[str] = None,
        work_dir: str = 'work_dirs/search', resume: bool = True, compare: bool = False,
        log: Log = print) -> Dict:
    """The whole pipeline; ``target_ratios`` are fractions of the starting subnet's measured
    latency. With ``compare`` the derived and random same-latency networks are trained from
    scratch with their written configs and measured (Table 5)."""
    if not targets_ms and not target_ratios:
        raise ValueError('give at least one --target-latency (ms) or --target-ratio')
    cfg, work, model, data = prepare_search(cfg, work_dir, log, resume)
    supernet = supernet_of(model)
    log(f'[supernet] val accuracy (expected mixture): '
        f'{accuracy(model, data["val_x"], data["val_y"]):.2f}% on {len(data["val_y"])} images')
    lut, path = get_lut(cfg, supernet, lut_path, work, log)
    start = initial_subnet(supernet.widths, supernet.probabilities())
    calibrate(cfg, lut, supernet, start, path, log)
    start_ms = measure(cfg, start.to_arch())
    log(f'[start] {start.describe()}: LUT {lut.predict(start):.3f} ms, measured '
        f'{start_ms:.3f} ms')
    report: Dict = dict(start=dict(arch=start.to_arch(), lut_ms=lut.predict(start),
                                   measured_ms=start_ms), lut_meta=lut.meta, searches=[])
    targets = list(targets_ms) + [r * start_ms for r in target_ratios]
    nc = num_classes_of(cfg)
    ls = cfg.model['backbone'].get('layer_scale_init', 1e-5)
    for t in targets:
        log(f'[search] target {t:.3f} ms (objective {objective})')
        history, measured = search(cfg, model, lut, data, t, objective, log)
        arch = history[-1].subnet.to_arch()
        name = f'searched_{objective}_{t:.3f}ms'.replace('.', 'p')
        files = write_outputs(arch, t, history, work, name, nc, ls,
                              f'target {t:.3f} ms, objective {objective}',
                              img_size=supernet.img_size)
        entry = dict(target_ms=t, arch=arch, lut_ms=history[-1].latency_ms,
                     measured_ms=measured, params_m=history[-1].params_m,
                     supernet_acc=history[-1].accuracy, files=files, steps=len(history) - 1)
        log(f'[search] final arch {arch}: LUT {entry["lut_ms"]:.3f} ms, measured '
            f'{measured:.3f} ms, {entry["params_m"]:.3f} M params, written {files}')
        if compare:
            entry['table5'] = compare_with_random(cfg, lut, supernet, arch, t, data, work,
                                                  name, log)
        report['searches'].append(entry)
    (work / 'search_report.json').write_text(json.dumps(report, indent=1, default=str))
    return report


def compare_with_random(cfg: Config, lut: LatencyLUT, supernet: EfficientFormerSupernet,
                        arch: Dict, target_ms: float, data: Dict, work: Path, name: str,
                        log: Log) -> List[Dict]:
    """Train the searched and random same-latency networks from scratch (Table 5)."""
    scfg = cfg.search
    nc = num_classes_of(cfg)
    ls = cfg.model['backbone'].get('layer_scale_init', 1e-5)
    randoms = random_archs(lut, supernet, target_ms, scfg['num_random'],
                           scfg['random_tolerance'], cfg.lut.get('step', 16),
                           cfg.lut.get('min_width', 16), scfg.get('seed', 0))
    rows = []
    for label, a in [('searched', arch)] + [(f'random{k + 1}', r)
                                            for k, r in enumerate(randoms)]:
        net_name = name if label == 'searched' else f'{name}_{label}'
        files = write_outputs(a, target_ms, [], work, net_name, nc, ls, label,
                              img_size=supernet.img_size) \
            if label != 'searched' else None
        config = work / f'{net_name}_cls.py'
        trained = train_config(config, work / net_name)
        row = dict(model=label, arch=a, lut_ms=lut.predict(Subnet.from_arch(a)),
                   measured_ms=measure(cfg, a), params_m=params_m(a, nc, supernet.img_size),
                   top1=accuracy(trained, data['val_x'], data['val_y']),
                   config=str(config) if files is None else files['cls_config'])
        row['vs_target'] = (row['measured_ms'] - target_ms) / target_ms
        log(f'[table5] {label:<9} measured {row["measured_ms"]:.3f} ms '
            f'({100 * row["vs_target"]:+.1f}% vs target {target_ms:.3f}), LUT '
            f'{row["lut_ms"]:.3f} ms, {row["params_m"]:.3f} M, toy top-1 {row["top1"]:.2f}%  '
            f'{a}')
        rows.append(row)
    return rows
