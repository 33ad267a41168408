"""Drawing a person with PIL: head, hair, torso with its pattern, arms, legs, shoes, bags.

Proportions are fractions of the person's box height (head 13%, torso 15..53%, legs 52..95%,
shoes to the bottom), so a figure looks the same at 30 px and at 600 px, only sharper.
"""

from __future__ import annotations

from PIL import ImageDraw

from training.synth.appearance import (
    COLOURS,
    HAIR_COLOURS,
    RGB,
    SHOE_COLOURS,
    SKIN_TONES,
    Appearance,
)
from training.synth.scenes import Person


class _Body:
    """Pixel geometry of one figure; y(f) is the row at fraction f of the height from the top."""

    def __init__(self, person: Person) -> None:
        x1, y1, x2, y2 = person.box
        self.top, self.height, self.width = y1, y2 - y1, x2 - x1
        self.cx = (x1 + x2) / 2
        self.side = person.facing in ("left", "right")
        self.turn = -1 if person.facing == "left" else 1  # the way a side view faces
        self.torso_w = self.width * (0.5 if self.side else 0.62)
        self.head_w = self.height * 0.115

    def y(self, fraction: float) -> float:
        return self.top + fraction * self.height

    def torso_box(self) -> tuple[float, float, float, float]:
        half = self.torso_w / 2
        return (self.cx - half, self.y(0.15), self.cx + half, self.y(0.53))


def draw_person(draw: ImageDraw.ImageDraw, person: Person) -> None:
    """Draw `person` filling its box, lit by its sighting's shade."""
    look = person.appearance
    body = _Body(person)

    def lit(rgb: RGB) -> RGB:
        red, green, blue = (min(255, int(c * person.shade)) for c in rgb)
        return red, green, blue

    skin, upper = lit(SKIN_TONES[look.skin_tone]), lit(COLOURS[look.upper_color])
    hair = lit(HAIR_COLOURS[look.hair_color])
    if look.long_hair and person.facing != "back":  # seen behind the shoulders
        _draw_long_hair(draw, body, hair)
    _draw_legs(draw, body, look, person.stride, lit)
    torso = body.torso_box()
    draw.rounded_rectangle(torso, radius=body.width * 0.08, fill=upper)
    _draw_pattern(draw, torso, look.upper_pattern, lit(look.pattern_rgb))
    _draw_arms(draw, body, look, upper, skin)
    if look.backpack:
        _draw_backpack(draw, body, person.facing, lit(COLOURS[look.bag_color]))
    if look.handbag:
        bag_x = body.cx - body.turn * body.width * 0.48
        box = (bag_x - body.width * 0.12, body.y(0.45), bag_x + body.width * 0.12, body.y(0.6))
        draw.rectangle(box, fill=lit(COLOURS[look.bag_color]))
    _draw_head(draw, body, person.facing, look, skin, hair, lit)


def _draw_long_hair(draw: ImageDraw.ImageDraw, body: _Body, hair: RGB) -> None:
    half = body.head_w * 0.62
    draw.rectangle((body.cx - half, body.y(0.05), body.cx + half, body.y(0.25)), fill=hair)


def _draw_legs(
    draw: ImageDraw.ImageDraw, body: _Body, look: Appearance, stride: float, lit
) -> None:
    skin, lower = lit(SKIN_TONES[look.skin_tone]), lit(COLOURS[look.lower_color])
    shoe = lit(SHOE_COLOURS[look.shoe_color])
    leg_w = body.torso_w * 0.42
    spread = body.width * (0.08 + 0.28 * stride)
    hip_y, foot_y = body.y(0.52), body.y(0.95)
    cloth_end = {"trousers": 0.95, "shorts": 0.7, "skirt": 0.52}[look.lower_kind]
    for sign in (-1, 1):
        hip_x, foot_x = body.cx + sign * body.torso_w * 0.24, body.cx + sign * spread
        _draw_limb(draw, (hip_x, hip_y), (foot_x, foot_y), leg_w, leg_w * 0.8, skin)
        if cloth_end > 0.52:
            t = (cloth_end - 0.52) / 0.43  # how far down the leg the cloth reaches
            knee = (hip_x + t * (foot_x - hip_x), body.y(cloth_end))
            _draw_limb(draw, (hip_x, hip_y), knee, leg_w, leg_w * (1 - 0.2 * t), lower)
        toe = foot_x + (body.turn * leg_w * 0.3 if body.side else 0)
        draw.ellipse((toe - leg_w * 0.6, body.y(0.93), toe + leg_w * 0.6, body.y(1.0)), fill=shoe)
    if look.lower_kind == "skirt":
        half_top, half_bottom = body.torso_w / 2, body.torso_w * 0.68
        draw.polygon(
            [
                (body.cx - half_top, hip_y),
                (body.cx + half_top, hip_y),
                (body.cx + half_bottom, body.y(0.74)),
                (body.cx - half_bottom, body.y(0.74)),
            ],
            fill=lower,
        )


