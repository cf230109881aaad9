"""Latency / complexity benchmark over registered models and runtime backends.

For every model (see :mod:`mmeff.benchmark.registry`) it counts parameters and MACs once
(:mod:`mmeff.benchmark.complexity`) and times each backend with the one timer
(:mod:`mmeff.benchmark.timer`, which defines the backends eager / channels-last / fused /
compile / onnxruntime / cuda-fp16): warm-up runs, then N timed runs, reporting the median and
the 90th percentile.

A backend that cannot run here (no GPU, no compiler, not an mmeff model) is skipped with the
reason recorded in its row. Models that are compared (an mmeff model, timm's implementation of
it, the ResNet-50 anchor) are timed in one *session*, round-robin, so the ratios in
:mod:`mmeff.benchmark.report` survive the load drifts of a shared machine.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from mmeff.benchmark.complexity import count_macs, count_params
from mmeff.benchmark.registry import BenchModel
from mmeff.benchmark.timer import BACKENDS, Prepared, Skip, Timing, prepare, round_robin

DEFAULT_BACKENDS = ('eager', 'fused', 'onnxruntime', 'cuda-fp16')
__all__ = ['BACKENDS', 'DEFAULT_BACKENDS', 'BenchConfig', 'Row', 'run_benchmark',
           'plan_sessions', 'complexity_of']


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
    clock: str = 'wall'  # or 'cpu': process CPU time (see mmeff.benchmark.timer)


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

    def summarise(self) -> 'Row':
        """Fill runs, median, p90 and images/s from ``samples_ms``; returns the row."""
        timing = Timing(self.samples_ms)
        self.runs, self.median_ms, self.p90_ms = timing.runs, timing.median_ms, timing.p90_ms
        self.images_per_s = 1e3 * self.batch / self.median_ms
        return self

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
    for sid, members in enumerate(sessions):
        rows.extend(_run_session(sid, members, backends, config, complexity, bar, log))
    bar.close()
    return rows


def _run_session(sid, members, backends, config, complexity, bar, log) -> List[Row]:
    prepared: List[Tuple[Row, Prepared]] = []
    rows: List[Row] = []
    for bm in members:
        hw = tuple(config.input_hw or bm.input_hw)
        shape = (config.batch, 3, hw[0], hw[1])
        bar.set_description(f'{bm.name} complexity')
        try:
            torch.manual_seed(0)
            model = bm.build().eval()
        except ValueError as err:  # a model that cannot be built here, e.g. a missing config
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
            fresh = model if backend in ('eager', 'channels-last') else bm.build().eval()
            try:
                fn = prepare(backend, fresh, x, threads=config.threads)
                row = Row(backend=backend, status='ok', note=fn.note, **common)
                for _ in range(config.warmup):
                    fn.call()
                prepared.append((row, fn))
            except Skip as reason:
                rows.append(Row(backend=backend, status='skipped', note=str(reason), **common))
            bar.update(1)

    def after_round(r: int) -> None:
        bar.set_description(f'session {sid} run {r + 1}/{config.runs}')
        bar.update(1)
    timings = round_robin([fn for _, fn in prepared], config.runs, config.clock, after_round)
    if backends and not prepared:
        bar.update(config.runs)
    for (row, _), timing in zip(prepared, timings):
        row.samples_ms = timing.samples_ms
        rows.append(row.summarise())
    return rows

