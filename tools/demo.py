"""End-to-end demo on a CPU: toy COCO -> Mask R-CNN + EfficientFormer-L1 -> COCO mAP -> a picture.

``make demo`` runs this. It

1. writes the toy COCO set (``mmeff.datasets.make_coco``: 224x224 images, 1-4 shapes of random
   colour and size, 3 classes, polygon masks) unless it is already there;
2. builds the model of ``configs/demo/maskrcnn_l1_toycoco.py`` (EfficientFormer-L1 with random
   initialisation: nothing is downloaded and no pretrained file is used);
3. evaluates COCO bbox/segm mAP with MMDet's CocoMetric on the toy val set *before* training,
   trains 300 steps (2 images each) with mmengine's Runner, evaluates again;
4. draws the predicted boxes and masks on a validation image (PNG, ground truth on the left);
5. prints a summary (steps, losses, mAP before/after, time per step, files) and writes it as
   JSON. The exit status is 1 when the model did not learn (losses did not fall, or bbox AP50
   did not reach 5x its value before training).

Usage: python tools/demo.py [--iters 300] [--work-dir work_dirs/demo] [--threads N]
"""
import argparse
import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from mmengine.hooks import Hook

from mmeff.engine.threads import auto_threads

REPO = Path(__file__).resolve().parents[1]

DEMO_CONFIG = REPO / 'configs' / 'demo' / 'maskrcnn_l1_toycoco.py'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--config', default=str(DEMO_CONFIG), help='demo config')
    p.add_argument('--work-dir', default='work_dirs/demo',
                   help='where data, checkpoint, picture, logs and summary go')
    p.add_argument('--iters', type=int, default=None,
                   help="training steps of 2 images (default: the config's, 300)")
    p.add_argument('--num-train', type=int, default=128, help='toy training images')
    p.add_argument('--num-val', type=int, default=32, help='toy validation images')
    p.add_argument('--size', type=int, default=224, help='toy image side in pixels')
    p.add_argument('--threads', type=int, default=None,
                   help='torch CPU threads (default: all cores, or 1 when other processes '
                        'already keep the cores busy)')
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    if args.iters is not None and args.iters < 1:
        p.error('--iters must be >= 1')
    if args.size < 64:
        p.error('--size must be >= 64 (EfficientFormer has a total stride of 32)')
    return args


_CONSOLE = sys.stdout  # progress goes here even while library chatter is redirected


def say(msg: str) -> None:
    print(f'[demo] {msg}', file=_CONSOLE, flush=True)


@contextlib.contextmanager
def chatter_to(log_file: Path):
    """Send what libraries print (pycocotools tables, 'loading annotations') to a log file."""
    with open(log_file, 'a') as f, contextlib.redirect_stdout(f):
        yield


# ------------------------------------------------------------------------------------ data
def prepare_data(root: Path, args: argparse.Namespace) -> None:
    """Write the toy COCO set unless the same one (same generator arguments) is there."""
    from mmeff.datasets import make_coco
    wanted = dict(num_train=args.num_train, num_val=args.num_val,
                  size=[args.size, args.size], seed=args.seed)
    stamp = root / 'demo_args.json'
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        say(f'toy COCO set already at {root}')
        return
    t = time.time()
    info = make_coco(root, num_train=args.num_train, num_val=args.num_val,
                     size=(args.size, args.size), seed=args.seed, overwrite=True)
    stamp.write_text(json.dumps(wanted))
    say(f'wrote the toy COCO set to {root} in {time.time() - t:.1f} s: '
        f'{info["num_train"]} train images ({info["num_train_objects"]} objects), '
        f'{info["num_val"]} val images ({info["num_val_objects"]} objects), '
        f'classes {list(info["classes"])}')