def _draw_limb(draw, start, end, start_w: float, end_w: float, fill: RGB) -> None:
    """A tapered quadrilateral from start (its top centre) to end (its bottom centre)."""
    (sx, sy), (ex, ey) = start, end
    draw.polygon(
        [
            (sx - start_w / 2, sy),
            (sx + start_w / 2, sy),
            (ex + end_w / 2, ey),
            (ex - end_w / 2, ey),
        ],
        fill=fill,
    )


def _draw_pattern(draw: ImageDraw.ImageDraw, box, pattern: str, ink: RGB) -> None:
    x1, y1, x2, y2 = box
    tw, th = x2 - x1, y2 - y1
    if pattern == "hstripes":
        for k in range(4):
            top = y1 + th * (2 * k + 1) / 9
            draw.rectangle((x1, top, x2, top + th / 9), fill=ink)
    elif pattern == "vstripes":
        for k in range(3):
            left = x1 + tw * (2 * k + 1) / 7
            draw.rectangle((left, y1, left + tw / 7, y2), fill=ink)
    elif pattern == "checks":
        for row in range(4):
            for col in range(4):
                if (row + col) % 2:
                    cell = (x1 + col * tw / 4, y1 + row * th / 4)
                    draw.rectangle((*cell, cell[0] + tw / 4, cell[1] + th / 4), fill=ink)
    elif pattern == "logo":
        draw.rectangle((x1 + 0.28 * tw, y1 + 0.22 * th, x2 - 0.28 * tw, y1 + 0.55 * th), fill=ink)


def _draw_arms(draw: ImageDraw.ImageDraw, body: _Body, look: Appearance, upper, skin) -> None:
    arm_w = body.width * (0.15 if body.side else 0.17)
    sleeve_end = body.y(0.27 if look.short_sleeves else 0.5)
    if body.side:  # one arm seen, swinging in front of the torso
        shoulders = [(body.cx, body.y(0.17), body.cx + body.turn * body.width * 0.12)]
    else:
        half = body.torso_w / 2 + arm_w / 2
        shoulders = [(body.cx + s * half, body.y(0.17), body.cx + s * half * 1.05) for s in (-1, 1)]
    for sx, sy, hand_x in shoulders:
        hand_y = body.y(0.54)
        _draw_limb(draw, (sx, sy), (hand_x, hand_y), arm_w, arm_w * 0.85, skin)
        t = (sleeve_end - sy) / (hand_y - sy)
        elbow = (sx + t * (hand_x - sx), sleeve_end)
        _draw_limb(draw, (sx, sy), elbow, arm_w, arm_w * (1 - 0.15 * t), upper)


def _draw_backpack(draw: ImageDraw.ImageDraw, body: _Body, facing: str, bag: RGB) -> None:
    tx1, ty1, tx2, _ = body.torso_box()
    if facing == "back":
        inset = body.torso_w * 0.15
        draw.rounded_rectangle(
            (tx1 + inset, body.y(0.18), tx2 - inset, body.y(0.45)), radius=inset, fill=bag
        )
    elif facing == "front":  # only the straps show
        strap = max(1.0, body.width * 0.05)
        for x in (tx1 + body.torso_w * 0.2, tx2 - body.torso_w * 0.2):
            draw.rectangle((x - strap / 2, ty1, x + strap / 2, body.y(0.34)), fill=bag)
    else:  # on the back, which is away from where the figure faces
        edge = tx1 if body.turn > 0 else tx2
        depth = body.width * 0.22 * -body.turn
        left, right = sorted((edge, edge + depth))
        draw.rectangle((left, body.y(0.18), right, body.y(0.44)), fill=bag)


def _draw_head(draw, body: _Body, facing: str, look: Appearance, skin, hair, lit) -> None:
    hx = body.cx + (body.turn * body.width * 0.05 if body.side else 0)
    half = body.head_w / 2
    head = (hx - half, body.y(0.02), hx + half, body.y(0.15))
    draw.ellipse(head, fill=hair if facing == "back" else skin)
    if facing != "back":  # hair cap over the top of the head
        draw.chord(head, 180, 360, fill=hair)
    if look.long_hair and facing == "back":
        draw.rectangle((hx - half * 1.1, body.y(0.08), hx + half * 1.1, body.y(0.26)), fill=hair)
    if look.hat:
        hat = lit(COLOURS[look.hat_color])
        draw.rectangle((hx - half * 0.95, body.y(0.0), hx + half * 0.95, body.y(0.06)), fill=hat)
        draw.rectangle((hx - half * 1.3, body.y(0.05), hx + half * 1.3, body.y(0.07)), fill=hat)
