"""The fastest PyTorch CPU path measured for mmeff's models: :func:`compile_for_cpu`.

``torch.compile`` of the deployed model (:func:`mmeff.deploy.deploy`) with three choices that
each measured faster on CPU (docs/deploy_speed.md, "PyTorch on CPU"):

* EfficientFormer's MB4D blocks in their graph form (:func:`mmeff.models.layers.graph_forms`):
  NCHW 1x1 convolutions, which TorchInductor hands to oneDNN with the following GELU fused in,
  instead of the channels-last linears of the eager form, which it hands to MKL (slow on AMD
  CPUs). EfficientViT's attention keeps its token form (faster under Inductor);
* Inductor's freezing (``torch._inductor.config.freezing`` set around every call, so a
  recompilation freezes too; ``torch.compile(options={'freezing': True})`` measured as slow as
  no freezing here): parameters become constants, so conv weights are prepacked for oneDNN
  once and constant folding happens at compile time;
* a channels-last model and input, the layout oneDNN's convolutions run in without reorders.
"""
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch._inductor import config as inductor_config

from mmeff.deploy.deploy_path import deploy
from mmeff.models.layers.graph_mode import graph_forms


class CompiledForCPU(nn.Module):
    """A module compiled by :func:`compile_for_cpu`; call it like the model.

    Every call runs without autograd, inside :func:`graph_forms` (the forms it was compiled
    with; outside them TorchDynamo would recompile), with Inductor's freezing on, and on a
    channels-last copy of a 4-D input.
    """

    def __init__(self, compiled: Callable[[torch.Tensor], Any]):
        super().__init__()
        self.compiled = compiled

    def forward(self, x: torch.Tensor):
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), graph_forms(), inductor_config.patch(freezing=True):
            return self.compiled(x)


def compile_for_cpu(model: nn.Module, input_shape: Sequence[int]) -> CompiledForCPU:
    """Deploy ``model`` for ``input_shape`` (N, C, H, W) and compile it for CPU inference.

    The model is changed in place as by :func:`~mmeff.deploy.deploy` (BN folded, attention
    biases frozen for the shape; it fuses the children of ``model``, so wrap a bare block in a
    container to have it replaced) and its parameters are frozen into the compiled code:
    later changes to them are not seen. The
    first call for ``input_shape`` is made here, so the compile time is spent now (minutes for
    the large variants on a couple of cores); another input shape compiles again (and, with
    frozen attention biases, is only valid for models without them).

    Raises:
        ValueError: ``input_shape`` is not four positive sizes.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4 or min(shape) <= 0:
        raise ValueError(f'input_shape must be four positive sizes (N, C, H, W), got '
                         f'{tuple(input_shape)}')
    deployed = deploy(model, shape).to(memory_format=torch.channels_last)
    compiled = CompiledForCPU(torch.compile(deployed))
    compiled(torch.zeros(shape))
    return compiled
