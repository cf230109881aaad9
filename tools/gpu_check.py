#!/usr/bin/env python
"""GPU truth: numerics, latency, throughput and training memory of all 13 mmeff variants.

One command measures, for every variant (EfficientFormer L1/L3/L7, EfficientFormerV2 S0/S1/S2/L,
EfficientViT M0-M5), on one device:

* accuracy: the dense backbone, the classifier, the BN-folded classifier (``mmeff.deploy.fuse``)
  and timm's model of the same name, each in fp32 and under fp16 / bf16 autocast, against the same
  model in fp32 on the CPU (relative L2 and relative max error, finite check, tolerance verdict);
  ours against timm with the same weights (timm's random weights copied into ours through the
  family's checkpoint converter);
* latency at batch 1 and batch 64 (224x224; CUDA events, warm-up, median / p90) and
  throughput (images/s), ours next to timm's implementation in the same run, and the papers'
  published GPU figures for reference;
* the dense backbones' training step at 800x1344 (forward + backward under AMP) with
  ``with_cp`` off and on: step time, peak CUDA memory and the bytes autograd saves;
* optionally (``--compile``) torch.compile against eager for the classifiers.

Results: ``<out>/gpu_check.json`` and ``<out>/gpu_check.md`` (rewritten after every section, so
a run stopped by a time limit still leaves what it measured). A time budget (``--budget-s``)
keeps the whole run inside a fixed wall time: what does not fit is listed as skipped.

Examples::

    python tools/gpu_check.py --out work_dirs/gpu_check                      # everything, CUDA
    python tools/gpu_check.py --out /tmp/gc --device cpu --quick             # seconds, CPU
    python tools/gpu_check.py --out /tmp/gc --variants efficientformer_l1 --compile

The script imports neither mmcv, mmdet nor mmseg, and forbids them for the whole run (an import
of one of them anywhere fails, and is recorded in the JSON): mmeff's backbones, classifiers and
deploy path must work with torch, timm and mmengine alone. Exit status: 0 all ran and every
accuracy check passed, 1 a measurement failed or an accuracy check is out of tolerance, 2 bad
input (unknown variant, --device cuda without CUDA, bad numbers), 3 mmeff could not be imported.
"""
import argparse
import copy
import gc
import importlib.abc
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- import guard
BLOCKED_PACKAGES = ('mmcv', 'mmdet', 'mmseg')


class _OpenMMLabBlocker(importlib.abc.MetaPathFinder):
    """Makes ``import mmcv`` / ``mmdet`` / ``mmseg`` fail, and records who tried."""

    def __init__(self):
        self.attempts: List[dict] = []

    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] not in BLOCKED_PACKAGES:
            return None
        frames = [f for f in traceback.extract_stack()[:-1]
                  if 'importlib' not in f.filename and f.filename != __file__]
        where = [f'{os.path.relpath(f.filename, ROOT)}:{f.lineno}: {f.line}'
                 for f in frames[-4:]]
        self.attempts.append(dict(module=name, stack=where))
        raise ModuleNotFoundError(f'{name} is blocked by tools/gpu_check.py: mmeff\'s models '
                                  'must not need mmcv/mmdet/mmseg', name=name)


BLOCKER = _OpenMMLabBlocker()


def install_blocker() -> None:
    already = sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED_PACKAGES)
    if already:  # only possible when imported as a module into a process that loaded them
        raise RuntimeError(f'{already[:3]} already imported; run gpu_check in a fresh process')
    if BLOCKER not in sys.meta_path:
        sys.meta_path.insert(0, BLOCKER)


# ------------------------------------------------------------------------------- the variants
#: variant (= timm's model name) -> (family, arch)
VARIANTS: Dict[str, tuple] = {
    **{f'efficientformer_{a}': ('EfficientFormer', a) for a in ('l1', 'l3', 'l7')},
    **{f'efficientformerv2_{a}': ('EfficientFormerV2', a) for a in ('s0', 's1', 's2', 'l')},
    **{f'efficientvit_{a}': ('EfficientViT', a) for a in ('m0', 'm1', 'm2', 'm3', 'm4', 'm5')},
}
QUICK_VARIANTS = ('efficientvit_m0', 'efficientformerv2_s0')
PARTS = ('backbone', 'classifier', 'fused', 'timm')

EF_TABLE1 = ('EfficientFormer (NeurIPS 2022), Table 1: A100 GPU, TensorRT (ONNX), latency per '
             'batch of 64 at 224x224')
EVIT_TABLE2 = ('EfficientViT (CVPR 2023), Tables 2 and 3: V100 GPU, PyTorch, images/s at the '
               'largest power-of-two batch that fits, 224x224')
