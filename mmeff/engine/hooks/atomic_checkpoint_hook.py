"""A CheckpointHook that can be interrupted at any moment without losing the latest checkpoint.

mmengine 0.10.7's ``CheckpointHook`` (a) writes ``epoch_N.pth`` in place, (b) deletes the oldest
checkpoint kept under ``max_keep_ckpts`` *before* writing the new one, and (c) rewrites
``work_dir/last_checkpoint`` in place. A crash, kill or full disk during a save can therefore
leave a truncated ``epoch_N.pth`` that ``last_checkpoint`` points at (when a resumed run rewrites
an existing file), or no valid checkpoint at all (``max_keep_ckpts=1``), and ``--resume`` then
fails. This hook keeps every step safe to interrupt:

1. the checkpoint is written to ``<name>.tmp``, fsynced and renamed over ``<name>``;
2. only then is ``last_checkpoint`` replaced, again atomically;
3. only then is the checkpoint that fell out of ``max_keep_ckpts`` deleted.

Each local checkpoint also gets a digest record, ``<name>.sha256`` (``sha256sum`` format), written
atomically between steps 1's write and its rename, so a checkpoint is never in place without the
record of its bytes; ``tools/train.py --resume`` and every mmeff loader verify it
(``mmeff.checkpoint.integrity``). A model whose weights went NaN/Inf is not saved at all: the hook
raises instead of writing a checkpoint that would poison a resumed run.

Best checkpoints (``save_best``) are written the same way. Remote ``out_dir`` backends (``s3://``
etc.) keep mmengine's behaviour: an object store's ``put`` is already all-or-nothing.
``tools/train.py`` substitutes this hook for a config's ``type='CheckpointHook'`` automatically
(name ``'mmengine.CheckpointHook'`` to opt out).
"""
import contextlib
import glob
import os.path as osp
from typing import Iterator, Optional

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook

from mmeff.checkpoint.integrity import (RECORD_SUFFIX, non_finite_tensors, record_path,
                                        record_text)
from mmeff.registry import HOOKS
from mmeff.engine.atomic_io import atomic_target, remove_path, write_text_atomic


class NonFiniteWeightsError(FloatingPointError):
    """The model to be saved holds NaN/Inf weights."""


def _refuse_non_finite_model(runner) -> None:
    """Raise rather than save a diverged model (the checkpoint would resume into NaN)."""
    bad = non_finite_tensors(runner.model.state_dict())
    if bad:
        raise NonFiniteWeightsError(
            f'not saving a checkpoint after iteration {runner.iter}: {len(bad)} weight tensors are '
            f'NaN/Inf (first: {bad[0]}); training diverged. Resume from the last checkpoint '
            'with a lower learning rate or gradient clipping (optim_wrapper.clip_grad)')


def _remove_orphan_records(out_dir: str) -> None:
    """Delete digest records whose checkpoint is gone (mmengine removes old best files)."""
    for record in glob.glob(osp.join(glob.escape(out_dir), '*' + RECORD_SUFFIX)):
        if not osp.exists(record[:-len(RECORD_SUFFIX)]):
            remove_path(record)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` with atomic checkpoint / ``last_checkpoint`` replacement.

    Takes exactly ``CheckpointHook``'s arguments.
    """

    def _out_dir_is_local(self) -> bool:
        return '://' not in str(self.out_dir)

    @contextlib.contextmanager
    def _atomic_saves(self, runner) -> Iterator[None]:
        """Within the block, ``runner.save_checkpoint`` writes via a temp file + rename."""
        if not self._out_dir_is_local() or getattr(self, '_wrapping_saves', False):
            yield  # remote backend, or already inside the block (best -> latest save)
            return
        instance_attrs = vars(runner)
        previous = instance_attrs.get('save_checkpoint')
        original = runner.save_checkpoint

        def save_checkpoint(out_dir, filename, *args, **kwargs):
            if not is_main_process():  # Runner.save_checkpoint is master-only anyway
                return original(out_dir, filename, *args, **kwargs)
            final = osp.join(out_dir, filename)
            with atomic_target(final) as tmp_path:
                original(out_dir, osp.basename(tmp_path), *args, **kwargs)
                if osp.isfile(tmp_path):  # the record names the final file, not the temp one
                    write_text_atomic(record_path(final),
                                      record_text(tmp_path, osp.basename(final)))

        runner.save_checkpoint = save_checkpoint
        self._wrapping_saves = True
        try:
            yield
        finally:
            self._wrapping_saves = False
            if previous is None:
                del runner.save_checkpoint
            else:
                runner.save_checkpoint = previous

    def _remove_checkpoint(self, step: int) -> None:
        path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(step))
        if self._out_dir_is_local():
            remove_path(path)
            remove_path(record_path(path))
        elif self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):
            self.file_backend.rmtree(path)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        # Same bookkeeping as mmengine's, but the outdated checkpoint is removed last.
        _refuse_non_finite_model(runner)
        dropped: Optional[int] = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and
                                            self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                dropped = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)

        with self._atomic_saves(runner):
            runner.save_checkpoint(
                self.out_dir, ckpt_filename, self.file_client_args,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler, meta=meta,
                by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)

        if not is_main_process():
            return
        write_text_atomic(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        if dropped is not None and dropped != step:
            self._remove_checkpoint(dropped)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        with self._atomic_saves(runner):
            super()._save_best_checkpoint(runner, metrics)
        if self._out_dir_is_local() and is_main_process():
            _remove_orphan_records(self.out_dir)