def build_config(args: argparse.Namespace, data_root: Path, work_dir: Path):
    from mmengine.config import Config
    cfg = Config.fromfile(args.config)
    if args.iters is None:
        args.iters = cfg.train_cfg.max_iters
    root = str(data_root) + '/'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = root
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].ann_file = root + 'annotations/instances_val2017.json'
    cfg.train_cfg.max_iters = args.iters
    # the demo evaluates itself, before and after training: no validation inside the loop
    cfg.train_cfg.val_begin = args.iters + 1
    for sched in cfg.param_scheduler:  # keep the warm-up/cosine shape for other lengths
        sched.end = min(sched.end, args.iters) if sched.begin == 0 else args.iters
        sched.begin = min(sched.begin, max(args.iters - 1, 0))
    cfg.default_hooks.checkpoint.interval = args.iters
    cfg.default_hooks.logger.interval = max(1, min(cfg.default_hooks.logger.interval,
                                                   args.iters))
    cfg.randomness = dict(seed=args.seed)
    cfg.work_dir = str(work_dir)
    cfg.log_level = 'ERROR'  # the demo prints its own progress lines
    return cfg


# -------------------------------------------------------------------------------- progress
class ProgressHook(Hook):
    """Records each step's losses and duration and prints a compact progress line."""

    priority = 'LOW'

    def __init__(self, total: int, every: int = 10):
        self.total, self.every = total, every
        self.losses: List[Dict[str, float]] = []
        self.step_times: List[float] = []
        self._t0 = 0.0

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self._t0 = time.perf_counter()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.step_times.append(time.perf_counter() - self._t0)
        self.losses.append({k: float(v.detach() if hasattr(v, 'detach') else v)
                            for k, v in (outputs or {}).items() if k.startswith('loss')})
        step = len(self.step_times)
        if step == 1 or step % self.every == 0 or step == self.total:
            recent = self.losses[-self.every:]
            loss = sum(d['loss'] for d in recent) / len(recent)
            times = self.step_times[-self.every:]
            per_step = sum(times) / len(times)
            eta = per_step * (self.total - step)
            say(f'step {step:4d}/{self.total}  loss {loss:.3f}  '
                f'{per_step:.2f} s/step  ETA {eta / 60:.1f} min')


def evaluate(runner, label: str, log_file: Path) -> Dict[str, float]:
    """Run the val loop (CocoMetric bbox + segm); the COCO tables go to ``log_file``."""
    t = time.time()
    with chatter_to(log_file):  # building the loop loads the annotations (and says so)
        loop = runner.val_loop
    say(f'evaluating {label} on {len(loop.dataloader.dataset)} val images ...')
    with chatter_to(log_file):
        print(f'===== COCO evaluation {label}')
        metrics = loop.run()
    metrics = {k.split('/')[-1]: float(v) for k, v in metrics.items()}
    say(f'{label}: bbox mAP {metrics["bbox_mAP"]:.3f}  AP50 {metrics["bbox_mAP_50"]:.3f}  '
        f'segm mAP {metrics["segm_mAP"]:.3f}  AP50 {metrics["segm_mAP_50"]:.3f}  '
        f'({time.time() - t:.0f} s)')
    return metrics


def draw_prediction(runner, out_file: Path, score_thr: float = 0.3,
                    scale: int = 2) -> Dict[str, int]:
    """Predict on the first val image; save ground truth (left) | prediction (right), enlarged
    ``scale`` times so that the labels stay legible on a 224x224 image."""
    import mmcv
    import torch
    import torch.nn.functional as F
    from mmengine.dataset import pseudo_collate
    from mmdet.registry import VISUALIZERS

    dataset = runner.val_dataloader.dataset
    data = dataset[0]  # the test pipeline, with the ground truth
    model = runner.model.eval()
    with torch.no_grad():
        result = model.test_step(pseudo_collate([data]))[0]
    image = mmcv.imconvert(mmcv.imread(data['data_samples'].img_path), 'bgr', 'rgb')
    image = mmcv.imrescale(image, scale, interpolation='nearest')
    pred, gt = result.pred_instances, result.gt_instances
    pred.bboxes = pred.bboxes * scale
    pred.masks = F.interpolate(pred.masks[None].float(), scale_factor=scale)[0] > 0.5
    gt.bboxes = getattr(gt.bboxes, 'tensor', gt.bboxes) * scale  # Tensor or HorizontalBoxes
    gt.masks = gt.masks.rescale(scale)
    visualizer = VISUALIZERS.build(dict(type='DetLocalVisualizer', name='mmeff_demo'))
    visualizer.dataset_meta = dataset.metainfo
    visualizer.add_datasample('demo', image, result, draw_gt=True, draw_pred=True,
                              pred_score_thr=score_thr, out_file=str(out_file))
    kept = int((pred.scores >= score_thr).sum())
    return dict(num_gt=len(gt), num_pred=kept)


