"""EfficientFormerV2's slimmable supernet (the V2 paper §2.2, Alg. 1) and subnet extraction.

The supernet *is* an :class:`mmeff.EfficientFormerV2` of the largest arch whose layers are made
switchable (:mod:`mmeff.search.slimmable`); the blocks and their ``forward`` are the standalone
ones. A subnet (an arch dict of the standalone backbone, :class:`V2SearchSpace`) is activated
with :meth:`EfficientFormerV2Supernet.set_subnet`:

- **elastic depth**: stage j runs its first ``depths[j]`` blocks (the last ones are removed);
  the backbone's stochastic depth (``drop_path_rate``) is active during supernet training too;
- **width** ``C_j``: every layer of stage j uses the first ``C_j`` channels of its weights
  (stem, stage-entry convs and attention downsampling slice their input and output channels);
- **expansion** ``E_ij``: the FFN's hidden layer uses its first ``int(C_j * E_ij)`` channels;
- **attention**: the last ``num_attn`` blocks of the *active* depth of stages 3-4 run their MHSA,
  so the supernet builds the MHSA at every position that some subnet needs. The standalone
  model's attention has fixed inner widths whatever the stage width (key_dim 32, 8 heads,
  attn_ratio 4: Q/K 256 and V 1024 channels; attention downsampling key_dim 16: 128 / 512), so
  only the channels that touch the stage width are sliced: the inputs of Q/K/V, the strided
  depth-wise conv of stride attention and the output projection. Heads, key and value dims,
  talking heads and bias tables are shared whole, exactly as a standalone model of that width
  has them;
- **independent normalisation** (slimmable networks): each BatchNorm has one instance per width
  configuration it sees: ``(C_j,)`` for the stem (``C_1``), the MHSA and the output norms,
  ``(C_j, hidden)`` for the FFN, ``(C_{j-1}, C_j)`` for the stage entries and attention
  downsampling. The subnet trains and uses only its own.

:func:`extract_subnet` returns the arch and a state dict that ``mmeff.EfficientFormerV2(arch,
**supernet.standalone_kwargs())`` loads strictly and whose outputs equal the supernet's with
that subnet active (to fp32 rounding: the standalone model runs the backbones' training-speed
paths, the same function in another order of float operations).
"""
import itertools
import random
from typing import Dict, Iterator, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from mmeff.models.backbones.efficientformer_v2 import EfficientFormerV2
from mmeff.models.backbones.efficientformer_v2.blocks import EfficientFormerV2Block
from mmeff.models.heads.efficientformer_v2_head import EfficientFormerV2ClsHead
from mmeff.registry import MODELS
from mmeff.search.slimmable import (SlimConvBN, SwitchableBatchNorm2d, make_slimmable,
                                    norm_key)
from mmeff.search.v2_space import V2SearchSpace


