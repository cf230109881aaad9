"""Weight compression of an exported CoreML ML Program (coremltools.optimize.coreml).

Modes (``<package>_<mode>.mlpackage`` is written next to the fp32/fp16 package):

* ``int8-linear``: ``linear_quantize_weights``, symmetric int8 per output channel; each
  weight becomes a ``constexpr_affine_dequantize`` op (iOS16 / iOS17 targets) or
  ``constexpr_blockwise_shift_scale`` (iOS18) that the device expands at load time.
* ``palettize-8`` / ``-6`` / ``-4``: ``palettize_weights`` with a 2^n-entry look-up table
  per weight tensor, found by 1-D k-means; each weight becomes a ``constexpr_lut_to_dense``
  op. coremltools' own ``kmeans`` mode needs scikit-learn, which mmeff does not depend on, so
  the same Lloyd k-means (quantile initialisation) runs in numpy through coremltools'
  ``custom`` mode (:func:`kmeans_lut`).

Weights under coremltools' 2048-element threshold (biases, small convs) stay as they were.

What Linux can check: the compressed program's spec (the constexpr ops above, the op set of
the target, I/O unchanged), the package size, and how far each compressed weight is from its
fp32 original (relative Frobenius error ``||W_c - W|| / ||W||``, decompressed with
``decompress_weights``). Running the package (and so its output drift) needs macOS.
"""
import contextlib
import io
import os
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Tuple

import numpy as np

COREML_MODES = ('int8-linear', 'palettize-8', 'palettize-6', 'palettize-4')
#: the op a compressed weight becomes, per mode kind
COMPRESSED_OPS = {'int8-linear': ('constexpr_affine_dequantize',
                                  'constexpr_blockwise_shift_scale'),
                  'palettize': ('constexpr_lut_to_dense',)}
#: pass mark: the worst per-weight relative Frobenius error of a mode (the rounding error of
#: n-bit codes on a bell-shaped weight distribution is a few % at 4 bits, far less at 8)
MAX_WEIGHT_ERROR = {'int8-linear': 0.02, 'palettize-8': 0.03, 'palettize-6': 0.05,
                    'palettize-4': 0.2}


def _kind(mode: str) -> str:
    return 'palettize' if mode.startswith('palettize') else mode


def kmeans_lut(nbits: int, iters: int = 50) -> Callable[[np.ndarray], Tuple[np.ndarray,
                                                                            np.ndarray]]:
    """A coremltools ``lut_function``: 1-D k-means of a weight's values into 2^nbits
    centres; returns (look-up table, index of each element).

    Lloyd's iterations run on the distinct values weighted by their counts, started at
    quantiles of the distinct values: a weight with a few very frequent values (a frozen
    attention bias gathered from a small table) would otherwise start many centres on the
    same value and waste them. A weight with at most 2^nbits distinct values is exact."""
    def lut_function(weight: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        values = weight.astype(np.float32).ravel()
        distinct, counts = np.unique(values, return_counts=True)
        k = 1 << nbits
        if len(distinct) <= k:
            lut = np.concatenate([distinct, np.full(k - len(distinct), distinct[-1])])
            return lut, _nearest(values, distinct).astype(np.uint8)
        centres = np.quantile(distinct, (np.arange(k) + 0.5) / k).astype(np.float64)
        for _ in range(iters):
            index = _nearest(distinct, centres)
            sums = np.bincount(index, weights=distinct * counts, minlength=k)
            totals = np.bincount(index, weights=counts, minlength=k)
            moved = np.sort(np.where(totals > 0, sums / np.maximum(totals, 1), centres))
            if np.allclose(moved, centres, rtol=0, atol=1e-12):
                break
            centres = moved
        centres = centres.astype(np.float32)
        return centres, _nearest(values, centres).astype(np.uint8)
    return lut_function


def _nearest(values: np.ndarray, sorted_centres: np.ndarray) -> np.ndarray:
    """Index of the nearest of ``sorted_centres`` for every value (binary search)."""
    edges = (sorted_centres[1:] + sorted_centres[:-1]) / 2
    return np.searchsorted(edges, values)


def compress_mlmodel(mlmodel, mode: str):
    """The ``mode`` weight-compressed copy of an ML Program ``MLModel``."""
    import coremltools.optimize.coreml as cto
    if mode not in COREML_MODES:
        raise ValueError(f'unknown CoreML compression {mode!r}; choose one of {COREML_MODES}')
    if mode == 'int8-linear':
        op = cto.OpLinearQuantizerConfig(mode='linear_symmetric', dtype='int8',
                                         granularity='per_channel')
        return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op))
    op = cto.OpPalettizerConfig(mode='custom', lut_function=kmeans_lut(int(mode.split('-')[1])))
    return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=op))