#: published GPU figures (shared/seeds: the two papers' texts; the EfficientFormerV2 review
#: there gives no GPU figure)
PAPER: Dict[str, List[dict]] = {
    'efficientformer_l1': [dict(gpu='A100', runtime='TensorRT', batch=64, ms=6.2,
                                source=EF_TABLE1),
                           dict(gpu='V100', runtime='PyTorch', images_per_s=4465,
                                source=EVIT_TABLE2)],
    'efficientformer_l3': [dict(gpu='A100', runtime='TensorRT', batch=64, ms=13.9,
                                source=EF_TABLE1)],
    'efficientformer_l7': [dict(gpu='A100', runtime='TensorRT', batch=64, ms=30.7,
                                source=EF_TABLE1)],
    **{f'efficientvit_{a}': [dict(gpu='V100', runtime='PyTorch', images_per_s=v,
                                  source=EVIT_TABLE2)]
       for a, v in (('m0', 27644), ('m1', 20093), ('m2', 18218), ('m3', 16644),
                    ('m4', 15914), ('m5', 10621))},
}
for _refs in PAPER.values():
    for _ref in _refs:
        if 'ms' in _ref:
            _ref['images_per_s'] = round(_ref['batch'] * 1000.0 / _ref['ms'], 1)

#: relative L2 error allowed against CPU fp32 (fp32 row: TF32 off / on)
TOLERANCE = {'fp32': 1e-4, 'fp32-tf32': 5e-3, 'fp16': 1e-2, 'bf16': 5e-2}


def mmeff_api() -> SimpleNamespace:
    """mmeff's stable public names (the only ones this tool uses)."""
    sys.path.insert(0, str(ROOT))
    from mmeff.models.backbones import EfficientFormer, EfficientFormerV2, EfficientViT
    from mmeff.models.classifiers import efficientformer_classifier, efficientvit_classifier
    try:
        from mmeff.models.classifiers import efficientformer_v2_classifier
    except ImportError:
        from mmeff.models.heads import efficientformer_v2_classifier
    from mmeff.deploy import fuse
    return SimpleNamespace(
        backbone={'EfficientFormer': EfficientFormer, 'EfficientFormerV2': EfficientFormerV2,
                  'EfficientViT': EfficientViT},
        classifier={'EfficientFormer': efficientformer_classifier,
                    'EfficientFormerV2': efficientformer_v2_classifier,
                    'EfficientViT': efficientvit_classifier},
        fuse=fuse)


# ---------------------------------------------------------------------------------- helpers
class Deadline:
    """Cumulative cut-offs: each section may run until its share of the budget has passed."""

    def __init__(self, budget_s: float, shares: Dict[str, float]):
        self.start = time.perf_counter()
        self.budget_s = budget_s
        self.cutoff, total = {}, 0.0
        for name, share in shares.items():
            total += share
            self.cutoff[name] = total * budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def over(self, section: str) -> bool:
        return self.elapsed() > self.cutoff[section]


def randomize_(model, seed: int):
    """Realistic random weights: BN statistics/affines, layer scales and attention biases.

    Fresh models hide errors (BNs are identities, layer scales 1e-5, bias tables zero)."""
    import torch
    from torch import nn
    g = torch.Generator().manual_seed(seed)

    def uniform(t, low, high):
        return (torch.rand(t.shape, generator=g) * (high - low) + low).to(t)

    def normal(t, std):
        return (torch.randn(t.shape, generator=g) * std).to(t)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                if module.affine:
                    module.weight.copy_(uniform(module.weight, 0.5, 1.5))
                    module.bias.copy_(normal(module.bias, 0.1))
                if module.track_running_stats:
                    module.running_mean.copy_(normal(module.running_mean, 0.1))
                    module.running_var.copy_(uniform(module.running_var, 0.5, 1.5))
        for name, param in model.named_parameters():
            if name.endswith('.gamma'):  # layer scale
                param.copy_(uniform(param, 0.05, 0.3))
            elif name.endswith('attention_biases') or name.endswith('.table'):
                param.copy_(normal(param, 1.0))
    return model


def as_list(out) -> list:
    import torch
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in as_list(v)]
    return [t for v in out for t in as_list(v)]


def compare(outputs, reference) -> dict:
    """Relative L2 and relative max error of outputs against reference (all tensors together)."""
    import torch
    got = torch.cat([t.detach().float().cpu().flatten() for t in as_list(outputs)])
    ref = torch.cat([t.detach().float().cpu().flatten() for t in as_list(reference)])
    if got.shape != ref.shape:
        raise ValueError(f'output sizes differ: {tuple(got.shape)} vs {tuple(ref.shape)}')
    finite = bool(torch.isfinite(got).all())
    diff = (got - ref).nan_to_num(nan=float('inf'))
    ref_l2, ref_max = float(ref.norm()), float(ref.abs().max())
    return dict(rel_l2=float(diff.norm()) / max(ref_l2, 1e-30),
                rel_max=float(diff.abs().max()) / max(ref_max, 1e-30), finite=finite)


