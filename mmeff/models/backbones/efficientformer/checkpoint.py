"""EfficientFormer (V1) checkpoint layouts and their conversion to mmeff's canonical layout.

Layouts (facts read from the sources and recorded by running them):

* ``official`` — snap-research/EfficientFormer classification releases, ``{'model': sd}``:
  ``patch_embed.{0,1,3,4}`` (conv, BN, -, conv, BN), ``network.{2i}.{j}`` blocks of stage i,
  ``network.{2i-1}.{proj,norm}`` the embedding into stage i, ``layer_scale_{1,2}``, MB4D MLP
  ``mlp.{fc1,norm1,fc2,norm2}``, ``token_mixer.attention_biases`` (+ the derived
  ``attention_bias_idxs``), ``norm``, ``head``, ``dist_head``. The last stage's Sequential holds
  a parameter-free ``Flat`` before the first MB3D block, so block indices skip one there.
* ``official-dense`` — the same backbone inside the official MMDet 2 / MMSeg 0.x models:
  ``backbone.``-prefixed next to ``neck.*`` and the heads (kept as they are), output norms
  ``backbone.norm{0,2,4,6}`` (GroupNorm(1, C)), and the bias learned as ``attention_biases_seg``
  over a 25x25 (detection, 800) or 16x16 (segmentation, 512) offset grid; it becomes our offset
  table (at that grid with ``img_size=800`` / ``512``, as the dense configs set) and the unused
  zero ``attention_biases`` buffer is dropped (:func:`mmeff.checkpoint.rules.dense_bias_rules`).
* ``timm`` — timm's renaming of the official one: ``stem.{conv1,norm1,conv2,norm2}``,
  ``stages.i.downsample.{conv,norm}``, ``stages.i.blocks.j`` (with the same Flat gap),
  ``ls{1,2}.gamma``, ``head_dist``.
* ``mmpretrain`` — ``backbone.patch_embed.{0,1}.{conv,bn}``, ``backbone.network.i`` whose
  element 0 is the embedding ConvModule for i > 0, then the blocks (Flat gap too),
  ``ls{1,2}.weight`` (mmpretrain's LayerScale parameter), ``backbone.norm3`` (the classifier's
  LayerNorm; GroupNorms ``norm0..3`` in a dense model), ``head.head``, ``head.dist_head``.
* ``mmeff`` — canonical: ``backbone.*`` (or bare backbone keys) + ``head.{norm,head,head_dist}``;
  detector checkpoints also hold ``neck.*`` etc., which are not EfficientFormer weights.

Index buffers are never taken from files: the model rebuilds them.
"""
import re
from collections import OrderedDict
from typing import Dict, FrozenSet, List, Optional, Tuple

from mmeff.checkpoint.io import StateDict
from mmeff.checkpoint import LayoutConverter, register_converter, rename_key, rename_keys
from mmeff.checkpoint.rules import dense_bias_rules
from mmeff.models.backbones.efficientformer.arch import ARCH_SETTINGS
from mmeff.models.layers.attention_bias import relative_offset_index, table_size_of

_BN_BUFFERS = ('running_mean', 'running_var', 'num_batches_tracked')


def _weight_bias(*prefixes: str) -> List[str]:
    return [f'{p}.{leaf}' for p in prefixes for leaf in ('weight', 'bias')]


#: MB4D MLP of the official layout and its timm/mmpretrain copies: 1x1 convs + BNs
_PLAIN_MLP = _weight_bias('mlp.fc1', 'mlp.norm1', 'mlp.fc2', 'mlp.norm2')
#: parameter suffixes of the first MB4D block (stage 0, block 0) in each layout: the exact set
#: tells the layouts apart from each other and from other families (V2's blocks add ``mid``).
_MB4D_SIGNATURES: Dict[str, Tuple[str, FrozenSet[str]]] = {
    'official': ('network.0.0.', frozenset(['layer_scale_1', 'layer_scale_2'] + _PLAIN_MLP)),
    'mmpretrain': ('network.0.0.', frozenset(['ls1.weight', 'ls2.weight'] + _PLAIN_MLP)),
    'timm': ('stages.0.blocks.0.', frozenset(['ls1.gamma', 'ls2.gamma'] + _PLAIN_MLP)),
    'mmeff': ('stages.0.blocks.0.', frozenset(
        ['ls1.gamma', 'ls2.gamma']
        + _weight_bias('mlp.fc1.conv', 'mlp.fc1.bn', 'mlp.fc2.conv', 'mlp.fc2.bn'))),
}

_BLOCK_KEY = re.compile(r'^backbone\.stages\.(\d+)\.blocks\.(\d+)\.(.*)$')