# ---------------------------------------------------------------------------------- phases
def choose_threads(args: argparse.Namespace) -> str:
    """Fill in ``args.threads`` (automatic unless given); returns how it was chosen."""
    if args.threads is not None:
        return f'{args.threads} thread(s) (--threads)'
    args.threads, note = auto_threads()
    return note


def build_runner(cfg, args: argparse.Namespace):
    """mmengine's Runner for ``cfg``, its model freshly initialised (random weights)."""
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg)  # not redirected: mmengine's logger keeps this stdout
    model = runner.model
    n_params = sum(p.numel() for p in model.parameters())
    n_backbone = sum(p.numel() for p in model.backbone.parameters())
    say(f'model: Mask R-CNN + EfficientFormer-L1 ({n_params / 1e6:.1f} M parameters, backbone '
        f'{n_backbone / 1e6:.1f} M), random initialisation, {args.size}x{args.size} input')
    model.init_weights()  # the same weights are evaluated now and trained next
    return runner


def train(runner, cfg, args: argparse.Namespace, log_file: Path) -> Tuple[ProgressHook, float]:
    """Train ``args.iters`` steps; returns the progress record and the training time (s)."""
    progress = ProgressHook(args.iters)
    runner.register_hook(progress, priority='LOW')
    say(f'training {args.iters} steps of {cfg.train_dataloader.batch_size} images '
        f'(AdamW, lr {cfg.optim_wrapper.optimizer.lr:g}) ...')
    t = time.time()
    with chatter_to(log_file):
        runner.train()
    return progress, time.time() - t


