"""The traffic page's two pictures as geometry the template draws as inline SVG: a histogram of served
similarities and the hit ratio over time. Numbers only; no text from the cache goes through here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

WIDTH, HEIGHT = 600, 160
PAD_LEFT, PAD_RIGHT, PAD_BOTTOM, PAD_TOP = 40, 18, 22, 8
BUCKETS_S = (60, 300, 900, 3600, 6 * 3600, 86400)
MAX_BUCKETS = 60


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    title: str  # what a tooltip says: the bin and its count


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    bars: list[Bar]
    ticks: list[Tick]
    line: str = ""  # an SVG polyline's points, "" = none
    dots: list[tuple[float, float]] = field(default_factory=list)  # the line's points, each drawn (one is a line too)
    ratio_axis: bool = False  # 0 % and 100 % marked on the left
    marker_x: float | None = None  # a vertical line: the threshold
    y_label: str = ""
    empty: bool = False

    width: int = WIDTH
    height: int = HEIGHT
    left: int = PAD_LEFT
    right: int = WIDTH - PAD_RIGHT
    bottom: int = HEIGHT - PAD_BOTTOM
    top: int = PAD_TOP


def _x_scale(lo: float, hi: float) -> tuple[float, float]:
    span = hi - lo or 1.0
    return (WIDTH - PAD_LEFT - PAD_RIGHT) / span, lo


def histogram(values: Sequence[float], threshold: float, bins: int = 20) -> Chart:
    """Served similarities in ``bins`` equal bins from a round floor below the lowest (and the threshold) to 1."""
    lo = math.floor(min([threshold - 0.05, *values]) * 20) / 20 if values else math.floor((threshold - 0.05) * 20) / 20
    lo = max(0.0, min(lo, 0.95))
    hi = 1.0
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, int((v - lo) / width)))] += 1
    top = max(counts) or 1
    scale, origin = _x_scale(lo, hi)
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    bars = []
    for i, n in enumerate(counts):
        h = plot_h * n / top
        bars.append(Bar(PAD_LEFT + (lo + i * width - origin) * scale + 1, HEIGHT - PAD_BOTTOM - h,
                        max(1.0, width * scale - 2), h, f"{lo + i * width:.2f}-{lo + (i + 1) * width:.2f}: {n}"))
    ticks = [Tick(PAD_LEFT + (t - origin) * scale, f"{t:.2f}") for t in _steps(lo, hi, 0.05)]
    return Chart(bars, ticks, marker_x=PAD_LEFT + (threshold - origin) * scale, y_label=f"max {top}",
                 empty=not values)


def _steps(lo: float, hi: float, step: float) -> list[float]:
    n = int(round((hi - lo) / step))
    every = max(1, math.ceil(n / 10))
    return [round(lo + i * step, 4) for i in range(0, n + 1, every)]


def hit_ratio_over_time(points: Sequence[tuple[float, bool]], now: float) -> Chart:
    """(ts, served) of answered queries: queries per bucket as bars, the hit ratio per bucket as a line."""
    if not points:
        return Chart([], [], empty=True, y_label="hit ratio")
    first = min(ts for ts, _ in points)
    bucket = next((b for b in BUCKETS_S if (now - first) / b <= MAX_BUCKETS), BUCKETS_S[-1])
    n = max(1, min(MAX_BUCKETS, math.ceil((now - first) / bucket)))
    start = now - n * bucket  # the last bucket ends now; anything older falls into the first
    totals, hits = [0] * n, [0] * n
    for ts, served in points:
        i = min(n - 1, max(0, int((ts - start) / bucket)))
        totals[i] += 1
        hits[i] += served
    plot_w, plot_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_BOTTOM - PAD_TOP
    w = plot_w / n
    most = max(totals) or 1
    bars: list[Bar] = []
    dots: list[tuple[float, float]] = []
    for i in range(n):
        h = plot_h * totals[i] / most * 0.6  # the bars stay under the line's range
        x = PAD_LEFT + i * w
        ratio = hits[i] / totals[i] if totals[i] else None
        shown = f"{ratio:.0%}" if ratio is not None else "no queries"
        bars.append(Bar(x + 1, HEIGHT - PAD_BOTTOM - h, max(1.0, w - 2), h, f"{totals[i]} queries, hit ratio {shown}"))
        if ratio is not None:
            dots.append((x + w / 2, HEIGHT - PAD_BOTTOM - plot_h * ratio))
    label = {60: "1 min", 300: "5 min", 900: "15 min", 3600: "1 h", 21600: "6 h", 86400: "1 day"}[bucket]
    ticks = [Tick(PAD_LEFT + i * w, f"-{(n - i) * bucket // 60} min" if bucket < 3600
                  else f"-{(n - i) * bucket // 3600} h") for i in range(0, n, max(1, n // 6))]
    return Chart(bars, ticks, line=" ".join(f"{x:.1f},{y:.1f}" for x, y in dots), dots=dots, ratio_axis=True,
                 y_label=f"hit ratio (line), queries per {label} (bars)")
