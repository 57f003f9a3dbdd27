"""`edge-cer finetune eval`: an adapter before and after fine-tuning, on held-out pairs.

Per pair and adapter, the supportive picture is generated with diffusers' StableDiffusionImg2ImgPipeline (the
reference `edge-cer generate` matches; `load_ip_adapter` with the adapter file, the source as init and IP picture,
`generator=torch.manual_seed(seed)`, so before and after start from the same noise). Measures:
- structure kept: SSIM of the picture to the source (edge_cer.affect.picture.ssim; also to the target);
- text-picture alignment: `trial_affect` as the session computes it (VADER text valence; CLIP zero-shot picture
  valence with --clip, else the pixel valence proxy), alignment = 1 - |text - picture| / 2;
- the denoising loss at fixed draws (export.finetune.fixed_loss), the training objective on unseen pairs.
Writes OUT/report.json, OUT/report.html and the pictures.
"""

from __future__ import annotations

import gc
import html
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from edge_cer.affect.picture import ClipZeroShot, ssim
from edge_cer.affect.trial import trial_affect
from edge_cer.errors import EdgeCerError
from edge_cer.image import CLIP_MEAN, CLIP_STD, clip_pixels, load_image, save_png
from export.finetune import encode_pairs, fixed_loss, load_adapter, noise_scheduler, read_provenance
from export.finetune_pairs import Pair, load_pairs, pairs_hash

MEASURES = ("ssim_source", "ssim_target", "picture_valence", "alignment")


@dataclass
class EvalOptions:
    model: Path
    before: Path
    after: Path
    pairs: Path
    out: Path
    image_encoder: Path | None = None
    clip: Path | None = None
    resolution: int = 512
    steps: int = 25
    strength: float = 0.6
    guidance: float = 7.5
    ip_scale: float = 0.6
    seed: int = 0


def evaluate(o: EvalOptions) -> dict:
    pairs = load_pairs(o.pairs)
    if o.out.exists() and any(o.out.iterdir()):
        raise EdgeCerError(f"{o.out}: exists and is not empty; choose another --out")
    (o.out / "pictures").mkdir(parents=True, exist_ok=True)
    encoder_dir = o.image_encoder or o.before.parent / "image_encoder"
    results = {}
    for label, adapter_file in (("before", o.before), ("after", o.after)):
        results[label] = _evaluate_adapter(o, label, adapter_file, encoder_dir, pairs)
    rows = []
    for i, pair in enumerate(pairs):
        row = {"line": pair.line, "text": pair.text, "source": str(pair.source), "target": str(pair.target)}
        for label in results:
            row[label] = results[label]["pairs"][i]
        rows.append(row)
    summary = {label: {"loss": r["loss"], **{m: _mean([p[m] for p in r["pairs"]]) for m in MEASURES}}
               for label, r in results.items()}
    summary["change"] = {k: summary["after"][k] - summary["before"][k] for k in summary["before"]}
    report = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(o).items()},
        "picture_valence": "clip_zero_shot" if o.clip else "pixel valence proxy (Valdez & Mehrabian)",
        "data_sha256": pairs_hash(pairs),
        "after_training": read_provenance(o.after),
        "summary": summary,
        "pairs": rows,
    }
    (o.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (o.out / "report.html").write_text(_html(report))
    return report


def _evaluate_adapter(o: EvalOptions, label: str, adapter_file: Path, encoder_dir: Path, pairs: list[Pair]) -> dict:
    from diffusers import StableDiffusionImg2ImgPipeline
    from PIL import Image

    from export.clip_zero_shot import clip_zero_shot

    adapter = load_adapter(o.model, adapter_file, encoder_dir, 1.0, "cpu")
    loss = fixed_loss(adapter, noise_scheduler(adapter.ckpt.scheduler_config),
                      encode_pairs(adapter, pairs, o.resolution, "cpu"))
    zero_shot = ClipZeroShot.from_manifest(clip_zero_shot(o.clip, adapter.ip)) if o.clip else None
    size = adapter.ckpt.feature_extractor_size or adapter.ip.image_encoder.config.image_size
    image_encoder = adapter.ip.image_encoder
    del adapter
    gc.collect()

    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(o.model, safety_checker=None, requires_safety_checker=False)
    pipe.load_ip_adapter(str(adapter_file.parent), subfolder="", weight_name=adapter_file.name,
                         image_encoder_folder=str(encoder_dir.resolve()))
    pipe.set_ip_adapter_scale(o.ip_scale)
    pipe.set_progress_bar_config(disable=True)
    out = []
    for i, pair in enumerate(pairs):
        source = load_image(pair.source)
        with torch.no_grad():
            picture = pipe(prompt=pair.text, image=source.resize((o.resolution, o.resolution), Image.LANCZOS),
                           ip_adapter_image=source, strength=o.strength, guidance_scale=o.guidance,
                           num_inference_steps=o.steps, generator=torch.manual_seed(o.seed),
                           output_type="np").images[0]
            embeds = None
            if zero_shot is not None:
                pixels = clip_pixels(Image.fromarray((picture * 255).round().astype(np.uint8)), size, CLIP_MEAN,
                                     CLIP_STD)
                embeds = image_encoder(torch.from_numpy(pixels)).image_embeds.numpy()
        name = f"pictures/{i:03d}_{label}.png"
        save_png(picture, o.out / name)
        affect = trial_affect(pair.text, picture, clip=zero_shot, image_embeds=embeds)
        out.append({"picture": name, "ssim_source": ssim(source, picture),
                    "ssim_target": ssim(load_image(pair.target), picture), **affect})
    return {"loss": loss, "pairs": out}


def _mean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _html(report: dict) -> str:
    s = report["summary"]
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ("measure", "before", "after", "change"))
    summary_rows = "".join(
        f"<tr><td>{k}</td><td>{s['before'][k]:.4f}</td><td>{s['after'][k]:.4f}</td><td>{s['change'][k]:+.4f}</td></tr>"
        for k in s["before"])
    pair_rows = []
    for r in report["pairs"]:
        b, a = r["before"], r["after"]
        pair_rows.append(
            f"<tr><td>{html.escape(r['text'])}</td>"
            f"<td><img src='{html.escape(Path(r['source']).as_uri())}'></td>"
            f"<td><img src='{b['picture']}'><br>SSIM {b['ssim_source']:.3f}, align {b['alignment']:.3f}</td>"
            f"<td><img src='{a['picture']}'><br>SSIM {a['ssim_source']:.3f}, align {a['alignment']:.3f}</td>"
            f"<td><img src='{html.escape(Path(r['target']).as_uri())}'></td></tr>")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>IP-Adapter fine-tuning: before vs after</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin-bottom:2em}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:center}} img{{width:128px;image-rendering:pixelated}}</style>
</head><body>
<h1>IP-Adapter fine-tuning: before vs after</h1>
<p>{len(report['pairs'])} held-out pairs (data SHA-256 {report['data_sha256'][:16]}...); picture valence:
{html.escape(report['picture_valence'])}; loss: denoising MSE at fixed draws.</p>
<table><tr>{head}</tr>{summary_rows}</table>
<table><tr><th>reappraisal</th><th>source</th><th>before</th><th>after</th><th>target</th></tr>
{''.join(pair_rows)}</table>
</body></html>
"""
