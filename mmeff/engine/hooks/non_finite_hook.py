"""Stop a training run at the first non-finite input or loss, before it poisons the model.

One NaN/Inf image (a corrupt file, a bad augmentation) or one overflowing step is enough to
turn every BatchNorm running statistic, then every weight, into NaN; the run then goes on for
hours and saves NaN checkpoints. This hook **stops the run** (the one behaviour chosen: skipping
steps would hide a broken sample or a diverging recipe) by raising :class:`NonFiniteError`,
which names the iteration and the files of the offending samples:

* inputs are checked after the data preprocessor, just before the model's forward: nothing in
  the model has seen them yet;
* the losses and the BatchNorm running statistics are checked right after the forward, before
  the backward and the optimizer step (a finite but huge input can overflow a BatchNorm's
  variance to Inf while the loss stays finite); when either is NaN/Inf, the statistics that
  forward updated are put back to their values before the step (a copy of the norm buffers, a
  few KiB to MiB, is kept for the current step only), so the model in memory is the model of
  the last good step.

``tools/train.py`` adds the hook to every training run; a config opts out with
``non_finite_check = False`` (or tunes it by listing ``dict(type='mmeff.NonFiniteCheckHook',
check_inputs=..., check_loss=...)`` in ``custom_hooks`` itself).
"""
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from mmeff.registry import HOOKS


class NonFiniteError(FloatingPointError):
    """A training input or loss is NaN/Inf."""


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Floating-point tensors in nested lists / tuples / dicts (data samples are skipped)."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point():
            yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _all_finite(tensors: List[torch.Tensor]) -> bool:
    """Whether every tensor is free of NaN/Inf, with one device sync for all of them (a sync
    per tensor would stall a GPU step once per norm layer)."""
    if not tensors:
        return True
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def _bad_rows(tensor: torch.Tensor) -> List[int]:
    """Batch indices (first dim) of a tensor that hold NaN/Inf."""
    if tensor.dim() == 0:
        return [] if bool(torch.isfinite(tensor)) else [0]
    finite = torch.isfinite(tensor.reshape(tensor.shape[0], -1)).all(dim=1)
    return (~finite).nonzero().flatten().tolist()


def _sample_files(data_batch: Any) -> List[Optional[str]]:
    """The file of each sample of a batch, None where the sample names none: MMDet / MMSeg /
    mmeff data samples carry ``img_path`` in their metainfo; plain dict batches may carry an
    ``img_path`` / ``filename`` list."""
    if not isinstance(data_batch, dict):
        return []
    samples = data_batch.get('data_samples')
    if isinstance(samples, (list, tuple)):
        metas = [getattr(s, 'metainfo', s if isinstance(s, dict) else {}) for s in samples]
        return [m.get('img_path') or m.get('filename') for m in metas]
    for key in ('img_path', 'filename'):
        if isinstance(data_batch.get(key), (list, tuple)):
            return list(data_batch[key])
    return []


@HOOKS.register_module()
class NonFiniteCheckHook(Hook):
    """Raise :class:`NonFiniteError` at the first NaN/Inf model input or loss in training.

    Args:
        check_inputs: check every floating-point tensor the model's forward receives.
        check_loss: check every loss the forward returns (and restore BatchNorm statistics).
    """

    priority = 'VERY_HIGH'

    def __init__(self, check_inputs: bool = True, check_loss: bool = True) -> None:
        self.check_inputs = check_inputs
        self.check_loss = check_loss
        self._runner = None
        self._batch: Any = None
        self._norm_state: Optional[List[Tuple[nn.Module, List[torch.Tensor]]]] = None
        self._handles: list = []
        self._norms: List[Tuple[str, nn.Module]] = []

    # ------------------------------------------------------------------------ hook points
    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self._runner = runner
        self._norms = [(name, m) for name, m in model.named_modules()
                       if isinstance(m, _NormBase) and m.track_running_stats]
        if self.check_inputs:
            self._handles.append(model.register_forward_pre_hook(self._inputs_hook,
                                                                 with_kwargs=True))
        if self.check_loss:
            self._handles.append(model.register_forward_hook(self._loss_hook, with_kwargs=True))

    def before_train_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        self._batch = data_batch
        if self.check_loss:
            self._norm_state = [(m, [b.detach().clone() for b in self._norm_buffers(m)])
                                for _, m in self._norms]

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        self._batch = None  # nothing outlives the step
        self._norm_state = None

    def after_train(self, runner) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # ------------------------------------------------------------------------------ checks
    def _inputs_hook(self, module: nn.Module, args: Sequence, kwargs: dict) -> None:
        if self._batch is None or not module.training:
            return  # not inside a training step (validation runs between epochs)
        tensors = list(_tensors([args, kwargs]))
        if _all_finite(tensors):
            return
        rows = sorted({r for t in tensors for r in _bad_rows(t)})
        if rows:
            self._stop(f'non-finite (NaN/Inf) model input in batch samples {rows}',
                       self._files(rows), 'fix or drop the sample (a corrupt file, or an '
                       'augmentation that divides by zero)')

    def _loss_hook(self, module: nn.Module, args: Sequence, kwargs: dict, output: Any) -> None:
        if self._batch is None or not module.training or not isinstance(output, dict):
            return
        losses = [t for name, value in output.items() if 'loss' in name for t in _tensors(value)]
        stats = [b for _, m in self._norms for b in self._norm_buffers(m)]
        if _all_finite(losses + stats):
            return
        bad = [name for name, value in output.items()
               if 'loss' in name and not _all_finite(list(_tensors(value)))]
        norms = [name for name, m in self._norms if not _all_finite(self._norm_buffers(m))]
        if bad or norms:
            self._restore_norms()
            what = (f'non-finite (NaN/Inf) loss {bad}' if bad else
                    f'non-finite (NaN/Inf) running statistics in norm layers {norms[:5]} (an '
                    'activation overflowed)')
            self._stop(what, self._files(None),
                       'lower the learning rate, enable gradient clipping '
                       '(optim_wrapper.clip_grad), or resume from an earlier checkpoint; '
                       'the weights and BatchNorm statistics are those before this step')

    # ----------------------------------------------------------------------------- helpers
    @staticmethod
    def _norm_buffers(module: nn.Module) -> List[torch.Tensor]:
        return [b for b in (module.running_mean, module.running_var,
                            module.num_batches_tracked) if b is not None]

    def _restore_norms(self) -> None:
        for module, saved in self._norm_state or []:
            with torch.no_grad():
                for buffer, value in zip(self._norm_buffers(module), saved):
                    buffer.copy_(value)

    def _files(self, rows: Optional[List[int]]) -> str:
        files = _sample_files(self._batch)
        if rows is not None:
            files = [files[r] if r < len(files) else None for r in rows]
        named = [f for f in files if f]
        return ', '.join(named) if named else 'no file names recorded in the data samples'

    def _stop(self, what: str, files: str, fix: str) -> None:
        runner = self._runner
        where = f'iteration {runner.iter + 1} (epoch {runner.epoch + 1})' if runner else 'training'
        # the run ends here and mmengine calls no after_* hook on an exception: leave the model
        # without the forward hooks and this step's references
        self.after_train_iter(runner, -1)
        self.after_train(runner)
        raise NonFiniteError(f'{what} at {where}; files: {files}. Stopped before the optimizer '
                             f'step, so the last checkpoint is intact: {fix}.')
