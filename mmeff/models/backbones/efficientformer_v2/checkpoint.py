"""EfficientFormerV2 checkpoint layouts: official release, timm, mmeff.

* ``official``: snap-research/EfficientFormer ``{'model': ...}``. ``patch_embed.{0,1,3,4}``;
  ``network.{2s}.j`` = block j of stage s, ``network.{2s-1}`` = the downsampling into stage s
  (``proj``/``norm``, or ``conv``/``bn`` + ``attn`` with attention downsampling); conv-BN pairs
  as ``.0``/``.1`` (``proj.1``/``proj.2`` after the activation), FFN ``fc1/norm1``,
  ``mid/mid_norm``, ``fc2/norm2``; ``layer_scale_{1,2}`` of shape (C, 1, 1); ``norm``, ``head``,
  ``dist_head``; ``attention_bias_idxs`` buffers. Dense checkpoints of the official code have a
  ``backbone.`` prefix (plus neck/head keys, kept as they are); their learned biases are
  ``attention_biases_seg`` on the dense grid (800: 25x25, 50x50 for the attention downsampling;
  512: 16x16, 32x32) next to an unused zero ``attention_biases`` buffer, which is dropped
  (:func:`mmeff.checkpoint.rules.dense_bias_rules`); the official dense model has no output norms
  (``with_out_norms=False``).
* ``timm``: ``stem.conv{1,2}``, ``stages.s.downsample`` / ``stages.s.blocks.j``, ``.conv/.bn``
  pairs, ``ls{1,2}.gamma``, ``attention_biases``, ``norm``, ``head``, ``head_dist``.
* ``mmeff``: the canonical layout (``backbone.*`` = timm's names with ``attention_bias.table``
  and ``out_norm{i}``; ``head.norm``, ``head.head``, ``head.head_dist``), a plain backbone state
  dict (no prefix), or a detector/segmentor checkpoint (``backbone.*`` next to ``neck.*`` ...).
  Files written before the bias tables of all families were named alike hold
  ``attn_bias.table``; they load too (:data:`_OLD_MMEFF_NAMES`).
"""
import re
from collections import OrderedDict
from typing import Optional

import torch

from mmeff.checkpoint.io import StateDict
from mmeff.checkpoint import LayoutConverter, register_converter, rename_keys
from mmeff.checkpoint.rules import dense_bias_rules
from mmeff.models.backbones.efficientformer_v2.arch import ARCH_SETTINGS
from mmeff.models.layers.attention_bias import relative_offset_index, table_size_of

_OFFICIAL_MARK = re.compile(r'(^|\.)network\.\d+\.\d+\.mlp\.mid_norm\.')
_STAGES_MARK = re.compile(r'^(backbone\.)?stages\.\d+\.blocks\.\d+\.mlp\.mid\.conv\.weight$')
_CONV_BN = r'(q|k|v|v_local|stride_conv)'


#: classifier parts of the official and timm layouts -> the canonical head
_HEAD_KEYS = {'norm': 'head.norm.', 'head': 'head.head.', 'dist_head': 'head.head_dist.',
              'head_dist': 'head.head_dist.'}


def _network_index(match: re.Match) -> str:
    """``network.N.`` -> ``stages.s.blocks.`` (N = 2s) or ``stages.s.downsample.`` (N = 2s-1)."""
    n = int(match.group(2))
    where = f'stages.{n // 2}.blocks.' if n % 2 == 0 else f'stages.{(n + 1) // 2}.downsample.'
    return f'{match.group(1)}{where}'


_OFFICIAL_TO_CANONICAL = [
    (r'^patch_embed\.0\.', 'stem.conv1.conv.'),
    (r'^patch_embed\.1\.', 'stem.conv1.bn.'),
    (r'^patch_embed\.3\.', 'stem.conv2.conv.'),
    (r'^patch_embed\.4\.', 'stem.conv2.bn.'),
    (r'^()network\.(\d+)\.', _network_index),
    # downsampling: plain (proj/norm) or with attention (conv/bn + attn)
    (r'(\.downsample)\.(proj|conv)\.(weight|bias)$', r'\1.conv.conv.\3'),
    (r'(\.downsample)\.(norm|bn)\.', r'\1.conv.bn.'),
    (r'\.q\.local\.0\.', '.q.local.'),
    (r'\.q\.proj\.0\.', '.q.proj.conv.'),
    (r'\.q\.proj\.1\.', '.q.proj.bn.'),
    (rf'\.{_CONV_BN}\.0\.', r'.\1.conv.'),
    (rf'\.{_CONV_BN}\.1\.', r'.\1.bn.'),
    (r'\.proj\.1\.', '.proj.conv.'),
    (r'\.proj\.2\.', '.proj.bn.'),
    # unified FFN
    (r'\.mlp\.(fc1|fc2|mid)\.(weight|bias)$', r'.mlp.\1.conv.\2'),
    (r'\.mlp\.norm1\.', '.mlp.fc1.bn.'),
    (r'\.mlp\.norm2\.', '.mlp.fc2.bn.'),
    (r'\.mlp\.mid_norm\.', '.mlp.mid.bn.'),
    (r'\.layer_scale_(\d)$', r'.ls\1.gamma'),
    (r'\.attention_biases$', '.attention_bias.table'),
    # outputs and heads
    (r'^norm([0246])\.', lambda m: f'out_norm{int(m.group(1)) // 2}.'),
    (r'^(stem|stages|out_norm)', r'backbone.\1'),
    (r'^(norm|head|dist_head)\.', lambda m: _HEAD_KEYS[m.group(1)]),
]

