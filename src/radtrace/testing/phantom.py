"""A deterministic chest radiograph phantom drawn with numpy alone.

The phantom is an *attenuation map*: a float image in [0, 1] where 0 is air (black on a conventional
MONOCHROME2 display) and 1 is dense bone (white). It is not a physical simulation; it only has to look
like a chest X-ray to a person or a model and to carry structure that tests can check by numbers: two
dark lung fields, a bright mediastinum and heart shadow that leans to the patient's left, diaphragm
domes (the right one higher), a spine, curved ribs, clavicles and a little smooth noise.

Frontal views (PA, AP) are drawn in the conventional display orientation, the patient's right on the
image's left (Patient Orientation ``L\\F``). The left lateral view (LL) has the patient facing the
image's left (``P\\F``); the right lateral (RL) is its mirror image (``A\\F``).

Everything is vectorised; a 2048 x 2048 phantom takes a few hundred milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from radtrace.testing.shapes import (
    Field,
    FloatImage,
    Mask,
    bands,
    drawing_grid,
    ellipse,
    enlarge,
    enlarge_mask,
    inside,
    nearest_edge,
    smooth_noise,
    smoothstep,
)

__all__ = ["ChestPhantom", "View", "chest_phantom", "render_chest"]

View = Literal["PA", "AP", "LL", "RL"]


@dataclass(frozen=True)
class ChestPhantom:
    """A rendered phantom and the regions it was drawn from.

    On frontal views ``right_lung`` and ``left_lung`` are the patient's right lung (image left) and
    left lung (image right). On lateral views the lungs are superimposed and both hold the same field.
    ``mediastinum`` is the central soft-tissue band plus the heart shadow on frontal views and the
    heart shadow on lateral views. Every mask is the core of its region, away from soft edges.
    """

    attenuation: FloatImage
    right_lung: Mask
    left_lung: Mask
    mediastinum: Mask
    body: Mask

    @property
    def lungs(self) -> Mask:
        """Both lung fields together."""
        return self.right_lung | self.left_lung


def chest_phantom(rows: int, columns: int, view: View = "PA", seed: int = 0) -> FloatImage:
    """Return a chest-like attenuation map, float32 in [0, 1], identical for identical arguments."""
    return render_chest(rows, columns, view, seed).attenuation


def render_chest(rows: int, columns: int, view: View = "PA", seed: int = 0) -> ChestPhantom:
    """Render the phantom for ``view`` together with its lung, mediastinum and body masks.

    ``seed`` varies the anatomy slightly (heart size, diaphragm height, rib phase) and the noise; the
    same seed always gives the same image.
    """
    if view not in ("PA", "AP", "LL", "RL"):
        raise ValueError(f"unknown view {view!r}; expected PA, AP, LL or RL")
    x, y = drawing_grid(rows, columns)
    rng = np.random.default_rng(seed)
    if view in ("PA", "AP"):
        drawn = _frontal(x, y, rng, anteroposterior=view == "AP")
    else:
        # Lateral: z is the anterior coordinate; LL faces the image's left, RL its right.
        drawn = _lateral(-x if view == "LL" else x, y, rng)
    if drawn.attenuation.shape == (rows, columns):
        return drawn
    return ChestPhantom(
        attenuation=enlarge(drawn.attenuation, rows, columns),
        right_lung=enlarge_mask(drawn.right_lung, rows, columns),
        left_lung=enlarge_mask(drawn.left_lung, rows, columns),
        mediastinum=enlarge_mask(drawn.mediastinum, rows, columns),
        body=enlarge_mask(drawn.body, rows, columns),
    )


def _frontal(x: Field, y: Field, rng: np.random.Generator, anteroposterior: bool) -> ChestPhantom:
    rows, columns = y.shape[0], x.shape[1]
    jitter = rng.uniform(-1.0, 1.0, size=4).astype(np.float32)
    # AP films magnify the heart (it is far from the detector) and are usually taken in poorer
    # inspiration, so the domes sit higher.
    heart_scale = (1.0 + 0.06 * float(jitter[0])) * (1.12 if anteroposterior else 1.0)
    dome_top = 0.66 + 0.02 * float(jitter[1]) - (0.04 if anteroposterior else 0.0)
    rib_phase = 0.012 * float(jitter[2])
    body_half_width = 0.84 + 0.03 * float(jitter[3])

    q = np.abs(x)  # distance from the midline, the same on both sides
    side = np.sign(x)  # -1 patient's right (image left), +1 patient's left

    # Body outline: neck, sloping shoulders, then the chest wall.
    shoulder = smoothstep((y - 0.03) / 0.14)
    half_width = 0.16 + (body_half_width - 0.16) * shoulder - 0.04 * y
    body_soft = inside(half_width - q, 0.03)
    thickness = np.sqrt(np.clip(1.0 - (q / half_width) ** 2, 0.0, 1.0))
    att = 0.03 + body_soft * (0.30 + 0.22 * thickness)

    # Lungs: rounded apex, lateral wall widening downwards, diaphragm dome below, the heart and the
    # aortic knob cutting into the medial borders.
    apex = 0.13 + 1.6 * (q - 0.38) ** 2
    lateral_wall = 0.50 + 0.22 * np.sqrt(np.clip((y - 0.12) / 0.5, 0.0, 1.0))
    right_dome = dome_top + 0.55 * (q - 0.36) ** 2
    dome = np.where(side < 0, right_dome, right_dome + 0.03).astype(np.float32)
    heart = ellipse(x, y, (0.11 * heart_scale, 0.575), (0.30 * heart_scale, 0.15 * heart_scale), angle=0.25)
    aortic_knob = ellipse(x, y, (0.10, 0.34), (0.09, 0.05))
    lung_distance = nearest_edge(y - apex, lateral_wall - q, q - 0.10, dome - y, -heart, -aortic_knob)
    lung_soft = inside(lung_distance, 0.025)
    hilum = np.exp(-(((q - 0.17) / 0.12) ** 2 + ((y - 0.42) / 0.10) ** 2)).astype(np.float32)
    markings = smooth_noise(rng, rows, columns, 48, 0.018)
    att = att - lung_soft * (0.30 - 0.08 * hilum + markings)

    # Heart shadow, and the abdomen below the domes (liver right, a gastric air bubble left).
    att = att + 0.06 * inside(heart, 0.03) * body_soft
    att = att + 0.08 * inside(y - dome, 0.02) * body_soft
    bubble = ellipse(x, y, (0.30, dome_top + 0.09), (0.09, 0.045))
    att = att - 0.08 * inside(bubble, 0.02)

    # Spine, mostly hidden behind the mediastinum, its vertebral bodies faintly visible.
    vertebrae = 0.85 + 0.15 * np.cos(np.float32(2.0 * np.pi / 0.052) * y)
    att = att + 0.08 * inside(0.05 - q, 0.02) * vertebrae * body_soft

    # Ribs: posterior arcs rise from the spine and curve down laterally; anterior arcs are fainter.
    ribcage = inside(nearest_edge(lateral_wall + 0.06 - q, q - 0.05, dome + 0.05 - y), 0.03)
    ribcage = ribcage * smoothstep((y - apex + 0.05) / 0.04) * body_soft
    posterior = y + 0.22 * q - 0.60 * q * q + rib_phase
    anterior = y - 0.25 * q + 0.15 * q * q + rib_phase
    att = att + ribcage * (0.08 * bands(posterior, 0.058) + 0.035 * bands(anterior, 0.075, 0.25))

    # Clavicles: gently S-shaped bars from the sternal notch to the shoulders; higher on AP films.
    clavicle_y = (0.15 - 0.09 * q) if anteroposterior else (0.19 - 0.13 * q)
    clavicle_y = clavicle_y + 0.08 * q * (q - 0.55)
    clavicle = inside(0.015 - np.abs(y - clavicle_y), 0.012) * inside(np.minimum(q - 0.05, 0.60 - q), 0.03)
    att = att + 0.13 * clavicle * body_soft

    # Scapulae: projected over the lateral lungs on AP films, rotated clear of them on PA films.
    scapula = ellipse(q, y, (0.62 if anteroposterior else 0.76, 0.30), (0.10, 0.16))
    att = att + 0.05 * inside(scapula, 0.03) * body_soft
    humeral_head = ellipse(q, y, (0.86, 0.17), (0.07, 0.07))
    att = att + 0.15 * inside(humeral_head, 0.015) * body_soft

    att = att + smooth_noise(rng, rows, columns, 8, 0.012) * body_soft
    attenuation = np.clip(att, 0.0, 1.0).astype(np.float32)

    lung_core = lung_distance > 0.03
    mediastinum = ((q < 0.07) & (y > 0.25) & (y < dome_top)) | (heart > 0.03)
    return ChestPhantom(
        attenuation=attenuation,
        right_lung=lung_core & (side < 0),
        left_lung=lung_core & (side > 0),
        mediastinum=mediastinum,
        body=body_soft > 0.99,
    )


def _lateral(z: Field, y: Field, rng: np.random.Generator) -> ChestPhantom:
    rows, columns = y.shape[0], z.shape[1]
    jitter = rng.uniform(-1.0, 1.0, size=3).astype(np.float32)
    heart_scale = 1.0 + 0.06 * float(jitter[0])
    dome_top = 0.62 + 0.02 * float(jitter[1])
    rib_phase = 0.012 * float(jitter[2])

    # Body: anterior chest wall and back; the raised arms cross the upper chest.
    front = 0.50 + 0.06 * smoothstep((y - 0.1) / 0.4)
    back = -0.62 + 0.04 * y
    body_distance = np.minimum(front - z, z - back)
    body_soft = inside(body_distance, 0.03)
    depth = np.clip(body_distance / 0.3, 0.0, 1.0)
    att = 0.03 + body_soft * (0.38 + 0.15 * depth)

    # Superimposed lungs; the posterior costophrenic recesses reach lowest.
    apex = 0.12 + 1.4 * (z + 0.05) ** 2
    dome = dome_top + 0.40 * (z - 0.15) ** 2
    heart = ellipse(z, y, (0.19, 0.56), (0.23 * heart_scale, 0.16 * heart_scale), angle=0.3)
    lung_distance = nearest_edge(y - apex, 0.44 - z, z + 0.46, dome - y, -heart)
    lung_soft = inside(lung_distance, 0.03)
    markings = smooth_noise(rng, rows, columns, 40, 0.015)
    att = att - lung_soft * (0.26 + markings)

    att = att + 0.06 * inside(heart, 0.03) * body_soft
    att = att + 0.08 * inside(y - dome, 0.02) * body_soft
    # The second (left) dome projects a little lower than the first.
    att = att + 0.03 * inside(0.012 - np.abs(y - dome - 0.03), 0.01) * inside(0.40 - np.abs(z), 0.05)

    # Thoracic spine: vertebral bodies separated by discs, posterior to the lungs.
    vertebrae = 0.6 + 0.4 * bands(y, 0.052, 0.7)
    att = att + 0.12 * inside(0.07 - np.abs(z + 0.53), 0.02) * vertebrae * body_soft
    sternum = inside(0.02 - np.abs(z - front + 0.04), 0.015) * inside(0.20 - np.abs(y - 0.36), 0.03)
    att = att + 0.08 * sternum

    ribs = bands(y - 0.35 * (z + 0.5) ** 2 + rib_phase, 0.06, 0.3)
    att = att + 0.04 * ribs * inside(np.minimum(-0.05 - z, z + 0.55), 0.05) * (y < dome + 0.05)

    humerus = inside(0.035 - np.abs(z - 0.25 + 0.8 * (y - 0.05)), 0.02) * (y < 0.25)
    att = att + 0.10 * humerus * body_soft

    att = att + smooth_noise(rng, rows, columns, 8, 0.012) * body_soft
    attenuation = np.clip(att, 0.0, 1.0).astype(np.float32)

    lung_core = lung_distance > 0.03
    return ChestPhantom(
        attenuation=attenuation,
        right_lung=lung_core,
        left_lung=lung_core.copy(),
        mediastinum=heart > 0.03,
        body=body_soft > 0.99,
    )
