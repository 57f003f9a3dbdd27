"""Latency profiling: `edge-cer bench` (cli.py) over our engines and, for comparison, diffusers + torch.

Torch-free except `reference.py`, which only `--vs-torch` imports."""
