"""The one timer: how a backend is prepared and how its calls are timed, for the benchmark runner
(:mod:`mmeff.benchmark.runner`) and the search's latency table (:mod:`mmeff.search.lut`).

Backends (:func:`prepare`)::

    eager          the model as built, eval mode
    channels-last  the model as built, fed a channels-last input (what mmeff's fused blocks
                   run on inside; context for reference implementations)
    fused          mmeff's deploy path (:func:`mmeff.deploy.deploy`: BN folded, attention
                   biases frozen for the input shape); mmeff models only
    compile        mmeff models: :func:`mmeff.deploy.compile_for_cpu` (AOTInductor package of
                   the fused model's graph forms, channels-last, Inductor freezing); reference
                   models: torch.compile of the model as built
    onnxruntime    the fused model (the model as built for reference models) exported to ONNX
                   (opset 17) and run by ONNX Runtime's CPU provider
    cuda-fp16      the fused model in half precision on the GPU
    onnxruntime-fp16, onnxruntime-int8-dynamic, onnxruntime-int8-static
                   the onnxruntime backend's graph compressed by :mod:`mmeff.deploy.compress`
                   (int8-static calibrated on toy images at the input size), run by ONNX
                   Runtime's CPU provider (docs/compression.md)
    train          one training step of the model as built, train mode: forward, backward,
                   gradients cleared (:mod:`mmeff.benchmark.train_step`)

A backend that cannot run here raises :class:`Skip` with the reason.

Timing (:func:`measure`, :func:`round_robin`): warm-up calls, then N timed calls; a
:class:`Timing` gives the median, the 90th percentile, the mean and the fastest call. Two
clocks: ``wall`` (``time.perf_counter``) and ``cpu``, the process CPU time
(``time.process_time``). On a CPU shared with other jobs the wall time measures the
neighbours too (measured at a load of 5-8 on 2 cores: the same network timed 7.7 ms and 4.1 ms
a minute apart, even as the fastest of 20 calls), while one thread's CPU time is what the work
takes on a core of its own, the latency of a dedicated device; with several threads the CPU
time adds the threads up, so it is only meaningful with one. Models that are compared are
timed :func:`round_robin`, so slow drifts of the machine's load hit all of them alike.
"""
import io
import os
import platform
import shutil
import statistics
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from mmeff.benchmark.train_step import train_step
from mmeff.deploy.cpu_compile import compile_for_cpu
from mmeff.deploy.deploy_path import deploy
from mmeff.models.backbones.base import MobileBackbone
from mmeff.models.layers.attention_bias import AttentionBias2d

#: compressed ONNX Runtime backends: 'onnxruntime-<mode>' for each mmeff.deploy.compress mode
COMPRESSED_ORT = ('onnxruntime-fp16', 'onnxruntime-int8-dynamic', 'onnxruntime-int8-static')
BACKENDS = ('eager', 'channels-last', 'fused', 'compile', 'onnxruntime', 'cuda-fp16',
            'train') + COMPRESSED_ORT
CLOCKS = {'wall': time.perf_counter, 'cpu': time.process_time}


class Skip(Exception):
    """A backend does not apply here; the message is the reason."""


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def clock_fn(clock: str) -> Callable[[], float]:
    """The seconds counter of ``clock`` ('wall' or 'cpu', see the module docstring)."""
    if clock not in CLOCKS:
        raise ValueError(f'clock must be one of {sorted(CLOCKS)}, got {clock!r}')
    return CLOCKS[clock]


@dataclass
class Timing:
    """Milliseconds of every timed call and their statistics."""
    samples_ms: List[float] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return len(self.samples_ms)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p90_ms(self) -> float:
        return float(np.percentile(self.samples_ms, 90))

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.samples_ms)

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms)


@dataclass
class Prepared:
    """A zero-argument call running a model on a backend; ``sync`` waits for its device."""
    call: Callable[[], object]
    sync: Optional[Callable[[], None]] = None
    note: str = ''

    def __call__(self) -> object:
        out = self.call()
        if self.sync:
            self.sync()
        return out


Runnable = Union[Prepared, Callable[[], object]]


def round_robin(fns: Sequence[Runnable], runs: int, clock: str = 'wall',
                after_round: Optional[Callable[[int], None]] = None) -> List[Timing]:
    """Time every callable ``runs`` times; round ``r`` runs each once, in an order rotated by
    ``r``, so slow drifts of the machine's load hit all of them alike. No warm-up here."""
    now = clock_fn(clock)
    timings = [Timing() for _ in fns]
    pairs = list(zip(fns, timings))
    for r in range(runs if pairs else 0):
        shift = r % len(pairs)
        for fn, timing in pairs[shift:] + pairs[:shift]:
            start = now()
            fn()
            timing.samples_ms.append((now() - start) * 1e3)
        if after_round:
            after_round(r)
    return timings


def measure(fn: Runnable, warmup: int, runs: int, sync: Optional[Callable[[], None]] = None,
            clock: str = 'wall') -> Timing:
    """Time ``fn`` ``runs`` times after ``warmup`` calls (``sync`` waits for a device)."""
    clock_fn(clock)  # an unknown clock fails before any call
    if sync:
        fn = Prepared(fn, sync)
    for _ in range(warmup):
        fn()
    return round_robin([fn], runs, clock)[0]


# ------------------------------------------------------------------------------- backends
def is_mmeff_model(module: nn.Module) -> bool:
    """Whether ``module`` holds an mmeff backbone or attention bias (has a deploy path)."""
    return any(isinstance(m, (MobileBackbone, AttentionBias2d)) for m in module.modules())


