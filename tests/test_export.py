"""The export stage: graphs match torch, the manifest verifies, bad inputs get one-line errors and leave no
half-written --out."""

from __future__ import annotations

import errno
import json
import shutil

import numpy as np
import pytest

from edge_cer.errors import EdgeCerError
from edge_cer.manifest import load_manifest

torch = pytest.importorskip("torch")

GRAPHS = {"text_encoder", "image_encoder", "image_proj", "unet", "vae_encoder", "vae_decoder"}


@pytest.mark.parametrize("preset,adapter", [("tiny-sd15", "base"), ("tiny-sd15", "plus"), ("tiny-sd2", "base"),
                                            ("tiny-sd2", "plus")])
def test_every_graph_matches_torch_on_two_shapes(tiny_export, preset, adapter):
    m = load_manifest(tiny_export(preset, adapter))
    assert set(m.data["graphs"]) == GRAPHS
    for name, g in m.data["graphs"].items():
        v = g["validation"]
        assert len(v["shapes"]) == 2 and v["shapes"][0] != v["shapes"][1]
        assert v["max_rel_diff"] <= 1e-4, (name, v)
    dims = m.data["model"]["dims"]
    assert dims["adapter"] == adapter and dims["ip_tokens"] == (4 if adapter == "base" else 16)
    assert m.data["model"]["prediction_type"] == ("epsilon" if preset == "tiny-sd15" else "v_prediction")
    assert m.data["model"]["pad_token"] == ("<|endoftext|>" if preset == "tiny-sd15" else "!")


def test_unet_ip_graph_module_matches_diffusers_ip_adapter(tiny_model):
    """Our IP attention (scale as a tensor) against diffusers' own IPAdapterAttnProcessor2_0, scale 0 included."""
    from diffusers import UNet2DConditionModel

    from export.checkpoint import load_ip_adapter
    from export.models import UNetIP

    model, adapters = tiny_model("tiny-sd2")
    ours_unet = UNet2DConditionModel.from_pretrained(model / "unet").eval()
    ref = UNet2DConditionModel.from_pretrained(model / "unet").eval()
    ip = load_ip_adapter(adapters["plus"], ref)
    ref._load_ip_adapter_weights([{"image_proj": ip.image_proj, "ip_adapter": ip.ip_layers}])
    ours = UNetIP(ours_unet, load_ip_adapter(adapters["plus"], ours_unet))
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 8, 6, generator=g)
    text = torch.randn(2, 77, 48, generator=g)
    embeds = torch.randn(2, 1, 17, 32, generator=g)  # (batch, images, tokens, width) as diffusers passes them
    with torch.no_grad():
        tokens = ref.encoder_hid_proj([embeds])[0][:, 0]
        for scale in (0.0, 0.6, 1.0):
            for proc in ref.attn_processors.values():
                if hasattr(proc, "scale"):
                    proc.scale = [scale]
            want = ref(sample, torch.tensor(500.0), encoder_hidden_states=text,
                       added_cond_kwargs={"image_embeds": [embeds]}).sample
            got = ours(sample, torch.tensor([500.0]), text, tokens, torch.tensor([scale]))
            assert torch.allclose(got, want, atol=1e-5), (scale, (got - want).abs().max())


