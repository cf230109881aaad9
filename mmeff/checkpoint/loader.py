"""Loading any supported checkpoint layout into an mmeff backbone or classifier.

Every family provides a :class:`LayoutConverter` that recognises the layouts it knows (official
release, timm, mmpretrain, mmeff) and renames them to mmeff's *canonical* layout: the state
dict of mmeff's classification model, i.e. ``backbone.*`` plus head keys. Loading then means:
read -> detect -> convert -> select the part the target model holds -> check shapes -> load ->
report. Derived buffers (index tables) are never taken from a file; they are rebuilt. The
key-rename rules converters are written in live in :mod:`mmeff.checkpoint.rules`.
"""
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

from mmengine.logging import print_log
from torch import nn

from mmeff.checkpoint.io import StateDict, read_state_dict, strip_prefix, unwrap_state_dict


class LayoutConverter:
    """Family-specific knowledge of checkpoint layouts. Subclasses fill in the three methods."""

    family: str = ''
    #: canonical key prefixes that belong to the classification heads, dropped for a backbone
    head_prefixes: Tuple[str, ...] = ('head.', 'head_dist.', 'dist_head.')

    def detect_layout(self, state_dict: StateDict) -> str:
        """Return the layout name ('official', 'timm', 'mmpretrain', 'mmeff', ...).

        Must raise ValueError for a state dict that is not of this family."""
        raise NotImplementedError

    def to_canonical(self, state_dict: StateDict, layout: str) -> StateDict:
        """Rename keys of ``layout`` to mmeff's classifier layout (``backbone.*`` + heads)."""
        raise NotImplementedError

    def guess_arch(self, canonical: StateDict) -> Optional[str]:
        """Name of the arch this canonical state dict belongs to, if it can tell."""
        return None

    #: layouts :meth:`from_canonical` can write (tools/convert_checkpoint.py --to)
    writable_layouts: Tuple[str, ...] = ('mmeff',)
    #: per layout, keys every checkpoint of it holds (stem and first block; a ``backbone.``
    #: prefix is ignored when comparing): what an unknown file is measured against, so the
    #: error can name the closest layout and the keys it lacks
    layout_keys: Dict[str, Tuple[str, ...]] = {}

    def from_canonical(self, canonical: StateDict, layout: str) -> StateDict:
        """Rename canonical keys to ``layout`` (one of ``writable_layouts``)."""
        if layout == 'mmeff':
            return canonical
        raise ValueError(f'{self.family} checkpoints cannot be written in the {layout!r} layout; '
                         f'writable layouts: {list(self.writable_layouts)}')

    def convert(self, state_dict: StateDict) -> Tuple[StateDict, str]:
        try:
            layout = self.detect_layout(state_dict)
        except ValueError as err:
            raise ValueError(f'{err}. {unknown_layout_message(state_dict, [self])}') from err
        return self.to_canonical(state_dict, layout), layout


#: family name -> converter instance; filled by ``register_converter``
CONVERTERS: Dict[str, LayoutConverter] = {}


def register_converter(cls):
    """Class decorator: make a family's converter available to auto-detection and tools."""
    CONVERTERS[cls.family] = cls()
    return cls


def detect_family(state_dict: StateDict) -> Tuple[str, str]:
    """(family, layout) of a state dict, trying every registered converter."""
    if not CONVERTERS:
        raise RuntimeError('no checkpoint converter is registered: import mmeff (or '
                           'mmeff.models) first, which registers every family\'s converter')
    found = []
    for family, conv in CONVERTERS.items():
        try:
            found.append((family, conv.detect_layout(state_dict)))
        except ValueError:
            continue
    if not found:
        raise ValueError('cannot tell which model this checkpoint belongs to: '
                         + unknown_layout_message(state_dict, CONVERTERS.values()))
    if len(found) > 1:
        raise ValueError(f'cannot tell which model this checkpoint belongs to (ambiguous layouts '
                         f'{found}); known families: {sorted(CONVERTERS)}. Pass the family '
                         'explicitly.')
    return found[0]


