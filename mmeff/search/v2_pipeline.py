"""The whole EfficientFormerV2 search: supernet (sandwich rule, through tools/train.py's path),
latency table of the space's choices (+ calibration against whole networks), slimming by the
accuracy drop per MES gain (:func:`mmeff.search.v2_search.slim_v2`), outputs (arch, configs,
plot), and the comparison with random subnets of the same MES and size.

Shares the V1 pipeline's pieces (:mod:`mmeff.search.pipeline`: supernet training / reuse,
whole-network timing; :mod:`mmeff.search.runs`: data, validation tensors, accuracy, training;
:mod:`mmeff.search.outputs`). Kept free of argument parsing (``tools/search.py``).

Latency: ``lut`` in the config gives the timing settings (or ``--lut`` a table measured
elsewhere, e.g. on a phone, with the ``v2_*`` entries). The table is fitted to whole networks
measured here (``search.calibration_nets``: the max, the min and random subnets), each printed
with the raw and the calibrated error.
"""
import json
import random
import statistics
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config

from mmeff.search.bn_calibration import bn_recalibrated
from mmeff.search.lut import LatencyLUT, build_v2_lut, make_key
from mmeff.search.mes import mes
from mmeff.search.outputs import write_outputs
from mmeff.search.pipeline import measure, num_classes_of, prepare_search
from mmeff.search.runs import accuracy, train_config, val_tensors
from mmeff.search.slimming import Goal, Step
from mmeff.search.v2_search import slim_v2, subnets_like
from mmeff.search.v2_subnet import V2ParamCounter, V2Subnet
from mmeff.search.v2_supernet import EfficientFormerV2Supernet

Log = Callable[[str], None]
FAMILY = 'efficientformerv2'
LUT_KEYS = ('img_size', 'batch', 'backend', 'runs', 'warmup', 'threads', 'copies')


def v2_supernet_of(model: torch.nn.Module) -> EfficientFormerV2Supernet:
    backbone = getattr(model, 'backbone', model)
    if not isinstance(backbone, EfficientFormerV2Supernet):
        raise ValueError('--family efficientformerv2 searches a classifier whose backbone is '
                         "type='mmeff.EfficientFormerV2Supernet' (configs/search/"
                         f'supernet_v2_toy.py), got {type(backbone).__name__}')
    return backbone


def check_v2_config(cfg: Config) -> None:
    """Before any training: the config must hold the V2 supernet and the search settings."""
    backbone = str(cfg.get('model', {}).get('backbone', {}).get('type', ''))
    if backbone.split('.')[-1] != 'EfficientFormerV2Supernet':
        raise ValueError('--family efficientformerv2 searches a classifier whose backbone is '
                         "type='mmeff.EfficientFormerV2Supernet' (configs/search/"
                         f'search_v2_toy.py), the config has {backbone!r}')
    for key in ('lut', 'search'):
        if not isinstance(cfg.get(key), dict):
            raise ValueError(f'the search config needs a {key}=dict(...) entry (see '
                             'configs/search/search_v2_toy.py)')


def missing_entries(lut: LatencyLUT, space, in_channels: int = 3) -> List[tuple]:
    """The ``v2_*`` keys that some subnet of ``space`` needs and ``lut`` lacks."""
    w = space.width_choices
    ratios = sorted({r for i, d in enumerate(space.max_depths) for j in range(d)
                     for r in space.block_ratio_choices(i, j)})
    needed = [make_key('v2_stem', 0, in_channels, c) for c in w[0]]
    needed += [make_key('v2_embed', i, a, b) for i in range(1, 4) for a in w[i - 1] for b in w[i]]
    needed += [make_key(op, i, None, c, r) for i in range(4) for c in w[i] for r in ratios
               for op in (('v2_ffn', 'v2_attn') if i >= 2 else ('v2_ffn',))]
    needed += [make_key('v2_head', 3, None, c) for c in w[3]]
    return [k for k in needed if k not in lut.entries]


def check_lut(lut: LatencyLUT, space, source: str) -> None:
    """ValueError naming the entries of the space that the table lacks (and the fix)."""
    missing = missing_entries(lut, space, int(lut.meta.get('in_channels', 3)))
    if missing:
        raise ValueError(
            f'latency table {source} lacks {len(missing)} entries of the search space, e.g. '
            f'{missing[:3]} (op, stage, in_width, width, mlp_ratio): measure them with '
            'tools/build_latency_lut.py --family efficientformerv2 --config CONFIG (or on the '
            'device), or drop --lut to measure the table here')


