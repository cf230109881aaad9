"""Helpers for parity tests, multi-process tests and benchmarks (not used by the models)."""
import importlib.util
import os
import re
import signal
import socket
import subprocess
from types import ModuleType
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


#: layer scales as trained models have them (a fraction of the residual branch)
TRAINED_LAYER_SCALE = (0.05, 0.3)
#: layer scales of about 1: every residual branch weighs as much as the identity, so a wrongly
#: mapped branch changes the output by O(1) (converter parity tests, gradient checks)
FULL_LAYER_SCALE = (0.5, 1.5)


def max_rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """``max|got - ref| / max|ref|``: the scale-free error :mod:`mmeff.deploy.parity` reports.

    For outputs (fusion, export, checkpoint conversion): one wrong element shows, and outputs
    near zero do not blow it up the way an elementwise relative error would.
    """
    got, ref = got.detach(), ref.detach()
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def norm_rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """``||got - ref|| / ||ref||`` (Frobenius norms).

    For gradients and downsampled maps, whose elements span orders of magnitude: a reordered
    summation moves single small elements by more than ``max_rel_err`` tolerates although the
    tensor as a whole agrees to fp32 rounding.
    """
    got, ref = got.detach(), ref.detach()
    return float((got - ref).norm() / ref.norm().clamp_min(1e-12))


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0,
               layer_scale: Tuple[float, float] = TRAINED_LAYER_SCALE) -> nn.Module:
    """Give every BN statistic, norm affine, bias, layer scale and attention-bias table a
    non-trivial random value, in place; returns the model. The suite's one weight randomizer.

    Freshly built models have BNs at identity (residual branches often start with a zero BN
    weight), unit norm affines, zero biases (timm's init), layer scales at 1e-5 and zero bias
    tables: parity checks on them (fusion, export, checkpoint conversion, gradients) would pass
    even with those parts wired wrongly. Works on mmeff and timm models (timm's bias tables are
    parameters named ``attention_biases``, its layer scales ``gamma``). Used by tests and
    ``tools/benchmarks/export_all.py`` (no real weights are downloaded).

    Args:
        seed: of the values (the same seed gives the same weights to the same model).
        layer_scale: the (low, high) range of layer scales: :data:`TRAINED_LAYER_SCALE` keeps
            deep models' activations at a trained model's size (export and fp16 parity);
            :data:`FULL_LAYER_SCALE` makes every branch count fully.
    """
    gen = torch.Generator().manual_seed(seed)

    def rand(t: torch.Tensor, low: float, high: float) -> torch.Tensor:
        return (torch.rand(t.shape, generator=gen) * (high - low) + low).to(t)

    for m in model.modules():
        if isinstance(m, _BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(rand(m.running_mean, -0.2, 0.2))
            m.running_var.copy_(rand(m.running_var, 0.5, 1.5))
        is_norm = isinstance(m, (_BatchNorm, nn.GroupNorm, nn.LayerNorm))
        for name, p in m.named_parameters(recurse=False):
            if name == 'gamma' or name.startswith('layer_scale'):
                p.copy_(rand(p, *layer_scale))
            elif name in ('table', 'attention_biases'):  # AttentionBias2d, timm
                p.copy_(rand(p, -1.0, 1.0))
            elif name == 'weight' and is_norm:
                p.copy_(rand(p, 0.5, 1.5))
            elif name == 'bias' and p.dim() == 1:  # norms, convs and linears
                p.copy_(rand(p, -0.2, 0.2))
        clear = getattr(m, 'clear_cache', None)
        if callable(clear):
            clear()
    return model


@torch.no_grad()
def sharpen_roi_classifier(detector: nn.Module, factor: float = 4.0) -> nn.Module:
    """Scale a two-stage detector's RoI classifier weights by ``factor``, in place.

    A randomly initialised RoI head spreads its softmax evenly over the classes (1/81 ~ 0.012
    for COCO, under the usual ``score_thr`` 0.05): MMDet's predict then returns nothing, and a
    parity check of the post-processing would compare two empty lists. 4x gives scores from
    ~0.1 to ~0.7 on the toy scenes. Detectors without an RoI head are returned unchanged.
    """
    fc_cls = getattr(getattr(getattr(detector, 'roi_head', None), 'bbox_head', None),
                     'fc_cls', None)
    if fc_cls is not None:
        fc_cls.weight.mul_(factor)
    return detector


def efficientvit_official_layout(timm_state_dict: Dict[str, torch.Tensor]
                                 ) -> Dict[str, torch.Tensor]:
    """Rename a timm ``efficientvit_m*`` state dict to the microsoft/Cream release layout.

    Written from the two layouts directly, independently of mmeff's converter, so that tests
    can make release-format files without downloading them. Adds the derived
    ``attention_bias_idxs`` buffers the release files carry (the converter must drop them).
    """
    parts = ('res1', 'patchmerge', 'res2')
    out = {}
    for key, value in timm_state_dict.items():
        key = re.sub(r'^patch_embed\.conv(\d)\.',
                     lambda m: f'patch_embed.{2 * (int(m.group(1)) - 1)}.', key)
        key = re.sub(r'^stages\.0\.blocks\.(\d+)\.', r'blocks1.\1.', key)
        key = re.sub(r'^stages\.(\d)\.downsample\.(res1|patchmerge|res2)\.',
                     lambda m: f'blocks{int(m.group(1)) + 1}.{parts.index(m.group(2))}.', key)
        key = re.sub(r'^stages\.(\d)\.blocks\.(\d+)\.',
                     lambda m: f'blocks{int(m.group(1)) + 1}.{int(m.group(2)) + 3}.', key)
        key = re.sub(r'\.conv\.weight$', '.c.weight', key)
        key = key.replace('head.linear.', 'head.l.')
        out[key] = value
        if key.endswith('attention_biases'):
            n = value.shape[1]
            out[key[:-len('attention_biases')] + 'attention_bias_idxs'] = torch.zeros(
                n, n, dtype=torch.long)
    return out


def nchw_cascaded_attention(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """EfficientViT's cascaded group attention in the official per-head NCHW formulation
    (paper Eq. 3), with the modules of an mmeff ``CascadedGroupAttention``: each head's 1x1
    ConvBN and q depth-wise ConvBN on its NCHW window map, ``q^T k * scale + bias``. The
    reference that the attention's row form is tested and benchmarked against."""
    B, _, H, W = x.shape
    kd, vd = attn.key_dim, attn.val_dim
    bias = attn.attention_bias((H, W))
    splits, outs = x.chunk(attn.num_heads, dim=1), []
    feat = splits[0]
    for i, (qkv, dw) in enumerate(zip(attn.qkvs, attn.dws)):
        if i > 0:
            feat = feat + splits[i]
        q, k, v = qkv(feat).split((kd, kd, vd), dim=1)
        q = dw(q)
        scores = (q.flatten(2).transpose(1, 2) @ k.flatten(2)) * attn.scale + bias[i]
        feat = (v.flatten(2) @ scores.softmax(dim=-1).transpose(1, 2)).view(B, vd, H, W)
        outs.append(feat)
    return attn.proj(torch.relu(torch.cat(outs, dim=1)))


def exported_onnx(module: nn.Module, x: torch.Tensor):
    """(ONNX op histogram, ONNX Runtime outputs) of ``module`` exported at ``x`` (opset 17,
    the benchmark's export), for tests of what a deploy form looks like as a graph."""
    import io
    import warnings

    import onnx

    from mmeff.deploy.onnx_check import op_histogram, ort_session, run_ort
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(module, (x,), buffer, opset_version=17, dynamo=False)
    ops = op_histogram(onnx.load_from_string(buffer.getvalue()))
    return ops, run_ort(ort_session(buffer.getvalue(), threads=1), x.numpy())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a process group's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def start_group(cmd: List[str], env: Dict[str, str], cwd: Optional[str] = None
                ) -> subprocess.Popen:
    """Start a launch (torchrun and its workers) in its own process group, output captured,
    so that :func:`finish_group` can kill all of it."""
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish_group(proc: subprocess.Popen, timeout: float) -> Tuple[bool, str]:
    """Wait at most ``timeout`` seconds; on timeout SIGKILL the whole process group (no
    stray workers survive a test). Returns (ended in time, output)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
        return True, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return False, out


def load_script(path: Union[str, os.PathLike]) -> ModuleType:
    """A fresh module object of a script under tools/ (run its ``main`` in-process, without
    paying a new interpreter's imports); the tools are scripts, not package modules."""
    path = os.fspath(path)
    name = 'mmeff_tool_' + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