def _signature(state_dict: StateDict, prefix: str) -> FrozenSet[str]:
    return frozenset(k[len(prefix):] for k in state_dict
                     if k.startswith(prefix) and not k.endswith(_BN_BUFFERS))


#: most keys an edited first block may miss or add to be reported as its layout's block
_NEAR = 2


def _first_block_mismatch(body: StateDict) -> str:
    """Why no layout's first-block signature matched: the keys missing / extra against the
    nearest layout when the first block differs from it by at most ``_NEAR`` keys (an edited
    file), else that this is no EfficientFormer (V2's first block, for one, differs by 5)."""
    best = None
    for layout, (prefix, signature) in _MB4D_SIGNATURES.items():
        found = _signature(body, prefix)
        if len(signature ^ found) <= _NEAR:
            diff = (len(signature - found) + len(found - signature), layout, prefix,
                    sorted(signature - found), sorted(found - signature))
            best = min(best, diff) if best else diff
    if best is None:
        return ('not an EfficientFormer (V1) checkpoint: its first block has none of the known '
                f'key sets ({sorted(_MB4D_SIGNATURES)})')
    _, layout, prefix, missing, extra = best
    return (f'the first EfficientFormer block ({prefix}*) is nearest the {layout!r} layout but '
            f'differs from it: missing {missing}, unexpected {extra}. The file was edited or '
            'saved from a modified model; restore the keys, or convert an unmodified checkpoint '
            'with tools/convert_checkpoint.py')


def _without_backbone_prefix(state_dict: StateDict) -> Tuple[StateDict, bool]:
    """Strip 'backbone.' when the network's keys sit under it (classifier/detector files)."""
    if any(k.startswith('backbone.') for k in state_dict):
        return OrderedDict((k[len('backbone.'):], v) for k, v in state_dict.items()
                           if k.startswith('backbone.')), True
    return state_dict, False


# -------------------------------------------------------------- stage / block index bookkeeping
def _block_indices(canonical: StateDict) -> Dict[int, List[int]]:
    """stage -> sorted block indices present in the (canonically prefixed) state dict."""
    found: Dict[int, set] = {}
    for key in canonical:
        m = _BLOCK_KEY.match(key)
        if m:
            found.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return {s: sorted(v) for s, v in found.items()}


def _close_flat_gap(state_dict: StateDict) -> StateDict:
    """Renumber the blocks of each stage 0..n-1 (the official Sequential has a ``Flat`` module
    without parameters before the first MB3D block, so the indices skip one there)."""
    dense = {s: {old: new for new, old in enumerate(idx)}
             for s, idx in _block_indices(state_dict).items()}
    out = OrderedDict()
    for key, value in state_dict.items():
        m = _BLOCK_KEY.match(key)
        if m:
            s, j = int(m.group(1)), int(m.group(2))
            key = f'backbone.stages.{s}.blocks.{dense[s][j]}.{m.group(3)}'
        out[key] = value
    return out


def _mb3d_blocks(canonical: StateDict) -> Dict[int, List[int]]:
    """stage -> sorted indices of its MB3D blocks (those with a qkv projection)."""
    out: Dict[int, List[int]] = {}
    for key in canonical:
        m = _BLOCK_KEY.match(key)
        if m and m.group(3) == 'token_mixer.qkv.weight':
            out.setdefault(int(m.group(1)), []).append(int(m.group(2)))
    return {s: sorted(v) for s, v in out.items()}


def _conv_mlp_to_convbn(state_dict: StateDict) -> StateDict:
    """MB4D MLP ``mlp.{fc1,norm1,fc2,norm2}`` -> ``mlp.{fc1,fc2}.{conv,bn}``; MB3D blocks (with
    a qkv projection) keep their Linear ``mlp.fc1/fc2``."""
    mb3d = {(s, j) for s, idx in _mb3d_blocks(state_dict).items() for j in idx}
    out = OrderedDict()
    for key, value in state_dict.items():
        m = _BLOCK_KEY.match(key)
        if m and (int(m.group(1)), int(m.group(2))) not in mb3d:
            rest = re.sub(r'^mlp\.fc([12])\.', r'mlp.fc\1.conv.', m.group(3))
            rest = re.sub(r'^mlp\.norm([12])\.', r'mlp.fc\1.bn.', rest)
            key = f'backbone.stages.{m.group(1)}.blocks.{m.group(2)}.{rest}'
        out[key] = value
    return out


