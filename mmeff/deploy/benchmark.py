"""Latency / complexity benchmark over registered models and runtime backends.

For every model (see :mod:`mmeff.deploy.bench_registry`) it counts parameters and MACs once
(:mod:`mmeff.deploy.complexity`) and times each backend: warm-up runs, then N timed runs,
reporting the median and the 90th percentile. Backends:

    eager        the model as built, eval mode
    fused        mmeff's deploy path (BN folded, biases frozen); mmeff models only
    compile      torch.compile of the fused model (eager for reference models)
    onnxruntime  the fused model exported to ONNX, run by ONNX Runtime (CPU)
    cuda-fp16    fused model in half precision on the GPU

A backend that cannot run here (no GPU, no compiler, not an mmeff model) is skipped with the
reason recorded in its row. All rows of one run share machine, threads, batch and input size,
so the ratios printed by :func:`ratio_table` compare like with like.
"""
import csv
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..models.backbones.base import MobileBackbone
from ..models.layers.attention_bias import AttentionBias2d
from .bench_registry import BenchModel
from .complexity import count_macs, count_params
from .deploy_path import deploy

BACKENDS = ('eager', 'fused', 'compile', 'onnxruntime', 'cuda-fp16')
DEFAULT_BACKENDS = ('eager', 'fused', 'onnxruntime', 'cuda-fp16')


class Skip(Exception):
    """A backend does not apply here; the message is the reason."""


@dataclass
class Timing:
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    runs: int


