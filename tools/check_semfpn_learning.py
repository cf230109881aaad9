"""Learning check: Semantic FPN + EfficientFormer-L1 trained on the toy ADE-style set on a CPU.

Trains ``configs/demo/semfpn_l1_toyade.py`` (random init, 256x256, 5 classes) for a fixed number
of steps or until a time budget is spent, evaluates mIoU with MMSeg's IoUMetric on the toy
validation set every ``--val-interval`` steps, and prints the learning curve (steps, minutes,
loss, mIoU, mAcc). Writes ``curve.json`` and ``curve.png`` to the work dir. The exit status is 1
when the best mIoU stays below ``--target`` (default 50 %).

Usage: python tools/check_semfpn_learning.py [--iters 400] [--minutes 12] [--val-interval 50]
"""
import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

from mmengine.hooks import Hook

from mmeff.engine.threads import auto_threads  # 1 thread on a busy machine

REPO = Path(__file__).resolve().parents[1]

CONFIG = REPO / 'configs' / 'demo' / 'semfpn_l1_toyade.py'
_CONSOLE = sys.stdout


def say(msg: str) -> None:
    print(f'[semfpn] {msg}', file=_CONSOLE, flush=True)


class CurveHook(Hook):
    """Records loss per step and mIoU per evaluation; stops once the time budget is spent."""

    priority = 'LOW'

    def __init__(self, budget_s: float, every: int = 10):
        self.budget_s, self.every = budget_s, every
        self.losses: List[float] = []
        self.step_times: List[float] = []
        self.curve: List[dict] = []
        self.train_time = 0.0
        self._t0 = 0.0
        self._step_override: Optional[int] = None

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self._t0 = time.perf_counter()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        dt = time.perf_counter() - self._t0
        self.step_times.append(dt)
        self.train_time += dt
        self.losses.append(float(outputs['loss'].detach()))
        step = runner.iter + 1
        if step % self.every == 0:
            recent = self.losses[-self.every:]
            say(f'step {step:4d}/{runner.max_iters}  loss {sum(recent) / len(recent):.3f}  '
                f'{sum(self.step_times[-self.every:]) / self.every:.2f} s/step  '
                f'{self.train_time / 60:.1f} min')
        if self.train_time > self.budget_s and step < runner.max_iters:
            say(f'time budget of {self.budget_s / 60:.1f} min spent at step {step}: '
                'evaluating once more and stopping')
            self._step_override = step  # runner.iter is not advanced yet inside this hook
            with contextlib.redirect_stdout(sys.stderr):
                runner.val_loop.run()
            self._step_override = None
            runner.train_loop.stop_training = True

    def after_val_epoch(self, runner, metrics=None) -> None:
        if not metrics or 'mIoU' not in metrics:
            return
        window = self.losses[-10:]
        step = runner.iter if self._step_override is None else self._step_override
        point = dict(step=step, train_minutes=round(self.train_time / 60, 2),
                     loss=round(sum(window) / len(window), 4) if window else None,
                     mIoU=float(metrics['mIoU']), mAcc=float(metrics.get('mAcc', 'nan')),
                     aAcc=float(metrics.get('aAcc', 'nan')))
        if self.curve and self.curve[-1]['step'] == point['step']:
            return
        self.curve.append(point)
        say(f'eval at step {point["step"]}: mIoU {point["mIoU"]:.2f} %  mAcc '
            f'{point["mAcc"]:.2f} %  ({point["train_minutes"]:.1f} min of training)')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--config', default=str(CONFIG))
    p.add_argument('--work-dir', default='work_dirs/semfpn_learning')
    p.add_argument('--iters', type=int, default=400, help='length of the LR schedule')
    p.add_argument('--minutes', type=float, default=12.0,
                   help='stop training after this much training time')
    p.add_argument('--val-interval', type=int, default=50)
    p.add_argument('--num-train', type=int, default=128)
    p.add_argument('--num-val', type=int, default=32)
    p.add_argument('--target', type=float, default=50.0, help='mIoU (percent) to reach')
    p.add_argument('--threads', type=int, default=None,
                   help='torch CPU threads (default: all cores, 1 on a busy machine)')
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args(argv)