def get_v2_lut(cfg: Config, supernet: EfficientFormerV2Supernet, lut_path: Optional[str],
               work: Path, log: Log) -> Tuple[LatencyLUT, Path]:
    """Load ``lut_path`` or measure the space's ops here (``cfg.lut``) and save it."""
    if lut_path and Path(lut_path).is_file():
        log(f'[lut] loading {lut_path}')
        lut = LatencyLUT.load(lut_path)
        check_lut(lut, supernet.search_space, lut_path)
        return lut, Path(lut_path)
    settings = {k: v for k, v in cfg.lut.items() if k in LUT_KEYS}
    space = supernet.search_space
    log(f'[lut] measuring the V2 ops of the search space on this CPU: {settings}')
    lut = build_v2_lut(width_choices=space.width_choices, ratio_choices=space.ratio_choices,
                       num_classes=num_classes_of(cfg), log=log, **settings)
    path = Path(lut_path) if lut_path else work / 'lut_v2.json'
    lut.save(path)
    log(f'[lut] {len(lut.entries)} entries -> {path}')
    return lut, path


def calibrate_v2(cfg: Config, lut: LatencyLUT, supernet: EfficientFormerV2Supernet,
                 path: Path, log: Log) -> List[Dict]:
    """Fit the table to whole networks measured here (the max, the min and random subnets);
    returns and logs each network's raw and calibrated error."""
    count = int(cfg.search.get('calibration_nets', 0))
    if count <= 0 or lut.calibrated(V2Subnet):
        return []
    space = supernet.search_space
    rng = random.Random(int(cfg.search.get('seed', 0)))
    nets = [V2Subnet.from_arch(space.max_arch), V2Subnet.from_arch(space.min_arch)]
    while len(nets) < max(count, 2):
        nets.append(V2Subnet.from_arch(space.sample(rng)))
    measure(cfg, nets[0].to_arch(), FAMILY)  # the first timed network pays start-up costs
    measured = [measure(cfg, n.to_arch(), FAMILY) for n in nets]
    scale, scale_attn = lut.calibrate(list(zip(nets, measured)))
    rows = []
    for net, m in zip(nets, measured):
        raw, fit = lut.predict_raw(net), lut.predict(net)
        rows.append(dict(arch=net.to_arch(), measured_ms=m, lut_raw_ms=raw, lut_ms=fit))
        log(f'[calibrate] {net.describe()}: LUT sum {raw:.3f} ms ({100 * (raw - m) / m:+.1f}%),'
            f' calibrated {fit:.3f} ms ({100 * (fit - m) / m:+.1f}%), measured {m:.3f} ms')
    log(f'[calibrate] measured = {scale:.3f} x (LUT non-attention) + {scale_attn:.3f} x '
        f'(LUT attention blocks), fitted on {len(nets)} networks -> saved in {path}')
    lut.save(path)
    return rows


class SupernetAccuracy:
    """Top-1 (%) of a subnet with the supernet's shared weights on the validation tensors,
    cached per subnet (slimming evaluates each candidate once). With ``calib_batches`` the
    subnet's BatchNorm statistics are re-estimated on them first (and restored after)."""

    def __init__(self, model: torch.nn.Module, data: Dict[str, torch.Tensor],
                 calib_batches: Sequence[torch.Tensor] = ()):
        self.model, self.data = model, data
        self.calib_batches = list(calib_batches)
        self.supernet = v2_supernet_of(model)
        self.cache: Dict[V2Subnet, float] = {}

    def __call__(self, sub: V2Subnet) -> float:
        if sub not in self.cache:
            self.supernet.set_subnet(sub.to_arch())
            with bn_recalibrated(self.model, self.calib_batches) if self.calib_batches \
                    else nullcontext():
                self.cache[sub] = accuracy(self.model, self.data['val_x'], self.data['val_y'])
            self.supernet.set_max()
        return self.cache[sub]


