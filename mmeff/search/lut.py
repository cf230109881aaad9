"""Latency lookup table (paper §4.2 step 2): on-device latency of every building block at
every candidate width (multiples of 16) and at its stage's resolution.

Entries are keyed by ``(op, stage, in_width, width, mlp_ratio)``:

========  ======================================================================
op        what was timed (input at the resolution of ``stage``, 0-based)
========  ======================================================================
stem      conv stem, ``in_width`` image channels -> ``width`` (stage 0)
embed     3x3 stride-2 Conv-BN from stage-1 (``in_width``) to ``stage`` (``width``)
mb4d      one MB4D block
mb3d      one MB3D block (on tokens)
head      classification head on the last stage (``width`` channels)
v2_ffn    one EfficientFormerV2 FFN block (``mlp_ratio`` = its expansion)
v2_attn   one EfficientFormerV2 attention + FFN block (stride attention in stage 2)
========  ======================================================================

A network's latency is predicted as the sum of its entries (:meth:`LatencyLUT.predict`);
``tools/build_latency_lut.py`` checks that sum against a direct measurement.

Timing (:func:`module_latency_ms`) uses the benchmark's timer (:mod:`mmeff.benchmark.timer`) on
one of three backends: ``eager``, ``fused`` (the deploy path, channels-last input as mmeff's
stems hand it to the blocks) and ``onnxruntime``. An entry is the fastest of ``runs`` calls
after ``warmup`` calls; with one thread the clock is the process CPU time, not the wall time
(on a CPU shared with other jobs the wall time measures the neighbours too; one thread's CPU
time is what the work takes on a core of its own), with several threads the wall clock.

File formats (both read by :meth:`LatencyLUT.load`):

* JSON: ``{"meta": {...}, "entries": [{"op", "stage", "in_width", "width", "mlp_ratio",
  "latency_ms"}, ...]}``.
* CSV (also the import format for tables measured elsewhere, e.g. on an iPhone with CoreML):
  optional ``# key=value`` meta lines (``img_size``, ``batch``, ``backend``, ``device``,
  ``num_classes``), then the header ``op,stage,in_width,width,mlp_ratio,latency_ms``.
  ``in_width`` may be empty for ops other than stem/embed (= ``width``), ``mlp_ratio`` may be
  empty (= 4) and may be omitted as a column, ``stage`` is 0-based (paper S1..S4 = 0..3).
"""
import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from mmeff.benchmark.timer import cpu_name, measure, prepare
from mmeff.search.space import Subnet

OPS = ('stem', 'embed', 'mb4d', 'mb3d', 'head', 'v2_ffn', 'v2_attn')
BACKENDS = ('eager', 'fused', 'onnxruntime')
CSV_FIELDS = ('op', 'stage', 'in_width', 'width', 'mlp_ratio', 'latency_ms')
Key = Tuple[str, int, int, int, float]


def make_key(op: str, stage: int, in_width: Optional[int], width: int,
             mlp_ratio: Optional[float] = None) -> Key:
    if op not in OPS:
        raise ValueError(f'unknown LUT op {op!r}; valid ops: {OPS}')
    if not 0 <= int(stage) <= 3:
        raise ValueError(f'LUT stage must be 0..3 (0-based), got {stage!r}')
    return (op, int(stage), int(width if in_width is None else in_width), int(width),
            float(4.0 if mlp_ratio is None else mlp_ratio))


def width_grid(max_width: int, step: int = 16, min_width: int = 16) -> List[int]:
    """Candidate widths: multiples of ``step`` from ``min_width`` up to ``max_width``."""
    if step <= 0 or min_width <= 0 or min_width % step or max_width % step:
        raise ValueError(f'widths must be multiples of step={step}: got min_width={min_width}, '
                         f'max_width={max_width}')
    return list(range(min_width, max_width + 1, step))


def stage_resolution(img_size: int, stage: int) -> int:
    """Side of the stage's map for an ``img_size`` input (strides 4/8/16/32, ceil-divided)."""
    size = img_size
    for _ in range(stage + 2):
        size = math.ceil(size / 2)
    return size


