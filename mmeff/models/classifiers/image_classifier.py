"""ImageNet pretraining model: backbone + family head, optionally distilled from a timm teacher.

DeiT's hard distillation (the recipe of EfficientFormer V1/V2): the head has a class and a
distillation output; in training ``loss = (1 - alpha) * CE(cls, label) + alpha *
CE(dist, teacher(image).argmax())`` with ``alpha = 0.5``, where the label CE is timm's
``SoftTargetCrossEntropy`` on mixup/cutmix targets and the teacher sees the same mixed image;
at evaluation the head averages both outputs. Without a teacher the head is a plain one.

The state dict holds exactly ``backbone.*`` + ``head.*`` (mmeff's canonical layout, as
:class:`MobileClassifierNet`), so a dense backbone loads the checkpoint with
``init_cfg=dict(type='Pretrained', checkpoint=...)``.
"""
from typing import Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from mmeff.registry import MODELS, build_model
from mmeff.models.classifiers.teacher import FrozenTeacher

Samples = Optional[Dict[str, torch.Tensor]]


@MODELS.register_module()
class ImageClassifier(BaseModel):
    """Classification model for mmengine's runner (``default_scope='mmeff'``).

    Args:
        backbone: config (or module) of any mmeff backbone, built with its last stage as the
            only output and without dense output norms.
        head: config (or module) of the family head ``Head(in_channels, num_classes,
            distillation)``. ``distillation`` follows ``teacher`` when not given; True without
            a teacher only evaluates a distilled checkpoint (its two heads averaged).
        teacher: ``dict(name=<timm model>, checkpoint=<local file>, **create_model_kwargs)``;
            None trains without distillation.
        distillation_alpha: weight of the distillation loss (DeiT: 0.5).
        label_smoothing: for hard labels only (with mixup, the smoothing is in the soft targets).
        data_preprocessor: defaults to :class:`ClsDataPreprocessor` (ImageNet mean/std).
    """

    def __init__(self, backbone: Union[dict, nn.Module], head: Union[dict, nn.Module],
                 teacher: Optional[dict] = None, distillation_alpha: float = 0.5,
                 label_smoothing: float = 0.0, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        if data_preprocessor is None:
            data_preprocessor = dict(type='mmeff.ClsDataPreprocessor')
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if not 0.0 <= distillation_alpha <= 1.0:
            raise ValueError(f'distillation_alpha must be in [0, 1], got {distillation_alpha}')
        self.distillation_alpha = distillation_alpha
        self.label_smoothing = label_smoothing
        self.backbone = build_model(backbone) if isinstance(backbone, dict) else backbone
        self.head = self._build_head(head, distill=teacher is not None)
        self.teacher = self._build_teacher(teacher)
        self.soft_target_loss = SoftTargetCrossEntropy()

    # ------------------------------------------------------------------------------ building
    @staticmethod
    def _has_dist_head(head: nn.Module) -> bool:
        if hasattr(head, 'distillation'):
            return bool(head.distillation)
        return getattr(head, 'head_dist', None) is not None

    @staticmethod
    def _count_classes(head: Union[dict, nn.Module]) -> int:
        """Classes of a head config (the interface default is 1000) or module."""
        if isinstance(head, dict):
            return int(head.get('num_classes', 1000))
        if hasattr(head, 'num_classes'):
            return int(head.num_classes)
        linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(f'cannot tell how many classes {type(head).__name__} predicts; '
                             'give it a num_classes attribute')
        return linears[-1].out_features

    def _build_head(self, head: Union[dict, nn.Module], distill: bool) -> nn.Module:
        """A teacher needs a distillation head. A distillation head without a teacher is
        allowed for evaluating distilled checkpoints (heads averaged), not for training."""
        self._num_classes = self._count_classes(head)
        if isinstance(head, dict):
            head = dict(head)
            head.setdefault('distillation', distill)
            head = build_model(head)
        if distill and not self._has_dist_head(head):
            raise ValueError(
                'a teacher needs a head with a distillation output: leave head.distillation '
                'unset (it follows the teacher) or set it to True')
        return head

    def _build_teacher(self, cfg: Optional[dict]) -> Optional[FrozenTeacher]:
        if cfg is None:
            return None
        if isinstance(cfg, FrozenTeacher):
            teacher = cfg
        elif isinstance(cfg, dict):
            cfg = dict(cfg)
            cfg.setdefault('num_classes', self.num_classes)
            teacher = FrozenTeacher(**cfg)
        else:
            raise TypeError(f'teacher must be dict(name=..., checkpoint=...), got {cfg!r}')
        if teacher.num_classes != self.num_classes:
            raise ValueError(f'teacher {teacher.name!r} predicts {teacher.num_classes} classes '
                             f'but the head has {self.num_classes}')
        return teacher

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def with_teacher(self) -> bool:
        return self.teacher is not None

    def _apply(self, fn, *args, **kwargs):
        """Move/cast the (unregistered) teacher together with the student."""
        super()._apply(fn, *args, **kwargs)
        if self.__dict__.get('teacher') is not None:
            self.teacher.apply_(fn)
        return self

    # ------------------------------------------------------------------------------- forward
    def extract_feat(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.backbone(inputs)[-1]

    def forward(self, inputs: torch.Tensor, data_samples: Samples = None,
                mode: str = 'tensor'):
        if mode == 'tensor':
            return self.head(self.extract_feat(inputs))
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        raise ValueError(f"mode must be 'tensor', 'loss' or 'predict', got {mode!r}")

    def loss(self, inputs: torch.Tensor, data_samples: Samples) -> Dict[str, torch.Tensor]:
        self.check_labels(data_samples)
        teacher_label = self.teacher_label(inputs) if self.with_teacher else None
        return self.losses(self.head(self.extract_feat(inputs)), data_samples, teacher_label)

    @staticmethod
    def check_labels(data_samples: Samples) -> None:
        if not data_samples or 'gt_label' not in data_samples:
            raise ValueError("training batches need labels: data_samples['gt_label']")

    def teacher_label(self, inputs: torch.Tensor) -> torch.Tensor:
        """The teacher's hard label of each image (DeiT's hard distillation target)."""
        return self.teacher(inputs).argmax(dim=1)

    def losses(self, outputs, data_samples: Dict[str, torch.Tensor],
               teacher_label: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The losses of the head's ``outputs`` (``teacher_label``: None without a teacher),
        apart from the forward so that several networks can share one teacher pass."""
        if isinstance(outputs, (tuple, list)):
            if not self.with_teacher:
                raise ValueError(
                    'the head has a distillation output but there is no teacher to train it: '
                    'give teacher=dict(name=..., checkpoint=...), or build the head with '
                    'distillation=False (a distillation head without teacher is for evaluation)')
            cls_logits, dist_logits = outputs
        elif self.with_teacher:
            raise ValueError('with a teacher the head must return (cls_logits, dist_logits) in '
                             'training mode; build it with distillation=True')
        else:
            cls_logits, dist_logits = outputs, None
        cls_loss = self.label_loss(cls_logits, data_samples)
        if dist_logits is None:
            return {'loss_cls': cls_loss}
        alpha = self.distillation_alpha
        return {'loss_cls': (1 - alpha) * cls_loss,
                'loss_dist': alpha * F.cross_entropy(dist_logits, teacher_label)}

    def label_loss(self, logits: torch.Tensor, data_samples: Dict[str, torch.Tensor]):
        """Soft-target CE on mixup targets, else (label-smoothed) CE on hard labels."""
        if data_samples.get('gt_score') is not None:
            return self.soft_target_loss(logits, data_samples['gt_score'])
        return F.cross_entropy(logits, data_samples['gt_label'],
                               label_smoothing=self.label_smoothing)

    def predict(self, inputs: torch.Tensor, data_samples: Samples = None
                ) -> List[BaseDataElement]:
        """One element per image with ``pred_score`` (softmax), ``pred_label`` and, when
        known, ``gt_label`` — the fields :class:`mmeff.evaluation.Accuracy` reads."""
        logits = self.head(self.extract_feat(inputs))
        if isinstance(logits, (tuple, list)):  # head left in training mode
            logits = (logits[0] + logits[1]) / 2
        scores = logits.float().softmax(dim=1)
        labels = scores.argmax(dim=1)
        gt = data_samples.get('gt_label') if data_samples else None
        results = []
        for i in range(scores.shape[0]):
            sample = BaseDataElement(pred_score=scores[i], pred_label=labels[i])
            if gt is not None:
                sample.gt_label = gt[i]
            results.append(sample)
        return results
