"""The fastest PyTorch CPU path measured for mmeff's models: :func:`compile_for_cpu`.

AOTInductor (``torch.export`` + ``torch._inductor.aoti_compile_and_package``) of the deployed
model (:func:`mmeff.deploy.deploy`), with the choices that each measured faster on CPU
(docs/deploy_speed.md, "PyTorch on CPU"):

* ahead-of-time compilation into a C++ package: no TorchDynamo guards and no Python between
  the kernels (``torch.compile`` spent 0.4-0.6 ms per call on guards alone; AOTInductor ran
  EfficientFormer-L1 1.11x ORT against 1.23x, V2-S0 1.17x against 1.35x, EfficientViT-M4
  1.40x against 1.66x);
* traced inside :func:`~mmeff.models.layers.graph_forms`: EfficientFormer's MB4D blocks in
  their graph form (NCHW 1x1 convolutions, which Inductor hands to oneDNN with the following
  GELU fused in, instead of the channels-last linears it hands to MKL, slow on AMD CPUs), and
  the forms that check :func:`~mmeff.models.layers.is_compiling_for_cpu`: EfficientFormerV2's
  2x upsampling written out and its GELU without NHWC permutes, EfficientViT's q depth-wise
  conv as a conv on the token view (its attention keeps the token form), and EfficientViT's
  depth-wise and 1x1 convolutions on small maps as generated loops and linears
  (:mod:`mmeff.deploy.cpu_forms`: oneDNN's per-call cost exceeds their arithmetic there),
  compiled with GEMM autotuning and stack-allocated buffers;
* Inductor's freezing: parameters become constants of the package, so conv weights are
  prepacked for oneDNN once and constant folding happens at compile time;
* a channels-last model and input, the layout oneDNN's convolutions run in without reorders.
"""
import os
import tempfile
from typing import Any, Callable, Optional, Sequence, Tuple

import torch
from torch import nn

from mmeff.deploy.cpu_forms import use_cpu_compile_forms
from mmeff.deploy.deploy_path import deploy
from mmeff.models.layers.graph_mode import graph_forms


class CompiledForCPU(nn.Module):
    """A model compiled by :func:`compile_for_cpu`; call it like the model, on inputs of the
    shape it was compiled for.

    Every call runs without autograd on a channels-last copy of the input (the layout the
    package was compiled for; a differently strided input would be read wrongly).

    Args:
        run: the loaded package (or any callable of the channels-last input).
        input_shape: the one input shape ``run`` accepts.
        package_path: where the package lies (``torch._inductor.aoti_load_package`` loads it
            in another process, without mmeff).
        workdir: a temporary directory holding the package, removed with this module.
    """

    def __init__(self, run: Callable[[torch.Tensor], Any], input_shape: Sequence[int],
                 package_path: Optional[str] = None,
                 workdir: Optional[tempfile.TemporaryDirectory] = None):
        super().__init__()
        self.run = run
        self.input_shape: Tuple[int, ...] = tuple(input_shape)
        self.package_path = package_path
        self._workdir = workdir

    def forward(self, x: torch.Tensor):
        if tuple(x.shape) != self.input_shape:
            raise ValueError(f'this model was compiled for inputs of shape {self.input_shape}, '
                             f'got {tuple(x.shape)}; call compile_for_cpu again for that shape')
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            return self.run(x)


def _check_shape(input_shape: Sequence[int]) -> Tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4 or min(shape) <= 0:
        raise ValueError(f'input_shape must be four positive sizes (N, C, H, W), got '
                         f'{tuple(input_shape)}')
    return shape


def compile_for_cpu(model: nn.Module, input_shape: Sequence[int],
                    package_path: Optional[str] = None) -> CompiledForCPU:
    """Deploy ``model`` for ``input_shape`` (N, C, H, W) and compile it ahead of time for CPU.

    The model is changed in place as by :func:`~mmeff.deploy.deploy` (BN folded, attention
    biases frozen for the shape; it fuses the children of ``model``, so wrap a bare block in a
    container to have it replaced; EfficientViT's depth-wise and 1x1 convs become the
    modules of :func:`~mmeff.deploy.cpu_forms.use_cpu_compile_forms`, the same function),
    exported with ``torch.export`` and compiled by AOTInductor with freezing into a package
    (a ``.pt2`` file) that is loaded and returned. Its weights are constants of the package:
    later changes to the model are not seen. The compiled code is for this input shape only
    and for ``torch.get_num_threads()`` threads at the time of the call; compilation takes
    15 s to a few minutes per variant on a couple of cores (EfficientViT's, autotuned, 1-2.5
    minutes).

    Args:
        model: the model (eval mode is set by the deploy path).
        input_shape: the one input shape the result accepts.
        package_path: where to write the package (a ``.pt2`` path) to keep it; by default it
            lives in a temporary directory removed with the returned module.

    Raises:
        ValueError: ``input_shape`` is not four positive sizes, or ``package_path`` does not end
            in ``.pt2``.
    """
    shape = _check_shape(input_shape)
    if package_path is not None and not str(package_path).endswith('.pt2'):
        raise ValueError(f'package_path must be a .pt2 file path (AOTInductor packages), got '
                         f'{package_path!r}')
    deployed = deploy(model, shape).to(memory_format=torch.channels_last)
    configs = {'freezing': True}
    if use_cpu_compile_forms(deployed):
        # EfficientViT's many small kernels (docs/deploy_speed.md, "PyTorch on CPU"): its
        # linears autotuned (oneDNN with the ReLU fused, or Inductor's C++ GEMM, beat the MKL
        # linears packed otherwise: M0 1.34 -> 1.17x ORT, M4 1.26 -> 1.18x), and the
        # package's small intermediate buffers on the stack (M0 1.20 -> 1.15x)
        configs.update({'max_autotune': True, 'aot_inductor.allow_stack_allocation': True})
    example = torch.zeros(shape).contiguous(memory_format=torch.channels_last)
    workdir = None
    if package_path is None:
        workdir = tempfile.TemporaryDirectory(prefix='mmeff_aoti_')
        package_path = os.path.join(workdir.name, 'model.pt2')
    # Inductor freezes only what it compiles with autograd off: compiled with it on, the same
    # package ran EfficientViT-M4 in 15.1 ms instead of 12.6 (docs/deploy_speed.md)
    with torch.no_grad(), graph_forms():
        program = torch.export.export(deployed, (example,))
        package_path = torch._inductor.aoti_compile_and_package(
            program, package_path=str(package_path), inductor_configs=configs)
    runner = torch._inductor.aoti_load_package(package_path)
    return CompiledForCPU(runner, shape, package_path, workdir)
