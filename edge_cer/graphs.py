"""One description per exported graph: names, dtypes, symbolic shapes, optimisation profiles.

The export stage (ONNX export, TensorRT profiles), the manifest and the runtime (buffer shapes, input checks)
all read from these classes, so names and shapes cannot drift apart. Torch-free on purpose.

Symbolic dimensions: ``batch`` (2 under classifier-free guidance), ``height``/``width`` in pixels and
``latent_height``/``latent_width`` = pixels / 8 (the VAE's downsampling of every SD-family model).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

VAE_DOWNSAMPLE = 8
TEXT_LENGTH = 77  # CLIP's context length: every SD 1.x/2.x text encoder


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name
    shape: tuple  # ints and symbolic dimension names


@dataclass(frozen=True)
class ModelDims:
    """The sizes that decide every graph's shapes; read from the model folder at export, stored in the manifest."""

    text_hidden: int  # text encoder width = UNet cross-attention dim (768 SD-1.5, 1024 SD-2.x)
    latent_channels: int  # 4 for SD 1.x/2.x
    image_size: int  # CLIP image encoder input (224 for ViT-H/14)
    image_embed_dim: int  # what the adapter's image_proj consumes: projection dim (base) or hidden size (plus)
    image_tokens: int  # 1 (base: pooled + projected) or patches + 1 (plus: penultimate hidden states)
    ip_tokens: int  # tokens the adapter adds to cross-attention: 4 (base) or 16 (plus)
    adapter: str  # "base" | "plus"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelDims":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # Dims that may vary at run time (ONNX dynamic axes, TensorRT profile ranges).
    dynamic: tuple[str, ...] = field(default=())

    @property
    def file(self) -> str:
        """Path of the ONNX file inside an export folder (optimum's layout: one folder per graph)."""
        return f"{self.name}/model.onnx"

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """`torch.onnx.export`'s dynamic_axes for this graph."""
        axes = {}
        for t in self.inputs + self.outputs:
            named = {i: d for i, d in enumerate(t.shape) if isinstance(d, str) and d in self.dynamic}
            if named:
                axes[t.name] = named
        return axes

    def shapes(self, **dims: int) -> dict[str, tuple[int, ...]]:
        """Concrete shapes of every input and output for the given symbolic sizes."""
        dims = _with_latent(dims)
        out = {}
        for t in self.inputs + self.outputs:
            try:
                out[t.name] = tuple(d if isinstance(d, int) else dims[d] for d in t.shape)
            except KeyError as exc:
                raise ValueError(f"graph {self.name!r} needs dimension {exc.args[0]!r}") from None
        return out

    def profile(self, lo: dict, opt: dict, hi: dict) -> dict[str, tuple[tuple, tuple, tuple]]:
        """TensorRT optimisation profile: input name -> (min, opt, max) shapes."""
        lo_s, opt_s, hi_s = self.shapes(**lo), self.shapes(**opt), self.shapes(**hi)
        return {t.name: (lo_s[t.name], opt_s[t.name], hi_s[t.name]) for t in self.inputs}

    def describe(self, **dims: int) -> dict:
        """The manifest entry: names, dtypes, symbolic and (for the export resolution) concrete shapes."""
        concrete = self.shapes(**dims)
        io = lambda ts: [  # noqa: E731
            {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "export_shape": list(concrete[t.name])}
            for t in ts
        ]
        return {
            "file": self.file,
            "inputs": io(self.inputs),
            "outputs": io(self.outputs),
            "dynamic_axes": {k: {str(i): n for i, n in v.items()} for k, v in self.dynamic_axes().items()},
        }


def _with_latent(dims: dict) -> dict:
    dims = dict(dims)
    for px, lat in (("height", "latent_height"), ("width", "latent_width")):
        if px in dims and lat not in dims:
            if dims[px] % VAE_DOWNSAMPLE:
                raise ValueError(f"{px}={dims[px]} is not a multiple of {VAE_DOWNSAMPLE}")
            dims[lat] = dims[px] // VAE_DOWNSAMPLE
    return dims


TINY_VAE_DECODER = "vae_decoder_tiny"  # diffusers' AutoencoderTiny (TAESD) decoder, exported beside the full one


def sd_graphs(m: ModelDims, tiny_vae: bool = False) -> dict[str, GraphSpec]:
    """The six graphs of SD + IP-Adapter, in the order the pipeline runs them, and the tiny VAE decoder (same
    inputs and outputs as the full one) when the export has it."""
    f32, i64 = "float32", "int64"
    lat = ("batch", m.latent_channels, "latent_height", "latent_width")
    img = ("batch", 3, "height", "width")
    embeds = ("batch", m.image_embed_dim) if m.adapter == "base" else ("batch", m.image_tokens, m.image_embed_dim)
    ip = ("batch", m.ip_tokens, m.text_hidden)
    spatial = ("batch", "height", "width", "latent_height", "latent_width")
    graphs = [
        GraphSpec(
            "text_encoder",
            (TensorSpec("input_ids", i64, ("batch", TEXT_LENGTH)),),
            (TensorSpec("last_hidden_state", f32, ("batch", TEXT_LENGTH, m.text_hidden)),),
            ("batch",),
        ),
        GraphSpec(
            "image_encoder",
            (TensorSpec("pixel_values", f32, ("batch", 3, m.image_size, m.image_size)),),
            (TensorSpec("image_embeds", f32, embeds),),
            ("batch",),
        ),
        # The adapter's image projection runs once per stimulus, not once per UNet step.
        GraphSpec(
            "image_proj",
            (TensorSpec("image_embeds", f32, embeds),),
            (TensorSpec("ip_tokens", f32, ip),),
            ("batch",),
        ),
        GraphSpec(
            "unet",
            (
                TensorSpec("sample", f32, lat),
                TensorSpec("timestep", f32, (1,)),
                TensorSpec("encoder_hidden_states", f32, ("batch", TEXT_LENGTH, m.text_hidden)),
                TensorSpec("ip_tokens", f32, ip),
                TensorSpec("ip_scale", f32, (1,)),
            ),
            (TensorSpec("out_sample", f32, lat),),
            ("batch", "latent_height", "latent_width"),
        ),
        GraphSpec(
            "vae_encoder",
            (TensorSpec("sample", f32, img),),
            (TensorSpec("latent_mean", f32, lat),),
            spatial,
        ),
        GraphSpec(
            "vae_decoder",
            (TensorSpec("latent_sample", f32, lat),),
            (TensorSpec("sample", f32, img),),
            spatial,
        ),
    ]
    if tiny_vae:
        full = graphs[-1]
        graphs.append(GraphSpec(TINY_VAE_DECODER, full.inputs, full.outputs, full.dynamic))
    return {g.name: g for g in graphs}
