"""Checkpoint layouts of EfficientViT (Microsoft, M0-M5) and their mapping to mmeff's.

Layouts (facts from microsoft/Cream EfficientViT and timm 1.0.31 ``efficientvit_msra``):
- ``official``: the release files, ``{'model': sd}``; ``patch_embed.{0,2,4,6}.{c,bn}``,
  ``blocks{s+1}.{j}...`` where ``blocks{s+1}`` of a later stage starts with its subsample
  block as entries 0/1/2 (res1, patch merging, res2), residual wrappers ``.m.``, convs ``.c``,
  ``attn.proj.1``, ``attention_biases``, heads ``head.{bn,l}`` / ``head_dist.{bn,l}``. The
  official loader reshapes 2-D weights to 1x1 convs (``d[k][:, :, None, None]``), so some
  release files store 1x1 conv weights as matrices; we do the same. The official downstream
  (mmdet 2.x) checkpoints are the same keys under ``backbone.`` in ``{'state_dict': ..}``.
- ``timm``: ``patch_embed.conv{n}.{conv,bn}``, ``stages.{s}.downsample.{res1,patchmerge,res2}``,
  ``stages.{s}.blocks.{j}``, ``.m.`` wrappers, ``head.{bn,linear}``.
- ``mmeff``: canonical (``backbone.*`` + ``head.head``/``head.head_dist``), a plain backbone
  state dict (``stem.*``, ``stages.*``), or an MMDet/MMSeg checkpoint (``backbone.*``, ...).
  The bias tables are ``mixer.attn.attention_bias.table``; files written before the tables of
  all families were named alike hold ``mixer.attn.bias.table`` and load too.
Index buffers (``attention_bias_idxs``) are derived data and dropped.
"""
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

from mmeff.checkpoint.io import StateDict
from mmeff.checkpoint import LayoutConverter, register_converter, rename_key, rename_keys
from mmeff.models.backbones.efficientvit.arch import EFFICIENTVIT_ARCHS

_COMMON_RULES = [
    (r'\.m\.', '.'),                       # residual wrappers
    (r'\.attn\.proj\.1\.', '.attn.proj.'),  # Sequential(ReLU, ConvBN) -> ConvBN
    (r'\.attention_biases$', '.attention_bias.table'),
]
#: mmeff checkpoints of earlier versions named the bias tables ``attn.bias``
_OLD_MMEFF_NAMES = [(r'\.attn\.bias\.table$', '.attn.attention_bias.table')]
_TIMM_RULES = [
    (r'^patch_embed\.', 'backbone.stem.'),
    (r'^stages\.', 'backbone.stages.'),
    (r'^head\.(bn|linear)\.', r'head.head.\1.'),
] + _COMMON_RULES
_OFFICIAL_HEAD_RULES = [
    (r'^head\.bn\.', 'head.head.bn.'), (r'^head\.l\.', 'head.head.linear.'),
    (r'^head_dist\.bn\.', 'head.head_dist.bn.'), (r'^head_dist\.l\.', 'head.head_dist.linear.'),
]
_SUBSAMPLE_PARTS = ('res1', 'patchmerge', 'res2')


def _official_backbone_key(key: str) -> str:
    """Rename one official backbone key (no prefix) to the canonical one."""
    m = re.match(r'^patch_embed\.(\d+)\.(c|bn)\.(.*)$', key)
    if m:
        conv = int(m.group(1)) // 2 + 1
        return f'backbone.stem.conv{conv}.{"conv" if m.group(2) == "c" else "bn"}.{m.group(3)}'
    m = re.match(r'^blocks(\d+)\.(\d+)\.(.*)$', key)
    if not m:
        return key
    stage, idx, rest = int(m.group(1)) - 1, int(m.group(2)), m.group(3)
    if stage == 0:
        where = f'blocks.{idx}'
    elif idx < 3:
        where = f'downsample.{_SUBSAMPLE_PARTS[idx]}'
    else:
        where = f'blocks.{idx - 3}'
    rest = re.sub(r'(^|\.)c\.', r'\1conv.', rest)
    return rename_key(f'backbone.stages.{stage}.{where}.{rest}', _COMMON_RULES)


