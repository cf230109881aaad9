"""mmeff: fast mobile vision transformers for OpenMMLab 3.x dense prediction."""
from .version import __version__
