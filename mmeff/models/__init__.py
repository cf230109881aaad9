"""Models: shared layers, the three backbone families, necks, heads and classifiers."""
from mmeff.models import backbones, classifiers, heads, layers, necks  # noqa: F401  (importing registers them)