def test_manifest_records_hashes_and_refuses_tampering(tiny_export, tmp_path):
    src = tiny_export("tiny-sd15", "base")
    m = load_manifest(src)
    assert {"unet/model.onnx", "tokenizer/tokenizer.json", "scheduler/scheduler_config.json"} <= set(m.data["files"])
    assert m.data["source"]["ip_adapter"]["sha256"] and m.data["tools"]["torch"]
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    with open(copy / "vae_decoder" / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(EdgeCerError, match=r"vae_decoder/model.onnx: SHA-256 differs"):
        load_manifest(copy)
    (copy / "vae_decoder" / "model.onnx").unlink()
    with pytest.raises(EdgeCerError, match=r"vae_decoder/model.onnx: missing"):
        load_manifest(copy)


def test_external_data_and_fp16_paths(tiny_model, tmp_path, stimulus_png):
    """One external data file per large graph (forced here on a tiny model) and fp16 weights: both still
    validate against torch and run in the engine."""
    from edge_cer.image import load_image
    from edge_cer.pipeline import SDPipeline
    from export.sd import ExportOptions, export_sd

    model, adapters = tiny_model("tiny-sd15")
    out = export_sd(ExportOptions(model=model, ip_adapter=adapters["base"], out=tmp_path / "ext", height=64,
                                  width=64, force_external_data=True))
    m = load_manifest(out)
    assert (out / "unet" / "model.onnx.data").is_file()
    assert sorted(p.name for p in (out / "unet").iterdir()) == ["model.onnx", "model.onnx.data"]
    assert "unet/model.onnx.data" in m.data["files"]
    picture = SDPipeline.from_export(out)(load_image(stimulus_png), "calm", steps=3).image
    assert picture.shape == (64, 64, 3)

    half = export_sd(ExportOptions(model=model, ip_adapter=adapters["plus"], out=tmp_path / "fp16", height=64,
                                   width=64, precision="fp16", tiny_vae=model.parent / "tiny-sd15-taesd"))
    mh = load_manifest(half)
    # SD's AutoencoderKL config says force_upcast (its activations overflow fp16): both its graphs stay fp32;
    # TAESD's does not: its decoder runs fp16.
    assert {n: g["precision"] for n, g in mh.data["graphs"].items()} == {
        "text_encoder": "fp16", "image_encoder": "fp16", "image_proj": "fp16", "unet": "fp16",
        "vae_encoder": "fp32", "vae_decoder": "fp32", "vae_decoder_tiny": "fp16"}
    assert all(g["validation"]["max_rel_diff"] <= 3e-2 for g in mh.data["graphs"].values())
    for vae in ("full", "tiny"):  # ONNX Runtime's CPU provider runs these fp16 graphs too
        picture = SDPipeline.from_export(half, vae=vae)(load_image(stimulus_png), "calm", steps=3).image
        assert picture.shape == (64, 64, 3) and np.isfinite(picture).all()
    assert (half / "unet" / "model.onnx").stat().st_size < (out / "unet" / "model.onnx.data").stat().st_size * 0.75


# -- bad input ------------------------------------------------------------------------------------------------


def _export(model, adapter, out, **kw):
    from export.sd import ExportOptions, export_sd

    return export_sd(ExportOptions(model=model, ip_adapter=adapter, out=out, height=64, width=48, **kw))


@pytest.fixture()
def sd15(tiny_model, tmp_path):
    """A private copy of the tiny SD-1.5 folder and adapters that a test may damage."""
    model, adapters = tiny_model("tiny-sd15")
    shutil.copytree(model, tmp_path / "model")
    shutil.copytree(adapters["base"].parent, tmp_path / "ip")
    return tmp_path / "model", tmp_path / "ip" / adapters["base"].name


def _assert_clean(out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


@pytest.mark.parametrize("damage,message", [
    (lambda m: (m / "model_index.json").unlink(), r"model_index.json: missing"),
    (lambda m: shutil.rmtree(m / "unet"), r"unet: missing component folder"),
    (lambda m: (m / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"})),
     r"only SD 1.x/2.x"),
    (lambda m: (m / "vae" / "diffusion_pytorch_model.safetensors").rename(m / "vae" / "diffusion_pytorch_model.bin"),
     r"diffusion_pytorch_model.bin: pickle weights refused"),
])
def test_bad_model_folders(sd15, tmp_path, damage, message):
    model, adapter = sd15
    damage(model)
    out = tmp_path / "out"
    with pytest.raises(EdgeCerError, match=message):
        _export(model, adapter, out)
    _assert_clean(out)


def test_bad_adapters(sd15, tiny_model, tmp_path):
    from safetensors.torch import save_file

    model, adapter = sd15
    out = tmp_path / "out"
    pickle = adapter.with_suffix(".bin")
    pickle.write_bytes(b"not read")
    with pytest.raises(EdgeCerError, match=r"ip-adapter_sd15.bin: pickle IP-Adapter refused"):
        _export(model, pickle, out)
    _, sd2_adapters = tiny_model("tiny-sd2")
    with pytest.raises(EdgeCerError, match=r"cross-attention width 48, the UNet has 32"):
        _export(model, sd2_adapters["base"], out)
    odd = adapter.parent / "odd.safetensors"
    save_file({"something.weight": torch.zeros(2)}, str(odd))
    with pytest.raises(EdgeCerError, match=r"odd.safetensors: unknown IP-Adapter layout"):
        _export(model, odd, out)
    enc_cfg = adapter.parent / "image_encoder" / "config.json"
    cfg = json.loads(enc_cfg.read_text())
    cfg["projection_dim"] = 40
    enc_cfg.write_text(json.dumps(cfg))
    with pytest.raises(EdgeCerError, match=r"base adapter takes 24-wide image features"):
        _export(model, adapter, out, force=True)
    _assert_clean(out)


def test_out_folder_rules(sd15, tmp_path):
    model, adapter = sd15
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("precious")
    with pytest.raises(EdgeCerError, match=r"foreign: already exists \(not an edge-cer export\)"):
        _export(model, adapter, foreign)
    with pytest.raises(EdgeCerError, match=r"not an edge-cer export; --force only replaces"):
        _export(model, adapter, foreign, force=True)
    assert (foreign / "thesis.docx").read_text() == "precious"

    out = _export(model, adapter, tmp_path / "ok")
    first = load_manifest(out).sha256
    with pytest.raises(EdgeCerError, match=r"ok: already exists \(an edge-cer export\)"):
        _export(model, adapter, out)
    _export(model, adapter, out, force=True)
    assert load_manifest(out).sha256 != first  # replaced (created_unix and paths differ)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ok.")]


def test_disk_full_mid_export_leaves_nothing(sd15, tmp_path, monkeypatch):
    from export import onnx_export

    model, adapter = sd15
    real, calls = onnx_export.export_graph, []

    def fill_disk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(onnx_export, "export_graph", fill_disk)
    out = tmp_path / "full"
    with pytest.raises(EdgeCerError, match=r"disk full during export; nothing was written to .*full"):
        _export(model, adapter, out)
    _assert_clean(out)


def test_cli_reports_one_line_errors(tmp_path, capsys):
    from edge_cer.cli import main

    (tmp_path / "a.safetensors").write_bytes(b"not read: the model folder is refused first")
    rc = main(["export", "sd", "--model", str(tmp_path / "nope"), "--ip-adapter", str(tmp_path / "a.safetensors"),
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "model_index.json: missing" in err[0]


def test_clip_zero_shot_prompts_match_torch_clip(tiny_model, tmp_path, stimulus_png):
    """--clip stores the prompt embeddings; with the engine's image embeddings they give CLIP's own
    zero-shot probabilities for a picture."""
    from transformers import CLIPModel

    from edge_cer.affect.picture import ZERO_SHOT_PROMPTS, ClipZeroShot
    from edge_cer.image import clip_pixels, load_image
    from edge_cer.pipeline import SDPipeline
    from export.factory import build_clip

    model, adapters = tiny_model("tiny-sd15")
    clip_dir = model.parent / "tiny-sd15-clip"
    out = _export(model, adapters["base"], tmp_path / "zs", clip=clip_dir)
    pipe = SDPipeline.from_export(out)
    entry = pipe.manifest.data["clip_zero_shot"]
    assert entry["prompts"] == [p for p, _ in ZERO_SHOT_PROMPTS]
    zero_shot = ClipZeroShot.from_manifest(entry)
    picture = load_image(stimulus_png)
    got = zero_shot.probabilities(pipe.clip_image_embeds(picture))

    clip = CLIPModel.from_pretrained(clip_dir).eval()
    pixels = torch.from_numpy(clip_pixels(picture, 32, pipe.preprocess["mean"], pipe.preprocess["std"]))
    from transformers import CLIPTokenizer

    ids = CLIPTokenizer.from_pretrained(clip_dir)(entry["prompts"], padding="max_length", max_length=77,
                                                  return_tensors="pt")
    with torch.no_grad():
        want = clip(pixel_values=pixels, **ids).logits_per_image.softmax(-1).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)

    other = build_clip("tiny-sd15", tmp_path / "other-clip", seed=5)
    assert other is not None
    with pytest.raises(EdgeCerError, match=r"its vision tower is not the adapter's image encoder"):
        _export(model, adapters["base"], tmp_path / "zs2", clip=tmp_path / "other-clip")
    with pytest.raises(EdgeCerError, match=r"only base adapter exports"):
        _export(model, adapters["plus"], tmp_path / "zs3", clip=clip_dir)


def test_verified_files_are_not_hashed_again_until_they_change(tiny_export, tmp_path, monkeypatch):
    from edge_cer import manifest as manifest_module

    copy = tmp_path / "copy"
    shutil.copytree(tiny_export("tiny-sd15", "base"), copy)
    load_manifest(copy)  # hashes everything, remembers the stats
    hashed = []
    real = manifest_module.sha256_file
    monkeypatch.setattr(manifest_module, "sha256_file", lambda p, *a: hashed.append(p.name) or real(p, *a))
    load_manifest(copy)
    assert hashed == ["manifest.json"] or hashed == []  # only ExportManifest.sha256 may read the manifest itself
    # Same size, other bytes: the changed stat forces a fresh hash, which catches it.
    path = copy / "vae_decoder" / "model.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(EdgeCerError, match=r"vae_decoder/model.onnx: SHA-256 differs"):
        load_manifest(copy)
    assert "model.onnx" in hashed