def calibration_batches(cfg: Config, model: torch.nn.Module) -> List[torch.Tensor]:
    """``search.bn_calibration_images`` (default 128; 0: off) training images through the eval
    transform, in batches of the val loader's size, for :func:`recalibrate_bn`."""
    count = int(cfg.search.get('bn_calibration_images', 128))
    if count < 0:
        raise ValueError(f'search.bn_calibration_images must be >= 0, got {count}')
    if count == 0:
        return []
    images, _ = val_tensors(cfg, model, split='train', max_images=count)
    return list(images.split(int(cfg.val_dataloader.batch_size)))


def split_val(data: Dict[str, torch.Tensor], held_out: float, seed: int = 0
              ) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """(search split, report split) of the validation tensors: a seeded random ``held_out``
    fraction is kept out of the search, so that the comparison is not measured on the images
    the slimming chose its actions on (0: both are the whole split)."""
    if not 0.0 <= held_out < 1.0:
        raise ValueError(f'search.held_out must be in [0, 1), got {held_out!r}')
    n = len(data['val_y'])
    cut = n - int(round(held_out * n))
    if held_out and not 0 < cut < n:
        raise ValueError(f'search.held_out={held_out} leaves no image on one side of the {n} '
                         'validation images: change it or use a larger val split')
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts = [{k: v[idx] for k, v in data.items()} for idx in (order[:cut], order[cut:])]
    return (parts[0], parts[1]) if held_out else (data, data)


def param_counter(cfg: Config, supernet: EfficientFormerV2Supernet) -> V2ParamCounter:
    kw = supernet.standalone_kwargs()
    return V2ParamCounter(num_classes_of(cfg), kw['img_size'], kw['layer_scale_init'],
                          kw['in_channels'])


def run_v2(cfg: Config, goals: Sequence[Goal], lut_path: Optional[str] = None,
           work_dir: str = 'work_dirs/search_v2', resume: bool = True, compare: bool = False,
           log: Log = print) -> Dict:
    """The whole V2 pipeline, one search per goal. With ``compare``: random subnets of the
    same MES and size (``search.random_tolerance``), one per seed of ``search.seeds``, with
    their supernet accuracy, and (``search.train_from_scratch``) the searched and the random
    networks trained from scratch with each seed, all on the ``search.held_out`` part of the
    val split that the search did not see."""
    if not goals:
        raise ValueError('give a target: --target-mes, --target-latency or --target-params')
    check_v2_config(cfg)
    cfg, work, model, data = prepare_search(cfg, work_dir, log, resume)
    supernet = v2_supernet_of(model)
    lut, path = get_v2_lut(cfg, supernet, lut_path, work, log)
    report: Dict = dict(calibration=calibrate_v2(cfg, lut, supernet, path, log),
                        lut_meta=lut.meta, searches=[])
    search_data, report_data = split_val(data, float(cfg.search.get('held_out', 0.0)))
    log(f'[data] {len(search_data["val_y"])} val images guide the search, '
        f'{len(report_data["val_y"])} report (held out: search.held_out)')
    calib = calibration_batches(cfg, model)
    log(f'[data] BatchNorm recalibration of every scored subnet on '
        f'{sum(len(b) for b in calib)} train images' if calib else
        '[data] no BatchNorm recalibration (search.bn_calibration_images=0)')
    acc_fn, params_fn = SupernetAccuracy(model, search_data, calib), param_counter(cfg, supernet)
    report_acc = SupernetAccuracy(model, report_data, calib)
    for label, arch in (('max', supernet.max_arch), ('min', supernet.min_arch)):
        log(f'[supernet] {label} subnet accuracy: {acc_fn(V2Subnet.from_arch(arch)):.2f}% '
            f'(search split), {report_acc(V2Subnet.from_arch(arch)):.2f}% (report split)')
    kw = supernet.standalone_kwargs()
    for goal in goals:
        log(f'[search] target {goal.text()} (gain: {goal.objective})')
        history = slim_v2(supernet.search_space, goal, lut.predict, acc_fn, params_fn, log=log)
        last = history[-1]
        arch = last.subnet.to_arch()
        name = f'searched_v2_{goal.kind}_{goal.target:g}'.replace('.', 'p')
        files = write_outputs(arch, goal, history, work, name, num_classes_of(cfg),
                              kw['layer_scale_init'], f'target {goal.text()}', FAMILY,
                              kw['img_size'][0])
        entry = dict(goal=dict(kind=goal.kind, target=goal.target, objective=goal.objective),
                     arch=arch, lut_ms=last.latency_ms, params_m=last.params_m, mes=last.mes,
                     measured_ms=measure(cfg, arch, FAMILY), supernet_acc=last.accuracy,
                     steps=len(history) - 1, files=files)
        log(f'[search] final {last.subnet.describe()}: LUT {last.latency_ms:.3f} ms (measured '
            f'{entry["measured_ms"]:.3f} ms), {last.params_m:.4f} M params, MES '
            f'{last.mes:.1f}, supernet acc {last.accuracy:.2f}%; written {files}')
        if compare:
            entry['compare'] = compare_with_random(cfg, supernet, last, report_acc, lut,
                                                   params_fn, work, name, log)
        report['searches'].append(entry)
    (work / 'search_report.json').write_text(json.dumps(report, indent=1, default=str))
    return report


