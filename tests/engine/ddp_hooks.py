"""Hooks the multi-process tests put into their configs (``custom_imports=['ddp_hooks']``, with
this folder on PYTHONPATH): each rank dumps its weights at the end, and one rank can die at a
given iteration as a crashed or preempted worker would."""
import os
import signal

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module(force=True)
class DumpRankWeightsHook(Hook):
    """Write the unwrapped state dict before (``init_rank<r>.pth``) and after training
    (``weights_rank<r>.pth``) into the work dir."""

    def before_train(self, runner) -> None:
        self._dump(runner, 'init')

    def after_train(self, runner) -> None:
        self._dump(runner, 'weights')

    @staticmethod
    def _dump(runner, stem: str) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        torch.save(model.state_dict(), os.path.join(runner.work_dir,
                                                    f'{stem}_rank{get_rank()}.pth'))


@HOOKS.register_module(force=True)
class DieAtIterHook(Hook):
    """SIGKILL this process (no cleanup, as the OOM killer would) when rank ``rank`` has
    finished iteration ``iteration`` (1-based) and the checkpoint hooks have run."""
    priority = 'LOWEST'

    def __init__(self, iteration: int, rank: int = 1):
        self.iteration, self.rank = iteration, rank

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if get_rank() == self.rank and runner.iter + 1 == self.iteration:
            os.kill(os.getpid(), signal.SIGKILL)
