"""Models: shared layers, the three backbone families, necks and classifiers."""
from . import backbones, layers  # noqa: F401  (importing registers the modules)
