"""Keep timm 1.0's RandAugment working with Pillow >= 12.

DeiT's policy ``rand-m9-mstd0.5-inc1`` samples magnitudes around 9 (std 0.5, clipped at 10);
at 10 the increasing-posterize op asks Pillow to keep 0 bits. Old Pillow returned a black
image; newer Pillow raises ``ValueError: bits must be between or equal to 1 and 8``, which
kills a training run after a few hundred images. We restore the old result on the ops of the
transforms we build (timm's module is left untouched).
"""
from typing import Callable

from PIL import Image
from timm.data import auto_augment


def _posterize_zero_bits_black(img: Image.Image, bits_to_keep: int, **kwargs) -> Image.Image:
    """timm's posterize; keeping 0 bits gives the all-black image old Pillow produced."""
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return auto_augment.posterize(img, bits_to_keep, **kwargs)


def fix_posterize(transform: Callable) -> int:
    """Patch the posterize ops of every RandAugment/AutoAugment inside ``transform``.

    Returns the number of ops patched (0 when there is no such policy)."""
    patched = 0
    stack = [transform]
    while stack:
        item = stack.pop()
        if isinstance(item, (auto_augment.RandAugment, auto_augment.AutoAugment)):
            ops = item.ops if isinstance(item, auto_augment.RandAugment) else \
                [op for sub in item.policy for op in sub]
            for op in ops:
                if op.aug_fn is auto_augment.posterize:
                    op.aug_fn = _posterize_zero_bits_black
                    patched += 1
        stack.extend(getattr(item, 'transforms', ()) or ())
    return patched
