"""`edge_cer.rng` against torch's CPU generator (torch only here, in the tests)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_cer.rng import TorchGenerator, torch_randn

torch = pytest.importorskip("torch", reason="torch_randn is checked against torch.randn")

SEEDS = (0, 1, 42, 2**32 + 5, -1)
# numel >= 16: torch's float32 Box-Muller uses CPU-specific log/sin/cos, so a few float32 ulps apart (values reach
# ~5, where one ulp is 4.8e-7); numel < 16 runs in double in both and must agree exactly.
BOX_MULLER_16_TOL = {"rtol": 1e-6, "atol": 2e-6}


def _torch_randn(shape, generator):
    return torch.randn(shape, generator=generator).numpy()


@pytest.mark.parametrize("shape", [(1, 4, 8, 8), (1, 4, 64, 64), (1, 4, 9, 7), (16,), (17,), (2, 4, 96, 64)])
@pytest.mark.parametrize("seed", SEEDS)
def test_float_box_muller_path(shape, seed):
    """numel >= 16, including a tail that torch redraws (9 x 7, 17)."""
    ours = torch_randn(shape, seed)
    assert ours.dtype == np.float32 and ours.shape == shape
    np.testing.assert_allclose(ours, _torch_randn(shape, torch.Generator("cpu").manual_seed(seed)),
                               **BOX_MULLER_16_TOL)


@pytest.mark.parametrize("shape", [(1,), (3,), (15,), (5, 3), (2, 1, 2)])
@pytest.mark.parametrize("seed", SEEDS)
def test_double_scalar_path_is_exact(shape, seed):
    np.testing.assert_array_equal(torch_randn(shape, seed), _torch_randn(shape, torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize(
    "shapes", [[(3,), (5,), (20,), (1,), (2, 3)], [(1, 4, 9, 7), (1, 4, 8, 8), (3,)], [(17,), (1,)]]
)
def test_generator_continues_the_stream(shapes):
    """Successive draws from one generator (initial latents, then LCM step noise), including torch's cached
    second Box-Muller value between odd-sized small draws."""
    ours, theirs = TorchGenerator(7), torch.Generator().manual_seed(7)
    for shape in shapes:
        np.testing.assert_allclose(ours.randn(shape), _torch_randn(shape, theirs), **BOX_MULLER_16_TOL)


def test_different_seeds_differ():
    assert not np.allclose(torch_randn((1, 4, 8, 8), 0), torch_randn((1, 4, 8, 8), 1))
