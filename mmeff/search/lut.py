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
v2_stem   EfficientFormerV2's stem, ``in_width`` image channels -> ``width`` (stage 0)
v2_embed  EfficientFormerV2's entry of ``stage`` from ``in_width`` to ``width`` (a strided
          Conv-BN; in stage 3 plus attention downsampling)
v2_ffn    one EfficientFormerV2 FFN block (``mlp_ratio`` = its expansion)
v2_attn   one EfficientFormerV2 attention + FFN block (stride attention in stage 2)
v2_head   EfficientFormerV2's classification head on the last stage (``width`` channels)
========  ======================================================================

A network's latency is predicted as the sum of its entries (:meth:`LatencyLUT.predict`; an
EfficientFormer :class:`~mmeff.search.space.Subnet` sums the V1 ops, an EfficientFormerV2
:class:`~mmeff.search.v2_space.V2Subnet` the ``v2_*`` ones, each family with its own
calibration); ``tools/build_latency_lut.py`` checks that sum against a direct measurement.

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
from mmeff.search.v2_subnet import V2Subnet, v2_part

OPS = ('stem', 'embed', 'mb4d', 'mb3d', 'head', 'v2_stem', 'v2_embed', 'v2_ffn', 'v2_attn',
       'v2_head')
BACKENDS = ('eager', 'fused', 'onnxruntime')
CSV_FIELDS = ('op', 'stage', 'in_width', 'width', 'mlp_ratio', 'latency_ms')
Key = Tuple[str, int, int, int, float]
Network = Union[Subnet, V2Subnet]
#: meta keys of the calibration of each family: (scale of the rest, scale of the attention
#: blocks: MB3D in V1, MHSA + FFN blocks in V2)
CALIBRATION_KEYS = {Subnet: ('calibration_scale', 'calibration_scale_mb3d'),
                    V2Subnet: ('v2_calibration_scale', 'v2_calibration_scale_attn')}


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
            v2 = ' --family efficientformerv2 with these widths / ratios' \
                if op.startswith('v2_') else ''
            raise ValueError(f'latency table has no entry {key} (op, stage, in_width, width, '
                             f'mlp_ratio); rebuild it with tools/build_latency_lut.py{v2} over '
                             'a width range that covers this network')
        return self.entries[key]

    def widths(self, stage: int, op: str = 'mb4d') -> List[int]:
        return sorted({k[3] for k in self.entries if k[0] == op and k[1] == stage})

    def predict(self, subnet: Network) -> float:
        """Whole-network latency: the table's sum (:meth:`predict_parts`), corrected by the
        calibration that :meth:`calibrate` fitted (identity without one)."""
        other, mb3d = self.predict_parts(subnet)
        key, key_3d = CALIBRATION_KEYS[type(subnet)]
        scale = float(self.meta.get(key, 1.0))
        scale_3d = float(self.meta.get(key_3d, scale))
        return scale * other + scale_3d * mb3d

    def calibrated(self, family: type) -> bool:
        """Whether :meth:`calibrate` has fitted networks of ``family`` (Subnet / V2Subnet)."""
        return CALIBRATION_KEYS[family][0] in self.meta

    def predict_raw(self, subnet: Network) -> float:
        """The uncalibrated sum of the table's entries for ``subnet``."""
        return sum(self.predict_parts(subnet))

    def calibrate(self, points: Sequence[Tuple[Network, float]]) -> Tuple[float, float]:
        """Fit ``measured = scale * (sum of the non-MB3D entries) + scale_mb3d * (sum of the
        MB3D entries)`` by least squares over ``(subnet, measured_ms)`` pairs of whole
        networks; :meth:`predict` applies it. Returns ``(scale, scale_mb3d)``. For
        EfficientFormerV2 networks the attention blocks take the place of MB3D, stored under
        the family's own meta keys (:data:`CALIBRATION_KEYS`).

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
        key, key_3d = CALIBRATION_KEYS[type(points[0][0])]
        self.meta.update({key: scale, key_3d: scale_3d,
                          key.replace('scale', 'points'): len(points)})
        return scale, scale_3d

    def predict_parts(self, subnet: Network) -> Tuple[float, float]:
        """(stem + embeddings + MB4D blocks + head, MB3D blocks) of the table; identity
        paths cost 0. For a V2Subnet: (stem + entries + FFN blocks + head, attention
        blocks)."""
        if isinstance(subnet, V2Subnet):
            return self._predict_parts_v2(subnet)
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

    def _predict_parts_v2(self, sub: V2Subnet) -> Tuple[float, float]:
        w = sub.widths
        other = self.get('v2_stem', 0, self.meta.get('in_channels', 3), w[0])
        attn = 0.0
        for i, ratios in enumerate(sub.mlp_ratios):
            if i > 0:
                other += self.get('v2_embed', i, w[i - 1], w[i])
            for j, r in enumerate(ratios):
                if sub.uses_attn(i, j):
                    attn += self.get('v2_attn', i, None, w[i], r)
                else:
                    other += self.get('v2_ffn', i, None, w[i], r)
        return other + self.get('v2_head', 3, None, w[3]), attn

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


def _timer(backend: str, runs: int, warmup: int, threads: int,
           copies: int) -> Callable[[Callable[[], nn.Module], Sequence[int]], float]:
    """``timed(factory, shape)``: per-instance latency of ``copies`` instances (:class:`_Instances`)."""
    check_backend(backend)

    def timed(factory: Callable[[], nn.Module], shape: Sequence[int]) -> float:
        return module_latency_ms(_Instances(factory, copies), shape, backend, runs, warmup,
                                 threads) / copies
    return timed


def _meta(img_size: int, batch: int, backend: str, threads: int, runs: int, copies: int,
          num_classes: int, in_channels: int) -> Dict[str, object]:
    return dict(img_size=img_size, batch=batch, backend=backend, threads=threads, runs=runs,
                copies=copies, num_classes=num_classes, in_channels=in_channels,
                device=cpu_name(), torch=torch.__version__)


def build_lut(img_size: int, max_widths: Sequence[int], batch: int = 1,
              backend: str = 'eager', step: int = 16, min_width: int = 16,
              num_classes: int = 1000, in_channels: int = 3, v2: bool = False,
              v2_ratios: Sequence[float] = (4.0,), runs: int = 30, warmup: int = 5,
              threads: int = 1, copies: int = 8,
              log: Optional[Callable[[str], None]] = None) -> LatencyLUT:
    """Measure every op of the table on this machine for widths up to ``max_widths`` (with
    ``v2`` also EfficientFormerV2's ops at the same widths and ``v2_ratios``)."""
    from mmeff.models.backbones.efficientformer.blocks import MB3D, MB4D, ConvStem
    from mmeff.models.heads.efficientformer_head import EfficientFormerClsHead
    from mmeff.models.layers import ConvBN
    check_backend(backend)
    if len(max_widths) != 4:
        raise ValueError(f'max_widths needs one width per stage (4), got {max_widths!r}')
    grids = [width_grid(w, step, min_width) for w in max_widths]
    res = [stage_resolution(img_size, i) for i in range(4)]
    lut = LatencyLUT(meta=_meta(img_size, batch, backend, threads, runs, copies, num_classes,
                                in_channels))
    timed = _timer(backend, runs, warmup, threads, copies)
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
        if log:
            log(f'stage {i}: {len(grids[i])} widths measured at {hw[0]}x{hw[1]}')
    for w in grids[3]:
        lut.add('head', 3, None, w, timed(
            lambda: EfficientFormerClsHead(w, num_classes, distillation=False),
            (batch, w, res[3], res[3])))
    if v2:
        _add_v2_entries(lut, timed, img_size, grids, v2_ratios, batch, in_channels,
                        num_classes, log)
    return lut


def build_v2_lut(img_size: int, width_choices: Sequence[Sequence[int]],
                 ratio_choices: Sequence[float], batch: int = 1, backend: str = 'eager',
                 num_classes: int = 1000, in_channels: int = 3, runs: int = 30,
                 warmup: int = 5, threads: int = 1, copies: int = 8,
                 log: Optional[Callable[[str], None]] = None) -> LatencyLUT:
    """Measure EfficientFormerV2's ops (``v2_*``) at the widths and ratios of a search space
    (:class:`~mmeff.search.v2_space.V2Space`): what the V2 search predicts networks from."""
    if len(width_choices) != 4:
        raise ValueError(f'width_choices needs one tuple per stage (4), got {width_choices!r}')
    lut = LatencyLUT(meta=_meta(img_size, batch, backend, threads, runs, copies, num_classes,
                                in_channels))
    _add_v2_entries(lut, _timer(backend, runs, warmup, threads, copies), img_size,
                    [sorted(c) for c in width_choices], ratio_choices, batch, in_channels,
                    num_classes, log)
    return lut


def _add_v2_entries(lut: LatencyLUT, timed: Callable, img_size: int,
                    grids: Sequence[Sequence[int]], ratios: Sequence[float], batch: int,
                    in_channels: int, num_classes: int,
                    log: Optional[Callable[[str], None]]) -> None:
    """The ``v2_*`` entries, each op built as the backbone builds it (:func:`v2_part`:
    attention-bias tables on the 1/16 and 1/32 grids of ``img_size``)."""
    res = [stage_resolution(img_size, i) for i in range(4)]
    grid16, grid32 = (res[2], res[2]), (res[3], res[3])

    def part(op: str, stage: int, a: float, b: float) -> Callable[[], nn.Module]:
        return lambda: v2_part(op, stage, a, b, grid16, grid32, num_classes)

    torch.manual_seed(0)
    for w in grids[0]:
        lut.add('v2_stem', 0, in_channels, w, timed(part('stem', 0, in_channels, w),
                                                    (batch, in_channels, img_size, img_size)))
    for i in range(1, 4):
        for w_in in grids[i - 1]:
            for w in grids[i]:
                lut.add('v2_embed', i, w_in, w, timed(part('embed', i, w_in, w),
                                                      (batch, w_in, res[i - 1], res[i - 1])))
    for i in range(4):
        for w in grids[i]:
            for r in ratios:
                shape = (batch, w, res[i], res[i])
                lut.add('v2_ffn', i, None, w, timed(part('ffn', i, w, r), shape), r)
                if i >= 2:
                    lut.add('v2_attn', i, None, w, timed(part('attn', i, w, r), shape), r)
        if log:
            log(f'v2 stage {i}: widths {list(grids[i])} x ratios {list(ratios)} measured at '
                f'{res[i]}x{res[i]}')
    for w in grids[3]:
        lut.add('v2_head', 3, None, w, timed(part('head', 3, w, 0), (batch, w, res[3], res[3])))


def measure_network_ms(arch: Dict, img_size: int, batch: int = 1, backend: str = 'eager',
                       num_classes: int = 1000, runs: int = 30, warmup: int = 5,
                       threads: int = 1, family: str = 'efficientformer') -> float:
    """Direct latency of the classifier of ``arch`` (what the LUT predicts): an EfficientFormer
    (``family='efficientformer'``) or an EfficientFormerV2 (``'efficientformerv2'``)."""
    from mmeff.models.classifiers import efficientformer_classifier, efficientformer_v2_classifier
    builders = dict(efficientformer=efficientformer_classifier,
                    efficientformerv2=efficientformer_v2_classifier)
    if family not in builders:
        raise ValueError(f'unknown family {family!r}; choose one of {sorted(builders)}')
    model = builders[family](arch, num_classes, distillation=False, img_size=img_size)
    return module_latency_ms(model, (batch, 3, img_size, img_size), backend, runs, warmup,
                             threads)