def measure(fn: Callable[[], object], warmup: int, runs: int,
            sync: Optional[Callable[[], None]] = None) -> Timing:
    """Time ``fn`` ``runs`` times after ``warmup`` calls (``sync`` waits for a device)."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append((time.perf_counter() - start) * 1e3)
    return Timing(median_ms=statistics.median(times),
                  p90_ms=float(np.percentile(times, 90)), mean_ms=statistics.fmean(times),
                  min_ms=min(times), runs=runs)


def is_mmeff_model(module: nn.Module) -> bool:
    return any(isinstance(m, (MobileBackbone, AttentionBias2d)) for m in module.modules())


# ------------------------------------------------------------------------------- backends
def _prepare(backend: str, model: nn.Module, x: torch.Tensor, workdir: str,
             threads: int) -> Tuple[Callable[[], object], Optional[Callable[[], None]], str]:
    """Return (callable, sync, note) running ``model`` on ``backend`` or raise Skip."""
    ours = is_mmeff_model(model)
    if backend == 'eager':
        return _no_grad(model, x), None, ''
    if backend == 'fused':
        if not ours:
            raise Skip('not an mmeff model (no deploy path to apply)')
        return _no_grad(deploy(model, x.shape), x), None, ''
    if backend == 'compile':
        if not (shutil.which('g++') or shutil.which('c++')):
            raise Skip('torch.compile needs a C++ compiler for CPU code generation')
        base = deploy(model, x.shape) if ours else model
        compiled = torch.compile(base)
        start = time.perf_counter()
        with torch.no_grad():
            compiled(x)
        return _no_grad(compiled, x), None, f'compiled in {time.perf_counter() - start:.0f} s'
    if backend == 'onnxruntime':
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise Skip('onnxruntime is not installed (pip install mmeff[export])')
        from .onnx_check import ort_session
        base = deploy(model, x.shape) if ours else model
        path = os.path.join(workdir, 'model.onnx')
        import warnings
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            torch.onnx.export(base, (x,), path, opset_version=17, dynamo=False,
                              input_names=['input'], do_constant_folding=True)
        session = ort_session(path, threads=threads)
        feed = {'input': x.numpy()}
        return (lambda: session.run(None, feed)), None, ''
    if backend == 'cuda-fp16':
        if not torch.cuda.is_available():
            raise Skip('no CUDA device on this machine')
        base = deploy(model, x.shape) if ours else model
        base = base.half().cuda()
        xc = x.half().cuda()
        return _no_grad(base, xc), torch.cuda.synchronize, torch.cuda.get_device_name()
    raise ValueError(f'unknown backend {backend!r}; choose from {BACKENDS}')


def _no_grad(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run():
        with torch.no_grad():
            return module(x)
    return run


# ---------------------------------------------------------------------------------- runner
@dataclass
class BenchConfig:
    backends: Sequence[str] = DEFAULT_BACKENDS
    batch: int = 1
    threads: int = 1
    input_hw: Optional[Tuple[int, int]] = None  # None: each model's own
    warmup: int = 2
    runs: int = 10
    macs_only: bool = False


@dataclass
class Row:
    model: str
    group: str
    backend: str
    status: str
    params_m: float
    gmacs: float
    paper_params_m: Optional[float]
    paper_gmacs: Optional[float]
    input: str
    batch: int
    threads: int
    median_ms: Optional[float] = None
    p90_ms: Optional[float] = None
    images_per_s: Optional[float] = None
    runs: int = 0
    note: str = ''

    @property
    def macs_vs_paper_pct(self) -> Optional[float]:
        if not self.paper_gmacs:
            return None
        return 100.0 * (self.gmacs - self.paper_gmacs) / self.paper_gmacs


def complexity_of(model: nn.Module, input_shape: Sequence[int]) -> Tuple[float, float]:
    """(params in M, GMACs) — ours counted on the deploy graph, references as built."""
    params = count_params(model)  # before fusion: the figure papers publish (BN included)
    counted = model
    if is_mmeff_model(model):
        import copy
        counted = deploy(copy.deepcopy(model), input_shape)
    return params / 1e6, count_macs(counted, input_shape).gmacs


def run_benchmark(models: Sequence[BenchModel], config: BenchConfig,
                  progress: bool = True, log: Callable[[str], None] = print) -> List[Row]:
    """Measure every model on every backend; returns one row per (model, backend)."""
    from tqdm import tqdm

    torch.set_num_threads(config.threads)
    backends = [] if config.macs_only else list(config.backends)
    rows: List[Row] = []
    steps = len(models) * (1 + len(backends))
    bar = tqdm(total=steps, disable=not progress, unit='step', dynamic_ncols=True)
    with tempfile.TemporaryDirectory() as workdir:
        for bm in models:
            hw = tuple(config.input_hw or bm.input_hw)
            shape = (config.batch, 3, hw[0], hw[1])
            bar.set_description(f'{bm.name} complexity')
            torch.manual_seed(0)
            try:
                model = bm.build().eval()
            except ValueError as err:  # e.g. a family that has not been merged
                log(f'[benchmark] skipping {bm.name}: {err}')
                bar.update(1 + len(backends))
                continue
            params_m, gmacs = complexity_of(model, shape)
            bar.update(1)
            common = dict(model=bm.name, group=bm.group, params_m=params_m, gmacs=gmacs,
                          paper_params_m=bm.paper_params_m, paper_gmacs=bm.paper_gmacs,
                          input=f'{hw[0]}x{hw[1]}', batch=config.batch, threads=config.threads)
            if not backends:
                rows.append(Row(backend='-', status='complexity', **common))
            x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
            for backend in backends:
                bar.set_description(f'{bm.name} {backend}')
                fresh = bm.build().eval() if backend != 'eager' else model
                try:
                    fn, sync, note = _prepare(backend, fresh, x, workdir, config.threads)
                    timing = measure(fn, config.warmup, config.runs, sync)
                    rows.append(Row(backend=backend, status='ok', median_ms=timing.median_ms,
                                    p90_ms=timing.p90_ms, runs=timing.runs,
                                    images_per_s=1e3 * config.batch / timing.median_ms,
                                    note=note, **common))
                except Skip as reason:
                    rows.append(Row(backend=backend, status='skipped', note=str(reason),
                                    **common))
                bar.update(1)
                del fresh
    bar.close()
    return rows


# --------------------------------------------------------------------------------- outputs
def machine_info(config: BenchConfig) -> Dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if 'model name' in line)
    except (OSError, StopIteration):
        pass
    return {'cpu': cpu, 'logical_cores': os.cpu_count(), 'threads': config.threads,
            'batch': config.batch, 'warmup': config.warmup, 'runs': config.runs,
            'gpu': torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            'torch': torch.__version__, 'python': platform.python_version(),
            'date': time.strftime('%Y-%m-%d %H:%M:%S')}


def row_dict(row: Row) -> Dict[str, object]:
    out = asdict(row)
    out['macs_vs_paper_pct'] = row.macs_vs_paper_pct
    return out


def write_json(rows: List[Row], meta: Dict[str, object], path: str) -> None:
    with open(path, 'w') as f:
        json.dump({'meta': meta, 'rows': [row_dict(r) for r in rows]}, f, indent=1)


def write_csv(rows: List[Row], path: str) -> None:
    if not rows:
        return
    fields = list(row_dict(rows[0]))
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow(row_dict(row))


def _latency(rows: List[Row], model: str, backend: str) -> Optional[float]:
    for r in rows:
        if r.model == model and r.backend == backend and r.status == 'ok':
            return r.median_ms
    return None


def results_table(rows: List[Row], backends: Sequence[str]) -> str:
    """Per model: params, MACs vs paper, median (p90) latency per backend."""
    models = list(dict.fromkeys(r.model for r in rows))
    head = f'{"model":30s} {"params M":>8s} {"GMACs":>7s} {"paper":>6s} {"diff":>6s}'
    head += ''.join(f' {b + " ms":>17s}' for b in backends)
    lines = [head, '-' * len(head)]
    for name in models:
        mine = [r for r in rows if r.model == name]
        r0 = mine[0]
        diff = r0.macs_vs_paper_pct
        line = (f'{name:30s} {r0.params_m:8.2f} {r0.gmacs:7.3f} '
                f'{(r0.paper_gmacs or float("nan")):6.3f} '
                f'{("%+5.1f%%" % diff) if diff is not None else "    -":>6s}')
        for b in backends:
            r = next((x for x in mine if x.backend == b), None)
            if r is None or r.status != 'ok':
                line += f' {"-":>17s}'
            else:
                line += f' {r.median_ms:8.2f} ({r.p90_ms:6.2f})'
        lines.append(line)
    return '\n'.join(lines)


def ratio_rows(rows: List[Row], reference_cnn: str = 'timm/resnet50') -> List[Dict[str, object]]:
    """Speed ratios per mmeff model: fused / timm eager, fused / ResNet-50, ORT / timm ORT."""
    from .bench_registry import bench_models
    registry = bench_models()
    ours = [m for m in dict.fromkeys(r.model for r in rows)
            if m in registry and not m.startswith('timm/')]
    cnn = _latency(rows, reference_cnn, 'eager')
    cnn_ort = _latency(rows, reference_cnn, 'onnxruntime')
    out = []
    for name in ours:
        timm_name = next((k for k, v in registry.items() if v.counterpart == name), None)
        fused, eager = _latency(rows, name, 'fused'), _latency(rows, name, 'eager')
        t_eager = _latency(rows, timm_name, 'eager') if timm_name else None
        ort, t_ort = _latency(rows, name, 'onnxruntime'), \
            _latency(rows, timm_name, 'onnxruntime') if timm_name else None

        def ratio(a, b):
            return a / b if a and b else None
        out.append({'model': name,
                    'fused_over_eager': ratio(fused, eager),
                    'fused_over_timm_eager': ratio(fused, t_eager),
                    'fused_over_resnet50': ratio(fused, cnn),
                    'ort_over_timm_ort': ratio(ort, t_ort),
                    'ort_over_resnet50_ort': ratio(ort, cnn_ort)})
    return out


def ratio_table(rows: List[Row]) -> str:
    ratios = ratio_rows(rows)
    cols = [('fused_over_eager', 'fused/eager'), ('fused_over_timm_eager', 'fused/timm'),
            ('fused_over_resnet50', 'fused/R50'), ('ort_over_timm_ort', 'ORT/timm ORT'),
            ('ort_over_resnet50_ort', 'ORT/R50 ORT')]
    head = f'{"model":22s}' + ''.join(f' {title:>13s}' for _, title in cols)
    lines = [head, '-' * len(head)]
    for r in ratios:
        lines.append(f'{r["model"]:22s}' + ''.join(
            f' {r[key]:13.2f}' if r[key] is not None else f' {"-":>13s}' for key, _ in cols))
    return '\n'.join(lines)


def plot_latency_vs_params(rows: List[Row], path: str, ours_backend: str = 'fused',
                           ref_backend: str = 'eager', title: str = '') -> None:
    """Latency vs parameters, one line per family (Fig. 1 of the papers, speed axis)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    groups = list(dict.fromkeys(r.group for r in rows))
    markers = {'timm': 'x', 'CNN reference': 's'}
    for group in groups:
        backend = ref_backend if group in ('timm', 'CNN reference') else ours_backend
        pts = sorted((r.params_m, r.median_ms, r.model) for r in rows
                     if r.group == group and r.backend == backend and r.status == 'ok')
        if not pts:
            continue
        xs, ys, names = zip(*pts)
        label = f'{group} ({backend})'
        if group == 'timm':
            ax.scatter(xs, ys, marker='x', color='gray', label='timm, same variants (eager)')
        elif group == 'CNN reference':
            ax.scatter(xs, ys, marker='s', color='black', label='CNN references (eager)')
        else:
            ax.plot(xs, ys, marker=markers.get(group, 'o'), label=label)
        for x, y, name in pts:
            ax.annotate(name.replace('timm/', '').split('_')[-1], (x, y), fontsize=7,
                        xytext=(3, 3), textcoords='offset points')
    ax.set_xlabel('parameters (M)')
    ax.set_ylabel('latency (ms, median)')
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or 'Latency vs parameters')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_meta(meta: Dict[str, object]) -> str:
    return (f'machine: {meta["cpu"]}, {meta["logical_cores"]} logical cores, '
            f'{meta["threads"]} thread(s), batch {meta["batch"]}, {meta["warmup"]} warm-up + '
            f'{meta["runs"]} timed runs per backend; torch {meta["torch"]}'
            + (f'; GPU {meta["gpu"]}' if meta.get('gpu') else '; no GPU'))


@dataclass
class BenchOutputs:
    json: str
    csv: str
    png: Optional[str] = None
    extra: List[str] = field(default_factory=list)


def save_outputs(rows: List[Row], meta: Dict[str, object], out_dir: str, stem: str,
                 plot_path: Optional[str] = None) -> BenchOutputs:
    os.makedirs(out_dir, exist_ok=True)
    outputs = BenchOutputs(json=os.path.join(out_dir, f'{stem}.json'),
                           csv=os.path.join(out_dir, f'{stem}.csv'))
    write_json(rows, meta, outputs.json)
    write_csv(rows, outputs.csv)
    if plot_path and any(r.status == 'ok' for r in rows):
        title = (f'Latency vs parameters — {meta["cpu"]}, {meta["threads"]} thread(s), '
                 f'batch {meta["batch"]}')
        plot_latency_vs_params(rows, plot_path, title=title)
        outputs.png = plot_path
    return outputs