def _bare(key: str) -> str:
    """A key without the wrappers' prefixes, to compare layouts by what follows them."""
    for prefix in ('module.', 'backbone.'):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def unknown_layout_message(state_dict: StateDict,
                           converters: Iterable[LayoutConverter]) -> str:
    """Name the layouts tried, the closest one (most of its :attr:`layout_keys` present) and
    the first keys in which the file differs from it: what a user needs to see what the file
    is (a wrong family, a half-renamed file, another wrapper prefix)."""
    present = {_bare(k) for k in state_dict}
    tried, best = [], None
    for conv in converters:
        for layout, keys in conv.layout_keys.items():
            tried.append(f'{conv.family}/{layout}')
            wanted = [_bare(k) for k in keys]
            lacking = [k for k in wanted if k not in present]
            if best is None or len(wanted) - len(lacking) > best[0]:
                best = (len(wanted) - len(lacking), len(wanted), conv.family, layout, lacking)
    first = list(state_dict)[:4]
    if best is None:
        return f'no layout to compare with; the file\'s first keys: {first}'
    hits, total, family, layout, lacking = best
    return (f'layouts tried: {", ".join(tried)}. Closest: {family}/{layout} ({hits} of its '
            f'{total} characteristic keys present); it would have {lacking[:3]}, the file\'s '
            f'first keys are {first}. Convert the file to one of these layouts (a '
            "'backbone.' or 'module.' prefix is fine), or check it is a checkpoint of this "
            'model family')


@dataclass
class LoadReport:
    """What happened when a checkpoint was loaded; also logged."""
    layout: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)
    resized: List[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f'loaded {len(self.loaded)} tensors from a {self.layout!r}-layout checkpoint']
        if self.resized:
            lines.append(f'resized attention-bias tables: {self.resized}')
        if self.dropped:
            heads = sorted({_group(k) for k in self.dropped})
            lines.append(f'dropped {len(self.dropped)} tensors not used here ({heads})')
        if self.missing:
            lines.append(f'missing in checkpoint (left at init): {self.missing}')
        if self.unexpected:
            lines.append(f'unexpected in checkpoint (ignored): {self.unexpected}')
        return '; '.join(lines)


def _group(key: str) -> str:
    """A dropped key's group for the log: 'head', 'backbone.out_norm3', 'backbone.stages.3'."""
    parts = key.split('.')
    depth = 1 if parts[0] != 'backbone' else 3 if parts[1:2] == ['stages'] else 2
    return '.'.join(parts[:depth])


class ArchMismatchError(ValueError):
    """The checkpoint belongs to another architecture than the model."""


def _resizable_from(model: nn.Module) -> Dict[str, Callable]:
    """State-dict keys whose module accepts another shape on load, with the module's check.

    A module opts in by defining ``accepts_resized(name, shape) -> bool`` (mmeff's attention
    bias tables do: they resample a table learned on another grid). Duck typing keeps this
    package free of any model import (docs/design.md, "checkpoint").
    """
    found = {}
    for module_name, module in model.named_modules():
        check = getattr(module, 'accepts_resized', None)
        if not callable(check):
            continue
        for param_name, _ in module.named_parameters(recurse=False):
            key = f'{module_name}.{param_name}' if module_name else param_name
            found[key] = (lambda shape, check=check, name=param_name: check(name, shape))
    return found


def load_pretrained(model: nn.Module, checkpoint: Union[str, StateDict],
                    converter: LayoutConverter, prefix: str = 'backbone.',
                    arch_name: Optional[str] = None,
                    allowed_missing: Iterable[str] = (),
                    not_built: Iterable[str] = ()) -> LoadReport:
    """Load a checkpoint of any supported layout into ``model``.

    Args:
        model: the module to fill.
        checkpoint: a file path, or an already-read state dict or checkpoint container
            (``{'state_dict': ..}``, ``{'model': ..}``).
        converter: the family's layout converter.
        prefix: the canonical prefix the model's own keys sit under: ``'backbone.'`` for a
            backbone (heads and anything else are dropped), ``''`` for a classifier.
        arch_name: the model's arch name, to name the mismatch when the checkpoint is another.
        allowed_missing: key prefixes the model is expected to lack in a checkpoint
            (e.g. dense-only output norms); they are reported as initialised fresh.
        not_built: key prefixes of parts the model leaves out by configuration (a backbone's
            stages after its last output); their tensors are reported as dropped, not loaded.
    Raises:
        ArchMismatchError: when tensor shapes show the checkpoint is another architecture.
    """
    state_dict, source = _read(checkpoint)
    canonical, layout = _convert(converter, state_dict, source)
    report = LoadReport(layout=layout)
    selected, report.dropped = _select(canonical, prefix)
    report.dropped += _drop_not_built(selected, tuple(not_built), prefix)
    own = model.state_dict()
    report.resized, mismatched = _check_shapes(model, own, selected)
    _refuse_other_arch(converter, canonical, mismatched, arch_name, source)
    result = model.load_state_dict(selected, strict=False)
    fresh = _fill_report(report, result, selected, own, allowed_missing)
    _log_report(report, source, fresh)
    return report


