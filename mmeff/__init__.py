"""mmeff: fast mobile vision transformers for OpenMMLab 3.x dense prediction.

Importing mmeff registers everything a config can name: the models (backbones, necks, heads,
classifiers; each family also registers its checkpoint converter) and the metrics.
"""
from mmeff.version import __version__
from mmeff import evaluation, models  # noqa: F401,E402  (importing registers them)
