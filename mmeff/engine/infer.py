"""The logic behind ``tools/infer.py``: draw a detector's or segmentor's predictions on images.

MMDet's ``demo/image_demo.py`` is the model: the config's ``default_scope`` picks MMDet's
``DetInferencer`` (boxes, masks, class names and scores above ``--score-thr``) or MMSeg's
``MMSegInferencer`` (the class map blended over the image with ``--opacity``). Both write
``OUT_DIR/vis/<image name>`` (the drawing) and the raw prediction (MMDet:
``OUT_DIR/preds/<name>.json``; MMSeg: ``OUT_DIR/pred/<name>.png``, the class indices).

The checkpoint is any file the project writes (``tools/train.py``'s ``iter_N.pth`` /
``epoch_N.pth``, ``tools/convert_checkpoint.py`` output) or a URL (fetched once into torch hub's
cache through the loader ``import mmeff`` registers with mmengine). No wrapper is needed around
the inferencers: ``import mmeff`` (the configs' ``custom_imports``) allows the runner types of
those checkpoints in ``torch.load(weights_only=True)``
(``mmeff.checkpoint.io.allow_runner_checkpoints``).
"""
import argparse
import os
import os.path as osp
import sys
from typing import List, Optional, Sequence

from mmengine.config import Config

from mmeff.checkpoint.remote import is_remote
from mmeff.engine.launch import register_scope

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


class InferInputError(ValueError):
    """A wrong command-line input (tools/infer.py exits with status 2 on it)."""


def parse_infer_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Draw a detector's (default_scope mmdet) or segmentor's (mmseg) predictions "
                    'on an image or on every image of a directory')
    parser.add_argument('config',
                        help='config file of the model (e.g. configs/maskrcnn_l1_coco.py)')
    parser.add_argument('checkpoint', help='checkpoint: a file tools/train.py wrote, a converted '
                        'official file, or an http(s) URL')
    parser.add_argument('inputs', help='an image file or a directory of images')
    parser.add_argument('--out-dir', default='outputs',
                        help='where vis/ (drawn images) and the raw predictions go '
                             '(default: outputs)')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda:0'")
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detectors: draw boxes / masks scoring at least this (default 0.3)')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='segmentors: opacity of the drawn class map (default 0.5)')
    parser.add_argument('--batch-size', type=int, default=1, help='images per forward pass')
    return parser.parse_args(argv)


def list_images(inputs: str) -> List[str]:
    """The image files of ``inputs`` (a file or a directory, sorted); clear errors otherwise."""
    if osp.isfile(inputs):
        return [inputs]
    if not osp.isdir(inputs):
        raise InferInputError(f'input not found: {inputs!r}; pass an image file or a directory '
                              'of images')
    images = sorted(osp.join(inputs, name) for name in os.listdir(inputs)
                    if name.lower().endswith(IMAGE_EXTENSIONS))
    if not images:
        raise InferInputError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in {inputs!r}')
    return images


def _check_inputs(args: argparse.Namespace) -> Config:
    if not osp.isfile(args.config):
        raise InferInputError(f'config file not found: {args.config!r}')
    if not is_remote(args.checkpoint) and not osp.isfile(args.checkpoint):
        raise InferInputError(f'checkpoint not found: {args.checkpoint!r}; pass a file written '
                              'by tools/train.py or tools/convert_checkpoint.py, or a URL')
    if args.batch_size < 1:
        raise InferInputError(f'--batch-size must be >= 1, got {args.batch_size}')
    cfg = Config.fromfile(args.config)
    scope = cfg.get('default_scope')
    if scope not in ('mmdet', 'mmseg'):
        raise InferInputError(
            f'{args.config} has default_scope {scope!r}; tools/infer.py draws detectors '
            "('mmdet') and segmentors ('mmseg'). Classifiers: use tools/test.py")
    register_scope(scope)
    return cfg


def infer(argv: Optional[Sequence[str]] = None) -> List[str]:
    """tools/infer.py: run the model on every image and return the drawings written."""
    args = parse_infer_args(argv)
    cfg = _check_inputs(args)
    images = list_images(args.inputs)
    if cfg.default_scope == 'mmdet':
        from mmdet.apis import DetInferencer
        inferencer = DetInferencer(model=args.config, weights=args.checkpoint, device=args.device,
                                   show_progress=False)
        inferencer(images, batch_size=args.batch_size, out_dir=args.out_dir,
                   pred_score_thr=args.score_thr, no_save_pred=False)
    else:
        from mmseg.apis import MMSegInferencer
        inferencer = MMSegInferencer(model=args.config, weights=args.checkpoint, device=args.device)
        inferencer(images, batch_size=args.batch_size, out_dir=args.out_dir,
                   opacity=args.opacity)
    vis_dir = osp.join(args.out_dir, 'vis')
    return [osp.join(vis_dir, osp.basename(path)) for path in images]


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Console entry: input errors are a message and exit status 2, not a traceback."""
    try:
        written = infer(argv)
    except InferInputError as err:
        print(f'tools/infer.py: error: {err}', file=sys.stderr)
        raise SystemExit(2) from None
    print(f'drew {len(written)} image(s) into {osp.dirname(written[0])}')
