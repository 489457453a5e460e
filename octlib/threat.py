"""The threat model of an evasion evaluation: the norm and the ε grid, in one place.

ε is stored in [0, 1] pixel units and labelled in both units (``2/255 (0.0078)``); every conversion between
/255 and [0, 1] goes through this module, so a notebook, a results record and a table never disagree about ε.
For the L2 norm, ε is the L2 norm of the whole perturbation (pixels in [0, 1]) and has no /255 form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NORMS = ("inf", "2")


def eps_label(eps: float, norm: str = "inf") -> str:
    """``"2/255 (0.0078)"`` for L∞ (ε in /255 and in [0, 1]); ``"L2 0.25"`` for L2."""
    if norm == "2":
        return f"L2 {eps:g}"
    return f"{eps * 255:g}/255 ({eps:.4f})"


def to_unit(eps_255: float) -> float:
    """ε in [0, 1] pixel units from a /255 value in (0, 255]; a clear error otherwise."""
    if not isinstance(eps_255, (int, float, np.integer, np.floating)) or not 0 < eps_255 <= 255:
        raise ValueError(f"ε must be given in /255 in (0, 255], got {eps_255!r}.")
    return float(eps_255) / 255.0


def check_eps(eps, name: str = "eps") -> float:
    """ε as a float in (0, 1]; a clear error for values on the 0-255 scale or out of range."""
    if not isinstance(eps, (int, float, np.floating, np.integer)) or not np.isfinite(eps):
        raise ValueError(f"`{name}` must be a number in (0, 1] (pixel units), got {eps!r}.")
    eps = float(eps)
    if eps > 1:
        raise ValueError(f"`{name}`={eps:g} looks like a 0-255 value; give it in [0, 1] pixel units, e.g. "
                         f"{eps:g}/255 = {eps / 255:.4f}.")
    if eps <= 0:
        raise ValueError(f"`{name}` must be > 0, got {eps:g}.")
    return eps


def to_255(eps):
    """ε in /255 from [0, 1] pixel units (rounded to 6 decimals, so 2/255 reads back as 2); an array of them
    (e.g. per-scan perturbation norms) element by element."""
    if np.ndim(eps):
        return np.round(np.asarray(eps, dtype=np.float64) * 255.0, 6)
    return round(float(eps) * 255.0, 6)


def l2_reach(eps: float, pixels: int) -> float:
    """The largest L2 norm in the L∞ ball of radius ``eps`` ([0, 1] units) over a scan of ``pixels`` pixels: every
    pixel moved by ε, ε·√pixels (2/255 over 128 × 128 pixels: 1.004). An L2 certificate covers that L∞ ball only
    if its radius is at least this."""
    return check_eps(eps) * float(np.sqrt(_pixels(pixels)))


def linf_covered(radius: float, pixels: int) -> float:
    """The largest L∞ ε ([0, 1] units) whose ball lies inside the L2 ball of ``radius`` over ``pixels`` pixels:
    radius / √pixels (an L2 certificate of 0.25 over 128 × 128 pixels covers every L∞ perturbation up to
    0.0020 = 0.50/255)."""
    if not isinstance(radius, (int, float, np.integer, np.floating)) or not radius >= 0:
        raise ValueError(f"`radius` must be an L2 norm >= 0 (pixels in [0, 1]), got {radius!r}.")
    return float(radius) / float(np.sqrt(_pixels(pixels)))


def _pixels(pixels) -> int:
    if not isinstance(pixels, (int, np.integer)) or pixels < 1:
        raise ValueError(f"`pixels` must be the number of pixels of a scan (an integer >= 1), got {pixels!r}.")
    return int(pixels)


@dataclass(frozen=True)
class ThreatModel:
    """White-box evasion within an ε-ball around each scan, clipped to [0, 1].

    Attributes:
        norm: ``inf`` (per-pixel bound) or ``2`` (L2 norm of the perturbation).
        eps_255: the L∞ grid in /255, increasing (for ``norm="inf"``).
        radii: the L2 grid in [0, 1] pixel units, increasing (for ``norm="2"``).
        headline_255: the headline ε in /255 (L∞) or the headline radius (L2): the column of the summary tables.
    """

    norm: str = "inf"
    eps_255: tuple[float, ...] = ()
    radii: tuple[float, ...] = ()
    headline_255: float | None = None

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"`norm` must be one of {NORMS}, got {self.norm!r}.")
        grid = self.eps_255 if self.norm == "inf" else self.radii
        name = "eps_255" if self.norm == "inf" else "radii"
        if not grid or any(not np.isfinite(e) or e <= 0 for e in grid) or list(grid) != sorted(set(grid)):
            raise ValueError(f"`{name}` must be increasing positive values, got {grid!r}.")
        if self.norm == "inf" and max(grid) > 255:
            raise ValueError(f"`eps_255` is in /255 units (at most 255), got {grid!r}.")
        if self.headline_255 is not None and not any(np.isclose(self.headline_255, g) for g in grid):
            raise ValueError(f"`headline_255`={self.headline_255} is not on the grid {list(grid)}.")

    @property
    def eps(self) -> tuple[float, ...]:
        """The grid in the units attacks take: [0, 1] pixel units (L∞) or the L2 radius."""
        return tuple(to_unit(e) for e in self.eps_255) if self.norm == "inf" else tuple(float(r) for r in self.radii)

    @property
    def grid(self) -> tuple[float, ...]:
        """The grid in the units tables show: /255 (L∞) or the L2 radius."""
        return tuple(float(e) for e in (self.eps_255 if self.norm == "inf" else self.radii))

    @property
    def labels(self) -> list[str]:
        return [eps_label(e, self.norm) for e in self.eps]

    @property
    def headline(self) -> float:
        """The headline ε in attack units (the grid's middle value when none is set)."""
        grid = self.grid
        value = self.headline_255 if self.headline_255 is not None else grid[len(grid) // 2]
        return to_unit(value) if self.norm == "inf" else float(value)

    def index(self, value_255: float) -> int:
        """Position of a table-unit value (/255 or radius) on the grid; an error naming the grid if absent."""
        for i, g in enumerate(self.grid):
            if np.isclose(g, value_255):
                return i
        raise ValueError(f"ε {value_255} is not on this threat model's grid {list(self.grid)}.")

    def describe(self) -> str:
        what = "per-pixel L∞" if self.norm == "inf" else "L2"
        return (f"white-box {what} evasion, ε in {{{', '.join(self.labels)}}}, pixels clipped to [0, 1]")

    def to_dict(self) -> dict:
        return {"norm": self.norm, "eps": list(self.eps), "grid": list(self.grid), "labels": self.labels,
                "headline": self.headline}
