"""`torch.randn` on a CPU generator, reproduced in numpy, so `--seed N` matches diffusers without torch.

torch's CPU generator is mt19937 seeded with `init_genrand(seed & 0xffffffff)`; numpy's `MT19937` with legacy
seeding is the same engine, so its raw 32-bit stream is torch's. On top of that stream torch draws normals two ways
(aten/src/ATen/native/cpu/DistributionKernels.cpp, `normal_kernel`):
- numel >= 16 (`normal_fill`): one float uniform per element, `(u32 & (2**24 - 1)) * 2**-24`; then Box-Muller on
  chunks of 16 (element j of the first 8 gets the cos branch, j + 8 the sin branch, with u1 = 1 - u[j] and
  u2 = u[j + 8]); if numel is not a multiple of 16, the last 16 elements are drawn afresh and transformed again.
- numel < 16 (`at::normal_distribution<double>`): per pair of values two double uniforms, each from 64 bits
  `((hi << 32) | lo) & (2**53 - 1)) * 2**-53`; value = r * cos(theta) with r = sqrt(-2 log1p(-u2)),
  theta = 2 pi u1, and r * sin(theta) is cached in the generator for the next value (even across calls).
torch computes the first path in float32 with CPU-specific (SIMD) log/sin/cos, so no float32 formula matches it on
every CPU; we compute it in float64 and round once, which agrees to ~2e-6 absolute (a few float32 ulps; measured on
AVX512, `tests/test_rng.py`). The second path is double precision in torch too and agrees bit for bit.
"""

from __future__ import annotations

import math

import numpy as np


def _box_muller_16(u: np.ndarray) -> np.ndarray:
    """torch's `normal_fill_16` on rows of 16 float uniforms."""
    u = u.reshape(-1, 16)
    radius = np.sqrt(-2.0 * np.log(1.0 - u[:, :8]))
    theta = 2.0 * math.pi * u[:, 8:]
    return np.concatenate([radius * np.cos(theta), radius * np.sin(theta)], axis=1).reshape(-1)


class TorchGenerator:
    """`torch.Generator("cpu").manual_seed(seed)`: successive `randn` calls continue the same stream, as diffusers'
    pipelines do when one generator draws the initial latents and then each LCM step's noise."""

    def __init__(self, seed: int):
        self._bitgen = np.random.MT19937(0)
        # torch takes negative seeds modulo 2**64, and mt19937 keeps the low 32 bits (init_genrand).
        self._bitgen._legacy_seeding((seed % 2**64) & 0xFFFFFFFF)
        self._cached_normal: float | None = None  # torch's next_double_normal_sample

    def _u32(self, count: int) -> np.ndarray:
        return self._bitgen.random_raw(count).astype(np.uint64)

    def _float_uniforms(self, count: int) -> np.ndarray:
        return (self._u32(count) & np.uint64(2**24 - 1)).astype(np.float64) * 2.0**-24

    def _double_normals(self, count: int) -> np.ndarray:
        out = []
        if count and self._cached_normal is not None:
            out.append(self._cached_normal)
            self._cached_normal = None
        pairs = (count - len(out) + 1) // 2
        raw = self._u32(4 * pairs).reshape(pairs, 2, 2)
        u = ((raw[..., 0] << np.uint64(32) | raw[..., 1]) & np.uint64(2**53 - 1)).astype(np.float64) * 2.0**-53
        radius = np.sqrt(-2.0 * np.log1p(-u[:, 1]))
        theta = 2.0 * math.pi * u[:, 0]
        fresh = np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1).reshape(-1)
        needed = count - len(out)
        if needed % 2:
            self._cached_normal = float(fresh[needed])
        return np.concatenate([out, fresh[:needed]])

    def randn(self, shape: tuple[int, ...] | list[int]) -> np.ndarray:
        """`torch.randn(shape, generator=this)` in float32."""
        shape = tuple(int(s) for s in shape)
        numel = math.prod(shape)
        if numel < 16:
            return self._double_normals(numel).astype(np.float32).reshape(shape)
        out = np.empty(numel, dtype=np.float64)
        tail = numel % 16
        full = numel - tail
        u = self._float_uniforms(numel)
        out[:full] = _box_muller_16(u[:full])
        if tail:  # torch redraws the last 16 values
            out[numel - 16 :] = _box_muller_16(self._float_uniforms(16))
        return out.astype(np.float32).reshape(shape)


def torch_randn(shape: tuple[int, ...] | list[int], seed: int) -> np.ndarray:
    """`torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))` as a float32 numpy array."""
    return TorchGenerator(seed).randn(shape)