@register_converter
class EfficientViTConverter(LayoutConverter):
    """Official release / timm / mmeff layouts of EfficientViT M0-M5."""

    family = 'EfficientViT'
    layout_keys = {
        'official': ('patch_embed.0.c.weight', 'blocks1.0.dw0.m.c.weight',
                     'blocks1.0.mixer.m.attn.qkvs.0.c.weight'),
        'timm': ('patch_embed.conv1.conv.weight', 'stages.0.blocks.0.dw0.m.conv.weight',
                 'stages.0.blocks.0.mixer.m.attn.qkvs.0.conv.weight'),
        'mmeff': ('backbone.stem.conv1.conv.weight', 'backbone.stages.0.blocks.0.dw0.conv.weight',
                  'backbone.stages.0.blocks.0.mixer.attn.qkvs.0.conv.weight'),
    }

    @staticmethod
    def _strip(key: str) -> str:
        return key[len('backbone.'):] if key.startswith('backbone.') else key

    def detect_layout(self, state_dict: StateDict) -> str:
        keys = [self._strip(k) for k in state_dict]
        if not any('.attn.qkvs.' in k for k in keys):
            raise ValueError('not an EfficientViT (Microsoft) checkpoint: no cascaded-group '
                             'attention keys (".attn.qkvs.")')
        if any(re.match(r'^(patch_embed\.\d+\.c\.|blocks\d+\.)', k) for k in keys):
            return 'official'
        if any(k.startswith('patch_embed.conv') or '.mixer.m.attn.' in k for k in keys):
            return 'timm'
        if any(k.startswith(('stem.conv', 'stages.')) for k in keys):
            return 'mmeff'
        raise ValueError('EfficientViT checkpoint of an unknown layout: expected the official '
                         'release, timm or mmeff keys')

    def to_canonical(self, state_dict: StateDict, layout: str) -> StateDict:
        sd = OrderedDict((k, v) for k, v in state_dict.items()
                         if not k.endswith('attention_bias_idxs'))
        if layout == 'timm':
            return rename_keys(sd, _TIMM_RULES)
        if layout == 'official':
            out = OrderedDict()
            for key, value in sd.items():
                inner = self._strip(key)
                if inner.startswith(('patch_embed.', 'blocks')):
                    key = _official_backbone_key(inner)
                    if value.dim() == 2 and not key.endswith('.table'):
                        value = value[:, :, None, None]  # 1x1 conv stored as a matrix
                else:
                    key = rename_key(key, _OFFICIAL_HEAD_RULES)
                out[key] = value
            return out
        if layout == 'mmeff':
            return OrderedDict(
                ('backbone.' + k if k.startswith(('stem.', 'stages.')) else k, v)
                for k, v in rename_keys(sd, _OLD_MMEFF_NAMES).items())
        raise ValueError(f'unknown EfficientViT layout {layout!r}')

    def guess_arch(self, canonical: StateDict) -> Optional[str]:
        signature = arch_signature(canonical)
        if signature is None:
            return None
        dims, depths, heads, kernels = signature
        for name, arch in EFFICIENTVIT_ARCHS.items():
            if (tuple(arch['embed_dims']), tuple(arch['depths']), tuple(arch['num_heads'])) \
                    == (dims, depths, heads) and tuple(arch['kernels'][:len(kernels)]) == kernels:
                return name
        return None


def arch_signature(canonical: StateDict) -> Optional[Tuple[Tuple[int, ...], ...]]:
    """(embed_dims, depths, num_heads, q kernels) read off a canonical state dict."""
    blocks: Dict[int, set] = {}
    heads: Dict[int, set] = {}
    kernels: Dict[int, int] = {}
    dims: Dict[int, int] = {}
    pattern = re.compile(r'^backbone\.stages\.(\d+)\.blocks\.(\d+)\.(.*)$')
    for key, value in canonical.items():
        m = pattern.match(key)
        if not m:
            continue
        s, j, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        blocks.setdefault(s, set()).add(j)
        if j == 0 and rest == 'dw0.conv.weight':
            dims[s] = value.shape[0]
        h = re.match(r'^mixer\.attn\.(qkvs|dws)\.(\d+)\.conv\.weight$', rest)
        if j == 0 and h:
            heads.setdefault(s, set()).add(int(h.group(2)))
            if h.group(1) == 'dws':
                kernels[int(h.group(2))] = value.shape[-1]
    stages = sorted(blocks)
    if not stages or stages != list(range(len(stages))) or sorted(dims) != stages:
        return None
    kernel_list: List[int] = [kernels[h] for h in sorted(kernels)]
    return (tuple(dims[s] for s in stages), tuple(len(blocks[s]) for s in stages),
            tuple(len(heads.get(s, ())) for s in stages), tuple(kernel_list))