#: mmeff checkpoints of earlier versions named the bias tables ``attn_bias``
_OLD_MMEFF_NAMES = [(r'\.attn_bias\.table$', '.attention_bias.table')]

_TIMM_TO_CANONICAL = [
    (r'\.attention_biases$', '.attention_bias.table'),
    (r'^(stem|stages)\.', r'backbone.\1.'),
    (r'^(norm|head|head_dist)\.', lambda m: _HEAD_KEYS[m.group(1)]),
]

_CANONICAL_TO_TIMM = [
    (r'\.attention_bias\.table$', '.attention_biases'),
    (r'^backbone\.', ''),
    (r'^head\.norm\.', 'norm.'),
    (r'^head\.head\.', 'head.'),
    (r'^head\.head_dist\.', 'head_dist.'),
]


def _canonical_to_network(match: re.Match) -> str:
    stage, part = int(match.group(1)), match.group(2)
    return f'network.{2 * stage}.' if part == 'blocks' else f'network.{2 * stage - 1}.'


_CANONICAL_TO_OFFICIAL = [
    (r'^backbone\.stem\.conv1\.conv\.', 'patch_embed.0.'),
    (r'^backbone\.stem\.conv1\.bn\.', 'patch_embed.1.'),
    (r'^backbone\.stem\.conv2\.conv\.', 'patch_embed.3.'),
    (r'^backbone\.stem\.conv2\.bn\.', 'patch_embed.4.'),
    (r'^backbone\.out_norm(\d)\.', lambda m: f'norm{2 * int(m.group(1))}.'),
    (r'^head\.norm\.', 'norm.'),
    (r'^head\.head\.', 'head.'),
    (r'^head\.head_dist\.', 'dist_head.'),
    (r'\.mlp\.(fc1|fc2|mid)\.conv\.', r'.mlp.\1.'),
    (r'\.mlp\.fc1\.bn\.', '.mlp.norm1.'),
    (r'\.mlp\.fc2\.bn\.', '.mlp.norm2.'),
    (r'\.mlp\.mid\.bn\.', '.mlp.mid_norm.'),
    (r'\.ls(\d)\.gamma$', r'.layer_scale_\1'),
    (r'\.attention_bias\.table$', '.attention_biases'),
    (r'\.q\.local\.', '.q.local.0.'),
    (r'\.q\.proj\.conv\.', '.q.proj.0.'),
    (r'\.q\.proj\.bn\.', '.q.proj.1.'),
    (rf'\.{_CONV_BN}\.conv\.', r'.\1.0.'),
    (rf'\.{_CONV_BN}\.bn\.', r'.\1.1.'),
    (r'\.proj\.conv\.', '.proj.1.'),
    (r'\.proj\.bn\.', '.proj.2.'),
    # the stage-4 entry (attention downsampling) names its conv/bn 'conv'/'bn', others proj/norm
    (r'^backbone\.stages\.3\.downsample\.conv\.conv\.', 'backbone.stages.3.downsample.conv.'),
    (r'^backbone\.stages\.3\.downsample\.conv\.bn\.', 'backbone.stages.3.downsample.bn.'),
    (r'(\.downsample)\.conv\.conv\.', r'\1.proj.'),
    (r'(\.downsample)\.conv\.bn\.', r'\1.norm.'),
    (r'^backbone\.stages\.(\d+)\.(blocks|downsample)\.', _canonical_to_network),
]


