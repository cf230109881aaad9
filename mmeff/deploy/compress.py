"""Compressed ONNX models for ONNX Runtime (fp16, int8 dynamic, int8 static) and their drift.

Each mode starts from the fp32 file :func:`mmeff.deploy.export.export` wrote (deploy path
taken, parity checked) and writes ``<file>_<mode>.onnx`` next to it:

* ``fp16``: every float initializer and op in half precision (ONNX Runtime's own
  ``onnxruntime.transformers.float16`` converter), with fp32 input and outputs
  (``keep_io_types``): callers feed the same array as to the fp32 file, and the CPU provider
  runs it (casts at the two ends).
* ``int8-dynamic``: ``quantize_dynamic`` of the MatMul / Gemm weights only. Activations are
  quantised at run time per tensor. Convolutions stay fp32: ORT's CPU provider runs a dynamic
  conv as DynamicQuantizeLinear + ConvInteger + Cast + Mul, which measured 3.4x *slower* than
  fp32 on EfficientFormer-L1 (101 vs 30 ms, 1 thread, 224x224), while MatMul-only
  quantisation is slightly faster than fp32 (docs/compression.md).
* ``int8-static``: ``quantize_static`` of Conv / MatMul / Gemm (:data:`STATIC_OPS`) in QDQ
  format with per-channel int8 weights, from a calibration set of images preprocessed as the model's data preprocessor does (resize to
  the export size, RGB, ``(x - mean) / std``). Calibration: MinMax. Percentile's histogram
  collector fails on the constant tensors of a deployed graph ("Too many bins for data
  range"); Entropy keeps a histogram of every tensor too (more time and memory than a running
  min / max; not measured here). With a few dozen images MinMax ranges are stable, and the
  drift report shows what they cost. Activations are
  uint8 on x86-64 (ORT's U8S8 kernels; S8S8 ran 1.5x slower than U8S8 here, 31 vs 21 ms on L1)
  with 7-bit weights (``reduce_range``) on CPUs without VNNI, int8 elsewhere (ARM).

The drift report compares the compressed file run by ONNX Runtime with the fp32 *unfused*
PyTorch model on toy ImageNet-style images (:func:`mmeff.datasets.toy_data.make_imagenet`,
generated at the export size, never the calibration images): max abs / relative error,
cosine similarity (the worst image), top-1 agreement for classifiers, per-pixel argmax
agreement and the mIoU of the compressed argmax map against the reference one for segmentors.
The check passes when the worst cosine similarity reaches :data:`MIN_COSINE` of the mode.
"""
import os
import platform
import tempfile
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from mmeff.datasets.imagenet import IMG_EXTENSIONS
from mmeff.deploy.coreml_compress import COREML_MODES, compress_coreml_export, file_bytes
from mmeff.deploy.parity import output_list
from mmeff.deploy.parts import data_normalisation
from mmeff.models.classifiers.data_preprocessor import IMAGENET_MEAN_255, IMAGENET_STD_255

ONNX_MODES = ('fp16', 'int8-dynamic', 'int8-static')
#: every ``--quantize`` choice, by the export format it applies to
MODES = {'onnx': ONNX_MODES, 'coreml': COREML_MODES}
#: the pass mark of the drift check: worst per-image cosine similarity to the fp32 reference
MIN_COSINE = {'fp16': 0.999, 'int8-dynamic': 0.99, 'int8-static': 0.98}
#: op types ``int8-dynamic`` quantises (see the module docstring: dynamic convs are slower)
DYNAMIC_OPS = ('MatMul', 'Gemm')
#: op types ``int8-static`` quantises: ORT's default set also puts Q/DQ pairs around the
#: element-wise ops, Softmax and pooling, which on EfficientViT-M0 with randomised weights
#: dropped the worst cosine similarity to 0.83 (0.9997 with these three)
STATIC_OPS = ('Conv', 'MatMul', 'Gemm')
CALIB_NUM = 32
DRIFT_NUM = 16


