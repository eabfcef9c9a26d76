"""Phantoms of what a chest X-ray service must recognise and decline: hands, knees and CT slices.

Same conventions as :mod:`radtrace.testing.phantom`: numpy only, deterministic per seed.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from radtrace.testing.shapes import (
    FloatImage,
    drawing_grid,
    ellipse,
    enlarge,
    inside,
    segment_distance,
    smooth_noise,
)

__all__ = ["Extremity", "axial_chest_ct", "extremity_phantom"]

Extremity = Literal["HAND", "KNEE"]


def extremity_phantom(rows: int, columns: int, body_part: Extremity, seed: int = 0) -> FloatImage:
    """Return a frontal hand or knee radiograph phantom: the "not a chest" input for refusal tests.

    Same conventions as :func:`radtrace.testing.phantom.chest_phantom`: float32 attenuation in
    [0, 1], deterministic per seed.
    """
    x, y = drawing_grid(rows, columns)
    rng = np.random.default_rng(seed)
    if body_part == "KNEE":
        soft = inside(0.75 - segment_distance(x, y, (0.0, -0.2), (0.0, 1.2)), 0.05)
        bones = [
            inside(0.24 - segment_distance(x, y, (0.0, -0.2), (0.0, 0.40)), 0.03),  # femur
            inside(ellipse(x, y, (0.0, 0.44), (0.36, 0.08)), 0.02),  # femoral condyles
            inside(ellipse(x, y, (0.0, 0.565), (0.34, 0.045)), 0.02),  # tibial plateau
            inside(0.21 - segment_distance(x, y, (0.0, 0.60), (0.0, 1.2)), 0.03),  # tibia
            inside(0.07 - segment_distance(x, y, (0.42, 0.63), (0.38, 1.2)), 0.02),  # fibula
        ]
        overlay = 0.08 * inside(ellipse(x, y, (0.0, 0.40), (0.17, 0.08)), 0.02)  # patella
    else:
        # Rays from the carpus to the fingertips: thumb, index, middle, ring, little finger.
        rays = [(-0.30, 0.80, -0.85, 0.35), (-0.15, 0.80, -0.32, 0.05), (0.0, 0.80, 0.0, 0.02)]
        rays += [(0.15, 0.80, 0.28, 0.06), (0.28, 0.80, 0.55, 0.16)]
        soft = inside(0.50 - segment_distance(x, y, (0.0, 0.58), (0.0, 1.2)), 0.04)
        bones = [inside(0.12 - segment_distance(x, y, (-0.15, 0.86), (0.15, 0.86)), 0.02)]  # carpus
        for x0, y0, x1, y1 in rays:
            web = 0.0 if x1 < -0.5 else 0.45  # the thumb is free from the carpus on
            finger = segment_distance(x, y, (x0 + (x1 - x0) * web, y0 + (y1 - y0) * web), (x1, y1))
            soft = np.maximum(soft, inside(0.11 - finger, 0.03))
            # Metacarpal, then proximal, middle and distal phalanges with joint spaces between.
            for start, end in ((0.0, 0.45), (0.49, 0.72), (0.76, 0.88), (0.91, 0.99)):
                a = (x0 + (x1 - x0) * start, y0 + (y1 - y0) * start)
                b = (x0 + (x1 - x0) * end, y0 + (y1 - y0) * end)
                bones.append(inside(0.05 - segment_distance(x, y, a, b), 0.015))
        overlay = np.zeros_like(soft)
    bone = functools.reduce(np.maximum, bones)
    att = 0.03 + 0.32 * soft + 0.30 * bone * soft + overlay * soft
    att = att + smooth_noise(rng, y.shape[0], x.shape[1], 8, 0.012) * soft
    return enlarge(np.clip(att, 0.0, 1.0).astype(np.float32), rows, columns)


def axial_chest_ct(rows: int, columns: int, seed: int = 0) -> NDArray[np.int16]:
    """Return an axial CT slice through the mid chest in Hounsfield units (int16), patient supine.

    Radiological convention: the patient's right on the image's left, anterior at the top.
    """
    x, y = drawing_grid(rows, columns)
    rng = np.random.default_rng(seed)
    v = 2.0 * y - 1.0  # -1 anterior (top) .. 1 posterior (bottom), same scale as x
    body = inside(ellipse(x, v, (0.0, 0.0), (0.85, 0.62)), 0.02)
    lungs = np.maximum(
        inside(ellipse(x, v, (-0.38, 0.02), (0.30, 0.46)), 0.02),
        inside(ellipse(x, v, (0.40, 0.04), (0.28, 0.44)), 0.02),
    )
    heart = inside(ellipse(x, v, (0.10, -0.12), (0.26, 0.22), angle=0.4), 0.02)
    aorta = inside(ellipse(x, v, (-0.02, 0.30), (0.06, 0.06)), 0.01)
    vertebra = inside(ellipse(x, v, (0.0, 0.50), (0.11, 0.10)), 0.01)
    ribs = functools.reduce(
        np.maximum,
        [
            inside(
                0.035
                - segment_distance(
                    x,
                    y,
                    (side * 0.78 * np.sin(t), 0.5 + 0.29 * np.cos(t)),
                    (side * 0.80 * np.sin(t), 0.5 + 0.30 * np.cos(t)),
                ),
                0.01,
            )
            for side in (-1.0, 1.0)
            for t in (0.9, 1.4, 1.9, 2.4)
        ],
    )
    hu = -1000.0 + body * 1040.0  # air, then soft tissue at +40
    aerated = lungs * (1.0 - heart)
    hu = hu - aerated * (890.0 + smooth_noise(rng, y.shape[0], x.shape[1], 40, 40.0))
    hu = hu + aorta * 10.0 + np.maximum(vertebra, ribs) * 660.0
    table = inside(0.015 - np.abs(v - 0.72), 0.01) * 300.0  # the couch under the patient
    return np.rint(enlarge((hu + table).astype(np.float32), rows, columns)).astype(np.int16)