@dataclass
class LatencyLUT:
    """Latency (ms) per ``(op, stage, in_width, width, mlp_ratio)`` plus how it was measured."""

    entries: Dict[Key, float] = field(default_factory=dict)
    meta: Dict[str, object] = field(default_factory=dict)

    def add(self, op: str, stage: int, in_width: Optional[int], width: int, latency_ms: float,
            mlp_ratio: Optional[float] = None) -> None:
        if not latency_ms >= 0:
            raise ValueError(f'latency must be >= 0 ms, got {latency_ms!r} for {op}')
        self.entries[make_key(op, stage, in_width, width, mlp_ratio)] = float(latency_ms)

    def get(self, op: str, stage: int, in_width: Optional[int], width: int,
            mlp_ratio: Optional[float] = None) -> float:
        key = make_key(op, stage, in_width, width, mlp_ratio)
        if key not in self.entries:
            raise ValueError(f'latency table has no entry {key} (op, stage, in_width, width, '
                             'mlp_ratio); rebuild it with tools/build_latency_lut.py over a '
                             'width range that covers this network')
        return self.entries[key]

    def widths(self, stage: int, op: str = 'mb4d') -> List[int]:
        return sorted({k[3] for k in self.entries if k[0] == op and k[1] == stage})

    def predict(self, subnet: Subnet) -> float:
        """Whole-network latency: the table's sum (:meth:`predict_parts`), corrected by the
        calibration that :meth:`calibrate` fitted (identity without one)."""
        other, mb3d = self.predict_parts(subnet)
        scale = float(self.meta.get('calibration_scale', 1.0))
        scale_3d = float(self.meta.get('calibration_scale_mb3d', scale))
        return scale * other + scale_3d * mb3d

    def predict_raw(self, subnet: Subnet) -> float:
        """The uncalibrated sum of the table's entries for ``subnet``."""
        return sum(self.predict_parts(subnet))

    def calibrate(self, points: Sequence[Tuple[Subnet, float]]) -> Tuple[float, float]:
        """Fit ``measured = scale * (sum of the non-MB3D entries) + scale_mb3d * (sum of the
        MB3D entries)`` by least squares over ``(subnet, measured_ms)`` pairs of whole
        networks; :meth:`predict` applies it. Returns ``(scale, scale_mb3d)``.

        Why: per-block timing misses what a network adds around its blocks (memory traffic
        between blocks, the map-to-token reshapes and cached attention biases of MB3D,
        per-call overhead). Measured here, the MB3D share was under-predicted about twice as
        much as the rest, so one factor per kind. When the points cannot separate the two
        (fewer than 3, no spread in MB3D share, or a non-positive factor), one factor for all.
        """
        if not points:
            raise ValueError('calibration needs at least one (subnet, measured_ms) pair')
        feats = [self.predict_parts(sub) for sub, _ in points]
        ys = [float(m) for _, m in points]
        if min(ys) <= 0 or min(sum(f) for f in feats) <= 0:
            raise ValueError(f'calibration needs positive latencies, got {ys}')
        xs = [sum(f) for f in feats]
        scale = scale_3d = sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs)
        if len(points) >= 3:
            a11 = sum(o * o for o, _ in feats)
            a12 = sum(o * t for o, t in feats)
            a22 = sum(t * t for _, t in feats)
            b1 = sum(o * y for (o, _), y in zip(feats, ys))
            b2 = sum(t * y for (_, t), y in zip(feats, ys))
            det = a11 * a22 - a12 * a12
            if det > 1e-9 * a11 * a22:
                s1, s2 = (b1 * a22 - b2 * a12) / det, (a11 * b2 - a12 * b1) / det
                if s1 > 0 and s2 > 0:
                    scale, scale_3d = s1, s2
        self.meta.update(calibration_scale=scale, calibration_scale_mb3d=scale_3d,
                         calibration_points=len(points))
        return scale, scale_3d

    def predict_parts(self, subnet: Subnet) -> Tuple[float, float]:
        """(stem + embeddings + MB4D blocks + head, MB3D blocks) of the table; identity
        paths cost 0."""
        w = subnet.widths
        other = self.get('stem', 0, self.meta.get('in_channels', 3), w[0])
        mb3d = 0.0
        for i, stage in enumerate(subnet.blocks):
            if i > 0:
                other += self.get('embed', i, w[i - 1], w[i])
            for choice in stage:
                if choice == '4d':
                    other += self.get('mb4d', i, None, w[i])
                elif choice == '3d':
                    mb3d += self.get('mb3d', i, None, w[i])
        return other + self.get('head', 3, None, w[3]), mb3d

    # ------------------------------------------------------------------------------ file i/o
    def rows(self) -> List[dict]:
        return [dict(zip(CSV_FIELDS, (*k, v))) for k, v in sorted(self.entries.items())]

    def save(self, path: Union[str, Path]) -> Path:
        """Write JSON (``.json``) or CSV (anything else)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == '.json':
            path.write_text(json.dumps(dict(meta=self.meta, entries=self.rows()), indent=1))
            return path
        with path.open('w', newline='') as f:
            for k, v in self.meta.items():
                f.write(f'# {k}={v}\n')
            writer = csv.DictWriter(f, CSV_FIELDS)
            writer.writeheader()
            writer.writerows(self.rows())
        return path

    @classmethod
    def load(cls, path: Union[str, Path]) -> 'LatencyLUT':
        """Read a table written by :meth:`save` or measured elsewhere (CSV schema above)."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f'latency table {path} does not exist; build one with '
                             'tools/build_latency_lut.py or pass --lut with an existing file')
        if path.suffix == '.json':
            data = json.loads(path.read_text())
            lut = cls(meta=dict(data.get('meta', {})))
            lut._add_rows(data['entries'], str(path))
            return lut
        return cls.import_csv(path)

    @classmethod
    def import_csv(cls, path: Union[str, Path]) -> 'LatencyLUT':
        lines = Path(path).read_text().splitlines()
        meta: Dict[str, object] = {}
        body = []
        for line in lines:
            if line.startswith('#'):
                if '=' in line:
                    k, v = line[1:].split('=', 1)
                    meta[k.strip()] = _parse_scalar(v.strip())
            elif line.strip():
                body.append(line)
        reader = csv.DictReader(body)
        missing = {'op', 'stage', 'width', 'latency_ms'} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f'{path}: CSV header lacks columns {sorted(missing)}; expected '
                             f'{",".join(CSV_FIELDS)} (in_width and mlp_ratio optional)')
        lut = cls(meta=meta)
        lut._add_rows(list(reader), str(path))
        return lut

    def _add_rows(self, rows: Iterable[dict], source: str) -> None:
        for n, row in enumerate(rows, start=1):
            try:
                in_width = row.get('in_width')
                ratio = row.get('mlp_ratio')
                self.add(row['op'], int(row['stage']),
                         None if in_width in (None, '') else int(in_width), int(row['width']),
                         float(row['latency_ms']),
                         None if ratio in (None, '') else float(ratio))
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f'{source}: bad LUT row {n} {dict(row)}: {e}') from e