def _official_bias_index(key: str, table: torch.Tensor) -> torch.Tensor:
    """The ``attention_bias_idxs`` buffer the official code expects next to a bias table."""
    size = table_size_of(table.shape[1])
    if size is None:
        raise ValueError(f'{key}: bias table of {table.shape[1]} entries is not square; the '
                         'official layout only has square tables')
    if '.attn.' in key:  # attention downsampling: queries on the stride-2 grid
        query = tuple((s + 1) // 2 for s in size)
        return relative_offset_index(query, size, query_stride=2)
    return relative_offset_index(size, size)


@register_converter
class EfficientFormerV2Converter(LayoutConverter):
    """Reads official, timm and mmeff EfficientFormerV2 state dicts (see module docstring)."""

    family = 'EfficientFormerV2'
    writable_layouts = ('mmeff', 'official', 'timm')
    layout_keys = {
        'official': ('patch_embed.0.weight', 'network.0.0.mlp.fc1.weight',
                     'network.0.0.mlp.mid_norm.weight', 'network.0.0.layer_scale_2'),
        'timm': ('stem.conv1.conv.weight', 'stages.0.blocks.0.mlp.fc1.conv.weight',
                 'stages.0.blocks.0.mlp.mid.conv.weight', 'stages.0.blocks.0.ls2.gamma'),
        'mmeff': ('backbone.stem.conv1.conv.weight',
                  'backbone.stages.0.blocks.0.mlp.fc1.conv.weight',
                  'backbone.stages.0.blocks.0.mlp.mid.conv.weight',
                  'backbone.stages.0.blocks.0.ls2.gamma'),
    }

    def detect_layout(self, state_dict: StateDict) -> str:
        keys = list(state_dict)
        if any(_OFFICIAL_MARK.search(k) for k in keys):
            return 'official'
        if any(_STAGES_MARK.match(k) for k in keys):
            if any(k.endswith(('.attention_bias.table', '.attn_bias.table')) or
                   k.startswith(('out_norm', 'backbone.')) for k in keys):
                return 'mmeff'
            return 'timm'
        raise ValueError('not an EfficientFormerV2 state dict: none of its keys looks like an '
                         "FFN depth-wise conv ('network.N.M.mlp.mid_norm.*' in the official "
                         "layout, 'stages.S.blocks.M.mlp.mid.conv.weight' in timm/mmeff)")

    def to_canonical(self, state_dict: StateDict, layout: str) -> StateDict:
        if layout == 'official':
            return self._from_official(state_dict)
        if layout == 'timm':
            return rename_keys(self._drop_index_buffers(state_dict), _TIMM_TO_CANONICAL)
        if layout == 'mmeff':
            state_dict = rename_keys(state_dict, _OLD_MMEFF_NAMES)
            if any(k.startswith('backbone.') for k in state_dict):
                return state_dict
            return OrderedDict(('backbone.' + k, v) for k, v in state_dict.items())
        raise ValueError(f'unknown EfficientFormerV2 layout {layout!r}; known: official, timm, '
                         'mmeff')

    @staticmethod
    def _drop_index_buffers(state_dict: StateDict) -> StateDict:
        return OrderedDict((k, v) for k, v in state_dict.items()
                           if not k.endswith('attention_bias_idxs'))

    def _from_official(self, state_dict: StateDict) -> StateDict:
        state_dict = rename_keys(state_dict, dense_bias_rules(state_dict))
        dense = any(k.startswith('backbone.network.') for k in state_dict)
        if dense:  # a detector/segmentor of the official code: convert its backbone part
            others = OrderedDict((k, v) for k, v in state_dict.items()
                                 if not k.startswith('backbone.'))
            state_dict = OrderedDict((k[len('backbone.'):], v) for k, v in state_dict.items()
                                     if k.startswith('backbone.'))
        out = rename_keys(state_dict, _OFFICIAL_TO_CANONICAL)
        for key, value in out.items():
            if key.endswith('.gamma') and value.dim() == 3:
                out[key] = value.reshape(-1)
        if dense:
            out.update(others)
        return out

    def from_canonical(self, canonical: StateDict, layout: str) -> StateDict:
        """Write a canonical state dict in another layout (tools/convert_checkpoint.py --to)."""
        if layout == 'mmeff':
            return OrderedDict(canonical)
        if layout == 'timm':
            return rename_keys(canonical, _CANONICAL_TO_TIMM)
        if layout == 'official':
            out = rename_keys(canonical, _CANONICAL_TO_OFFICIAL)
            for key in list(out):
                value = out[key]
                if re.search(r'\.layer_scale_\d$', key):
                    out[key] = value.reshape(-1, 1, 1)
                elif key.endswith('.attention_biases'):
                    idx_key = key[:-len('attention_biases')] + 'attention_bias_idxs'
                    out[idx_key] = _official_bias_index(key, value)
            return out
        raise ValueError(f'{self.family} checkpoints cannot be written in the {layout!r} '
                         f'layout; writable layouts: {list(self.writable_layouts)}')

    def guess_arch(self, canonical: StateDict) -> Optional[str]:
        """Name of the published arch with these widths, depths and attention blocks."""
        widths, depths, attn = [], [], []
        for s in range(4):
            if s == 0:
                w = canonical.get('backbone.stem.conv2.conv.weight')
            else:
                w = canonical.get(f'backbone.stages.{s}.downsample.conv.conv.weight')
            blocks = {int(m.group(1)) for k in canonical
                      for m in [re.match(rf'backbone\.stages\.{s}\.blocks\.(\d+)\.', k)] if m}
            if w is None or not blocks:
                return None
            widths.append(w.shape[0])
            depths.append(max(blocks) + 1)
            attn.append(sum(f'backbone.stages.{s}.blocks.{j}.token_mixer.q.conv.weight'
                            in canonical for j in blocks))
        for name, arch in ARCH_SETTINGS.items():
            if tuple(widths) == arch['widths'] and tuple(depths) == arch['depths'] and \
                    attn == [0, 0, arch['num_attn'], arch['num_attn']]:
                return name
        return None
