"""Fine-tune an h94 IP-Adapter on (source picture, reappraisal, supportive target) pairs.

    edge-cer finetune ip-adapter --model models/sd15 --ip-adapter models/sd15-ip/models/ip-adapter_sd15.safetensors \\
        --pairs pairs/ --out models/sd15-ip/models/ip-adapter_sd15_cer.safetensors --steps 2000 --batch 4

The recipe is IP-Adapter's own training (Ye et al., 2023, `tutorial_train.py` / `tutorial_train_plus.py`): only the
image projection and the per-layer `to_k_ip` / `to_v_ip` are trained (UNet, VAE, text and image encoders frozen),
AdamW (lr 1e-4, weight decay 1e-2), the standard denoising loss — MSE to the noise, or to v for v-prediction models,
as the scheduler config says — with 5 % image-embedding dropout, 5 % text dropout and 5 % both, so
classifier-free guidance works on both prompts. What edge-cer changes: the UNet is conditioned on the *source*
picture's image embeddings and the reappraisal while it denoises the *target*'s latents, so the adapter learns to
carry the source's structure into a picture that follows the text.

Frozen encoders give the same output every step, so each pair is encoded once (target latent posterior, text and
image embeddings, and the dropout embeddings) and a step runs only the UNet. Every random draw of a step comes from
one seeded generator whose state is checkpointed with the weights and the AdamW moments; batches come from per-epoch
permutations seeded by (seed, epoch). A run resumed after kill -9 therefore continues the same sequence: on the same
machine and thread count its final adapter is bit-identical to an uninterrupted run's.
"""

from __future__ import annotations

import gc
import json
import math
import os
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from edge_cer.errors import EdgeCerError
from edge_cer.image import CLIP_MEAN, CLIP_STD, clip_pixels, init_image, load_image
from edge_cer.manifest import sha256_file
from export.checkpoint import IPAdapter, SDCheckpoint, load_ip_adapter, load_sd
from export.factory import _base_proj_to_h94, _plus_proj_to_h94
from export.finetune_pairs import Pair, load_pairs, pairs_hash

TRAINING_METADATA_KEY = "edge_cer.training"  # safetensors metadata of a fine-tuned adapter (read by export sd)
LOSS_DRAWS = 8  # fixed (timestep, noise) draws per pair for the comparable loss
LOSS_SEED = 20231  # those draws' seed: the same for every adapter, so losses compare before vs after


@dataclass
class TrainOptions:
    model: Path
    ip_adapter: Path
    pairs: Path
    out: Path
    image_encoder: Path | None = None
    steps: int = 1000
    lr: float = 1e-4  # IP-Adapter's training
    weight_decay: float = 1e-2  # IP-Adapter's training
    batch: int = 4
    resolution: int = 512  # the picture side the target latents are made at (SD-1.5's training size)
    seed: int = 0
    train_scale: float = 1.0  # IP scale during training; IP-Adapter trains at 1.0
    drop_image: float = 0.05  # image embeddings replaced by the unconditional ones
    drop_text: float = 0.05  # text replaced by ""
    drop_both: float = 0.05
    checkpoint_every: int = 50
    resume: bool = False
    device: str = "cpu"

    def fingerprint(self) -> dict:
        """What a resumed run must share with the checkpoint (steps may grow: the learning rate is constant)."""
        keep = ("lr", "weight_decay", "batch", "resolution", "seed", "train_scale", "drop_image", "drop_text",
                "drop_both")
        return {k: getattr(self, k) for k in keep}


@dataclass
class Encoded:
    """Frozen-encoder outputs of every pair, computed once."""

    latent_mean: torch.Tensor  # (N, C, h, w) VAE posterior of the target
    latent_std: torch.Tensor
    text: torch.Tensor  # (N, 77, D)
    text_uncond: torch.Tensor  # (1, 77, D): ""
    image: torch.Tensor  # (N, 1, E) base / (N, 1, T, E) plus: the source's image embeddings
    image_uncond: torch.Tensor  # (1, 1, ...): zeros (base) / the encoder on zero pixels (plus), as the pipeline
    scaling_factor: float