def convert_under_prefix(state_dict: Dict, prefix: str, model: nn.Module,
                         converter: LayoutConverter) -> Optional[str]:
    """Rename, in place, the keys of ``state_dict`` under ``prefix`` from any layout
    ``converter`` knows to ``model``'s own (``prefix`` + the canonical backbone keys).

    This is what lets ``load_from=FILE`` read an official dense checkpoint (MMDet 2 /
    MMSeg 0.x: ``backbone.`` + the official keys, next to the neck and heads): the backbone calls
    it from a load-state-dict pre-hook with its own prefix. Keys that already are the model's
    are left alone (resuming an mmeff checkpoint costs nothing). Bias tables of another grid
    than the model's are resampled on load, which loses what the checkpoint learned: that is
    warned about, naming the fix (the backbone's ``img_size``). Returns the layout converted, or
    None when nothing was foreign.

    Raises:
        ValueError: the keys under ``prefix`` are in no layout the converter knows; the message
            names the layouts tried and the closest one.
    """
    own = model.state_dict()
    keys = [k for k in state_dict if k.startswith(prefix)]
    if all(k[len(prefix):] in own for k in keys):
        return None
    part = OrderedDict((k[len(prefix):], state_dict.pop(k)) for k in keys)
    canonical, layout = converter.convert(part)
    selected, others = _select(canonical, 'backbone.')
    resized, _ = _check_shapes(model, own, selected)
    if resized:
        warnings.warn(
            f'{len(resized)} attention-bias tables of this {layout!r} checkpoint were learned on '
            f'another grid than the model\'s and are resampled, which changes them (e.g. '
            f'{resized[0]}). To keep them as trained, set the backbone\'s img_size to the '
            'checkpoint\'s training size (the official detection files: 800, segmentation: 512; '
            'the configs of configs/ do).', stacklevel=2)
    for key, value in selected.items():
        state_dict[prefix + key] = value
    for key in others:
        state_dict[prefix + key] = canonical[key]
    return layout


def _read(checkpoint: Union[str, StateDict]) -> Tuple[StateDict, str]:
    """The raw state dict of a file or container, and how to name its source in messages."""
    if isinstance(checkpoint, str):
        return read_state_dict(checkpoint), checkpoint
    return strip_prefix(unwrap_state_dict(checkpoint), 'module.'), 'state dict'


def _convert(converter: LayoutConverter, state_dict: StateDict,
             source: str) -> Tuple[StateDict, str]:
    """``converter.convert``, with a refusal that names the file and, when another registered
    family recognises the weights, that family."""
    try:
        return converter.convert(state_dict)
    except ValueError as err:
        others = []
        for family, other in CONVERTERS.items():
            if family == converter.family:
                continue
            try:
                others.append(f'{family} ({other.detect_layout(state_dict)!r} layout)')
            except ValueError:
                continue
        if others:
            raise ValueError(
                f'checkpoint {source!r} holds {" or ".join(others)} weights, not '
                f'{converter.family} ones: use a checkpoint of {converter.family}, or build the '
                f'model as {others[0].split(" ")[0]}') from err
        raise ValueError(f'checkpoint {source!r}: {err}') from err


