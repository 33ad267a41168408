"""Rendering a planned frame: the camera's fixed background, props and people, then the camera.

Things are painted far to near (by the row their feet stand on), which gives occlusion for free.
The camera then blurs, casts its colour and adds sensor noise; JPEG comes when the file is saved.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from training.synth.figures import draw_person
from training.synth.scenes import Camera, FramePlan, Prop

STONE = ((150, 150, 145), (120, 90, 55), (190, 180, 160))  # grey, bronze, sandstone statues


def render_frame(frame: FramePlan) -> Image.Image:
    """The frame as its camera records it, at the camera's size (before JPEG compression)."""
    image = Image.fromarray(_background(frame.camera))
    draw = ImageDraw.Draw(image)
    things = [(p.box[3], 0, i) for i, p in enumerate(frame.props)]
    things += [(p.box[3], 1, i) for i, p in enumerate(frame.people)]
    for _, is_person, index in sorted(things):
        if is_person:
            draw_person(draw, frame.people[index])
        else:
            _draw_prop(draw, frame.props[index])
    rng = np.random.default_rng([frame.camera.scene_seed, frame.index])
    return _apply_camera(image, frame.camera, rng)


@lru_cache(maxsize=16)
def _background(camera: Camera) -> np.ndarray:
    """A street scene fixed per camera: facades with windows above the horizon, paving below."""
    rng = np.random.default_rng(camera.scene_seed)
    width, height = camera.size
    horizon = int(camera.horizon * height)
    rows = np.arange(height, dtype=np.float32)[:, None]
    ground = rng.uniform(90, 170) + rng.uniform(-15, 15, size=3)
    sky = np.array([170, 190, 215]) * rng.uniform(0.85, 1.1)
    shade = np.where(rows < horizon, 1.0, 0.85 + 0.3 * (rows - horizon) / max(1, height - horizon))
    colour = np.where(rows[..., None] < horizon, sky, ground) * shade[..., None]
    canvas = np.broadcast_to(colour, (height, 1, 3)).repeat(width, axis=1)
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    _draw_facades(draw, rng, width, horizon)
    _draw_paving(draw, rng, width, height, horizon, ground)
    return np.asarray(image)


def _draw_facades(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, horizon: int):
    x = 0.0
    while x < width:
        facade_w = rng.uniform(0.15, 0.4) * width
        top = rng.uniform(0.0, 0.5) * horizon
        wall = tuple(int(c) for c in rng.uniform(80, 200) + rng.uniform(-20, 20, size=3))
        draw.rectangle((x, top, x + facade_w, horizon), fill=wall)
        window = tuple(int(c * 0.55) for c in wall)
        step_x, step_y = facade_w / rng.integers(3, 7), max(4.0, (horizon - top) / 4)
        for wy in np.arange(top + step_y * 0.3, horizon - step_y * 0.6, step_y):
            for wx in np.arange(x + step_x * 0.25, x + facade_w - step_x * 0.5, step_x):
                draw.rectangle((wx, wy, wx + step_x * 0.5, wy + step_y * 0.55), fill=window)
        x += facade_w


def _draw_paving(draw, rng: np.random.Generator, width: int, height: int, horizon: int, ground):
    """Joints converging on a vanishing point, rows closer together towards the horizon."""
    joint = tuple(int(c * 0.8) for c in ground)
    vanish_x = rng.uniform(0.2, 0.8) * width
    for foot_x in np.linspace(-width, 2 * width, 13):
        draw.line((vanish_x, horizon, foot_x, height), fill=joint, width=1)
    depth = height - horizon
    for k in range(1, 9):
        y = horizon + depth * (k / 9) ** 2
        draw.line((0, y, width, y), fill=joint, width=1)
    draw.rectangle((0, horizon - 1, width, horizon + 1), fill=tuple(int(c * 0.6) for c in ground))


def _draw_prop(draw: ImageDraw.ImageDraw, prop: Prop) -> None:
    rng = np.random.default_rng(prop.seed)
    x1, y1, x2, y2 = prop.box
    w, h, cx = x2 - x1, y2 - y1, (x1 + x2) / 2
    if prop.kind == "lamp":
        pole = int(rng.integers(50, 90))
        draw.rectangle((cx - w * 0.12, y1 + h * 0.04, cx + w * 0.12, y2), fill=(pole,) * 3)
        draw.ellipse((x1, y1, x2, y1 + h * 0.07), fill=(235, 230, 190))
    elif prop.kind == "tree":
        draw.rectangle((cx - w * 0.08, y1 + h * 0.45, cx + w * 0.08, y2), fill=(85, 60, 35))
        leaf = (int(rng.integers(30, 70)), int(rng.integers(90, 140)), int(rng.integers(30, 60)))
        draw.ellipse((x1, y1, x2, y1 + h * 0.62), fill=leaf)
    elif prop.kind == "bin":
        body = tuple(int(c) for c in rng.choice([(40, 80, 50), (70, 70, 75), (40, 60, 110)]))
        draw.rectangle((x1 + w * 0.05, y1 + h * 0.12, x2 - w * 0.05, y2), fill=body)
        draw.rectangle((x1, y1, x2, y1 + h * 0.14), fill=(50, 50, 50))
    elif prop.kind == "bench":
        wood = (int(rng.integers(100, 140)), 75, 40)
        draw.rectangle((x1, y1, x2, y1 + h * 0.3), fill=wood)
        draw.rectangle((x1, y1 + h * 0.45, x2, y1 + h * 0.6), fill=wood)
        for leg_x in (x1 + w * 0.08, x2 - w * 0.12):
            draw.rectangle((leg_x, y1 + h * 0.6, leg_x + w * 0.04, y2), fill=(40, 40, 40))
    elif prop.kind == "sign":
        draw.rectangle((cx - w * 0.06, y1 + h * 0.4, cx + w * 0.06, y2), fill=(90, 90, 95))
        board = tuple(int(c) for c in rng.integers(40, 230, size=3))
        draw.rectangle((x1, y1, x2, y1 + h * 0.42), fill=board)
        for k in range(3):  # lines of lettering
            ty = y1 + h * (0.08 + 0.11 * k)
            draw.rectangle((x1 + w * 0.15, ty, x2 - w * 0.15, ty + h * 0.04), fill=(245, 245, 245))
    else:  # a statue on a pedestal: person-shaped, one stone colour
        stone = STONE[int(rng.integers(len(STONE)))]
        draw.rectangle((x1, y1 + h * 0.82, x2, y2), fill=tuple(int(c * 0.8) for c in stone))
        fig_h = h * 0.82
        draw.ellipse((cx - fig_h * 0.06, y1, cx + fig_h * 0.06, y1 + fig_h * 0.13), fill=stone)
        draw.rectangle(
            (x1 + w * 0.12, y1 + fig_h * 0.14, x2 - w * 0.12, y1 + fig_h * 0.55), fill=stone
        )
        draw.rectangle((cx - w * 0.28, y1 + fig_h * 0.55, cx + w * 0.28, y1 + fig_h), fill=stone)


def _apply_camera(image: Image.Image, camera: Camera, rng: np.random.Generator) -> Image.Image:
    if camera.blur > 0.25:
        image = image.filter(ImageFilter.GaussianBlur(camera.blur))
    pixels = np.asarray(image, dtype=np.float32)
    exposure = rng.uniform(0.9, 1.1)  # frame-to-frame light change
    pixels = pixels * (np.asarray(camera.gains, dtype=np.float32) * exposure)
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * camera.noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