# ----------------------------------------------------------------------------------- images
@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x - mean) / std`` of RGB images on the 0-255 scale (default: ImageNet's,
    what zoo classifiers built by name expect)."""
    mean: Tuple[float, float, float] = IMAGENET_MEAN_255
    std: Tuple[float, float, float] = IMAGENET_STD_255

    @classmethod
    def of_model(cls, model: nn.Module) -> 'Normalization':
        """The statistics of ``model.data_preprocessor`` (an MMDet / MMSeg / mmeff config's),
        ImageNet's when it has none (a zoo classifier built by name)."""
        norm = data_normalisation(model)
        if norm is None:
            return cls()
        mean, std, _ = norm
        return cls(tuple(mean), tuple(std))

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (3, H, W) float32."""
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        return (rgb.transpose(2, 0, 1).astype(np.float32) - mean) / std


def image_files(folder: str) -> List[str]:
    """Every image file under ``folder`` (recursively, sorted); a clear error when none."""
    if not os.path.isdir(folder):
        raise ValueError(f'calibration directory {folder!r} does not exist: pass --calib-dir '
                         'a folder of images (any layout, e.g. an ImageNet train split; '
                         'python tools/make_toy_data.py --kinds imagenet writes a toy one)')
    files = sorted(os.path.join(root, name) for root, _, names in os.walk(folder)
                   for name in names if name.lower().endswith(IMG_EXTENSIONS))
    if not files:
        raise ValueError(f'calibration directory {folder!r} holds no image files '
                         f'({", ".join(IMG_EXTENSIONS)}): pass --calib-dir a folder of images')
    return files


def load_images(files: Sequence[str], hw: Tuple[int, int],
                normalization: Normalization) -> np.ndarray:
    """(N, 3, H, W) float32: each file as RGB, resized (bilinear) to ``hw``, normalised."""
    from PIL import Image
    arrays = []
    for path in files:
        try:
            with Image.open(path) as img:
                rgb = img.convert('RGB').resize((hw[1], hw[0]), Image.BILINEAR)
        except OSError as err:
            raise ValueError(f'cannot read calibration image {path!r}: {err}') from err
        arrays.append(normalization(np.asarray(rgb)))
    return np.stack(arrays)


def calibration_images(folder: str, num: int, hw: Tuple[int, int],
                       normalization: Normalization) -> np.ndarray:
    """``num`` images spread evenly over the sorted files of ``folder`` (so a class-folder
    tree gives every class, not the first one's images)."""
    if num < 1:
        raise ValueError(f'--calib-num must be at least 1, got {num}')
    files = image_files(folder)
    picks = np.unique(np.linspace(0, len(files) - 1, min(num, len(files))).round().astype(int))
    return load_images([files[i] for i in picks], hw, normalization)


def toy_images(num: int, hw: Tuple[int, int], normalization: Normalization,
               split: str = 'val', seed: int = 0) -> np.ndarray:
    """``num`` toy ImageNet-style images (shapes, stripes, checkers on noise) at ``hw``;
    ``split`` 'train' and 'val' are different images (calibration vs drift)."""
    from mmeff.datasets.toy_data import make_imagenet
    with tempfile.TemporaryDirectory(prefix='mmeff_toy_') as root:
        make_imagenet(root, num_train=num if split == 'train' else 1,
                      num_val=num if split == 'val' else 1,
                      size=(max(hw[0], 32), max(hw[1], 32)), seed=seed)
        files = image_files(os.path.join(root, split))
        return load_images(files, hw, normalization)


def batches(images: np.ndarray, batch: int) -> List[np.ndarray]:
    """Whole batches of ``batch`` images (the exported graph's batch is static)."""
    if len(images) < batch:
        raise ValueError(f'{len(images)} images cannot fill one batch of {batch}: pass more '
                         'images or a smaller --batch')
    return [images[i:i + batch] for i in range(0, len(images) - batch + 1, batch)]


class CalibrationImages:
    """ONNX Runtime's ``CalibrationDataReader`` protocol (``get_next``) over image batches."""

    def __init__(self, images: np.ndarray, batch: int, input_name: str = 'input'):
        self.batches = batches(images, batch)
        self.input_name = input_name
        self._it: Iterator[np.ndarray] = iter(self.batches)

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        array = next(self._it, None)
        return None if array is None else {self.input_name: array}

    def rewind(self) -> None:
        self._it = iter(self.batches)


# ---------------------------------------------------------------------------- quantisation
def int8_types() -> Tuple[object, bool, str]:
    """(activation QuantType, reduce_range, why) for static int8 on this CPU (ORT's guidance
    in ``quantize_static``: U8S8 on x86-64, 7-bit weights without VNNI; S8S8 on ARM)."""
    from onnxruntime.quantization import QuantType
    if platform.machine().lower() not in ('x86_64', 'amd64', 'i686', 'x86'):
        return QuantType.QInt8, False, 'int8 activations (S8S8, not x86)'
    try:
        with open('/proc/cpuinfo') as f:
            vnni = 'vnni' in f.read()
    except OSError:
        vnni = False
    if vnni:
        return QuantType.QUInt8, False, 'uint8 activations, int8 weights (U8S8, x86 with VNNI)'
    return QuantType.QUInt8, True, 'uint8 activations, 7-bit weights (U8S8, x86 without VNNI)'


def compressed_path(path: str, mode: str) -> str:
    root, ext = os.path.splitext(path)
    return f'{root}_{mode}{ext}'


def quantize_onnx(path: str, mode: str, calibration: Optional[np.ndarray] = None,
                  batch: int = 1, out: Optional[str] = None) -> Tuple[str, str]:
    """Write the ``mode`` version of the fp32 ONNX file ``path``; returns (its path, what was
    done). ``calibration``: (N, 3, H, W) preprocessed images, needed by ``int8-static``."""
    if mode not in ONNX_MODES:
        raise ValueError(f'unknown ONNX compression {mode!r}; choose one of {ONNX_MODES}')
    if mode == 'int8-static' and calibration is None:
        raise ValueError('int8-static needs calibration images (an (N, 3, H, W) array '
                         'preprocessed as the model expects: calibration_images / toy_images)')
    import onnx
    out = out or compressed_path(path, mode)
    if mode == 'fp16':
        from onnxruntime.transformers.float16 import convert_float_to_float16
        onnx.save(convert_float_to_float16(onnx.load(path), keep_io_types=True), out)
        return out, 'fp16 weights and compute, fp32 input/outputs'
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_dynamic, quantize_static)
    with tempfile.TemporaryDirectory(prefix='mmeff_quant_') as tmp:
        pre = os.path.join(tmp, 'pre.onnx')  # ORT's recommended pre-processing (shapes known,
        quant_pre_process(path, pre, skip_symbolic_shape=True)  # graph optimised)
        if mode == 'int8-dynamic':
            quantize_dynamic(pre, out, op_types_to_quantize=list(DYNAMIC_OPS),
                             weight_type=QuantType.QInt8)
            return out, (f'int8 weights of {"/".join(DYNAMIC_OPS)}, activations quantised '
                         'at run time; convolutions fp32')
        activation, reduce_range, why = int8_types()
        reader = CalibrationImages(calibration, batch)
        quantize_static(pre, out, reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        op_types_to_quantize=list(STATIC_OPS),
                        activation_type=activation, weight_type=QuantType.QInt8,
                        reduce_range=reduce_range, calibrate_method=CalibrationMethod.MinMax)
        return out, (f'QDQ {"/".join(STATIC_OPS)}, per-channel weights, {why}, MinMax '
                     f'calibration on {len(reader.batches) * batch} images')


# ---------------------------------------------------------------------------------- drift
@dataclass
class Drift:
    """How far a compressed model's outputs are from the fp32 unfused PyTorch model's."""
    images: int
    max_abs: float
    max_rel: float
    min_cosine: float
    mean_cosine: float
    top1_agreement: Optional[float] = None
    pixel_agreement: Optional[float] = None
    miou: Optional[float] = None

    def text(self) -> str:
        parts = [f'max abs {self.max_abs:.3e}', f'max rel {self.max_rel:.3e}',
                 f'cosine min {self.min_cosine:.5f} / mean {self.mean_cosine:.5f}']
        if self.top1_agreement is not None:
            parts.append(f'top-1 agreement {100 * self.top1_agreement:.1f}%')
        if self.pixel_agreement is not None:
            parts.append(f'argmax agreement {100 * self.pixel_agreement:.2f}%, '
                         f'mIoU vs fp32 {100 * self.miou:.1f}%')
        return f'on {self.images} toy images: ' + ', '.join(parts)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def _miou(ref: np.ndarray, got: np.ndarray) -> float:
    """Mean IoU of ``got``'s label map against ``ref``'s over the classes either uses."""
    ious = [np.logical_and(ref == c, got == c).sum() / np.logical_or(ref == c, got == c).sum()
            for c in np.union1d(np.unique(ref), np.unique(got))]
    return float(np.mean(ious))


def drift(reference: nn.Module, session, images: np.ndarray, batch: int, task: str) -> Drift:
    """Run ``reference`` (PyTorch) and ``session`` (ONNX Runtime) on ``images``; ``task`` is
    the exported part ('classifier' adds top-1 agreement, 'segmentor' argmax agreement and
    mIoU; other parts compare every output)."""
    from mmeff.deploy.onnx_check import run_ort
    refs, gots = [], []
    with torch.no_grad():
        for array in batches(images, batch):
            out = output_list(reference(torch.from_numpy(array)))
            refs.append([t.float().numpy() for t in out])
            gots.append([np.asarray(o, np.float32) for o in run_ort(session, array)])
    cosines, max_abs, max_rel = [], 0.0, 0.0
    for ref, got in zip(refs, gots):
        for r, g in zip(ref, got):
            err = float(np.abs(r - g).max())
            max_abs = max(max_abs, err)
            max_rel = max(max_rel, err / max(float(np.abs(r).max()), 1e-12))
            cosines += [_cosine(r[i], g[i]) for i in range(len(r))]
    result = Drift(images=sum(len(r[0]) for r in refs), max_abs=max_abs, max_rel=max_rel,
                   min_cosine=min(cosines), mean_cosine=float(np.mean(cosines)))
    first = [np.concatenate([r[0] for r in refs]), np.concatenate([g[0] for g in gots])]
    if task == 'classifier':
        result.top1_agreement = float((first[0].argmax(1) == first[1].argmax(1)).mean())
    elif task == 'segmentor':
        ref_map, got_map = first[0].argmax(1), first[1].argmax(1)
        result.pixel_agreement = float((ref_map == got_map).mean())
        result.miou = _miou(ref_map, got_map)
    return result


# ---------------------------------------------------------------------------------- report
@dataclass
class CompressionReport:
    """One compressed file: where, how big, how it was made, how far its outputs drift."""
    mode: str
    path: str
    bytes: int
    fp32_bytes: int
    method: str
    drift: Optional[Drift] = None
    min_cosine: float = 0.0
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.drift is None or self.drift.min_cosine >= self.min_cosine

    def text(self) -> str:
        lines = [f'  compressed ({self.mode}): {self.path}, {self.bytes / 2**20:.2f} MiB '
                 f'({self.bytes / max(self.fp32_bytes, 1):.2f}x the fp32 file); {self.method}']
        if self.drift is not None:
            verdict = 'PASS' if self.ok else 'FAIL'
            lines.append(f'  {self.mode} (ONNX Runtime) vs fp32 eager PyTorch '
                         f'{self.drift.text()} -> drift {verdict} (bound: cosine >= '
                         f'{self.min_cosine:g})')
        lines.extend(f'  note: {n}' for n in self.notes)
        return '\n'.join(lines)


def compress_onnx_export(reference: nn.Module, path: str, mode: str, input_hw: Tuple[int, int],
                         batch: int = 1, task: str = '', calib_dir: Optional[str] = None,
                         calib_num: int = CALIB_NUM, drift_num: int = DRIFT_NUM,
                         normalization: Optional[Normalization] = None) -> CompressionReport:
    """Compress the exported fp32 file ``path`` and measure the drift against ``reference``
    (the *unfused* eval-mode part that was exported). Without ``calib_dir``, int8-static is
    calibrated on toy images (noted in the report: use real images for a real model)."""
    from mmeff.deploy.onnx_check import ort_session
    normalization = normalization or Normalization()
    calibration, notes = None, []
    if mode == 'int8-static':
        if calib_dir:
            calibration = calibration_images(calib_dir, calib_num, input_hw, normalization)
        else:
            calibration = toy_images(calib_num, input_hw, normalization, split='train')
            notes.append(f'calibrated on {calib_num} generated toy images; pass --calib-dir '
                         'with images of the target domain for a trained model')
    out, method = quantize_onnx(path, mode, calibration, batch)
    images = toy_images(max(drift_num, batch), input_hw, normalization, split='val')
    session = ort_session(out, threads=1)
    return CompressionReport(
        mode=mode, path=out, bytes=file_bytes(out), fp32_bytes=file_bytes(path),
        method=method, drift=drift(reference.eval(), session, images, batch, task),
        min_cosine=MIN_COSINE[mode], notes=notes)


# ------------------------------------------------------------------------------ entry point
def check_compression(fmt: str, modes: Sequence[str], calib_dir: Optional[str] = None,
                      calib_num: int = CALIB_NUM, drift_num: int = DRIFT_NUM) -> None:
    """Refuse a compression request that does not fit the export, before anything is built."""
    for mode in modes:
        if mode not in MODES.get(fmt, ()):
            owner = next((f for f, choices in MODES.items() if mode in choices), None)
            raise ValueError(f'--quantize {mode} applies to --format {owner}, not {fmt}; for '
                             f'{fmt} choose from {MODES.get(fmt, ())}' if owner else
                             f'unknown --quantize {mode!r}; choose one of {MODES}')
    if calib_dir is not None:
        if 'int8-static' not in modes:
            raise ValueError('--calib-dir is only used by --quantize int8-static (got '
                             f'{list(modes) or "no --quantize"})')
        image_files(calib_dir)
    if calib_num < 1 or drift_num < 1:
        raise ValueError(f'--calib-num and --drift-num must be at least 1 (got {calib_num}, '
                         f'{drift_num})')


def compress_export(reference: nn.Module, report, mode: str, target: str = 'iOS16',
                    calib_dir: Optional[str] = None, calib_num: int = CALIB_NUM,
                    drift_num: int = DRIFT_NUM,
                    normalization: Optional[Normalization] = None):
    """Compress the file an :class:`~mmeff.deploy.export.ExportReport` describes and add the
    result to ``report.compressed``; ``reference`` is the unfused part that was exported."""
    out = compressed_path(report.path, mode)
    if report.fmt == 'coreml':
        result = compress_coreml_export(report.path, mode, target, out)
    else:
        result = compress_onnx_export(
            reference, report.path, mode, tuple(report.input_shape[2:]),
            batch=report.input_shape[0], task=report.part, calib_dir=calib_dir,
            calib_num=calib_num, drift_num=drift_num, normalization=normalization)
    report.compressed.append(result)
    return result