def strict_json(value):
    """NaN / infinity -> None, so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


class Runner:
    def __init__(self, args, torch, api):
        self.args, self.torch, self.api = args, torch, api
        self.device = torch.device(args.device)
        self.cuda = self.device.type == 'cuda'
        self.dtypes = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}
        shares = {'inference': 0.72, 'train': 0.25}
        if args.compile:
            shares = {'inference': 0.5, 'train': 0.15, 'compile': 0.32}
        self.deadline = Deadline(args.budget_s, shares)
        self.result = dict(meta=self.meta(), paper=dict(PAPER), tolerance=TOLERANCE,
                           accuracy=[], latency=[], train=[], compile=[], skipped=[],
                           errors=[], blocked_imports=BLOCKER.attempts)
        self.out = Path(args.out)
        self.timm = None
        if 'timm' in args.parts:
            try:
                import timm
                self.timm = timm
            except Exception as err:  # noqa: BLE001
                self.note_skip('timm', 'all', f'timm unavailable: {err}')

    # -------------------------------------------------------------------------- bookkeeping
    def meta(self) -> dict:
        torch, args = self.torch, self.args
        meta = dict(
            date=time.strftime('%Y-%m-%d %H:%M:%S'), python=platform.python_version(),
            torch=torch.__version__, cuda=torch.version.cuda, device=args.device,
            gpu=torch.cuda.get_device_name(0) if args.device == 'cuda' else None,
            cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads(),
            quick=args.quick, variants=args.variants, dtypes=args.dtypes, batches=args.batches,
            size=args.size, accuracy_batch=args.accuracy_batch, train_size=args.train_size,
            train_batch=args.train_batch, train_amp=args.train_amp, warmup=args.warmup,
            iters=args.iters, target_s=args.target_s, tf32=args.tf32, compile=args.compile,
            budget_s=args.budget_s, parts=args.parts, blocked_packages=list(BLOCKED_PACKAGES),
            timing='CUDA events around each call' if args.device == 'cuda'
            else 'time.perf_counter around each call')
        try:
            import timm
            meta['timm'] = timm.__version__
        except Exception:  # noqa: BLE001
            meta['timm'] = None
        try:
            import mmengine
            meta['mmengine'] = mmengine.__version__
        except Exception:  # noqa: BLE001
            meta['mmengine'] = None
        return meta

    def note_skip(self, section, what, why):
        self.result['skipped'].append(dict(section=section, what=what, why=why))

    def release_memory(self) -> None:
        """Free what the last model held before the next one is built (GPU cache too)."""
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()

    def note_error(self, section, what, err):
        tb = traceback.format_exception(type(err), err, err.__traceback__)
        self.result['errors'].append(dict(section=section, what=what,
                                          error=f'{type(err).__name__}: {err}',
                                          traceback=''.join(tb[-6:])))
        print(f'[gpu_check] ERROR {section} {what}: {type(err).__name__}: {err}', flush=True)

    def save(self) -> None:
        self.result['meta']['elapsed_s'] = round(self.deadline.elapsed(), 1)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / 'gpu_check.json').write_text(json.dumps(strict_json(self.result), indent=1,
                                                           allow_nan=False) + '\n')
        (self.out / 'gpu_check.md').write_text(markdown(self.result))

    def log(self, msg: str) -> None:
        print(f'[gpu_check {self.deadline.elapsed():6.1f}s] {msg}', flush=True)

    # ---------------------------------------------------------------------------- devices
    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def autocast(self, dtype_name: str):
        import contextlib
        dtype = self.dtypes[dtype_name]
        if dtype is None:
            return contextlib.nullcontext()
        return self.torch.autocast(self.device.type, dtype=dtype)

    def time_calls(self, fn: Callable[[], object]) -> dict:
        """Warm-up, then time each call: as many as fit in --target-s, at least 3 (or --iters)."""
        torch, args = self.torch, self.args
        for _ in range(args.warmup - 1):  # the first calls pay for autotuning and caches
            fn()
        self.sync()
        t0 = time.perf_counter()
        fn()  # the last warm-up call says how many timed calls fit in --target-s
        self.sync()
        per_call = time.perf_counter() - t0
        iters = int(min(args.iters, max(3, args.target_s / max(per_call, 1e-6))))
        if self.cuda:
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(iters)]
            for start, end in events:
                start.record()
                fn()
                end.record()
            torch.cuda.synchronize()
            times = [start.elapsed_time(end) for start, end in events]
        else:
            times = []
            for _ in range(iters):
                t = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t) * 1000.0)
        times.sort()
        return dict(median_ms=statistics.median(times),
                    p90_ms=times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))],
                    mean_ms=statistics.fmean(times), min_ms=times[0], runs=len(times))

    # ------------------------------------------------------------------------------ models
    def build(self, name: str) -> dict:
        """CPU fp32 models of one variant with shared random weights."""
        family, arch = VARIANTS[name]
        api, torch = self.api, self.torch
        seed = self.args.seed + list(VARIANTS).index(name)
        torch.manual_seed(seed)
        models, notes = {}, []
        clf = api.classifier[family](arch).eval()
        timm_model = None
        if self.timm is not None:
            try:
                timm_model = randomize_(self.timm.create_model(name, pretrained=False),
                                        seed).eval()
            except Exception as err:  # noqa: BLE001
                self.note_skip('inference', f'{name}/timm', f'timm.create_model failed: {err}')
        weights = 'own random init (randomized)'
        if timm_model is not None:
            try:
                self.copy_weights(clf, timm_model.state_dict())
                weights = "timm's random init (randomized), copied through mmeff's converter"
            except Exception as err:  # noqa: BLE001
                notes.append(f'weight copy from timm failed ({type(err).__name__}: {err}); '
                             'timm is timed only')
        if not weights.startswith('timm'):
            randomize_(clf, seed)
        models['classifier'] = clf
        if 'backbone' in self.args.parts:
            backbone = api.backbone[family](arch).eval()
            try:  # the classifier's weights, in mmeff's canonical layout
                backbone.load_checkpoint(clf.state_dict())
            except Exception as err:  # noqa: BLE001
                notes.append(f'backbone weight copy failed ({type(err).__name__}: {err})')
                randomize_(backbone, seed)
            models['backbone'] = backbone
        if 'fused' in self.args.parts:
            models['fused'] = api.fuse(copy.deepcopy(clf)).eval()
        if timm_model is not None:
            models['timm'] = timm_model
        if 'classifier' not in self.args.parts:
            del models['classifier']
        return dict(models=models, weights=weights, notes=notes,
                    same_weights_as_timm=weights.startswith('timm'))

    @staticmethod
    def copy_weights(clf, timm_state: dict) -> None:
        """timm's state dict -> our classifier via the family's converter (canonical layout)."""
        converter = clf.backbone.checkpoint_converter()
        canonical, _ = converter.convert(timm_state)
        clf.backbone.load_checkpoint(timm_state)  # backbone.* through load_pretrained
        head = {k[len('head.'):]: v for k, v in canonical.items() if k.startswith('head.')}
        clf.head.load_state_dict(head, strict=True)

    # ----------------------------------------------------------------------------- sections
    def inference(self) -> None:
        torch, args = self.torch, self.args
        gen = torch.Generator().manual_seed(args.seed)
        x_acc = torch.randn(args.accuracy_batch, 3, args.size, args.size, generator=gen)
        for name in args.variants:
            if self.deadline.over('inference'):
                self.note_skip('inference', name, 'time budget')
                continue
            self.log(f'{name}: build')
            try:
                built = self.build(name)
            except Exception as err:  # noqa: BLE001
                self.note_error('inference', f'{name}/build', err)
                continue
            self.result.setdefault('variants', {})[name] = dict(
                family=VARIANTS[name][0], arch=VARIANTS[name][1], timm_name=name,
                weights=built['weights'], notes=built['notes'],
                params_m={p: round(sum(t.numel() for t in m.parameters()) / 1e6, 4)
                          for p, m in built['models'].items()})
            models = built['models']
            refs = {}
            with torch.inference_mode():
                for part, model in list(models.items()):
                    try:
                        refs[part] = model(x_acc)
                    except Exception as err:  # noqa: BLE001
                        self.note_error('accuracy', f'{name}/{part}/cpu-fp32-reference', err)
                        del models[part]
                if 'fused' in refs and 'classifier' in refs:
                    refs_fused_vs = compare(refs['fused'], refs['classifier'])
                    self.result['variants'][name]['fused_vs_classifier_cpu_fp32'] = refs_fused_vs
                if built['same_weights_as_timm'] and 'timm' in refs:
                    ref_cls = refs.get('classifier', refs.get('fused'))
                    if ref_cls is not None:
                        self.result['variants'][name]['ours_vs_timm_cpu_fp32'] = compare(
                            ref_cls, refs['timm'])
            for part, model in models.items():
                self.measure_part(name, part, model, x_acc, refs[part])
            del models, built, refs
            self.release_memory()
            self.save()

    def measure_part(self, name, part, model, x_acc, ref) -> None:
        torch, args = self.torch, self.args
        try:
            model.to(self.device)
        except Exception as err:  # noqa: BLE001
            self.note_error('inference', f'{name}/{part}/to-device', err)
            return
        tf32 = args.tf32 and self.cuda
        for dtype in args.dtypes:
            what = f'{name}/{part}/{dtype}'
            try:
                with torch.inference_mode(), self.autocast(dtype):
                    out = model(x_acc.to(self.device))
                row = dict(variant=name, part=part, dtype=dtype, **compare(out, ref))
                key = 'fp32-tf32' if dtype == 'fp32' and tf32 else dtype
                row['tolerance'] = TOLERANCE[key]
                row['ok'] = bool(row['finite'] and row['rel_l2'] <= TOLERANCE[key])
                self.result['accuracy'].append(row)
            except Exception as err:  # noqa: BLE001
                self.note_error('accuracy', what, err)
            for batch in ([] if args.no_latency else args.batches):
                if self.deadline.over('inference'):
                    self.note_skip('latency', f'{what}/b{batch}', 'time budget')
                    continue
                try:
                    x = torch.randn(batch, 3, args.size, args.size, device=self.device)

                    def call():
                        with torch.inference_mode(), self.autocast(dtype):
                            return model(x)

                    stats = self.time_calls(call)
                    stats['images_per_s'] = batch * 1000.0 / stats['median_ms']
                    self.result['latency'].append(dict(variant=name, part=part, dtype=dtype,
                                                       batch=batch, size=args.size, **stats))
                except Exception as err:  # noqa: BLE001
                    self.note_error('latency', f'{what}/b{batch}', err)
                    if self.cuda:
                        torch.cuda.empty_cache()

    def train(self) -> None:
        torch, args = self.torch, self.args
        if args.no_train:
            return
        amp_dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}[args.train_amp]
        h, w = args.train_size
        for name in args.variants:
            family, arch = VARIANTS[name]
            for with_cp in (False, True):
                what = f'{name}/with_cp={with_cp}'
                if self.deadline.over('train'):
                    self.note_skip('train', what, 'time budget')
                    continue
                self.log(f'{name}: train step {h}x{w}, with_cp={with_cp}')
                try:
                    row = self.train_one(family, arch, with_cp, amp_dtype, (h, w))
                    self.result['train'].append(dict(variant=name, with_cp=with_cp, **row))
                except Exception as err:  # noqa: BLE001
                    self.note_error('train', what, err)
                finally:
                    self.release_memory()
            self.save()

    def train_one(self, family, arch, with_cp, amp_dtype, size) -> dict:
        torch, args = self.torch, self.args
        torch.manual_seed(args.seed)
        model = self.api.backbone[family](arch, with_cp=with_cp).to(self.device).train()
        x = torch.randn(args.train_batch, 3, *size, device=self.device)
        use_scaler = self.cuda and amp_dtype == torch.float16
        scaler = torch.amp.GradScaler('cuda') if use_scaler else None
        losses = []

        def forward():
            with torch.autocast(self.device.type, dtype=amp_dtype):
                outs = model(x)
            return sum(o.float().mean() for o in as_list(outs))

        def step():
            loss = forward()
            (scaler.scale(loss) if scaler else loss).backward()
            model.zero_grad(set_to_none=True)
            losses.append(loss.detach())

        # bytes autograd keeps for backward (device-independent; what with_cp trades away)
        saved = {}

        def pack(t):
            storage = t.untyped_storage()
            saved[(storage.device.type, storage.data_ptr())] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = forward()
        loss.backward()
        grads_finite = all(bool(torch.isfinite(p.grad).all()) for p in model.parameters()
                           if p.grad is not None)
        model.zero_grad(set_to_none=True)
        del loss
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        stats = self.time_calls(step)
        row = dict(size=list(size), batch=args.train_batch, amp=args.train_amp,
                   grad_scaler=use_scaler, saved_mib=sum(saved.values()) / 2 ** 20,
                   loss_finite=all(bool(torch.isfinite(v)) for v in losses),
                   grads_finite=grads_finite, **stats)
        row['images_per_s'] = args.train_batch * 1000.0 / stats['median_ms']
        if self.cuda:
            row['peak_mib'] = torch.cuda.max_memory_allocated() / 2 ** 20
            row['peak_above_weights_mib'] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
            row['peak_reserved_mib'] = torch.cuda.max_memory_reserved() / 2 ** 20
        del model, x
        return row

    def compile(self) -> None:
        args = self.args
        if not args.compile:
            return
        for name in args.variants:
            family, arch = VARIANTS[name]
            candidates = [('classifier', lambda: self.api.classifier[family](arch))]
            if self.timm is not None:
                candidates.append(('timm', lambda: self.timm.create_model(name,
                                                                          pretrained=False)))
            for part, make in candidates:
                for dtype in args.compile_dtypes:
                    for batch in args.batches:
                        what = f'{name}/{part}/{dtype}/b{batch}'
                        if self.deadline.over('compile'):
                            self.note_skip('compile', what, 'time budget')
                            continue
                        self.log(f'compile {what}')
                        try:
                            self.compile_one(name, part, make, dtype, batch)
                        except Exception as err:  # noqa: BLE001
                            self.note_error('compile', what, err)
                        self.release_memory()
            self.save()

    def compile_one(self, name, part, make, dtype, batch) -> None:
        torch, args = self.torch, self.args
        torch.manual_seed(args.seed)
        model = randomize_(make(), args.seed).eval().to(self.device)
        x = torch.randn(batch, 3, args.size, args.size, device=self.device)
        compiled = torch.compile(model, mode=args.compile_mode, dynamic=False)

        def run(m):
            with torch.inference_mode(), self.autocast(dtype):
                return m(x)

        eager_out = run(model)
        t0 = time.perf_counter()
        compiled_out = run(compiled)
        self.sync()
        compile_s = time.perf_counter() - t0
        eager = self.time_calls(lambda: run(model))
        comp = self.time_calls(lambda: run(compiled))
        self.result['compile'].append(dict(
            variant=name, part=part, dtype=dtype, batch=batch, mode=args.compile_mode,
            compile_s=compile_s, eager_ms=eager['median_ms'], compiled_ms=comp['median_ms'],
            speedup=eager['median_ms'] / comp['median_ms'],
            helps=eager['median_ms'] / comp['median_ms'] > 1.05,
            vs_eager=compare(compiled_out, eager_out)))


# --------------------------------------------------------------------------------- markdown
def _fmt(value, digits=2):
    if value is None:
        return '-'
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if isinstance(value, float):
        if value == 0:
            return '0'
        if abs(value) < 1e-2:
            return f'{value:.1e}'
        return f'{value:.{0 if abs(value) >= 1000 else 1 if abs(value) >= 100 else digits}f}'
    return str(value)


def _table(header: Sequence[str], rows: List[Sequence]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(_fmt(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines) + '\n'


def markdown(result: dict) -> str:
    meta = result['meta']
    out = ['# GPU check\n',
           f"{meta['date']}; device {meta['device']}"
           + (f" ({meta['gpu']})" if meta.get('gpu') else f" ({meta.get('cpu')})")
           + f"; torch {meta['torch']} (CUDA {meta['cuda']}), timm {meta.get('timm')}, "
           f"mmengine {meta.get('mmengine')}, Python {meta['python']}; TF32 "
           f"{'on' if meta['tf32'] else 'off'}; {meta['timing']}; "
           f"{meta.get('elapsed_s')} s of a {meta['budget_s']} s budget"
           + ('; QUICK MODE (few iterations, small training input: a smoke test, not a '
              'measurement)' if meta['quick'] else '') + '.\n',
           f"Imports of {', '.join(meta['blocked_packages'])} were blocked for the whole run; "
           f"attempts: {len(result['blocked_imports'])}.\n"]
    acc = result['accuracy']
    if acc:
        dtypes = list(dict.fromkeys(r['dtype'] for r in acc))
        out.append('\n## Numerics against the same model in fp32 on the CPU\n\n'
                   f"Relative L2 error of all outputs (batch {meta['accuracy_batch']}, "
                   f"{meta['size']}x{meta['size']}); 'FAIL' past the tolerance "
                   f"({', '.join(f'{k} {v:g}' for k, v in result['tolerance'].items())}), "
                   "'nan' for non-finite outputs. Parts: backbone = dense backbone (all "
                   "stages), classifier = ImageNet model, fused = classifier after "
                   "mmeff.deploy.fuse, timm = timm's model of the same name.\n\n")
        keyed = {(r['variant'], r['part'], r['dtype']): r for r in acc}
        rows = []
        for variant, part in dict.fromkeys((r['variant'], r['part']) for r in acc):
            cells = []
            for d in dtypes:
                r = keyed.get((variant, part, d))
                cells.append('-' if r is None else ('nan' if not r['finite'] else
                             _fmt(r['rel_l2']) + ('' if r['ok'] else ' FAIL')))
            rows.append([variant, part] + cells)
        out.append(_table(['variant', 'part'] + dtypes, rows))
        parity = [(v, info['ours_vs_timm_cpu_fp32']['rel_l2'])
                  for v, info in result.get('variants', {}).items()
                  if 'ours_vs_timm_cpu_fp32' in info]
        if parity:
            out.append('\nOurs against timm with the same weights (CPU fp32, relative L2): '
                       + ', '.join(f'{v} {_fmt(e)}' for v, e in parity) + '.\n')
    lat = result['latency']
    if lat:
        keyed = {(r['variant'], r['part'], r['dtype'], r['batch']): r for r in lat}
        parts = [p for p in PARTS if any(r['part'] == p for r in lat)]
        out.append(f"\n## Latency (median ms per batch, {lat[0]['size']}x{lat[0]['size']})\n\n"
                   "ours/timm: our classifier's time over timm's (below 1: ours is faster). "
                   "img/s: throughput of our fused classifier (or the classifier) at that "
                   "batch.\n\n")
        rows = []
        for variant, dtype, batch in dict.fromkeys((r['variant'], r['dtype'], r['batch'])
                                                   for r in lat):
            ms = {p: keyed.get((variant, p, dtype, batch), {}).get('median_ms') for p in parts}
            ratio = (ms['classifier'] / ms['timm']
                     if ms.get('classifier') and ms.get('timm') else None)
            best = ms.get('fused') or ms.get('classifier')
            rows.append([variant, dtype, batch] + [ms[p] for p in parts]
                        + [ratio, batch * 1000.0 / best if best else None])
        out.append(_table(['variant', 'dtype', 'batch'] + [f'{p} ms' for p in parts]
                          + ['ours/timm', 'img/s'], rows))
    paper_rows = []
    for variant, refs in result['paper'].items():
        if variant not in meta['variants']:
            continue
        for ref in refs:
            ours = [r for r in lat if r['variant'] == variant and r['part'] in ('fused',
                                                                               'classifier')
                    and r['batch'] == ref.get('batch', r['batch'])]
            best = min(ours, key=lambda r: r['median_ms'] / r['batch'], default=None)
            paper_rows.append([variant, f"{ref['gpu']} {ref['runtime']}",
                               ref.get('batch'), ref.get('ms'), ref['images_per_s'],
                               best and f"{best['part']} {best['dtype']} b{best['batch']}",
                               best and best['median_ms'], best and best['images_per_s']])
    if paper_rows:
        out.append('\n## Papers\' GPU figures (reference, other hardware and runtime)\n\n'
                   + ''.join(f'- {s}\n' for s in sorted({r['source'] for refs in
                                                          result['paper'].values()
                                                          for r in refs}))
                   + '\n"ours": the fastest per image of our classifier rows above (plain or '
                   'fused, any dtype; at the paper\'s batch where it names one), eager PyTorch '
                   'on this device, not a TensorRT engine.\n\n')
        out.append(_table(['variant', 'paper', 'batch', 'ms', 'img/s', 'ours', 'ours ms',
                           'ours img/s'], paper_rows))
    train = result['train']
    if train:
        t = train[0]
        out.append(f"\n## Dense backbone training step ({t['size'][0]}x{t['size'][1]}, batch "
                   f"{t['batch']}, AMP {t['amp']}, forward + backward)\n\n"
                   'saved MiB: bytes autograd keeps for backward (what with_cp trades for '
                   'recompute); peak MiB: CUDA max_memory_allocated during the timed steps.\n\n')
        out.append(_table(['variant', 'with_cp', 'step ms', 'img/s', 'saved MiB', 'peak MiB',
                           'peak above weights MiB', 'finite'],
                          [[r['variant'], r['with_cp'], r['median_ms'], r['images_per_s'],
                            r['saved_mib'], r.get('peak_mib'), r.get('peak_above_weights_mib'),
                            r['loss_finite'] and r['grads_finite']] for r in train]))
    comp = result['compile']
    if comp:
        out.append('\n## torch.compile against eager (median ms)\n\n')
        out.append(_table(['variant', 'part', 'dtype', 'batch', 'eager ms', 'compiled ms',
                           'speedup', 'helps', 'compile s', 'rel L2 vs eager'],
                          [[r['variant'], r['part'], r['dtype'], r['batch'], r['eager_ms'],
                            r['compiled_ms'], r['speedup'], r['helps'], r['compile_s'],
                            r['vs_eager']['rel_l2']] for r in comp]))
    if result['skipped']:
        out.append('\n## Skipped\n\n' + ''.join(
            f"- {s['section']} {s['what']}: {s['why']}\n" for s in result['skipped']))
    if result['errors']:
        out.append('\n## Errors\n\n' + ''.join(
            f"- {e['section']} {e['what']}: {e['error']}\n" for e in result['errors']))
    if result['blocked_imports']:
        out.append('\n## Blocked imports\n\n' + ''.join(
            f"- {b['module']} from {b['stack'][-1] if b['stack'] else '?'}\n"
            for b in result['blocked_imports']))
    return ''.join(out)


# ------------------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('--out', required=True, help='folder for gpu_check.json / .md')
    parser.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    parser.add_argument('--quick', action='store_true',
                        help=f'smoke test: {", ".join(QUICK_VARIANTS)}, batches 1 and 2, '
                             'train 64x96, few iterations (seconds on a CPU)')
    parser.add_argument('--variants', nargs='+', default=None,
                        help='variant names (timm spelling; default: all 13)')
    parser.add_argument('--parts', nargs='+', default=list(PARTS), choices=PARTS)
    parser.add_argument('--dtypes', nargs='+', default=None, choices=['fp32', 'fp16', 'bf16'],
                        help='default: fp32 fp16 bf16 (CPU quick: fp32 bf16)')
    parser.add_argument('--batches', nargs='+', type=int, default=None,
                        help='latency batch sizes (default 1 64)')
    parser.add_argument('--size', type=int, default=None, help='inference H=W (default 224)')
    parser.add_argument('--accuracy-batch', type=int, default=2)
    parser.add_argument('--train-size', nargs=2, type=int, default=None, metavar=('H', 'W'),
                        help='training-step input (default 800 1344)')
    parser.add_argument('--train-batch', type=int, default=None, help='default 2')
    parser.add_argument('--train-amp', choices=['fp16', 'bf16'], default=None,
                        help='autocast dtype of the training step (default fp16 + GradScaler '
                             'on CUDA, bf16 on the CPU)')
    parser.add_argument('--no-latency', action='store_true', help='numerics only')
    parser.add_argument('--no-train', action='store_true',
                        help='leave out the dense training step')
    parser.add_argument('--warmup', type=int, default=None,
                        help='warm-up calls, at least 1 (default 3)')
    parser.add_argument('--iters', type=int, default=None,
                        help='most timed calls per measurement (default 50)')
    parser.add_argument('--target-s', type=float, default=None,
                        help='time spent on the timed calls of one measurement, fewer calls for '
                             'slow ones, at least 3 (default 0.3)')
    parser.add_argument('--tf32', action='store_true', help='allow TF32 in fp32 (default off)')
    parser.add_argument('--compile', action='store_true',
                        help='also time torch.compile(classifier) and timm against eager')
    parser.add_argument('--compile-dtypes', nargs='+', default=['bf16'],
                        choices=['fp32', 'fp16', 'bf16'])
    parser.add_argument('--compile-mode', default='default')
    parser.add_argument('--budget-s', type=float, default=None,
                        help='wall-time budget; what does not fit is skipped '
                             '(default 420; quick 600)')
    parser.add_argument('--threads', type=int, default=None, help='CPU threads for torch')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)

    quick, cpu = args.quick, args.device == 'cpu'
    defaults = dict(variants=list(QUICK_VARIANTS) if quick else list(VARIANTS),
                    dtypes=['fp32', 'bf16'] if quick and cpu else ['fp32', 'fp16', 'bf16'],
                    batches=[1, 2] if quick else [1, 64], size=224,
                    train_size=[64, 96] if quick else [800, 1344],
                    train_batch=1 if quick else 2, train_amp='bf16' if cpu else 'fp16',
                    warmup=1 if quick else 3, iters=2 if quick else 50,
                    target_s=0.05 if quick else 0.3, budget_s=600 if quick else 420)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if quick:
        args.accuracy_batch = min(args.accuracy_batch, 2)
    return args


def check_args(args) -> Optional[str]:
    """The reason the arguments cannot run, or None."""
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        return f'unknown variant(s) {unknown}; known variants: {list(VARIANTS)}'
    numbers = dict(batches=min(args.batches), size=args.size, accuracy_batch=args.accuracy_batch,
                   train_batch=args.train_batch, train_size=min(args.train_size),
                   iters=args.iters, budget_s=args.budget_s, target_s=args.target_s)
    bad = [k for k, v in numbers.items() if not v > 0] + (['warmup'] if args.warmup < 1 else [])
    if bad:
        return f'{", ".join("--" + b.replace("_", "-") for b in bad)} must be positive'
    if min(args.train_size) < 64:
        return '--train-size must be at least 64 (EfficientViT has stride 64)'
    if args.size != 224 and 'timm' in args.parts:
        return ("timm's EfficientFormer/V2/ViT models only take their native 224x224; "
                'use --size 224 or leave timm out (--parts backbone classifier fused)')
    if args.size < 64:
        return '--size must be at least 64 (EfficientViT has stride 64)'
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    problem = check_args(args)
    if problem:
        print(f'[gpu_check] error: {problem}', file=sys.stderr)
        return 2
    install_blocker()
    import torch
    if args.device == 'cuda' and not torch.cuda.is_available():
        print('[gpu_check] error: --device cuda, but torch sees no CUDA device '
              f'(torch {torch.__version__}, built for CUDA {torch.version.cuda}); '
              'run on a GPU machine or pass --device cpu', file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == 'cuda':
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    try:
        api = mmeff_api()
    except Exception as err:  # noqa: BLE001
        blocked = '; '.join(f"{b['module']} from {b['stack'][-1] if b['stack'] else '?'}"
                            for b in BLOCKER.attempts)
        print(f'[gpu_check] error: importing mmeff failed: {type(err).__name__}: {err}'
              + (f' (blocked imports: {blocked})' if blocked else ''), file=sys.stderr)
        traceback.print_exc()
        return 3
    runner = Runner(args, torch, api)
    runner.log(f"{len(args.variants)} variants on {args.device} "
               f"({runner.result['meta']['gpu'] or runner.result['meta']['cpu']}), "
               f'budget {args.budget_s:.0f} s')
    runner.save()
    for section in (runner.inference, runner.train, runner.compile):
        section()
        runner.save()
    res = runner.result
    failed = [r for r in res['accuracy'] if not r['ok']]
    runner.log(f"done: {len(res['accuracy'])} accuracy rows ({len(failed)} out of tolerance), "
               f"{len(res['latency'])} latency rows, {len(res['train'])} training rows, "
               f"{len(res['compile'])} compile rows, {len(res['skipped'])} skipped, "
               f"{len(res['errors'])} errors, {len(res['blocked_imports'])} blocked imports; "
               f'results in {runner.out}')
    for r in failed:
        print(f"[gpu_check] out of tolerance: {r['variant']}/{r['part']}/{r['dtype']} "
              f"rel L2 {r['rel_l2']:.3g} > {r['tolerance']:g}", file=sys.stderr)
    return 1 if failed or res['errors'] else 0


if __name__ == '__main__':
    sys.exit(main())
