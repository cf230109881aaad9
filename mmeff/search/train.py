"""Minimal CPU training/evaluation loops for the toy search (supernet and from-scratch nets).

The classification pretraining module (mmengine ``ImageClassifier`` + ``configs/cls``) had not
landed on main when this was written; these loops train the same ``MobileClassifierNet``
(backbone + EfficientFormer head) with AdamW and a cosine schedule. Architecture logits get
their own parameter group (Adam-style, no weight decay) as in gradient-based NAS.
"""
import math
import time
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .supernet import ARCH_PARAM


def train_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     epochs: int = 3, batch_size: int = 64, lr: float = 2e-3,
                     weight_decay: float = 0.05, arch_lr: float = 5e-3, seed: int = 0,
                     log: Optional[Callable[[str], None]] = None) -> nn.Module:
    torch.manual_seed(seed)
    arch = [p for n, p in model.named_parameters() if ARCH_PARAM in n]
    weights = [p for n, p in model.named_parameters() if ARCH_PARAM not in n]
    groups = [dict(params=weights, lr=lr, weight_decay=weight_decay)]
    if arch:
        groups.append(dict(params=arch, lr=arch_lr, weight_decay=0.0))
    opt = torch.optim.AdamW(groups)
    steps = epochs * math.ceil(len(images) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    t0 = time.time()
    for epoch in range(epochs):
        order = torch.randperm(len(images))
        total = 0.0
        for start in range(0, len(images), batch_size):
            idx = order[start:start + batch_size]
            out = model(images[idx])
            loss = F.cross_entropy(out if torch.is_tensor(out) else out[0], labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if log:
            log(f'  epoch {epoch + 1}/{epochs}: loss {total / len(images):.4f} '
                f'({time.time() - t0:.1f} s)')
    return model


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 128) -> float:
    """Top-1 accuracy in % (eval mode)."""
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        pred = model(images[start:start + batch_size]).argmax(1)
        correct += int((pred == labels[start:start + batch_size]).sum())
    return 100.0 * correct / len(images)