def _parse_scalar(text: str) -> object:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


# ------------------------------------------------------------------------------- measurement
def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f'unknown latency backend {backend!r}; choose one of {BACKENDS}')


def module_latency_ms(module: nn.Module, shape: Sequence[int], backend: str = 'eager',
                      runs: int = 30, warmup: int = 5, threads: int = 1) -> float:
    """Latency (fastest of ``runs``) of ``module`` on a random input of ``shape`` (see the
    module docstring for the clock)."""
    check_backend(backend)
    torch.set_num_threads(threads)
    run = prepare(backend, module, torch.randn(*shape), threads=threads, fusable=True,
                  channels_last=True)
    return measure(run, warmup, runs, clock='cpu' if threads == 1 else 'wall').min_ms


class _Instances(nn.Module):
    """Runs ``copies`` independently initialised instances of an op on the same input.

    Timing one instance over and over under-estimates its in-network cost several-fold on
    CPU (measured: two different MB4D blocks in a row take ~3.5x the time of one block timed
    alone; the 1x1-conv GEMM path caches per weight), so every entry is the time of distinct
    instances divided by their number, which is what a network runs.
    """

    def __init__(self, factory: Callable[[], nn.Module], copies: int):
        super().__init__()
        self.ops = nn.ModuleList(factory() for _ in range(copies))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            out = op(x)
        return out