def compare_with_random(cfg: Config, supernet: EfficientFormerV2Supernet, searched: Step,
                        acc_fn: SupernetAccuracy, lut: LatencyLUT, params_fn: V2ParamCounter,
                        work: Path, name: str, log: Log) -> Dict:
    """Searched vs random subnets of the same MES and size: supernet accuracy of each and,
    with ``search.train_from_scratch``, top-1 after training from scratch, per seed; all
    measured by ``acc_fn``'s tensors (the held-out report split)."""
    scfg = cfg.search
    seeds = list(scfg.get('seeds', (0, 1, 2)))
    tol = float(scfg.get('random_tolerance', 0.05))
    kw = supernet.standalone_kwargs()
    rows = []
    for seed in seeds:
        found = subnets_like(supernet.search_space, 1, searched.mes, searched.params_m, tol,
                             lut.predict, params_fn, seed=seed,
                             tries=int(scfg.get('random_tries', 20000)))
        if not found:
            raise ValueError(f'no random subnet within {tol:.0%} of MES {searched.mes:.1f} and '
                             f'{searched.params_m:.4f} M params (seed {seed}): raise '
                             'search.random_tolerance or search.random_tries')
        rand = found[0]
        r_lat, r_params = lut.predict(rand), params_fn(rand)
        row = dict(seed=seed, random_arch=rand.to_arch(), random_mes=mes(r_lat, r_params),
                   random_params_m=r_params, random_supernet_acc=acc_fn(rand),
                   searched_supernet_acc=acc_fn(searched.subnet))
        if scfg.get('train_from_scratch', False):
            rname = f'{name}_random_seed{seed}'
            rfiles = write_outputs(rand.to_arch(), Goal('mes', searched.mes, 'mes'), [], work,
                                   rname, num_classes_of(cfg), kw['layer_scale_init'],
                                   f'random subnet, seed {seed}', FAMILY, kw['img_size'][0])
            for label, config in (('searched', work / f'{name}_cls.py'),
                                  ('random', Path(rfiles['cls_config']))):
                trained = train_config(config, work / f'{config.stem}_seed{seed}',
                                       [f'randomness.seed={seed}'])
                row[f'{label}_scratch_acc'] = accuracy(trained, *_val(acc_fn))
        log(f'[compare] seed {seed}: searched supernet acc {row["searched_supernet_acc"]:.2f}%'
            f' vs random {row["random_supernet_acc"]:.2f}% (MES {row["random_mes"]:.1f}, '
            f'{r_params:.4f} M)' + (f'; from scratch searched {row["searched_scratch_acc"]:.2f}%'
                                    f' vs random {row["random_scratch_acc"]:.2f}%'
                                    if 'random_scratch_acc' in row else '')
            + f'  random {rand.describe()}')
        rows.append(row)
    summary = {key: _mean_std([r[key] for r in rows]) for key in rows[0]
               if key.endswith('_acc')}
    for key, (mean, std) in summary.items():
        log(f'[compare] {key}: {mean:.2f} +- {std:.2f} % over seeds {seeds}')
    return dict(tolerance=tol, searched=dict(arch=searched.subnet.to_arch(), mes=searched.mes,
                                             params_m=searched.params_m),
                rows=rows, summary=summary)


def _val(acc_fn: SupernetAccuracy) -> Tuple[torch.Tensor, torch.Tensor]:
    return acc_fn.data['val_x'], acc_fn.data['val_y']


def _mean_std(values: List[float]) -> Tuple[float, float]:
    return statistics.mean(values), statistics.pstdev(values)