@dataclass
class Adapter:
    """A diffusers UNet with an h94 adapter loaded by diffusers' own loader, and its trainable parameters."""

    ckpt: SDCheckpoint
    ip: IPAdapter
    unet: torch.nn.Module
    params: dict[str, torch.nn.Parameter]

    def forward(self, noisy, timesteps, text, image):
        return self.unet(noisy, timesteps, encoder_hidden_states=text,
                         added_cond_kwargs={"image_embeds": [image]}).sample

    def h94_state_dict(self) -> dict[str, torch.Tensor]:
        """The adapter back in the h94 layout (`image_proj.*` + `ip_adapter.{2i+1}.to_{k,v}_ip.weight`)."""
        proj = self.unet.encoder_hid_proj.image_projection_layers[0].state_dict()
        to_h94 = _base_proj_to_h94 if self.ip.kind == "base" else _plus_proj_to_h94
        state = {f"image_proj.{k}": v for k, v in to_h94(proj).items()}
        for i, proc in enumerate(ip_processors(self.unet)):
            state[f"ip_adapter.{2 * i + 1}.to_k_ip.weight"] = proc.to_k_ip[0].weight
            state[f"ip_adapter.{2 * i + 1}.to_v_ip.weight"] = proc.to_v_ip[0].weight
        return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}


def ip_processors(unet) -> list:
    """The IP attention processors in `attn_processors` order (the h94 numbering)."""
    return [p for p in unet.attn_processors.values() if hasattr(p, "to_k_ip")]


def load_adapter(model: Path, ip_adapter: Path, image_encoder: Path | None, scale: float, device: str) -> Adapter:
    ckpt = load_sd(model)
    ip = load_ip_adapter(ip_adapter, ckpt.unet, image_encoder)
    unet = ckpt.unet
    # diffusers' own conversion of h94 weights, the path `pipe.load_ip_adapter` takes.
    unet._load_ip_adapter_weights([{"image_proj": ip.image_proj, "ip_adapter": ip.ip_layers}],
                                  low_cpu_mem_usage=False)
    unet.requires_grad_(False)
    for proc in ip_processors(unet):
        proc.scale = [scale]
    # The image projection and every IP processor's key/value projections; nothing else.
    params = {n: p for n, p in unet.named_parameters()
              if n.startswith("encoder_hid_proj.") or ".to_k_ip." in n or ".to_v_ip." in n}
    for p in params.values():
        p.requires_grad_(True)
    unet.to(device)
    return Adapter(ckpt, ip, unet, params)