def plot(curve: List[dict], out: Path, target: float) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([c['step'] for c in curve], [c['mIoU'] for c in curve], 'o-', label='mIoU')
    ax.plot([c['step'] for c in curve], [c['mAcc'] for c in curve], 's--', label='mAcc')
    ax.axhline(target, color='grey', lw=0.8, ls=':', label=f'target {target:g} %')
    ax.set_xlabel('training step (4 images)')
    ax.set_ylabel('%  (toy ADE val)')
    ax.set_title('Semantic FPN + EfficientFormer-L1, random init, CPU')
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    import torch
    if args.threads is None:
        args.threads, note = auto_threads()
        say(f'CPU threads: {note}')
    torch.set_num_threads(args.threads)
    from mmengine.config import Config
    from mmengine.runner import Runner

    from mmeff.datasets import make_ade

    work_dir = Path(args.work_dir).resolve()
    data_root = work_dir / 'data' / 'ade'
    log_file = work_dir / 'semfpn_output.log'
    work_dir.mkdir(parents=True, exist_ok=True)
    stamp = data_root / 'check_args.json'
    wanted = dict(num_train=args.num_train, num_val=args.num_val, seed=args.seed)
    if not (stamp.is_file() and json.loads(stamp.read_text()) == wanted):
        make_ade(data_root, num_train=args.num_train, num_val=args.num_val, size=(256, 256),
                 seed=args.seed, overwrite=True)
        stamp.write_text(json.dumps(wanted))
    say(f'toy ADE set at {data_root} ({args.num_train} train / {args.num_val} val, 256x256)')

    cfg = Config.fromfile(args.config)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(data_root)
    cfg.train_cfg.max_iters = args.iters
    cfg.train_cfg.val_interval = args.val_interval
    cfg.param_scheduler[-1].end = args.iters
    cfg.default_hooks.checkpoint.interval = args.iters
    cfg.randomness = dict(seed=args.seed)
    cfg.work_dir = str(work_dir)
    cfg.log_level = 'ERROR'  # progress comes from CurveHook

    hook = CurveHook(budget_s=args.minutes * 60)
    log_file.write_text('')
    runner = Runner.from_cfg(cfg)  # not redirected: mmengine's logger keeps this stdout
    runner.register_hook(hook, priority='LOW')
    say(f'training up to {args.iters} steps x {cfg.train_dataloader.batch_size} images '
        f'(budget {args.minutes:g} min), evaluating every {args.val_interval} steps, '
        f'{args.threads} thread(s)')
    start = time.time()
    with open(log_file, 'a') as f, contextlib.redirect_stdout(f):
        runner.model.init_weights()  # evaluate the very weights training starts from
        runner.val_loop.run()  # step 0 of the curve
        runner.train()
    wall = time.time() - start

    curve = hook.curve
    best = max(curve, key=lambda c: c['mIoU'])
    per_step = sum(hook.step_times[1:]) / max(1, len(hook.step_times) - 1)
    reached = best['mIoU'] >= args.target
    result = dict(config=args.config, steps=len(hook.step_times),
                  batch_size=cfg.train_dataloader.batch_size, threads=args.threads,
                  seconds_per_step=round(per_step, 3), train_minutes=round(hook.train_time / 60, 2),
                  wall_minutes=round(wall / 60, 2), curve=curve, best=best, target=args.target,
                  reached=reached)
    if not reached and len(curve) >= 2:
        result['note'] = 'target not reached within the budget; see the curve for the trend'
    (work_dir / 'curve.json').write_text(json.dumps(result, indent=2) + '\n')
    plot(curve, work_dir / 'curve.png', args.target)

    print('\nSemantic FPN + EfficientFormer-L1 (random init) on the toy ADE set, CPU', flush=True)
    print(f'{"step":>6} {"train min":>10} {"loss":>8} {"mIoU %":>8} {"mAcc %":>8}')
    for c in curve:
        loss = f'{c["loss"]:>8.3f}' if c['loss'] is not None else f'{"-":>8}'
        print(f'{c["step"]:>6} {c["train_minutes"]:>10.2f} {loss} '
              f'{c["mIoU"]:>8.2f} {c["mAcc"]:>8.2f}')
    print(f'best mIoU {best["mIoU"]:.2f} % at step {best["step"]} '
          f'({best["train_minutes"]:.1f} min); target {args.target:g} % '
          f'{"reached" if reached else "NOT reached"}; {per_step:.2f} s/step '
          f'({cfg.train_dataloader.batch_size} images of 256x256, {args.threads} thread(s))')
    print(f'files: {work_dir / "curve.json"}, {work_dir / "curve.png"}, {log_file}')
    return 0 if reached else 1


if __name__ == '__main__':
    sys.exit(main())
