"""Picture affect: weight-free low-level proxies, CLIP zero-shot valence, and SSIM between two pictures.

The proxies are labelled as proxies everywhere they appear: they describe colour and light, which predict rated
affect only weakly. CLIP zero-shot valence is the better measure when the engine manifest carries it.

Proxies (pixels as RGB in [0, 1]; hue, saturation S and value V from HSV; means over all pixels):
- Valdez & Mehrabian (1994), eqs. for brightness B = mean V and saturation S = mean S:
      pleasure = 0.69 B + 0.22 S,  arousal = -0.31 B + 0.60 S,  dominance = -0.76 B + 0.32 S
- colourfulness M (Hasler & Suesstrunk, 2003): rg = R - G, yb = (R + G)/2 - B,
      M = sqrt(sd(rg)^2 + sd(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2)   (on the [0, 1] scale, not 0-255)
- warm share: fraction of chromatic pixels (S, V > 0.2) with hue in [330, 360) or [0, 90) degrees;
  red share: fraction of all pixels with hue within 20 degrees of red and S > 0.4, V > 0.2.
- valence_proxy = 2 pleasure / 0.91 - 1, i.e. pleasure rescaled from its range [0, 0.91] to [-1, 1].

CLIP zero-shot (Radford et al., 2021): p = softmax(logit_scale * cos(image_embed, text_embed_k)) over the manifest's
prompts k; valence = sum_k p_k v_k with the prompts' valences v_k in [-1, 1]. The text embeddings are computed once
at export time from the same CLIP model whose vision tower the IP-Adapter runs, so only image embeddings are needed.

SSIM (Wang et al., 2004): luminance (ITU-R BT.601) SSIM with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
K2 = 0.03, dynamic range 1, mean over the map (population covariances, as in the paper).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edge_cer.errors import EdgeCerError

PLEASURE_MAX = 0.69 + 0.22  # B = S = 1
CHROMATIC_MIN = 0.2  # S and V above which a pixel has a meaningful hue
RED_HALF_WIDTH_DEG = 20.0
RED_MIN_SATURATION = 0.4
CLIP_LOGIT_SCALE = 100.0  # CLIP's learned temperature, clamped at 100 in training
# The fixed prompt set whose CLIP text embeddings `edge-cer export sd --clip DIR` stores in the manifest, with each
# prompt's valence in [-1, 1]. The last four double as the safety gate's concept list.
ZERO_SHOT_PROMPTS: tuple[tuple[str, float], ...] = (
    ("a peaceful, happy scene", 1.0),
    ("people helping and caring for each other", 1.0),
    ("a calm, sunny landscape", 0.8),
    ("a person smiling and recovering", 0.8),
    ("an ordinary everyday scene", 0.0),
    ("a neutral photo of objects", 0.0),
    ("a sad, distressing scene", -0.8),
    ("a frightening, violent scene", -1.0),
    ("a photo of blood", -1.0),
    ("a person who is badly injured", -1.0),
    ("a weapon", -0.8),
    ("a dead body", -1.0),
)
SAFETY_CONCEPTS = tuple(p for p, _ in ZERO_SHOT_PROMPTS[-4:])
SSIM_SIGMA, SSIM_K1, SSIM_K2 = 1.5, 0.01, 0.03
SSIM_TRUNCATE = 3.5  # gaussian_filter radius = round(3.5 * 1.5) = 5 -> the paper's 11x11 window


@dataclass(frozen=True)
class PictureProxies:
    """Weight-free affect proxies of one picture (formulas in the module docstring)."""

    brightness: float
    saturation: float
    pleasure: float
    arousal: float
    dominance: float
    colourfulness: float
    warm_share: float
    red_share: float
    valence_proxy: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def load_rgb(path: str | Path) -> np.ndarray:
    """An image file as float32 RGB in [0, 1], shape (H, W, 3)."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError) as exc:
        raise EdgeCerError(f"{path}: cannot read the picture ({exc}); check the file or remove its row's picture_file") from exc