# --------------------------------------------------------------------------------- summary
@dataclass
class Outcome:
    """What the demo measured; the summary (JSON and text) is read off it."""
    args: argparse.Namespace
    batch_size: int
    work_dir: Path
    data_root: Path
    log_file: Path
    picture: Path
    before: Dict[str, float]
    after: Dict[str, float]
    progress: ProgressHook
    train_seconds: float
    drawn: Dict[str, int]
    start: float

    @property
    def window(self) -> int:
        """Steps averaged for the first and last loss."""
        return max(1, min(10, len(self.progress.losses) // 4))

    @property
    def loss_first(self) -> float:
        return sum(d['loss'] for d in self.progress.losses[:self.window]) / self.window

    @property
    def loss_last(self) -> float:
        return sum(d['loss'] for d in self.progress.losses[-self.window:]) / self.window

    @property
    def seconds_per_step(self) -> float:
        steady = self.progress.step_times[1:] or self.progress.step_times
        return sum(steady) / len(steady)

    @property
    def ap50_ratio(self) -> float:
        """bbox AP50 after / before training (inf from 0, nan when both are 0)."""
        ap50_before, ap50_after = self.before['bbox_mAP_50'], self.after['bbox_mAP_50']
        if ap50_before > 0:
            return ap50_after / ap50_before
        return math.inf if ap50_after > 0 else math.nan

    @property
    def learned(self) -> bool:
        ap50_before, ap50_after = self.before['bbox_mAP_50'], self.after['bbox_mAP_50']
        return (self.loss_last < self.loss_first and ap50_after >= 5 * ap50_before
                and ap50_after > 0)


def summarize(outcome: Outcome) -> dict:
    """The summary written as ``summary.json``."""
    args, losses, window = outcome.args, outcome.progress.losses, outcome.window
    work_dir, ratio = outcome.work_dir, outcome.ap50_ratio
    ckpt = work_dir / f'iter_{args.iters}.pth'
    return dict(
        iterations=args.iters, batch_size=outcome.batch_size,
        image_size=args.size, threads=args.threads, init='random (no pretrained weights)',
        loss_first=round(outcome.loss_first, 4), loss_last=round(outcome.loss_last, 4),
        loss_window=window,
        loss_terms_last={k: round(sum(d[k] for d in losses[-window:]) / window, 4)
                         for k in losses[-1]},
        before={k: outcome.before[k] for k in sorted(outcome.before) if 'mAP' in k},
        after={k: outcome.after[k] for k in sorted(outcome.after) if 'mAP' in k},
        bbox_ap50_ratio=round(ratio, 2) if math.isfinite(ratio) else None,
        seconds_per_step=round(outcome.seconds_per_step, 3),
        train_seconds=round(outcome.train_seconds, 1),
        total_seconds=round(time.time() - outcome.start, 1), learned=outcome.learned,
        files=dict(work_dir=str(work_dir), data=str(outcome.data_root),
                   checkpoint=str(ckpt) if ckpt.is_file() else None,
                   picture=str(outcome.picture), log=str(outcome.log_file),
                   summary=str(work_dir / 'summary.json')))


def summary_text(outcome: Outcome, summary: dict) -> str:
    """The summary block printed at the end."""
    args, before, after, window = outcome.args, outcome.before, outcome.after, outcome.window
    ratio = outcome.ap50_ratio
    ratio_txt = f'{ratio:.1f}x' if math.isfinite(ratio) else \
        ('from 0' if math.isinf(ratio) else 'both 0')
    lines = [
        '',
        '=' * 78,
        'mmeff demo: Mask R-CNN + EfficientFormer-L1 (random init) on the toy COCO set, CPU',
        '=' * 78,
        f'steps           {args.iters} x {outcome.batch_size} images '
        f'({args.size}x{args.size}), {args.threads} thread(s)',
        f'loss            {outcome.loss_first:.3f} (mean of first {window} steps) -> '
        f'{outcome.loss_last:.3f} (last {window})',
        '                ' + '  '.join(f'{k} {v:.3f}' for k, v in
                                       summary['loss_terms_last'].items() if k != 'loss'),
        f'bbox mAP        {before["bbox_mAP"]:.3f} -> {after["bbox_mAP"]:.3f}   '
        f'AP50 {before["bbox_mAP_50"]:.3f} -> {after["bbox_mAP_50"]:.3f} ({ratio_txt})',
        f'segm mAP        {before["segm_mAP"]:.3f} -> {after["segm_mAP"]:.3f}   '
        f'AP50 {before["segm_mAP_50"]:.3f} -> {after["segm_mAP_50"]:.3f}',
        f'time            {outcome.seconds_per_step:.2f} s per step; training '
        f'{outcome.train_seconds / 60:.1f} min, all {summary["total_seconds"] / 60:.1f} min',
        f'picture         {outcome.picture} ({outcome.drawn["num_pred"]} predictions with score '
        f'>= 0.3; {outcome.drawn["num_gt"]} objects in the image; ground truth on the left)',
        f'checkpoint      {summary["files"]["checkpoint"]}',
        f'COCO tables     {outcome.log_file} (with the rest of the libraries\' output)',
        f'summary         {outcome.work_dir / "summary.json"}',
        'verdict         ' + ('learned: losses fell and bbox AP50 >= 5x its value before '
                              'training' if outcome.learned else
                              'DID NOT LEARN ENOUGH: expected falling losses and bbox AP50 '
                              '>= 5x its value before training'),
    ]
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    import torch
    threads_note = choose_threads(args)
    torch.set_num_threads(args.threads)

    start = time.time()
    work_dir = Path(args.work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    data_root = work_dir / 'data' / 'coco'
    log_file = work_dir / 'demo_output.log'
    log_file.write_text('')
    say(f'work dir {work_dir}; torch {torch.__version__}, CPU threads: {threads_note}')
    prepare_data(data_root, args)

    cfg = build_config(args, data_root, work_dir)
    runner = build_runner(cfg, args)
    before = evaluate(runner, 'before training', log_file)
    progress, train_seconds = train(runner, cfg, args, log_file)
    after = evaluate(runner, 'after training', log_file)
    png = work_dir / 'prediction.png'
    drawn = draw_prediction(runner, png)

    outcome = Outcome(args=args, batch_size=cfg.train_dataloader.batch_size, work_dir=work_dir,
                      data_root=data_root, log_file=log_file, picture=png, before=before,
                      after=after, progress=progress, train_seconds=train_seconds,
                      drawn=drawn, start=start)
    summary = summarize(outcome)
    (work_dir / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
    print(summary_text(outcome, summary), flush=True)
    return 0 if outcome.learned else 1


if __name__ == '__main__':
    sys.exit(main())
