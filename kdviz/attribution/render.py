"""Rendering attribution maps: heat maps, blended overlays, masked images, Plotly figures.

Maps come in as (C, H, W) or (H, W) floats in the model's input space; images as uint8 (H, W, 3).
Everything returns arrays (for analysis and downloads) first; PIL images and Plotly figures are
thin wrappers around them.

Scaling: a map is divided by a *scale*, by default its own 99th percentile of absolute values
(outliers clipped). To compare two maps fairly, compute one scale with :func:`shared_scale` and pass
it to both: the teacher and the student are then drawn on one colour scale.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

SIGNS = {
    "absolute": "|attribution| (where the model looks, either way)",
    "positive": "evidence for the class",
    "negative": "evidence against the class",
    "both": "signed, on a diverging colour map",
}
COLORMAPS = ("inferno", "viridis", "magma", "hot", "jet", "gray", "RdBu_r", "coolwarm")


def reduce_channels(attr: np.ndarray, sign: str = "absolute") -> np.ndarray:
    """(C, H, W) or (H, W) to (H, W): channels summed after the sign mode is applied."""
    a = np.asarray(attr, dtype=np.float32)
    if a.ndim == 3:
        if sign == "absolute":
            return np.abs(a).sum(0)
        a = a.sum(0)
    elif a.ndim != 2:
        raise ValueError(f"a map must be (C, H, W) or (H, W), got shape {a.shape}")
    if sign == "absolute":
        return np.abs(a)
    if sign == "positive":
        return np.clip(a, 0, None)
    if sign == "negative":
        return np.clip(-a, 0, None)
    if sign == "both":
        return a
    raise ValueError(f"unknown sign mode {sign!r}; choose one of {', '.join(SIGNS)}")


def percentile_scale(maps: np.ndarray | Sequence[np.ndarray], percentile: float = 99.0) -> float:
    """The value that maps to full colour: a high percentile of |map|, so a few outliers do not wash
    it out."""
    values = np.concatenate(
        [
            np.abs(np.asarray(m, dtype=np.float32)).ravel()
            for m in (maps if isinstance(maps, (list, tuple)) else [maps])
        ]
    )
    scale = float(np.percentile(values, percentile)) if values.size else 0.0
    return scale if scale > 0 else float(values.max() or 1.0)


def shared_scale(maps: Sequence[np.ndarray], percentile: float = 99.0) -> float:
    """One scale for several (already reduced) maps, so they can be compared colour for colour."""
    return percentile_scale(list(maps), percentile)


def normalise(
    map2d: np.ndarray, *, sign: str = "absolute", scale: float | None = None, percentile: float = 99.0
) -> np.ndarray:
    """To [0, 1] (or [-1, 1] for ``sign="both"``), clipped at ``scale``."""
    scale = scale if scale and scale > 0 else percentile_scale(map2d, percentile)
    lo = -1.0 if sign == "both" else 0.0
    return np.clip(map2d / scale, lo, 1.0).astype(np.float32)


def colorize(unit: np.ndarray, cmap: str = "inferno", *, signed: bool = False) -> np.ndarray:
    """[0, 1] (or [-1, 1] when ``signed``) to uint8 RGB with a Matplotlib colour map."""
    from matplotlib import colormaps

    u = (unit + 1.0) / 2.0 if signed else unit
    rgba = colormaps[cmap](np.clip(u, 0.0, 1.0))
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def heatmap(
    attr: np.ndarray,
    *,
    sign: str = "absolute",
    cmap: str | None = None,
    scale: float | None = None,
    percentile: float = 99.0,
) -> np.ndarray:
    """A map as a uint8 RGB picture. Signed maps default to a diverging colour map (red +, blue −)."""
    m = reduce_channels(attr, sign)
    unit = normalise(m, sign=sign, scale=scale, percentile=percentile)
    return colorize(unit, cmap or ("RdBu_r" if sign == "both" else "inferno"), signed=sign == "both")


def blend(
    image: np.ndarray,
    attr: np.ndarray,
    *,
    strength: float = 0.6,
    sign: str = "absolute",
    cmap: str | None = None,
    scale: float | None = None,
    percentile: float = 99.0,
) -> np.ndarray:
    """The heat map laid over the image; ``strength`` 0 shows the image, 1 the heat map alone.

    The heat map is weighted by its own intensity, so unattributed pixels keep the image visible.
    """
    image = np.asarray(image, dtype=np.float32)
    m = reduce_channels(attr, sign)
    unit = normalise(m, sign=sign, scale=scale, percentile=percentile)
    heat = colorize(unit, cmap or ("RdBu_r" if sign == "both" else "inferno"), signed=sign == "both").astype(
        np.float32
    )
    weight = strength * np.abs(unit)[..., None]
    out = (1.0 - weight) * image + weight * heat
    return np.clip(out, 0, 255).round().astype(np.uint8)


def top_k_mask(map2d: np.ndarray, percent: float) -> np.ndarray:
    """Boolean mask of the ``percent`` % highest values (ties broken by position, so exactly k)."""
    flat = map2d.ravel()
    k = int(round(flat.size * percent / 100.0))
    mask = np.zeros(flat.size, dtype=bool)
    if k > 0:
        mask[np.argsort(-flat, kind="stable")[:k]] = True
    return mask.reshape(map2d.shape)


def masked(
    image: np.ndarray, attr: np.ndarray, *, percent: float = 20.0, sign: str = "absolute", fill: int = 0
) -> np.ndarray:
    """The image with only its top ``percent`` % attributed pixels kept, the rest filled."""
    mask = top_k_mask(reduce_channels(attr, sign), percent)
    out = np.full_like(np.asarray(image), fill)
    out[mask] = np.asarray(image)[mask]
    return out


def crisp(image: np.ndarray, side: int = 128) -> np.ndarray:
    """``image`` enlarged by a whole number of pixels to about ``side`` pixels, never shrunk: a 32-px
    image or map stays sharp on screen, and a 224-px one is shown as it is (not at 4× its size)."""
    up = max(1, side // max(1, image.shape[0]))
    return image if up == 1 else np.kron(image, np.ones((up, up, 1), dtype=np.asarray(image).dtype))


def to_png(array: np.ndarray, *, upscale: int = 1) -> bytes:
    """uint8 (H, W, 3) to PNG bytes (nearest-neighbour upscaling keeps small maps crisp)."""
    from PIL import Image

    im = Image.fromarray(np.asarray(array, dtype=np.uint8))
    if upscale > 1:
        im = im.resize((im.width * upscale, im.height * upscale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def to_pil(array: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.asarray(array, dtype=np.uint8))


def figure(
    map2d: np.ndarray,
    *,
    title: str = "",
    sign: str = "absolute",
    cmap: str | None = None,
    scale: float | None = None,
    height: int = 260,
):
    """A Plotly heat map whose hover shows the attribution value at each pixel."""
    import plotly.graph_objects as go

    scale = scale if scale and scale > 0 else percentile_scale(map2d)
    signed = sign == "both"
    colours = cmap or ("RdBu_r" if signed else "inferno")
    fig = go.Figure(
        go.Heatmap(
            z=map2d,
            zmin=-scale if signed else 0.0,
            zmax=scale,
            colorscale=_plotly_scale(colours),
            zmid=0 if signed else None,
            hovertemplate="x %{x}, y %{y}<br>attribution %{z:.4g}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", scaleanchor="x", visible=False)
    fig.update_xaxes(visible=False)
    fig.update_layout(title=title or None, height=height, margin=dict(l=0, r=0, t=30 if title else 0, b=0))
    return fig


def _plotly_scale(cmap: str):
    """A Matplotlib colour map as a Plotly colour scale, so both views use the same colours."""
    from matplotlib import colormaps

    cm = colormaps[cmap]
    return [
        [t, f"rgb({int(r * 255)},{int(g * 255)},{int(b * 255)})"]
        for t in np.linspace(0, 1, 11)
        for r, g, b, _ in [cm(t)]
    ]