class ElasticV2Block(EfficientFormerV2Block):
    """A V2 block whose MHSA (when it has one) runs only when the active subnet puts an
    attention block at its position (``attn_active``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.attn_active = self.token_mixer is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attn_active:
            x = x + self.drop_path1(self.ls1(self.token_mixer(x)))
        return x + self.drop_path2(self.ls2(self.mlp(x)))


NormPlan = Iterator[Tuple[SwitchableBatchNorm2d, str, int]]


@MODELS.register_module()
class EfficientFormerV2Supernet(EfficientFormerV2):
    """Slimmable EfficientFormerV2 supernet (a backbone: ``type='mmeff.EfficientFormerV2Supernet'``).

    Args:
        arch: the largest subnet: a variant name ('s0', ...) or an arch dict.
        width_choices: per stage, the widths a subnet may take (the largest is the arch's).
        ratio_choices: the FFN expansion ratios (every block of the max arch must use one).
        min_depths: per stage, the fewest blocks (default: the arch's depths, no elastic depth).
        num_attn_choices: the ``num_attn`` values (default: only the arch's).
        **kwargs: :class:`mmeff.EfficientFormerV2` arguments (``out_indices``,
            ``with_out_norms``, ``img_size``, ``drop_path_rate``, ``layer_scale_init``, ...).

    ``search_space`` holds the choices, ``max_arch`` / ``min_arch`` the extremes,
    ``active_arch`` the subnet in use (the max arch after construction). ``out_channels`` are
    those of the max arch; a subnet's maps have its own widths.
    """

    block_cls = ElasticV2Block

    def __init__(self, arch: Union[str, dict], width_choices: Sequence[Sequence[int]],
                 ratio_choices: Sequence[float] = (2, 3, 4),
                 min_depths: Optional[Sequence[int]] = None,
                 num_attn_choices: Optional[Sequence[int]] = None, **kwargs):
        max_arch = self.resolve_arch(arch)[1]
        # set before the backbone builds its blocks: holds_attention reads it
        self.search_space = V2SearchSpace.create(max_arch, width_choices, ratio_choices,
                                                 min_depths, num_attn_choices)
        super().__init__(arch=max_arch, **kwargs)
        self._standalone_kwargs = dict(
            in_channels=self.in_channels, out_indices=self.out_indices,
            with_out_norms=self.with_out_norms, img_size=self.img_size,
            layer_scale_init=kwargs.get('layer_scale_init', 1e-5))
        make_slimmable(self.stem)
        make_slimmable(self.stages)
        for i in self.out_indices:
            if self.with_out_norms:
                setattr(self, f'out_norm{i}', SwitchableBatchNorm2d())
        self._create_norms()
        self._freeze_stages()  # again: the switchable norms are new modules
        self.set_max()

    # ------------------------------------------------------------------------- the space
    @property
    def max_arch(self) -> dict:
        return self.search_space.max_arch

    @property
    def min_arch(self) -> dict:
        return self.search_space.min_arch

    def holds_attention(self, stage: int, index: int) -> bool:
        """Every position where some subnet (depth, num_attn) has an attention block."""
        space = self.search_space
        return stage >= 2 and index >= space.min_depths[stage] - space.num_attn_choices[-1]

    def standalone_kwargs(self) -> dict:
        """The :class:`mmeff.EfficientFormerV2` arguments (besides ``arch``) of a standalone
        network equal to a subnet (``drop_path_rate`` is the caller's choice)."""
        return dict(self._standalone_kwargs)

    # --------------------------------------------------------------------- switching
    def set_subnet(self, arch: dict) -> dict:
        """Activate ``arch`` (ValueError naming the entry when it is outside the search space);
        returns it in normal form."""
        arch = self.search_space.validate(arch)
        for norm, key, _ in self._norm_plan(arch['widths'], arch['mlp_ratios']):
            norm.active = key
        for i, (stage, depth) in enumerate(zip(self.stages, arch['depths'])):
            for j, block in enumerate(stage.blocks):
                block.attn_active = i >= 2 and depth - arch['num_attn'] <= j < depth
        self.active_arch = arch
        return arch

    def set_max(self) -> dict:
        return self.set_subnet(self.max_arch)

    def set_min(self) -> dict:
        return self.set_subnet(self.min_arch)

    def sample_subnet(self, rng: random.Random) -> dict:
        """A random subnet (not activated): uniform over each choice."""
        return self.search_space.sample(rng)

    def stage_blocks(self, stage: int) -> Sequence[nn.Module]:
        return self.stages[stage].blocks[:self.active_arch['depths'][stage]]

    # ------------------------------------------------------------------ normalisation
    def _norm_plan(self, widths: Sequence[int], ratios: Sequence[Sequence[float]]) -> NormPlan:
        """(switchable norm, key, channels) of every norm a subnet with these widths and
        per-block ratios uses (for blocks beyond ``len(ratios[i])`` nothing)."""
        yield self.stem.conv1.bn, norm_key(widths[0]), widths[0] // 2
        yield self.stem.conv2.bn, norm_key(widths[0]), widths[0]
        for i, stage in enumerate(self.stages):
            w = widths[i]
            if i > 0:
                key = norm_key(widths[i - 1], w)
                yield stage.downsample.conv.bn, key, w
                if stage.downsample.attn is not None:
                    yield from _fixed_inner(stage.downsample.attn, key, w)
            for block, ratio in zip(stage.blocks, ratios[i]):
                hidden = int(w * ratio)
                key = norm_key(w, hidden)
                mlp = block.mlp
                yield from ((mlp.fc1.bn, key, hidden), (mlp.mid.bn, key, hidden),
                            (mlp.fc2.bn, key, w))
                if block.token_mixer is not None:
                    yield from _fixed_inner(block.token_mixer, norm_key(w), w)
            norm = getattr(self, f'out_norm{i}', None)
            if norm is not None:
                yield norm, norm_key(w), w

    def _create_norms(self) -> None:
        """One BatchNorm per key any subnet uses: each key depends on a stage's width (and
        the one before) and a block's ratio only, so widths x uniform ratios cover them all."""
        space = self.search_space
        for widths in itertools.product(*space.width_choices):
            for r in space.ratio_choices:
                ratios = [[r if r in space.block_ratio_choices(i, j) else space.ratio_choices[0]
                           for j in range(d)] for i, d in enumerate(space.max_depths)]
                for norm, key, channels in self._norm_plan(widths, ratios):
                    norm.ensure(key, channels)

    # ------------------------------------------------------------------------ weights
    def checkpoint_converter(self):
        """None: the supernet loads only its own state dicts (resume / load_from)."""
        return None


def _fixed_inner(attn: nn.Module, key: str, width: int) -> NormPlan:
    """Norms of an attention module: the output projection and a stride conv follow the stage
    width; Q/K/V and the value conv keep the standalone model's fixed widths."""
    for name, module in attn.named_modules():
        if isinstance(module, SlimConvBN):
            sliced = name in ('proj', 'stride_conv')
            yield module.bn, key, width if sliced else module.conv.out_channels


@MODELS.register_module()
class EfficientFormerV2SupernetHead(EfficientFormerV2ClsHead):
    """:class:`EfficientFormerV2ClsHead` over the supernet's last-stage widths: one BatchNorm
    per width choice (chosen by the input's channels) and the linear layers' first input
    columns.

    Args:
        width_choices: the widths of the supernet's last stage.
        num_classes, distillation: as :class:`EfficientFormerV2ClsHead`.
    """

    def __init__(self, width_choices: Sequence[int], num_classes: int = 1000,
                 distillation: bool = True):
        widths = sorted({int(w) for w in width_choices})
        super().__init__(widths[-1], num_classes, distillation)
        self.norm = SwitchableBatchNorm2d()
        for w in widths:
            self.norm.ensure(norm_key(w), w)

    def forward(self, x: torch.Tensor):
        c = x.shape[1]
        if norm_key(c) not in self.norm:
            raise ValueError(f'the head has no norm for {c} input channels (its widths: '
                             f'{list(self.norm.keys())}): give it the supernet\'s last-stage '
                             'width_choices')
        self.norm.active = norm_key(c)
        x = self.norm(x).mean(dim=(2, 3))
        cls = _sliced_linear(self.head, x)
        if self.head_dist is None:
            return cls
        dist = _sliced_linear(self.head_dist, x)
        return (cls, dist) if self.training else (cls + dist) / 2

    def fuse(self) -> nn.Module:
        raise NotImplementedError('a supernet head is not deployed: extract_subnet() and '
                                  'build the standalone EfficientFormerV2ClsHead')


def _sliced_linear(linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(linear, nn.Linear):
        return linear(x)
    weight = linear.weight
    if weight.shape[1] != x.shape[1]:
        weight = weight[:, :x.shape[1]]
    return F.linear(x, weight, linear.bias)


# ---------------------------------------------------------------------------- extraction
def _parts(model: nn.Module) -> Tuple[EfficientFormerV2Supernet, Optional[nn.Module]]:
    if isinstance(model, EfficientFormerV2Supernet):
        return model, None
    backbone = getattr(model, 'backbone', None)
    head = getattr(model, 'head', None)
    if not isinstance(backbone, EfficientFormerV2Supernet):
        raise TypeError('extract_subnet takes an EfficientFormerV2Supernet or a classifier '
                        f'whose backbone is one, got {type(model).__name__}')
    if not isinstance(head, EfficientFormerV2SupernetHead):
        raise TypeError('the classifier head must be an EfficientFormerV2SupernetHead, got '
                        f'{type(head).__name__}')
    return backbone, head


def _active_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """``model``'s state dict with each switchable norm's active BatchNorm under the norm's
    own name (``...bn.32_128.weight`` -> ``...bn.weight``) and its other ones left out."""
    active = {name: m.active for name, m in model.named_modules()
              if isinstance(m, SwitchableBatchNorm2d)}
    state = {}
    for key, tensor in model.state_dict().items():
        parts = key.split('.')
        for cut in range(1, len(parts)):
            owner = '.'.join(parts[:cut])
            if owner in active:
                if parts[cut] == active[owner]:
                    state['.'.join(parts[:cut] + parts[cut + 1:])] = tensor
                break
        else:
            state[key] = tensor
    return state


@torch.no_grad()
def extract_subnet(model: nn.Module, arch: dict) -> Tuple[dict, Dict[str, torch.Tensor]]:
    """The subnet ``arch`` of a supernet as a standalone network's weights.

    ``model`` is an :class:`EfficientFormerV2Supernet` (the state dict is then the backbone's:
    ``EfficientFormerV2(arch, **supernet.standalone_kwargs())`` loads it strictly) or a
    classifier with that backbone and an :class:`EfficientFormerV2SupernetHead` (keys
    ``backbone.*`` + ``head.*``, mmeff's canonical classifier layout: a
    :class:`MobileClassifierNet` of that backbone and an ``EfficientFormerV2ClsHead`` loads it).
    Every tensor is the leading slice of the shared weight and the subnet's own BatchNorm, so
    the standalone outputs equal the supernet's with ``arch`` active (to fp32 rounding).
    Leaves ``arch`` active.
    """
    supernet, head = _parts(model)
    arch = supernet.set_subnet(arch)
    with torch.device('meta'):
        target = EfficientFormerV2(arch, **supernet.standalone_kwargs()).state_dict()
        if head is not None:
            head.norm.active = norm_key(arch['widths'][-1])
            target = {f'backbone.{k}': v for k, v in target.items()}
            target.update((f'head.{k}', v) for k, v in EfficientFormerV2ClsHead(
                arch['widths'][-1], head.num_classes,
                head.head_dist is not None).state_dict().items())
    source = _active_state(model)
    out = {}
    for name, like in target.items():
        if name not in source:
            raise RuntimeError(f'the supernet has no tensor for {name!r}')
        tensor = source[name][tuple(slice(0, s) for s in like.shape)]
        if tensor.shape != like.shape:
            raise RuntimeError(f'{name}: the supernet holds {tuple(source[name].shape)}, the '
                               f'subnet needs {tuple(like.shape)}')
        out[name] = tensor.clone()
    return arch, out