# --------------------------------------------------------------------------------- converter
@register_converter
class EfficientFormerConverter(LayoutConverter):
    """Official / official-dense / timm / mmpretrain / mmeff EfficientFormer layouts."""

    family = 'EfficientFormer'
    writable_layouts = ('mmeff', 'timm')
    layout_keys = {
        'official': ('patch_embed.0.weight', 'network.0.0.mlp.fc1.weight',
                     'network.0.0.layer_scale_1'),
        'official-dense': ('backbone.patch_embed.0.weight', 'backbone.network.0.0.mlp.fc1.weight',
                           'backbone.norm0.weight'),
        'timm': ('stem.conv1.weight', 'stages.0.blocks.0.mlp.fc1.weight',
                 'stages.0.blocks.0.ls1.gamma'),
        'mmpretrain': ('backbone.patch_embed.0.conv.weight',
                       'backbone.network.0.0.mlp.fc1.weight', 'backbone.network.0.0.ls1.weight'),
        'mmeff': ('backbone.stem.conv1.conv.weight',
                  'backbone.stages.0.blocks.0.mlp.fc1.conv.weight',
                  'backbone.stages.0.blocks.0.ls1.gamma'),
    }

    def detect_layout(self, state_dict: StateDict) -> str:
        body, prefixed = _without_backbone_prefix(state_dict)
        for layout, (prefix, signature) in _MB4D_SIGNATURES.items():
            if _signature(body, prefix) == signature:
                if layout == 'official' and prefixed:
                    return 'official-dense'
                return layout
        raise ValueError(_first_block_mismatch(body))

    def to_canonical(self, state_dict: StateDict, layout: str) -> StateDict:
        body, _ = _without_backbone_prefix(state_dict)
        heads = OrderedDict((k, v) for k, v in state_dict.items()
                            if not k.startswith('backbone.'))
        if layout == 'official':
            sd = self._official_to_timm(state_dict)
        elif layout == 'official-dense':
            # a whole detector / segmentor: its neck and heads are kept as they are
            return self._timm_to_canonical(self._official_to_timm(body), keep=heads)
        elif layout == 'mmpretrain':
            sd = self._mmpretrain_to_timm(body, heads)
        elif layout == 'timm':
            sd = state_dict
        elif layout == 'mmeff':
            if any(k.startswith('backbone.') for k in state_dict):
                return OrderedDict(state_dict)
            return OrderedDict(('backbone.' + k, v) for k, v in state_dict.items())
        else:
            raise ValueError(f'unknown EfficientFormer layout {layout!r}')
        return self._timm_to_canonical(sd)

    # ---- to the timm layout, the pivot (its block indices still have the Flat gap)
    @staticmethod
    def _official_to_timm(sd: StateDict) -> StateDict:
        rules = dense_bias_rules(sd) + [
            (r'^patch_embed\.0\.', 'stem.conv1.'), (r'^patch_embed\.1\.', 'stem.norm1.'),
            (r'^patch_embed\.3\.', 'stem.conv2.'), (r'^patch_embed\.4\.', 'stem.norm2.'),
            (r'^network\.(\d+)\.(\d+)\.',
             lambda m: f'stages.{int(m.group(1)) // 2}.blocks.{m.group(2)}.'),
            (r'^network\.(\d+)\.proj\.',
             lambda m: f'stages.{(int(m.group(1)) + 1) // 2}.downsample.conv.'),
            (r'^network\.(\d+)\.norm\.',
             lambda m: f'stages.{(int(m.group(1)) + 1) // 2}.downsample.norm.'),
            (r'layer_scale_([12])$', r'ls\1.gamma'),
            (r'^norm([0246])\.', lambda m: f'out_norm{int(m.group(1)) // 2}.'),
            (r'^dist_head\.', 'head_dist.'),
        ]
        return rename_keys(sd, rules)

    @staticmethod
    def _mmpretrain_to_timm(body: StateDict, heads: StateDict) -> StateDict:
        dense = any(re.match(r'^norm[012]\.', k) for k in body)
        rules = [
            (r'attention_bias_idxs$', None),
            (r'^patch_embed\.0\.conv\.', 'stem.conv1.'), (r'^patch_embed\.0\.bn\.', 'stem.norm1.'),
            (r'^patch_embed\.1\.conv\.', 'stem.conv2.'), (r'^patch_embed\.1\.bn\.', 'stem.norm2.'),
            (r'^network\.([1-9]\d*)\.0\.conv\.', r'stages.\1.downsample.conv.'),
            (r'^network\.([1-9]\d*)\.0\.bn\.', r'stages.\1.downsample.norm.'),
            (r'^network\.0\.(\d+)\.', r'stages.0.blocks.\1.'),
            (r'^network\.(\d+)\.(\d+)\.', lambda m: f'stages.{m.group(1)}.blocks.'
                                                    f'{int(m.group(2)) - 1}.'),
            (r'ls([12])\.weight$', r'ls\1.gamma'),
            (r'^norm(\d)\.', r'out_norm\1.') if dense else (r'^norm3\.', 'norm.'),
        ]
        sd = rename_keys(body, rules)
        sd.update(rename_keys(heads, [(r'^head\.head\.', 'head.'),
                                       (r'^head\.dist_head\.', 'head_dist.')]))
        return sd

    @staticmethod
    def _timm_to_canonical(sd: StateDict, keep: Optional[StateDict] = None) -> StateDict:
        """timm's names -> canonical ones; ``keep``: keys outside the network (a detector's
        neck and heads) appended unchanged."""
        rules = [
            (r'attention_bias_idxs$', None),
            (r'^stem\.conv([12])\.', r'stem.conv\1.conv.'),
            (r'^stem\.norm([12])\.', r'stem.conv\1.bn.'),
            (r'\.downsample\.norm\.', '.downsample.bn.'),
            (r'token_mixer\.attention_biases$', 'token_mixer.attention_bias.table'),
            (r'^head\.', 'head.head.'),  # before norm -> head.norm
            (r'^head_dist\.', 'head.head_dist.'),
            (r'^norm\.', 'head.norm.'),
            (r'^(stem|stages|out_norm)', r'backbone.\1'),
        ]
        sd = rename_keys(sd, rules)
        sd = OrderedDict((k, v) for k, v in sd.items() if k.startswith(('backbone.', 'head.')))
        sd = _conv_mlp_to_convbn(_close_flat_gap(sd))
        sd.update(keep or {})
        return sd

    # ---- canonical -> timm (for tools/convert_checkpoint.py --to timm)
    _TIMM_OUTER_RULES = [
        (r'^backbone\.out_norm\d\.', None),  # dense-only, timm has no place for them
        (r'^backbone\.stem\.conv([12])\.conv\.', r'stem.conv\1.'),
        (r'^backbone\.stem\.conv([12])\.bn\.', r'stem.norm\1.'),
        (r'\.downsample\.bn\.', '.downsample.norm.'),
        (r'^backbone\.', ''),
        (r'^head\.norm\.', 'norm.'), (r'^head\.head_dist\.', 'head_dist.'),
        (r'^head\.head\.', 'head.'),
    ]

    def from_canonical(self, canonical: StateDict, layout: str) -> StateDict:
        if layout != 'timm':
            return super().from_canonical(canonical, layout)
        # imported here: mmeff.models imports this module (the family registers its converter)
        mb3d = _mb3d_blocks(canonical)
        if any(s != 3 for s in mb3d):
            raise ValueError("timm's EfficientFormer only has MB3D blocks in the last stage; "
                             f'this checkpoint has them in stages {sorted(mb3d)}')
        first_3d = mb3d[3][0] if 3 in mb3d else None
        out = OrderedDict()
        for key, value in canonical.items():
            m = _BLOCK_KEY.match(key)
            if not m:
                key = rename_key(key, self._TIMM_OUTER_RULES)
                if key is not None:
                    out[key] = value
                continue
            s, j, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            is_3d = first_3d is not None and s == 3 and j >= first_3d
            if is_3d:
                j += 1  # timm's parameter-free Flat sits before the first MB3D block
            else:
                rest = rename_key(rest, [(r'^mlp\.fc([12])\.conv\.', r'mlp.fc\1.'),
                                         (r'^mlp\.fc([12])\.bn\.', r'mlp.norm\1.')])
            if rest == 'token_mixer.attention_bias.table':
                hw = table_size_of(value.shape[1])
                if hw != (7, 7):
                    raise ValueError('timm\'s EfficientFormer has a 7x7 bias table; this '
                                     f'checkpoint\'s has {value.shape[1]} entries')
                out[f'stages.{s}.blocks.{j}.token_mixer.attention_biases'] = value
                out[f'stages.{s}.blocks.{j}.token_mixer.attention_bias_idxs'] = \
                    relative_offset_index(hw, hw)
                continue
            out[f'stages.{s}.blocks.{j}.{rest}'] = value
        return out

    def guess_arch(self, canonical: StateDict) -> Optional[str]:
        try:
            widths = [canonical['backbone.stem.conv2.conv.weight'].shape[0]] + [
                canonical[f'backbone.stages.{i}.downsample.conv.weight'].shape[0]
                for i in (1, 2, 3)]
        except KeyError:
            return None
        blocks = _block_indices(canonical)
        depths = [len(blocks.get(i, ())) for i in range(4)]
        num_vit = sum(len(v) for v in _mb3d_blocks(canonical).values())
        for name, arch in ARCH_SETTINGS.items():
            if arch['widths'] == widths and arch['depths'] == depths and \
                    arch['num_vit'] == num_vit:
                return name
        return None
