"""mmeff: fast mobile vision transformers for OpenMMLab 3.x dense prediction.

Importing mmeff registers everything a config can name: the models (backbones, necks, heads,
classifiers; each family also registers its checkpoint converter) and the metrics, and allows
the few mmengine / numpy types of runner checkpoints in ``torch.load(weights_only=True)``, so that
MMDet's and MMSeg's inference APIs load the checkpoints tools/train.py writes
(``mmeff.checkpoint.io.allow_runner_checkpoints``; docs/weights.md says why that is safe), and
routes mmengine's loading of URLs and ``timm:`` tags through mmeff's cache and weights_only
loading (``register_checkpoint_schemes``).
"""
from mmeff.version import __version__
from mmeff import evaluation, models  # noqa: F401,E402  (importing registers them)
from mmeff.checkpoint.io import (allow_runner_checkpoints,  # noqa: E402
                                 register_checkpoint_schemes)

allow_runner_checkpoints()
register_checkpoint_schemes()