class _Holder(nn.Module):
    """Lets the deploy path replace the prepared module itself (it fuses children)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *args):
        return self.module(*args)


def _deployed(model: nn.Module, x: torch.Tensor) -> nn.Module:
    return deploy(_Holder(model), tuple(x.shape))


def _no_grad(module: nn.Module, x: torch.Tensor) -> Prepared:
    def run():
        with torch.no_grad():
            return module(x)
    return Prepared(run)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def prepare(backend: str, model: nn.Module, x: torch.Tensor, threads: int = 1,
            fusable: Optional[bool] = None, channels_last: bool = False) -> Prepared:
    """A call running ``model`` on ``x`` with ``backend``, or raise :class:`Skip`.

    Args:
        backend: one of :data:`BACKENDS`.
        model: the module; the fused backends change it in place (pass a fresh one).
        x: the input (its shape is the shape the attention biases are frozen for).
        threads: ONNX Runtime's intra-op threads (PyTorch's are the caller's to set).
        fusable: whether the deploy path applies (default: :func:`is_mmeff_model`); the
            latency table passes True for mmeff's bare blocks.
        channels_last: feed the fused model a channels-last 4-D input, as mmeff's stems hand
            it to the blocks (the latency table times blocks on their own).
    """
    model = model.eval()
    ours = is_mmeff_model(model) if fusable is None else fusable
    if backend == 'eager':
        return _no_grad(model, x)
    if backend == 'channels-last':
        return _no_grad(model, _channels_last(x))
    if backend == 'fused':
        if not ours:
            raise Skip('not an mmeff model (no deploy path to apply)')
        return _no_grad(_deployed(model, x), _channels_last(x) if channels_last else x)
    if backend == 'compile':
        if not (shutil.which('g++') or shutil.which('c++')):
            raise Skip('torch.compile needs a C++ compiler for CPU code generation')
        start = time.perf_counter()
        if ours:  # mmeff's CPU path (docs/deploy_speed.md); it compiles here, for x.shape
            compiled = compile_for_cpu(_Holder(model), tuple(x.shape))
        else:
            compiled = torch.compile(model)
            with torch.no_grad():
                compiled(x)
        prepared = _no_grad(compiled, x)
        prepared.note = f'compiled in {time.perf_counter() - start:.0f} s'
        return prepared
    if backend == 'onnxruntime' or backend in COMPRESSED_ORT:
        mode = backend[len('onnxruntime-'):] if backend in COMPRESSED_ORT else None
        return _ort(model, x, threads, ours, mode)
    if backend == 'cuda-fp16':
        if not torch.cuda.is_available():
            raise Skip('no CUDA device on this machine')
        base = (_deployed(model, x) if ours else model).half().cuda()
        prepared = _no_grad(base, x.half().cuda())
        prepared.sync, prepared.note = torch.cuda.synchronize, torch.cuda.get_device_name()
        return prepared
    if backend == 'train':
        try:
            return Prepared(train_step(model, x))
        except ValueError as err:
            raise Skip(str(err))
    raise ValueError(f'unknown backend {backend!r}; choose from {BACKENDS}')


def _ort(model: nn.Module, x: torch.Tensor, threads: int, ours: bool,
         compression: Optional[str] = None) -> Prepared:
    """ONNX Runtime on the model's ONNX graph (:func:`ort_graph`), compressed by
    ``compression`` (a :data:`mmeff.deploy.compress.ONNX_MODES` entry) if given."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise Skip('onnxruntime is not installed (pip install mmeff[export])')
    from mmeff.deploy.onnx_check import ort_session
    graph, note = ort_graph(model, x, ours), ''
    if compression:
        graph, note = _compressed(graph, compression, x)
    session = ort_session(graph, threads=threads)
    feed = {'input': x.numpy()}
    return Prepared(lambda: session.run(None, feed), note=note)


def ort_graph(model: nn.Module, x: torch.Tensor, ours: Optional[bool] = None) -> bytes:
    """The ONNX graph (opset 17, input named 'input') that the ``onnxruntime`` backend runs:
    of the deployed model for mmeff's models (``ours``, default :func:`is_mmeff_model`; the
    model is changed in place), of the model as built for reference models."""
    if ours if ours is not None else is_mmeff_model(model):
        model = _deployed(model, x)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(model.eval(), (x,), buffer, opset_version=17, dynamo=False,
                          input_names=['input'], do_constant_folding=True)
    return buffer.getvalue()


def _compressed(graph: bytes, mode: str, x: torch.Tensor) -> Tuple[bytes, str]:
    """The ``mode`` compression of an ONNX graph (bytes in, bytes out) and what was done."""
    import tempfile

    from mmeff.deploy.compress import Normalization, quantize_onnx, toy_images

    calibration = None
    if mode == 'int8-static':
        calibration = toy_images(max(CALIB_IMAGES, x.shape[0]), tuple(x.shape[2:]),
                                 Normalization(), 'train')
    with tempfile.TemporaryDirectory(prefix='mmeff_bench_') as tmp:
        path = os.path.join(tmp, 'model.onnx')
        with open(path, 'wb') as f:
            f.write(graph)
        out, method = quantize_onnx(path, mode, calibration, batch=x.shape[0])
        with open(out, 'rb') as f:
            return f.read(), method


#: toy images the int8-static backend is calibrated on
CALIB_IMAGES = 16
