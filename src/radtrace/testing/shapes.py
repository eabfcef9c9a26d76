"""Drawing primitives for the synthetic radiograph phantoms: soft-edged shapes on a normalised grid.

Coordinates: ``x`` runs from -1 (image left) to 1 (image right) across the columns, ``y`` from 0 (top)
to 1 (bottom) down the rows. Shapes are described by signed distances, positive inside, turned into
soft memberships by :func:`inside`, so edges are smooth at any resolution. Large images are drawn at
most ``DRAW_LIMIT`` pixels a side and enlarged, since nothing is finer than the soft edges.
"""

from __future__ import annotations

import functools
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

FloatImage = NDArray[np.float32]
#: A scalar field on the drawing grid; float32 in practice, float64 where numpy promotes.
Field = NDArray[np.floating[Any]]
Mask = NDArray[np.bool_]

DRAW_LIMIT: Final = 1024


def drawing_grid(rows: int, columns: int) -> tuple[FloatImage, FloatImage]:
    """Return broadcastable ``(x, y)`` coordinates for drawing a ``rows`` x ``columns`` image.

    The grid is capped at ``DRAW_LIMIT`` a side; :func:`enlarge` brings the drawing to full size.
    """
    if rows < 32 or columns < 32:
        raise ValueError(f"phantom needs at least 32 x 32 pixels, got {rows} x {columns}")
    x = np.linspace(-1.0, 1.0, min(columns, DRAW_LIMIT), dtype=np.float32)[np.newaxis, :]
    y = np.linspace(0.0, 1.0, min(rows, DRAW_LIMIT), dtype=np.float32)[:, np.newaxis]
    return x, y


def segment_distance(x: Field, y: Field, a: tuple[float, float], b: tuple[float, float]) -> Field:
    """Distance, in x units, from every pixel to the segment from ``a`` to ``b``."""
    ax, ay, bx, by = a[0], 2.0 * a[1], b[0], 2.0 * b[1]
    px, py = x - ax, 2.0 * y - ay
    dx, dy = bx - ax, by - ay
    t = np.clip((px * dx + py * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.sqrt((px - t * dx) ** 2 + (py - t * dy) ** 2).astype(np.float32)


def smoothstep(edge: Field) -> Field:
    """Hermite step from 0 (at ``edge`` <= 0) to 1 (at ``edge`` >= 1)."""
    s = np.clip(edge, 0.0, 1.0)
    return (s * s * (3.0 - 2.0 * s)).astype(np.float32)


def inside(distance: Field, width: float) -> Field:
    """Soft membership from a signed distance (positive inside) with an edge ``width`` wide."""
    return smoothstep(0.5 + distance / np.float32(width))


def nearest_edge(*distances: Field) -> Field:
    """Signed distance to the intersection of regions: the smallest of their distances."""
    return functools.reduce(np.minimum, distances).astype(np.float32)


def ellipse(
    x: Field,
    y: Field,
    centre: tuple[float, float],
    axes: tuple[float, float],
    angle: float = 0.0,
) -> Field:
    """Signed, roughly Euclidean distance to an ellipse boundary (positive inside), tilted by ``angle``."""
    dx, dy = x - centre[0], y - centre[1]
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    r = np.sqrt(((dx * cos + dy * sin) / axes[0]) ** 2 + ((dy * cos - dx * sin) / axes[1]) ** 2)
    return ((1.0 - r) * min(axes)).astype(np.float32)


def enlarge(image: Field, rows: int, columns: int) -> FloatImage:
    """Bilinear resampling of ``image`` onto a ``rows`` x ``columns`` grid spanning the same extent."""
    in_rows, in_columns = image.shape
    if (in_rows, in_columns) == (rows, columns):
        return image.astype(np.float32, copy=False)
    rpos = np.linspace(0.0, in_rows - 1, rows, dtype=np.float32)
    cpos = np.linspace(0.0, in_columns - 1, columns, dtype=np.float32)
    r0 = np.minimum(rpos.astype(np.int64), in_rows - 2)
    c0 = np.minimum(cpos.astype(np.int64), in_columns - 2)
    fr = (rpos - r0)[:, np.newaxis]
    fc = (cpos - c0)[np.newaxis, :]
    along = image[:, c0] * (1.0 - fc) + image[:, c0 + 1] * fc
    enlarged: FloatImage = (along[r0] * (1.0 - fr) + along[r0 + 1] * fr).astype(np.float32)
    return enlarged


def enlarge_mask(mask: Mask, rows: int, columns: int) -> Mask:
    """Nearest-neighbour resampling of a mask onto a ``rows`` x ``columns`` grid."""
    in_rows, in_columns = mask.shape
    ridx = np.rint(np.linspace(0.0, in_rows - 1, rows)).astype(np.int64)
    cidx = np.rint(np.linspace(0.0, in_columns - 1, columns)).astype(np.int64)
    return mask[np.ix_(ridx, cidx)]


def smooth_noise(rng: np.random.Generator, rows: int, columns: int, cells: int, amplitude: float) -> FloatImage:
    """Gaussian noise on a coarse ``cells`` grid, bilinearly enlarged: smooth at pixel scale."""
    coarse = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32) * np.float32(amplitude)
    return enlarge(coarse, rows, columns)


def bands(phase_coordinate: Field, spacing: float, duty: float = 0.35) -> Field:
    """Periodic smooth bands along ``phase_coordinate`` (ribs, vertebrae), ``duty`` of each period wide."""
    c = np.cos(np.float32(2.0 * np.pi / spacing) * phase_coordinate)
    threshold = np.float32(np.cos(np.pi * duty))
    return smoothstep((c - threshold) / (1.0 - threshold) * 2.0)
