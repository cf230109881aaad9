"""mmeff: fast mobile vision transformers for OpenMMLab 3.x dense prediction."""
from .version import __version__
from . import evaluation  # noqa: F401,E402  (registers the metrics for configs that name them)