def weight_errors(original, compressed) -> Dict[str, float]:
    """Relative Frobenius error of every compressed weight against its fp32 original."""
    import coremltools.optimize.coreml as cto
    before = cto.get_weights_metadata(original, weight_threshold=0)
    after = cto.get_weights_metadata(cto.decompress_weights(compressed), weight_threshold=0)
    errors = {}
    for name, meta in after.items():
        base = name[:-len('_quantized')] if name.endswith('_quantized') else \
            name[:-len('_palettized')] if name.endswith('_palettized') else None
        if base is None or base not in before:
            continue
        ref = before[base].val.astype(np.float64)
        diff = float(np.linalg.norm(meta.val.astype(np.float64) - ref))
        norm = float(np.linalg.norm(ref))  # an all-zero weight must stay zero
        errors[base] = diff / norm if norm > 0 else (0.0 if diff == 0 else float('inf'))
    return errors


@contextlib.contextmanager
def _quiet():
    """coremltools' progress bars (stderr) and its division warning on all-zero weights
    (which it still encodes as zeros; :func:`weight_errors` checks every weight)."""
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        yield


def file_bytes(path: str) -> int:
    """Bytes of a file, or of every file under a directory (an ``.mlpackage``)."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, n)) for root, _, names in os.walk(path)
               for n in names)


@dataclass
class CoreMLCompressionReport:
    """One compressed ML Program: its file, size, compressed-weight ops and weight error."""
    mode: str
    path: str
    bytes: int
    source_bytes: int
    op_types: Dict[str, int]
    weight_errors: Dict[str, float]
    outside_op_set: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def compressed_ops(self) -> int:
        return sum(self.op_types.get(t, 0) for t in COMPRESSED_OPS[_kind(self.mode)])

    @property
    def ok(self) -> bool:
        errors = list(self.weight_errors.values())
        return (self.compressed_ops > 0 and not self.outside_op_set and bool(errors)
                and all(np.isfinite(e) and e <= MAX_WEIGHT_ERROR[self.mode] for e in errors))

    def text(self) -> str:
        errors = np.array(list(self.weight_errors.values()) or [np.nan])
        worst = max(self.weight_errors, key=self.weight_errors.get, default='-')
        verdict = 'PASS' if self.ok else 'FAIL'
        ops = '/'.join(COMPRESSED_OPS[_kind(self.mode)])
        lines = [f'  compressed ({self.mode}): {self.path}, {self.bytes / 2**20:.2f} MiB '
                 f'({self.bytes / max(self.source_bytes, 1):.2f}x the uncompressed package)',
                 f'  {self.compressed_ops} weights as {ops} ops; op set: '
                 + ('all in the target\'s core MIL op set' if not self.outside_op_set
                    else f'OUTSIDE the target op set: {self.outside_op_set}'),
                 '  weight error (relative Frobenius, per weight): median '
                 f'{np.median(errors):.2e}, '
                 f'max {errors.max():.2e} ({worst}) -> {verdict} (bound: max <= '
                 f'{MAX_WEIGHT_ERROR[self.mode]:g})']
        lines.extend(f'  note: {n}' for n in self.notes)
        return '\n'.join(lines)


def compress_coreml_export(path: str, mode: str, target: str,
                           out: str) -> CoreMLCompressionReport:
    """Compress the ``.mlpackage`` at ``path`` (as :func:`mmeff.deploy.export.export` wrote
    it for ``target``), save it as ``out`` and inspect it structurally."""
    import shutil

    import coremltools as ct

    from mmeff.deploy.coreml_check import inspect_mlprogram

    original = ct.models.MLModel(path, skip_model_load=True)
    with _quiet():
        compressed = compress_mlmodel(original, mode)
        errors = weight_errors(original, compressed)
    if os.path.isdir(out):
        shutil.rmtree(out)
    compressed.save(out)
    structure = inspect_mlprogram(compressed, getattr(ct.target, target))
    return CoreMLCompressionReport(
        mode=mode, path=out, bytes=file_bytes(out), source_bytes=file_bytes(path),
        op_types=structure.op_types, weight_errors=errors,
        outside_op_set=structure.outside_op_set,
        notes=['CoreML predictions need macOS: output drift is not measured here; the weight '
               'error bounds what the compression changed'])
