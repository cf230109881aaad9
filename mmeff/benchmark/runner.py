"""Latency / complexity benchmark over registered models and runtime backends.

For every model (see :mod:`mmeff.benchmark.registry`) it counts parameters and MACs once
(:mod:`mmeff.benchmark.complexity`) and times each backend: warm-up runs, then N timed runs,
reporting the median and the 90th percentile. Backends:

    eager        the model as built, eval mode
    fused        mmeff's deploy path (BN folded, biases frozen); mmeff models only
    compile      torch.compile of the fused model (eager for reference models)
    onnxruntime  the fused model exported to ONNX, run by ONNX Runtime (CPU)
    cuda-fp16    fused model in half precision on the GPU

A backend that cannot run here (no GPU, no compiler, not an mmeff model) is skipped with the
reason recorded in its row. Models that are compared (an mmeff model, timm's implementation of
it, the ResNet-50 anchor) are timed in one *session*, round-robin, so the ratios in
:mod:`mmeff.benchmark.report` survive the load drifts of a shared machine.
"""
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from mmeff.models.backbones.base import MobileBackbone
from mmeff.models.layers.attention_bias import AttentionBias2d
from mmeff.benchmark.registry import BenchModel
from mmeff.benchmark.complexity import count_macs, count_params
from mmeff.deploy.deploy_path import deploy

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
        from mmeff.deploy.onnx_check import ort_session
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
    anchor: str = 'timm/resnet50'


@dataclass
class Row:
    """One (model, backend) measured in one session; ``samples_ms`` are the timed runs."""
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
    session: int = 0
    median_ms: Optional[float] = None
    p90_ms: Optional[float] = None
    images_per_s: Optional[float] = None
    runs: int = 0
    note: str = ''
    samples_ms: List[float] = field(default_factory=list)

    @property
    def macs_vs_paper_pct(self) -> Optional[float]:
        if not self.paper_gmacs:
            return None
        return 100.0 * (self.gmacs - self.paper_gmacs) / self.paper_gmacs


def complexity_of(model: nn.Module, input_shape: Sequence[int]) -> Tuple[float, float]:
    """(params in M, GMACs) of the architecture as built (eval mode, norms not counted).

    Counted on the unfused model for every implementation alike: a deploy form may trade
    MACs for fewer kernel calls (EfficientViT's deployed q depth-wise conv runs as a
    (N x N) matrix product) and the papers count the architecture, not a runtime's graph.
    """
    return count_params(model) / 1e6, count_macs(model, input_shape).gmacs


def plan_sessions(models: Sequence[BenchModel], anchor: str) -> List[List[BenchModel]]:
    """Groups of models timed together, interleaved: an mmeff model with its reference
    implementation (when selected) and the anchor CNN (when selected).

    On a shared machine the load drifts over minutes; timing the models of a comparison
    round-robin within one session makes their ratios robust to that drift.
    """
    names = {m.name for m in models}
    anchor_model = next((m for m in models if m.name == anchor), None)
    counterpart_of = {m.counterpart: m for m in models if m.counterpart in names}
    sessions, used = [], set()
    for m in models:
        if m.name in used or m is anchor_model or (m.counterpart in names):
            continue
        members = [m] + ([counterpart_of[m.name]] if m.name in counterpart_of else [])
        if anchor_model is not None:
            members.append(anchor_model)
        sessions.append(members)
        used.update(x.name for x in members)
    if anchor_model is not None and anchor_model.name not in used:
        sessions.append([anchor_model])
    return sessions


def run_benchmark(models: Sequence[BenchModel], config: BenchConfig,
                  progress: bool = True, log: Callable[[str], None] = print) -> List[Row]:
    """Measure every model on every backend; one row per (session, model, backend)."""
    from tqdm import tqdm

    torch.set_num_threads(config.threads)
    backends = [] if config.macs_only else list(config.backends)
    sessions = plan_sessions(models, config.anchor)
    total = sum(len(s) * (1 + len(backends)) for s in sessions) + \
        (len(sessions) * config.runs if backends else 0)
    bar = tqdm(total=total, disable=not progress, unit='step', dynamic_ncols=True)
    complexity: Dict[str, Tuple[float, float]] = {}
    rows: List[Row] = []
    with tempfile.TemporaryDirectory() as workdir:
        for sid, members in enumerate(sessions):
            rows.extend(_run_session(sid, members, backends, config, workdir, complexity, bar,
                                     log))
    bar.close()
    return rows


def _run_session(sid, members, backends, config, workdir, complexity, bar, log) -> List[Row]:
    prepared: List[Tuple[Row, Callable, Optional[Callable]]] = []
    rows: List[Row] = []
    for bm in members:
        hw = tuple(config.input_hw or bm.input_hw)
        shape = (config.batch, 3, hw[0], hw[1])
        bar.set_description(f'{bm.name} complexity')
        try:
            torch.manual_seed(0)
            model = bm.build().eval()
        except ValueError as err:  # e.g. a family that has not been merged
            log(f'[benchmark] skipping {bm.name}: {err}')
            bar.update(1 + len(backends))
            continue
        if bm.name not in complexity:
            complexity[bm.name] = complexity_of(model, shape)
        params_m, gmacs = complexity[bm.name]
        bar.update(1)
        common = dict(model=bm.name, group=bm.group, params_m=params_m, gmacs=gmacs,
                      paper_params_m=bm.paper_params_m, paper_gmacs=bm.paper_gmacs,
                      input=f'{hw[0]}x{hw[1]}', batch=config.batch, threads=config.threads,
                      session=sid)
        if not backends:
            rows.append(Row(backend='-', status='complexity', **common))
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        for backend in backends:
            bar.set_description(f'{bm.name} {backend} (prepare)')
            fresh = model if backend == 'eager' else bm.build().eval()
            sub = os.path.join(workdir, f'{sid}_{bm.name.replace("/", "_")}_{backend}')
            os.makedirs(sub, exist_ok=True)
            try:
                fn, sync, note = _prepare(backend, fresh, x, sub, config.threads)
                row = Row(backend=backend, status='ok', note=note, **common)
                for _ in range(config.warmup):
                    fn()
                prepared.append((row, fn, sync))
            except Skip as reason:
                rows.append(Row(backend=backend, status='skipped', note=str(reason), **common))
            bar.update(1)
    # round-robin: every timed round runs each prepared (model, backend) once, in a rotated
    # order, so slow drifts of the machine's load hit all of them alike
    for r in range(config.runs if prepared else 0):
        bar.set_description(f'session {sid} run {r + 1}/{config.runs}')
        order = prepared[r % len(prepared):] + prepared[:r % len(prepared)]
        for row, fn, sync in order:
            start = time.perf_counter()
            fn()
            if sync:
                sync()
            row.samples_ms.append((time.perf_counter() - start) * 1e3)
        bar.update(1)
    if backends and not prepared:
        bar.update(config.runs)
    for row, _, _ in prepared:
        _summarise(row, config.batch)
        rows.append(row)
    return rows


def _summarise(row: Row, batch: int) -> None:
    samples = row.samples_ms
    row.runs = len(samples)
    row.median_ms = statistics.median(samples)
    row.p90_ms = float(np.percentile(samples, 90))
    row.images_per_s = 1e3 * batch / row.median_ms
