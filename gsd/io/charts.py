"""PNG charts for the studies (docs/studies.md), drawn with Pillow: gsd needs no plotting library.

Two kinds: `line_chart` (a curve with +- std error bars over a log or linear x axis, and horizontal
reference lines with their +- std bands: Fig. 6's supervised UNet against one-shot methods) and
`bar_chart` (groups of bars with +- std whiskers: Tables 1, 3 and 7). Each takes plain numbers and
writes the PNG atomically; the y axis is IoU in percent: 0-100 for bars, from a round value below the lowest
point for lines.
"""

from __future__ import annotations

import io
import math
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from gsd.io import atomic

# Colour-blind-safe (Okabe-Ito) series colours, in order.
COLOURS = (
    (0, 114, 178),
    (213, 94, 0),
    (0, 158, 115),
    (204, 121, 167),
    (230, 159, 0),
    (86, 180, 233),
    (120, 120, 120),
    (240, 228, 66),
)
_W, _H = 900, 520
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 250, 50, 70  # plot margins; the legend lives in the right one


def _font(size: int):
    return ImageFont.load_default(size=size)


class _Canvas:
    """A plot area mapping data (x, y) to pixels, with axes, ticks, title and a legend at the right."""

    def __init__(self, title: str, x_label: str, y_label: str, y_range: tuple[float, float]):
        self.image = Image.new('RGB', (_W, _H), 'white')
        self.draw = ImageDraw.Draw(self.image)
        self.y0, self.y1 = y_range
        self.box = (_LEFT, _TOP, _W - _RIGHT, _H - _BOTTOM)
        self.draw.text((_W // 2, 18), title, fill='black', font=_font(18), anchor='mm')
        self.draw.text(((_LEFT + _W - _RIGHT) // 2, _H - 20), x_label, fill='black', font=_font(14), anchor='mm')
        label = Image.new('RGBA', (_H, 24), (255, 255, 255, 0))
        ImageDraw.Draw(label).text((_H // 2 - _TOP // 2, 12), y_label, fill='black', font=_font(14), anchor='mm')
        self.image.paste(label.rotate(90, expand=True), (4, 0), label.rotate(90, expand=True))
        self.legend_y = _TOP

    def py(self, y: float) -> float:
        _, top, _, bottom = self.box
        return bottom - (y - self.y0) / (self.y1 - self.y0) * (bottom - top)

    def axes(self, y_step: float) -> None:
        left, _, right, _ = self.box
        y = math.ceil(self.y0 / y_step) * y_step
        while y <= self.y1 + 1e-9:
            py = self.py(y)
            self.draw.line((left, py, right, py), fill=(225, 225, 225))
            self.draw.text((left - 6, py), f'{y:g}', fill='black', font=_font(12), anchor='rm')
            y += y_step
        self.draw.rectangle(self.box, outline='black')

    def x_tick(self, px: float, text: str) -> None:
        b = self.box[3]
        self.draw.line((px, b, px, b + 5), fill='black')
        self.draw.text((px, b + 8), text, fill='black', font=_font(12), anchor='ma')

    def legend(self, text: str, colour, dashed: bool = False) -> None:
        x = self.box[2] + 15
        y = self.legend_y + 8
        if dashed:
            for s in range(0, 24, 8):
                self.draw.line((x + s, y, x + s + 4, y), fill=colour, width=3)
        else:
            self.draw.line((x, y, x + 24, y), fill=colour, width=3)
        self.draw.text((x + 32, y), text, fill='black', font=_font(13), anchor='lm')
        self.legend_y += 22

    def save(self, path) -> None:
        buf = io.BytesIO()
        self.image.save(buf, format='PNG')
        atomic.write_bytes(path, buf.getvalue())


def _y_range(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    low = min(finite, default=0.0)
    return (0.0, 100.0) if low < 40 else (math.floor(low / 10) * 10 - 10, 100.0)


def line_chart(
    path,
    *,
    title: str,
    x_label: str,
    y_label: str,
    curves: Sequence[tuple[str, Sequence[float], Sequence[float], Sequence[float]]],
    hlines: Sequence[tuple[str, float, float]] = (),
    log_x: bool = True,
) -> None:
    """Curves (label, xs, means, stds) with error bars and markers, and horizontal lines (label, mean, std)
    drawn dashed with a light +- std band, written to `path` (PNG)."""
    values = [m - s for _, _, ms, ss in curves for m, s in zip(ms, ss)] + [m - s for _, m, s in hlines]
    c = _Canvas(title, x_label, y_label, _y_range(values))
    xs_all = sorted({x for _, xs, _, _ in curves for x in xs})
    if not xs_all:
        raise ValueError('line_chart: no points to draw')
    fx = (lambda x: math.log(x)) if log_x else (lambda x: float(x))
    lo, hi = fx(xs_all[0]), fx(xs_all[-1])
    left, _, right, _ = c.box
    span = (hi - lo) or 1.0
    px = lambda x: left + 30 + (fx(x) - lo) / span * (right - left - 60)
    c.axes(10)
    for i, (_, mean, std) in enumerate(hlines):
        colour = COLOURS[(len(curves) + i) % len(COLOURS)]
        band = tuple(int(255 - (255 - v) * 0.18) for v in colour)
        c.draw.rectangle((left + 1, c.py(min(mean + std, c.y1)), right - 1, c.py(max(mean - std, c.y0))), fill=band)
    c.axes(10)  # the grid again, over the bands
    for i, (label, mean, _) in enumerate(hlines):
        colour = COLOURS[(len(curves) + i) % len(COLOURS)]
        for s in range(left, right, 12):
            c.draw.line((s, c.py(mean), min(s + 7, right), c.py(mean)), fill=colour, width=2)
        c.legend(f'{label}: {mean:.1f}', colour, dashed=True)
    for x in xs_all:
        c.x_tick(px(x), f'{x:g}')
    for i, (label, xs, means, stds) in enumerate(curves):
        colour = COLOURS[i % len(COLOURS)]
        points = [(px(x), c.py(m)) for x, m in zip(xs, means)]
        c.draw.line(points, fill=colour, width=3)
        for (x, y), m, s in zip(points, means, stds):
            c.draw.line((x, c.py(min(m + s, c.y1)), x, c.py(max(m - s, c.y0))), fill=colour, width=2)
            c.draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=colour)
        c.legend(label, colour)
    c.save(path)


def bar_chart(
    path,
    *,
    title: str,
    y_label: str,
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    x_label: str = '',
) -> None:
    """Bars of `series` (label, means per group, stds per group) side by side in each of `groups`, with
    +- std whiskers and the mean printed above; a missing value (nan) leaves its slot empty."""
    if not groups or not series:
        raise ValueError('bar_chart: nothing to draw')
    c = _Canvas(title, x_label, y_label, (0.0, 100.0))  # bars start at zero, or their lengths mislead
    c.axes(10)
    left, _, right, bottom = c.box
    slot = (right - left) / len(groups)
    width = min(40.0, slot * 0.8 / len(series))
    for g, name in enumerate(groups):
        centre = left + slot * (g + 0.5)
        c.x_tick(centre, name)
        for i, (_, means, stds) in enumerate(series):
            m, s = means[g], stds[g]
            if m is None or not math.isfinite(m):
                continue
            colour = COLOURS[i % len(COLOURS)]
            x0 = centre + (i - len(series) / 2) * width
            c.draw.rectangle((x0 + 1, c.py(max(m, c.y0)), x0 + width - 1, bottom), fill=colour)
            if s and math.isfinite(s):
                xm = x0 + width / 2
                c.draw.line((xm, c.py(min(m + s, c.y1)), xm, c.py(max(m - s, c.y0))), fill='black', width=1)
            c.draw.text(
                (x0 + width / 2, c.py(min(m + (s or 0), c.y1)) - 3),
                f'{m:.0f}',
                fill='black',
                font=_font(10),
                anchor='mb',
            )
    for i, (label, _, _) in enumerate(series):
        c.legend(label, COLOURS[i % len(COLOURS)])
    c.save(path)