def _select(canonical: StateDict, prefix: str) -> Tuple[StateDict, List[str]]:
    """The tensors under ``prefix`` (prefix removed), and the canonical keys left out."""
    if not prefix:
        return canonical, []
    selected = OrderedDict((k[len(prefix):], v) for k, v in canonical.items()
                           if k.startswith(prefix))
    return selected, [k for k in canonical if not k.startswith(prefix)]


def _drop_not_built(selected: StateDict, not_built: Tuple[str, ...], prefix: str) -> List[str]:
    """Remove the tensors under ``not_built`` from ``selected``; their canonical keys."""
    if not not_built:
        return []
    gone = [k for k in selected if k.startswith(not_built)]
    for key in gone:
        del selected[key]
    return [prefix + k for k in gone]


def _check_shapes(model: nn.Module, own: StateDict,
                  selected: StateDict) -> Tuple[List[str], List[str]]:
    """(resized, mismatched): tensors whose shape differs from the model's, split into those a
    module resizes on load and those that cannot be loaded."""
    resizable = _resizable_from(model)
    resized, mismatched = [], []
    for key, value in list(selected.items()):
        if key not in own:
            continue
        if own[key].shape == value.shape:
            continue
        if key in resizable and resizable[key](tuple(value.shape)):
            resized.append(f'{key}: {tuple(value.shape)} -> {tuple(own[key].shape)}')
            continue  # the module's _load_from_state_dict resizes it
        mismatched.append(f'{key}: checkpoint {tuple(value.shape)} vs model '
                          f'{tuple(own[key].shape)}')
    return resized, mismatched


def _refuse_other_arch(converter: LayoutConverter, canonical: StateDict, mismatched: List[str],
                       arch_name: Optional[str], source: str) -> None:
    """Raise :class:`ArchMismatchError` when shapes or the guessed arch show another model."""
    guessed = converter.guess_arch(canonical)
    if not mismatched and not (guessed and arch_name and guessed != arch_name):
        return
    family = converter.family
    detail = '; '.join(mismatched[:5]) + (' ...' if len(mismatched) > 5 else '')
    if guessed and guessed == arch_name:  # the right arch, yet some tensors differ
        raise ArchMismatchError(
            f'checkpoint {source!r} has the layers of {family}-{arch_name}, like the model, but '
            f'{len(mismatched)} tensor(s) have other shapes ({detail}): the file was edited or '
            'saved from a modified model. Use an unmodified checkpoint, or build the model '
            'with the arch dict the checkpoint was trained with.')
    looks = f'{family}-{guessed}' if guessed else f'another {family} architecture'
    wanted = f'{family}-{arch_name}' if arch_name else 'this model'
    raise ArchMismatchError(
        f'checkpoint {source!r} looks like {looks}, but the model is {wanted}'
        + (f' (shape mismatches: {detail})' if detail else '')
        + '. Use the checkpoint of the same arch, or set arch to match the checkpoint.')


def _fill_report(report: LoadReport, result, selected: StateDict, own: StateDict,
                 allowed_missing: Iterable[str]) -> List[str]:
    """Record what ``load_state_dict`` loaded, missed and ignored; returns the missing keys
    under ``allowed_missing`` (initialised fresh), which are not counted as missing."""
    allowed = tuple(allowed_missing)
    missing = [k for k in result.missing_keys if not _is_derived(k)]
    fresh = [k for k in missing if allowed and k.startswith(allowed)]
    report.missing = [k for k in missing if k not in fresh]
    report.unexpected = list(result.unexpected_keys)
    report.loaded = [k for k in selected if k in own]
    return fresh


def _log_report(report: LoadReport, source: str, fresh: List[str]) -> None:
    """One log line: a warning when anything is missing or unexpected, info otherwise."""
    msg = f'[mmeff] {source}: {report.summary()}'
    if fresh:
        msg += f'; initialised fresh (dense-only): {sorted({k.rsplit(".", 2)[0] for k in fresh})}'
    print_log(msg, logger='current', level=30 if (report.missing or report.unexpected) else 20)


def _is_derived(key: str) -> bool:
    """Buffers rebuilt by the model, never expected from a file."""
    return key.endswith(('num_batches_tracked', 'attention_bias_idxs'))