def as_rgb(picture: np.ndarray | Image.Image) -> np.ndarray:
    """Accepts a PIL image, uint8 RGB or float RGB in [0, 1]; returns float32 RGB in [0, 1]."""
    if isinstance(picture, Image.Image):
        picture = np.asarray(picture.convert("RGB"))
    rgb = np.asarray(picture)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB picture, got shape {rgb.shape}")
    return rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float32)


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] (..., 3) -> HSV in [0, 1] (hue as a fraction of the circle), as matplotlib.colors.rgb_to_hsv:
    grey pixels have hue 0 and black ones saturation 0."""
    value = rgb.max(axis=-1)
    delta = value - rgb.min(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        saturation = np.where(value > 0, delta / value, 0.0)
        r, g, b = (rgb[..., i] for i in range(3))
        hue = np.select([delta == 0, r == value, g == value],
                        [0.0, (g - b) / delta, 2.0 + (b - r) / delta], 4.0 + (r - g) / delta)
    return np.stack([(hue / 6.0) % 1.0, saturation, value], axis=-1).astype(rgb.dtype)


def picture_proxies(picture: np.ndarray | Image.Image) -> PictureProxies:
    rgb = as_rgb(picture)
    hsv = rgb_to_hsv(np.clip(rgb, 0.0, 1.0))
    hue_deg, sat, val = hsv[..., 0] * 360.0, hsv[..., 1], hsv[..., 2]
    b, s = float(val.mean()), float(sat.mean())

    r, g, bl = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg, yb = r - g, (r + g) / 2.0 - bl
    colourfulness = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())

    chromatic = (sat > CHROMATIC_MIN) & (val > CHROMATIC_MIN)
    warm = chromatic & ((hue_deg >= 330.0) | (hue_deg < 90.0))
    red_distance = np.minimum(hue_deg, 360.0 - hue_deg)
    red = (red_distance <= RED_HALF_WIDTH_DEG) & (sat > RED_MIN_SATURATION) & (val > CHROMATIC_MIN)

    pleasure = 0.69 * b + 0.22 * s
    return PictureProxies(
        brightness=b,
        saturation=s,
        pleasure=pleasure,
        arousal=-0.31 * b + 0.60 * s,
        dominance=-0.76 * b + 0.32 * s,
        colourfulness=float(colourfulness),
        warm_share=float(warm.sum() / max(int(chromatic.sum()), 1)),
        red_share=float(red.mean()),
        valence_proxy=2.0 * pleasure / PLEASURE_MAX - 1.0,
    )


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def ssim(reference: np.ndarray | Image.Image, picture: np.ndarray | Image.Image) -> float:
    """SSIM of `picture` against `reference` (formula in the module docstring).

    A picture of another size is resized (bilinear) to the reference's size first: generated pictures are square
    while stimuli are not.
    """
    ref = as_rgb(reference)
    pic = as_rgb(picture)
    if pic.shape != ref.shape:
        resized = Image.fromarray((np.clip(pic, 0, 1) * 255).round().astype(np.uint8)).resize(
            (ref.shape[1], ref.shape[0]), Image.BILINEAR
        )
        pic = as_rgb(resized)
    x, y = _luminance(ref).astype(np.float64), _luminance(pic).astype(np.float64)

    from scipy.ndimage import gaussian_filter  # only the analysis needs SSIM: a session starts without scipy

    def blur(a: np.ndarray) -> np.ndarray:
        return gaussian_filter(a, SSIM_SIGMA, truncate=SSIM_TRUNCATE)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(ssim_map.mean())


@dataclass(frozen=True)
class ClipZeroShot:
    """Zero-shot valence from image embeddings and the manifest's `clip_zero_shot` prompt embeddings.

    Example (embeddings come from the image encoder the IP-Adapter already runs):

        zs = ClipZeroShot.from_manifest(manifest["clip_zero_shot"])
        valence = zs.valence(image_embeds)                 # (N,) in [-1, 1]
        scores = zs.concept_scores(image_embeds)[0]        # {"a photo of blood": 0.02, ...}
    """

    prompts: tuple[str, ...]
    valences: np.ndarray  # (P,) in [-1, 1]
    text_embeds: np.ndarray  # (P, D), L2-normalised
    logit_scale: float = CLIP_LOGIT_SCALE

    @classmethod
    def from_manifest(cls, entry: dict) -> ClipZeroShot:
        """Builds from {"prompts": [...], "valence": [...], "text_embeds": [[...]], "logit_scale"?: float}."""
        missing = [k for k in ("prompts", "valence", "text_embeds") if k not in entry]
        if missing:
            raise EdgeCerError(f"engine manifest `clip_zero_shot` lacks {missing}; re-run `edge-cer export sd`")
        prompts = tuple(entry["prompts"])
        valences = np.asarray(entry["valence"], dtype=np.float64)
        embeds = np.asarray(entry["text_embeds"], dtype=np.float64)
        if embeds.ndim != 2 or not len(prompts) == len(valences) == embeds.shape[0]:
            raise EdgeCerError(
                f"engine manifest `clip_zero_shot`: {len(prompts)} prompts, {len(valences)} valences and "
                f"text_embeds of shape {embeds.shape} must agree; re-run `edge-cer export sd`"
            )
        if not np.all(np.isfinite(embeds)) or np.any(np.abs(valences) > 1):
            raise EdgeCerError("engine manifest `clip_zero_shot`: non-finite embeddings or a valence outside [-1, 1]")
        return cls(prompts, valences, _unit(embeds), float(entry.get("logit_scale", CLIP_LOGIT_SCALE)))

    def probabilities(self, image_embeds: np.ndarray) -> np.ndarray:
        """Softmax over prompts of the scaled cosine similarities, shape (N, P)."""
        img = _unit(np.atleast_2d(np.asarray(image_embeds, dtype=np.float64)))
        if img.shape[1] != self.text_embeds.shape[1]:
            raise ValueError(f"image embeddings have width {img.shape[1]}, the prompts {self.text_embeds.shape[1]}")
        logits = self.logit_scale * img @ self.text_embeds.T
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def valence(self, image_embeds: np.ndarray) -> np.ndarray:
        return self.probabilities(image_embeds) @ self.valences

    def concept_scores(self, image_embeds: np.ndarray) -> list[dict[str, float]]:
        """Per image, each prompt's probability: the safety gate's concept list names prompts."""
        return [dict(zip(self.prompts, row.tolist())) for row in self.probabilities(image_embeds)]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)