@torch.no_grad()
def encode_pairs(adapter: Adapter, pairs: list[Pair], resolution: int, device: str) -> Encoded:
    """Run the frozen encoders once over every pair, as the diffusers pipeline preprocesses its inputs."""
    ckpt, ip = adapter.ckpt, adapter.ip
    vae, text_encoder, encoder = (m.to(device) for m in (ckpt.vae, ckpt.text_encoder, ip.image_encoder))
    size = ckpt.feature_extractor_size or encoder.config.image_size

    def encode_image(pixels):
        if ip.kind == "base":
            return encoder(pixels).image_embeds[:, None]
        return encoder(pixels, output_hidden_states=True).hidden_states[-2][:, None]

    def encode_text(texts):
        ids = ckpt.tokenizer(texts, padding="max_length", max_length=ckpt.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return text_encoder(ids.to(device)).last_hidden_state

    means, stds, images = [], [], []
    for pair in pairs:
        target = torch.from_numpy(init_image(load_image(pair.target), resolution, resolution)).to(device)
        posterior = vae.encode(target).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
        pixels = torch.from_numpy(clip_pixels(load_image(pair.source), size, CLIP_MEAN, CLIP_STD)).to(device)
        images.append(encode_image(pixels))
    image = torch.cat(images)
    if ip.kind == "base":
        image_uncond = torch.zeros_like(image[:1])
    else:
        image_uncond = encode_image(torch.zeros(1, 3, size, size, device=device))
    return Encoded(torch.cat(means), torch.cat(stds), encode_text([p.text for p in pairs]), encode_text([""]),
                   image, image_uncond, float(vae.config.scaling_factor))


def noise_scheduler(config: dict):
    """The training-time forward process (DDPM) with the model's betas and prediction type."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(config)


def denoising_loss(adapter: Adapter, scheduler, enc: Encoded, idx, latent_eps, noise, timesteps, drop_image,
                   drop_text) -> torch.Tensor:
    """MSE between the UNet's prediction and its target (noise, or v) on noised target latents."""
    latents = (enc.latent_mean[idx] + enc.latent_std[idx] * latent_eps) * enc.scaling_factor
    noisy = scheduler.add_noise(latents, noise, timesteps)
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    text = torch.where(drop_text[:, None, None], enc.text_uncond, enc.text[idx])
    shape = (-1,) + (1,) * (enc.image.dim() - 1)
    image = torch.where(drop_image.view(shape), enc.image_uncond, enc.image[idx])
    pred = adapter.forward(noisy, timesteps, text, image)
    return F.mse_loss(pred.float(), target.float())


@torch.no_grad()
def fixed_loss(adapter: Adapter, scheduler, enc: Encoded) -> float:
    """The denoising loss over every pair at LOSS_DRAWS fixed (stratified timestep, noise) draws, no dropout:
    comparable between adapters and runs, unlike the noisy per-step training loss."""
    g = torch.Generator().manual_seed(LOSS_SEED)
    n, device = enc.text.shape[0], enc.text.device
    total_t = scheduler.config.num_train_timesteps
    losses = []
    for k in range(LOSS_DRAWS):
        t = torch.full((n,), int((k + 0.5) * total_t / LOSS_DRAWS), dtype=torch.long)
        latent_eps = torch.randn(enc.latent_mean.shape, generator=g)
        noise = torch.randn(enc.latent_mean.shape, generator=g)
        off = torch.zeros(n, dtype=torch.bool)
        for i in range(n):  # one pair at a time: memory stays at training's batch-1 level
            sl = slice(i, i + 1)
            losses.append(float(denoising_loss(adapter, scheduler, enc, torch.arange(i, i + 1, device=device),
                                               latent_eps[sl].to(device), noise[sl].to(device), t[sl].to(device),
                                               off[sl].to(device), off[sl].to(device))))
    return sum(losses) / len(losses)


def batch_indices(step: int, batch: int, n: int, seed: int) -> torch.Tensor:
    """Pairs for `step`: consecutive slices of per-epoch permutations seeded by (seed, epoch); stateless, so a
    resumed run draws the same batches."""
    out = []
    for p in range(step * batch, (step + 1) * batch):
        epoch, pos = divmod(p, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        out.append(int(perm[pos]))
    return torch.tensor(out)


@dataclass
class TrainResult:
    out: Path
    steps: int
    resumed_from: int
    loss_before: float  # fixed_loss on the training pairs with the starting adapter (step 0, kept across resumes)
    loss_after: float
    step_losses: list[float] = field(default_factory=list)
    seconds_per_step: float = math.nan  # wall, mean over this process's steps after the first
    cpu_seconds_per_step: float = math.nan  # process CPU time (all threads), same steps: robust to a shared machine
    load_seconds: float = math.nan
    encode_seconds: float = math.nan
    peak_rss_gb: float = math.nan
    peak_device_gb: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".checkpoint.safetensors")


def check_options(o: TrainOptions) -> None:
    for name, value in (("--steps", o.steps), ("--batch", o.batch), ("--resolution", o.resolution),
                        ("--checkpoint-every", o.checkpoint_every)):
        if value < 1:
            raise EdgeCerError(f"{name} {value}: must be a positive integer")
    if o.resolution % 8:
        raise EdgeCerError(f"--resolution {o.resolution}: must be a multiple of 8 (the VAE's downsampling)")
    if not o.lr > 0:
        raise EdgeCerError(f"--lr {o.lr}: must be positive")
    if min(o.drop_image, o.drop_text, o.drop_both) < 0 or o.drop_image + o.drop_text + o.drop_both > 1:
        raise EdgeCerError("dropout rates must be >= 0 and sum to at most 1")
    if o.out.suffix != ".safetensors":
        raise EdgeCerError(f"--out {o.out}: must end in .safetensors (the h94 layout)")
    if not o.out.parent.is_dir():
        raise EdgeCerError(f"--out {o.out}: folder {o.out.parent} does not exist; create it first")
    if not o.resume and (o.out.exists() or checkpoint_path(o.out).exists()):
        existing = checkpoint_path(o.out) if checkpoint_path(o.out).exists() else o.out
        raise EdgeCerError(f"{existing}: already exists; pass --resume to continue that run, or choose another --out")
    if o.device.startswith("cuda") and not torch.cuda.is_available():
        raise EdgeCerError(f"--device {o.device}: torch sees no CUDA device here (torch {torch.__version__}); "
                           f"use --device cpu or a CUDA build of torch")


def train(o: TrainOptions, console: Console | None = None) -> TrainResult:
    console = console or Console(stderr=True)
    check_options(o)
    pairs = load_pairs(o.pairs)
    t0 = time.perf_counter()
    adapter = load_adapter(o.model, o.ip_adapter, o.image_encoder, o.train_scale, o.device)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    enc = encode_pairs(adapter, pairs, o.resolution, o.device)
    encode_s = time.perf_counter() - t0
    # The frozen encoders are done: free them before the UNet's activations need the memory.
    adapter.ckpt.vae = adapter.ckpt.text_encoder = adapter.ip.image_encoder = None
    gc.collect()
    scheduler = noise_scheduler(adapter.ckpt.scheduler_config)
    provenance = {
        "recipe": "edge-cer finetune ip-adapter",
        "data_sha256": pairs_hash(pairs),
        "pairs": len(pairs),
        "base_adapter_sha256": sha256_file(o.ip_adapter),
        "model": str(o.model),
        "prediction_type": scheduler.config.prediction_type,
        **o.fingerprint(),
    }
    optimizer = torch.optim.AdamW(list(adapter.params.values()), lr=o.lr, weight_decay=o.weight_decay)
    generator = torch.Generator().manual_seed(o.seed)
    ckpt_file = checkpoint_path(o.out)
    if o.resume and ckpt_file.exists():
        history = load_checkpoint(ckpt_file, adapter, optimizer, generator, provenance)
        console.print(f"resuming {ckpt_file} at step {history['step']}")
    else:
        if o.resume:
            console.print(f"no checkpoint at {ckpt_file}: starting from step 0")
        history = {"step": 0, "step_losses": [], "loss_fixed_before": fixed_loss(adapter, scheduler, enc)}
    start, step_losses = history["step"], history["step_losses"]
    if start > o.steps:
        raise EdgeCerError(f"{ckpt_file}: already at step {start}, past --steps {o.steps}; raise --steps")

    n, total_t = len(pairs), scheduler.config.num_train_timesteps
    thresholds = (o.drop_image, o.drop_image + o.drop_text, o.drop_image + o.drop_text + o.drop_both)
    progress = Progress(TextColumn("[bold]finetune"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TextColumn("ETA"),
                        TimeRemainingColumn(), console=console)
    step_times, step_cpu = [], []
    with progress:
        task = progress.add_task("finetune", total=o.steps, completed=start, loss="-")
        for step in range(start, o.steps):
            t_step, cpu_step = time.perf_counter(), time.process_time()
            idx = batch_indices(step, o.batch, n, o.seed)
            # Every random draw of the step, in a fixed order, from the checkpointed generator.
            u = torch.rand(o.batch, generator=generator)
            latent_eps = torch.randn((o.batch,) + enc.latent_mean.shape[1:], generator=generator)
            noise = torch.randn((o.batch,) + enc.latent_mean.shape[1:], generator=generator)
            timesteps = torch.randint(0, total_t, (o.batch,), generator=generator)
            drop_image = (u < thresholds[0]) | ((u >= thresholds[1]) & (u < thresholds[2]))
            drop_text = (u >= thresholds[0]) & (u < thresholds[2])
            loss = denoising_loss(adapter, scheduler, enc, idx.to(o.device), latent_eps.to(o.device),
                                  noise.to(o.device), timesteps.to(o.device), drop_image.to(o.device),
                                  drop_text.to(o.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step_losses.append(float(loss.detach()))
            step_times.append(time.perf_counter() - t_step)
            step_cpu.append(time.process_time() - cpu_step)
            recent = step_losses[-20:]
            progress.update(task, advance=1, loss=f"{sum(recent) / len(recent):.4f}")
            if (step + 1) % o.checkpoint_every == 0 or step + 1 == o.steps:
                history["step"] = step + 1
                save_checkpoint(ckpt_file, adapter, optimizer, generator, provenance, history)

    loss_after = fixed_loss(adapter, scheduler, enc)
    loss_before = history["loss_fixed_before"]
    provenance.update(steps=o.steps, loss_fixed_before=loss_before, loss_fixed_after=loss_after)
    save_adapter(o.out, adapter.h94_state_dict(), provenance)
    result = TrainResult(
        o.out, o.steps, start, loss_before, loss_after, step_losses,
        seconds_per_step=_mean_after_first(step_times), cpu_seconds_per_step=_mean_after_first(step_cpu),
        load_seconds=load_s, encode_seconds=encode_s,
        peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        peak_device_gb=torch.cuda.max_memory_allocated() / 2**30 if o.device.startswith("cuda") else None,
    )
    console.print(f"[green]saved[/] {o.out}: fixed-draw loss {loss_before:.4f} -> {loss_after:.4f} "
                  f"({len(pairs)} pairs, steps {start}->{o.steps})")
    if not (o.out.parent / "image_encoder").is_dir():
        console.print(f"note: no image_encoder/ beside {o.out}; export it with "
                      f"--image-encoder {adapter.ip.image_encoder_dir}")
    return result


def _mean_after_first(values: list[float]) -> float:
    """The first step pays for allocator warm-up and lazy initialisation; it is left out of per-step figures."""
    return sum(values[1:]) / len(values[1:]) if len(values) > 1 else math.nan


def _save_atomic(path: Path, tensors: dict, metadata: dict[str, str]) -> None:
    """safetensors written beside `path`, fsynced, then renamed over it: a kill leaves the old file or the new."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_adapter(path: Path, state: dict[str, torch.Tensor], provenance: dict) -> None:
    _save_atomic(path, state, {"format": "pt", TRAINING_METADATA_KEY: json.dumps(provenance)})


def read_provenance(path: Path) -> dict | None:
    """The training provenance a fine-tuned adapter carries in its safetensors metadata, or None."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get(TRAINING_METADATA_KEY)
    return json.loads(raw) if raw else None


def save_checkpoint(path: Path, adapter: Adapter, optimizer, generator, provenance: dict, history: dict) -> None:
    """Trainable weights, AdamW moments and the generator state in one safetensors file (no pickle); `history`
    (step, step_losses, loss_fixed_before) and the run's provenance in its metadata."""
    names = list(adapter.params)
    tensors = {f"param.{n}": p.detach().cpu().contiguous() for n, p in adapter.params.items()}
    state = optimizer.state_dict()
    for i, slot in state["state"].items():
        for key, value in slot.items():
            tensors[f"optim.{names[i]}.{key}"] = torch.as_tensor(value).cpu().contiguous()
    tensors["rng"] = generator.get_state()
    meta = {**history, "param_groups": state["param_groups"], "provenance": provenance}
    _save_atomic(path, tensors, {"edge_cer.checkpoint": json.dumps(meta)})


def load_checkpoint(path: Path, adapter: Adapter, optimizer, generator, provenance: dict) -> dict:
    """Restores weights, optimizer and generator in place; returns the history save_checkpoint stored."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["edge_cer.checkpoint"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise EdgeCerError(f"{path}: not an edge-cer fine-tuning checkpoint ({exc}); delete it to start over") from exc
    saved = meta["provenance"]
    differ = sorted(k for k in provenance if saved.get(k) != provenance[k])
    if differ:
        what = ", ".join(f"{k} {saved.get(k)!r} -> {provenance[k]!r}" for k in differ)
        raise EdgeCerError(f"{path}: this run differs from the checkpoint's ({what}); run with the same settings "
                           f"and data, or choose another --out")
    names = list(adapter.params)
    with torch.no_grad():
        for n, p in adapter.params.items():
            p.copy_(tensors[f"param.{n}"])
    state = {"param_groups": meta["param_groups"], "state": {}}
    for i, n in enumerate(names):
        keys = [k for k in tensors if k.startswith(f"optim.{n}.")]
        if keys:
            state["state"][i] = {k[len(f"optim.{n}."):]: tensors[k] for k in keys}
    optimizer.load_state_dict(state)
    generator.set_state(tensors["rng"])
    return {k: meta[k] for k in ("step", "step_losses", "loss_fixed_before")}
