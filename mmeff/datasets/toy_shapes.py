"""Drawing primitives for the toy datasets: shape polygons, colours and noisy backgrounds.

Every shape is a polygon (ellipses are 32-gons) so that what is painted on the image, the COCO
polygon and the semantic label map all describe exactly the same region. All randomness comes
from a ``numpy.random.Generator`` passed in, which is what makes the datasets reproducible.
"""
import colorsys
from typing import Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

Color = Tuple[int, int, int]

SHAPES = ('rectangle', 'ellipse', 'triangle', 'diamond')
_ELLIPSE_POINTS = 32


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def shape_polygon(shape: str, size: float, rng: np.random.Generator) -> np.ndarray:
    """A polygon (N, 2) of ``shape`` centred on the origin whose larger extent is about ``size``.

    Rectangles stay within +-20 degrees of axis-aligned and diamonds are squares turned by
    45 +-10 degrees, so that the two classes are told apart by their corners' orientation.
    """
    half = size / 2
    if shape == 'rectangle':
        aspect = rng.uniform(0.55, 1.0)
        w, h = (half, half * aspect) if rng.random() < 0.5 else (half * aspect, half)
        pts = np.array([[-w, -h], [w, -h], [w, h], [-w, h]])
        return _rotate(pts, np.deg2rad(rng.uniform(-20, 20)))
    if shape == 'ellipse':
        t = np.linspace(0, 2 * np.pi, _ELLIPSE_POINTS, endpoint=False)
        ry = half * rng.uniform(0.6, 1.0)
        pts = np.stack([half * np.cos(t), ry * np.sin(t)], axis=1)
        return _rotate(pts, rng.uniform(0, np.pi))
    if shape == 'triangle':
        base = rng.uniform(0, 2 * np.pi)
        angles = base + np.deg2rad([0, 120, 240]) + np.deg2rad(rng.uniform(-10, 10, size=3))
        return np.stack([half * np.cos(angles), half * np.sin(angles)], axis=1)
    if shape == 'diamond':
        aspect = rng.uniform(0.7, 1.0)
        pts = np.array([[0, -half], [half * aspect, 0], [0, half], [-half * aspect, 0]])
        return _rotate(pts, np.deg2rad(rng.uniform(-10, 10)))
    raise ValueError(f'unknown shape {shape!r}; valid shapes: {SHAPES}')


def place_polygon(poly: np.ndarray, height: int, width: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Translate ``poly`` to a uniformly random position where it lies fully inside the image.

    A shape larger than the image (less a 1-pixel border) is first scaled down about its
    corner to fit: a drawn size near the image side, once rotated, can exceed it, and raising
    there made some image counts impossible. Shapes that fit take no other branch and draw
    nothing more from ``rng``, so the images generated before this scaling are unchanged.
    """
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    ext = hi - lo
    room = np.array([width - 2, height - 2], dtype=float)
    if ext[0] > room[0] or ext[1] > room[1]:
        poly = lo + (poly - lo) * float(np.min(room / ext))
        ext = np.minimum(poly.max(axis=0) - lo, room)
    x0 = rng.uniform(1, width - 1 - ext[0])
    y0 = rng.uniform(1, height - 1 - ext[1])
    return np.round(poly - lo + np.array([x0, y0]), 2)


def polygon_area(poly: np.ndarray) -> float:
    """Shoelace area of a simple polygon."""
    x, y = poly[:, 0], poly[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def boxes_overlap(a: Sequence[float], b: Sequence[float], margin: float) -> bool:
    """Whether two xyxy boxes, each grown by ``margin``, intersect."""
    return not (a[2] + margin <= b[0] or b[2] + margin <= a[0] or
                a[3] + margin <= b[1] or b[3] + margin <= a[1])


def hsv_color(hue: float, rng: np.random.Generator, sat: Tuple[float, float] = (0.65, 1.0),
              val: Tuple[float, float] = (0.6, 1.0)) -> Color:
    """An RGB colour of hue ``hue`` (0..1) with random saturation and value in the ranges."""
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(*sat), rng.uniform(*val))
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def random_vivid_color(rng: np.random.Generator) -> Color:
    """A saturated colour of any hue: stands out against the greyish backgrounds."""
    return hsv_color(rng.random(), rng)


def noisy_background(height: int, width: int, rng: np.random.Generator) -> Image.Image:
    """A low-saturation base colour with a smooth gradient and a coarse blotch texture."""
    base = np.array(hsv_color(rng.random(), rng, sat=(0.0, 0.25), val=(0.25, 0.6)), np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    direction = rng.uniform(-1, 1, size=2).astype(np.float32)
    ramp = (xx / max(width, 1) * direction[0] + yy / max(height, 1) * direction[1]) * 40.0
    coarse = rng.normal(0, 12, size=(max(height // 16, 1), max(width // 16, 1), 3))
    blotches = np.asarray(Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize(
        (width, height), Image.BILINEAR), np.float32) - 128
    img = base[None, None, :] + ramp[..., None] + blotches
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def add_pixel_noise(img: Image.Image, rng: np.random.Generator, sigma: float = 8.0) -> Image.Image:
    """Per-pixel Gaussian noise over the whole picture (shapes included)."""
    arr = np.asarray(img, np.float32)
    arr = arr + rng.normal(0, sigma, size=arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def draw_polygon(draw: ImageDraw.ImageDraw, poly: np.ndarray, fill) -> None:
    draw.polygon([tuple(p) for p in poly.tolist()], fill=fill)


def stripes(height: int, width: int, rng: np.random.Generator) -> Image.Image:
    """Two-colour stripes of random orientation and period (an ImageNet 'texture' class)."""
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(0.12, 0.3) * min(height, width)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = (xx * np.cos(angle) + yy * np.sin(angle)) / period
    mask = (np.floor(phase + rng.random()) % 2).astype(bool)
    return _two_colour(mask, rng)


def checker(height: int, width: int, rng: np.random.Generator) -> Image.Image:
    """A checkerboard of random cell size and colours (an ImageNet 'texture' class)."""
    cell = rng.uniform(0.1, 0.25) * min(height, width)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ox, oy = rng.uniform(0, cell, size=2)
    mask = ((np.floor((xx + ox) / cell) + np.floor((yy + oy) / cell)) % 2).astype(bool)
    return _two_colour(mask, rng)


def _two_colour(mask: np.ndarray, rng: np.random.Generator) -> Image.Image:
    hue = rng.random()
    a = np.array(hsv_color(hue, rng), np.uint8)
    b = np.array(hsv_color(hue + rng.uniform(0.3, 0.7), rng, val=(0.15, 0.5)), np.uint8)
    return Image.fromarray(np.where(mask[..., None], a, b))
