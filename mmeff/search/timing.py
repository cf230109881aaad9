"""Latency of a module on this machine, on one of three backends.

``eager``: the PyTorch module in eval mode; ``fused``: after :func:`mmeff.models.layers.fusion` (what a
deployed model runs, channels-last input as the deploy stem produces); ``onnxruntime``: the
module exported to ONNX (opset 17) and run by ONNX Runtime's CPU provider.

The fastest of ``runs`` timed calls after ``warmup`` calls is reported. With one thread the
clock is the process CPU time, not the wall time: on a CPU shared with other jobs the wall
time measures the neighbours too (measured at a load of 5-8 on 2 cores: the same network
timed 7.7 ms and 4.1 ms a minute apart, even as the fastest of 20 calls), while one thread's
CPU time is what the work takes on a core of its own — the latency of a dedicated device.
With several threads CPU time would add the threads up, so the wall clock is used.
"""
import io
import time
from typing import Callable, Sequence

import torch
from torch import nn

BACKENDS = ('eager', 'fused', 'onnxruntime')


class _Holder(nn.Module):
    """Lets :func:`mmeff.models.layers.fusion` replace the measured module itself (it fuses children)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f'unknown latency backend {backend!r}; choose one of {BACKENDS}')


def make_runner(module: nn.Module, example: torch.Tensor, backend: str,
                threads: int = 1) -> Callable[[], object]:
    """A zero-argument callable running ``module`` on ``example`` with ``backend``."""
    check_backend(backend)
    module = module.eval()
    if backend == 'eager':
        def run():
            with torch.no_grad():
                return module(example)
        return run
    from mmeff.deploy import fuse
    holder = fuse(_Holder(module))
    if backend == 'fused':
        x = example.contiguous(memory_format=torch.channels_last) if example.dim() == 4 \
            else example

        def run_fused():
            with torch.no_grad():
                return holder(x)
        return run_fused
    import onnxruntime as ort
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(holder, (example,), buf, opset_version=17, dynamo=False,
                          input_names=['x'])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(buf.getvalue(), opts, providers=['CPUExecutionProvider'])
    feed = {'x': example.numpy()}
    return lambda: session.run(None, feed)


def measure_ms(run: Callable[[], object], runs: int = 30, warmup: int = 5,
               clock: str = 'wall') -> float:
    """Fastest time of ``run()`` in milliseconds; ``clock`` 'wall' or 'cpu' (process CPU
    time, see the module docstring)."""
    if clock not in ('wall', 'cpu'):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    now = time.perf_counter if clock == 'wall' else time.process_time
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        t0 = now()
        run()
        times.append((now() - t0) * 1e3)
    return min(times)


def module_latency_ms(module: nn.Module, shape: Sequence[int], backend: str = 'eager',
                      runs: int = 30, warmup: int = 5, threads: int = 1) -> float:
    """Latency (fastest of ``runs``) of ``module`` on a random input of ``shape``."""
    torch.set_num_threads(threads)
    example = torch.randn(*shape)
    return measure_ms(make_runner(module, example, backend, threads), runs, warmup,
                      clock='cpu' if threads == 1 else 'wall')