class _TokenBlock(nn.Module):
    """Runs an MB3D on (B, N, C) tokens of a fixed grid (the in-network call signature)."""

    def __init__(self, block: nn.Module, hw: Tuple[int, int]):
        super().__init__()
        self.block = block
        self.hw = hw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x, self.hw)


def build_lut(img_size: int, max_widths: Sequence[int], batch: int = 1,
              backend: str = 'eager', step: int = 16, min_width: int = 16,
              num_classes: int = 1000, in_channels: int = 3, v2: bool = False,
              v2_ratios: Sequence[float] = (4.0,), runs: int = 30, warmup: int = 5,
              threads: int = 1, copies: int = 8,
              log: Optional[Callable[[str], None]] = None) -> LatencyLUT:
    """Measure every op of the table on this machine for widths up to ``max_widths``."""
    from mmeff.models.backbones.efficientformer.blocks import MB3D, MB4D, ConvStem
    from mmeff.models.backbones.efficientformer_v2.blocks import EfficientFormerV2Block
    from mmeff.models.heads.efficientformer_head import EfficientFormerClsHead
    from mmeff.models.layers import ConvBN
    check_backend(backend)
    if len(max_widths) != 4:
        raise ValueError(f'max_widths needs one width per stage (4), got {max_widths!r}')
    grids = [width_grid(w, step, min_width) for w in max_widths]
    res = [stage_resolution(img_size, i) for i in range(4)]
    lut = LatencyLUT(meta=dict(img_size=img_size, batch=batch, backend=backend, threads=threads,
                               runs=runs, copies=copies, num_classes=num_classes,
                               in_channels=in_channels,
                               device=cpu_name(),
                               torch=torch.__version__))

    def timed(factory: Callable[[], nn.Module], shape: Sequence[int]) -> float:
        return module_latency_ms(_Instances(factory, copies), shape, backend, runs, warmup,
                                 threads) / copies

    torch.manual_seed(0)
    for w in grids[0]:
        lut.add('stem', 0, in_channels, w, timed(lambda: ConvStem(in_channels, w),
                                                 (batch, in_channels, img_size, img_size)))
    for i in range(1, 4):
        for w_in in grids[i - 1]:
            for w in grids[i]:
                lut.add('embed', i, w_in, w, timed(lambda: ConvBN(w_in, w, 3, stride=2, bias=True),
                                                   (batch, w_in, res[i - 1], res[i - 1])))
    for i in range(4):
        hw = (res[i], res[i])
        for w in grids[i]:
            lut.add('mb4d', i, None, w, timed(lambda: MB4D(w), (batch, w, *hw)))
            if i >= 2:
                lut.add('mb3d', i, None, w,
                        timed(lambda: _TokenBlock(MB3D(w, table_size=hw), hw),
                              (batch, hw[0] * hw[1], w)))
                if v2:
                    for r in v2_ratios:
                        def attn(w=w, r=r, hw=hw, i=i):
                            return EfficientFormerV2Block(w, r, use_attn=True, table_size=hw,
                                                          stride=2 if i == 2 else None)
                        lut.add('v2_attn', i, None, w, timed(attn, (batch, w, *hw)), r)
            if v2:
                for r in v2_ratios:
                    lut.add('v2_ffn', i, None, w, timed(lambda: EfficientFormerV2Block(w, r),
                                                        (batch, w, *hw)), r)
        if log:
            log(f'stage {i}: {len(grids[i])} widths measured at {hw[0]}x{hw[1]}')
    for w in grids[3]:
        lut.add('head', 3, None, w, timed(
            lambda: EfficientFormerClsHead(w, num_classes, distillation=False),
            (batch, w, res[3], res[3])))
    return lut


def measure_network_ms(arch: Dict, img_size: int, batch: int = 1, backend: str = 'eager',
                       num_classes: int = 1000, runs: int = 30, warmup: int = 5,
                       threads: int = 1) -> float:
    """Direct latency of the EfficientFormer classifier of ``arch`` (what the LUT predicts)."""
    from mmeff.models.classifiers import efficientformer_classifier
    model = efficientformer_classifier(arch, num_classes, distillation=False, img_size=img_size)
    return module_latency_ms(model, (batch, 3, img_size, img_size), backend, runs, warmup,
                             threads)
