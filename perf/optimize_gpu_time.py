"""How long `export sd --optimize gpu` (ONNX Runtime's stable-diffusion fusions, then fp16) takes on a UNet with
SD-2.1's block structure, with the free dimensions fixed (what the export does) vs left symbolic.

    .venv/bin/python perf/optimize_gpu_time.py --width 40     # narrow channels: seconds
    .venv/bin/python perf/optimize_gpu_time.py --width 160    # half of SD-2.1's widths: ~0.9 GB, ~7 GB peak RSS

Reports process CPU seconds (user + system), which a shared machine inflates far less than wall time.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from export import onnx_export


class _Unet(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states).sample


def export_unet(path: Path, width: int) -> int:
    """SD-2.1's UNet blocks (linear projections, heads growing with depth) at `width` base channels."""
    torch.manual_seed(0)
    text_dim = 64 if width < 160 else 1024
    unet = UNet2DConditionModel(
        block_out_channels=(width, 2 * width, 4 * width, 4 * width), layers_per_block=2, sample_size=64,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=text_dim,
        attention_head_dim=(5, 10, 20, 20), use_linear_projection=True, norm_num_groups=min(32, width // 5)).eval()
    inputs = (torch.randn(2, 4, 64, 64), torch.tensor([500.0]), torch.randn(2, 77, text_dim))
    spatial = {0: "batch", 2: "latent_height", 3: "latent_width"}
    torch.onnx.export(_Unet(unet), inputs, str(path), dynamo=False, opset_version=17,
                      input_names=["sample", "timestep", "encoder_hidden_states"], output_names=["out_sample"],
                      dynamic_axes={"sample": spatial, "encoder_hidden_states": {0: "batch"}, "out_sample": spatial})
    return sum(p.numel() for p in unet.parameters())


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=40, help="base channels (SD-2.1: 320)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "source" / "model.onnx"
        source.parent.mkdir()
        params = export_unet(source, args.width)
        print(f"UNet with SD-2.1 blocks at width {args.width}: {params / 1e6:.0f} M parameters")
        for label, dims in (("fixed sizes", {"batch": 2, "latent_height": 64, "latent_width": 64}),
                            ("symbolic", None)):
            work = Path(tmp) / label.replace(" ", "-")
            shutil.copytree(source.parent, work)
            cpu, wall = cpu_seconds(), time.perf_counter()
            onnx_export.optimize(work / "model.onnx", "unet", use_gpu=True, dims=dims)
            onnx_export.to_fp16(work / "model.onnx")
            print(f"{label:12s} optimize + fp16: {cpu_seconds() - cpu:6.1f} s CPU, {time.perf_counter() - wall:6.1f} s wall")
            shutil.rmtree(work)


if __name__ == "__main__":
    main()
