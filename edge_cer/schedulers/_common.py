"""What the numpy schedulers share: the training noise schedule, timestep spacing, step-index state, the output.

Every array here is float32 where diffusers keeps a float32 torch tensor, so the arithmetic rounds the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edge_cer.errors import EdgeCerError


@dataclass
class SchedulerOutput:
    """What `step` returns. `pred_original_sample` is the model's x0 estimate (LCM's `denoised`)."""

    prev_sample: np.ndarray
    pred_original_sample: np.ndarray


def refuse_unsupported(scheduler: str, options: dict, defaults: dict) -> None:
    """Reject a diffusers option the port does not implement, unless it holds diffusers' default (a no-op)."""
    for key, default in defaults.items():
        if key in options and options[key] != default and not (default is False and options[key] is None):
            raise EdgeCerError(
                f"scheduler_config.json: `{key}={options[key]!r}` is not supported by the numpy {scheduler}; "
                f"remove it or set it to {default!r} (or pick another scheduler)"
            )


def check_choice(key: str, value, choices: tuple) -> None:
    """Refuse a config value outside `choices`, naming the valid ones."""
    if value not in choices:
        valid = ", ".join(str(c) for c in choices)
        raise EdgeCerError(f"scheduler_config.json: {key} {value!r} is not supported; use one of: {valid}")


PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def _cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    """diffusers' `betas_for_alpha_bar` (cosine schedule, Nichol & Dhariwal 2021), computed in double precision."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    n = num_train_timesteps
    return np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)], np.float32)


def training_alphas_cumprod(
    num_train_timesteps: int, beta_start: float, beta_end: float, beta_schedule: str, trained_betas
) -> np.ndarray:
    """The float32 `alphas_cumprod` diffusers builds in every scheduler's `__init__`.

    torch.linspace in float32 differs from the correctly rounded linspace by at most one ulp (its result depends on
    the CPU's SIMD width); torch.cumprod accumulates in double on CPU, which we copy exactly.
    """
    if trained_betas is not None:
        betas = np.asarray(trained_betas, dtype=np.float32)
    elif beta_schedule == "linear":
        betas = np.linspace(beta_start, beta_end, num_train_timesteps).astype(np.float32)
    elif beta_schedule == "scaled_linear":  # the schedule SD was trained with
        betas = np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps).astype(np.float32) ** 2
    elif beta_schedule == "squaredcos_cap_v2":
        betas = _cosine_betas(num_train_timesteps)
    else:
        raise EdgeCerError(
            f"scheduler_config.json: beta_schedule {beta_schedule!r} is unknown; "
            "use linear, scaled_linear or squaredcos_cap_v2"
        )
    alphas = np.float32(1.0) - betas
    return np.cumprod(alphas.astype(np.float64)).astype(np.float32)


def spaced_timesteps(spacing: str, num_train_timesteps: int, num_inference_steps: int, steps_offset: int) -> np.ndarray:
    """Descending float64 timesteps for `leading`, `trailing` or `linspace` spacing (Table 2 of "Common Diffusion
    Noise Schedules and Sample Steps are Flawed", arXiv:2305.08891). `linspace` is left unrounded; callers that want
    integers round it, as DDIM does and Euler does not."""
    if spacing == "linspace":
        return np.linspace(0, num_train_timesteps - 1, num_inference_steps)[::-1].copy()
    if spacing == "leading":
        step_ratio = num_train_timesteps // num_inference_steps
        return (np.arange(0, num_inference_steps) * step_ratio).round()[::-1] + steps_offset
    if spacing == "trailing":
        step_ratio = num_train_timesteps / num_inference_steps
        return np.round(np.arange(num_train_timesteps, 0, -step_ratio)) - 1
    raise EdgeCerError(
        f"scheduler_config.json: timestep_spacing {spacing!r} is unknown; use leading, trailing or linspace"
    )


def check_num_inference_steps(num_inference_steps: int, num_train_timesteps: int) -> None:
    if not 1 <= num_inference_steps <= num_train_timesteps:
        raise EdgeCerError(
            f"--steps {num_inference_steps}: must be between 1 and the model's num_train_timesteps "
            f"({num_train_timesteps})"
        )


class StepIndex:
    """diffusers' step-index bookkeeping: `set_timesteps` resets it, the first `step` (or `scale_model_input`)
    finds it from the timestep, or from `set_begin_index` when a pipeline starts mid-schedule (img2img)."""

    timesteps: np.ndarray
    _step_index: int | None = None
    _begin_index: int | None = None

    @property
    def step_index(self) -> int | None:
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Index of the first timestep the pipeline will run; call it after `set_timesteps`."""
        self._begin_index = begin_index

    def index_for_timestep(self, timestep) -> int:
        # When a timestep appears twice, take the second so that starting mid-schedule does not skip a sigma.
        indices = np.flatnonzero(self.timesteps == timestep)
        if len(indices) == 0:
            raise ValueError(f"timestep {timestep} is not in the schedule `timesteps` {self.timesteps.tolist()}")
        return int(indices[1] if len(indices) > 1 else indices[0])

    def _init_step_index(self, timestep) -> None:
        self._step_index = self.index_for_timestep(timestep) if self._begin_index is None else self._begin_index

    def _noise_indices(self, timesteps) -> list[int]:
        """Schedule positions `add_noise` uses for each sample in the batch (diffusers' sigma-based schedulers)."""
        timesteps = np.atleast_1d(timesteps)
        if self._begin_index is None:
            return [self.index_for_timestep(t) for t in timesteps]
        index = self._step_index if self._step_index is not None else self._begin_index
        return [index] * len(timesteps)


def per_sample(values: np.ndarray, ndim: int) -> np.ndarray:
    """A (batch,) vector shaped to broadcast over (batch, ...) samples."""
    return values.reshape(-1, *([1] * (ndim - 1)))


def add_noise_alphas(alphas_cumprod: np.ndarray, original: np.ndarray, noise: np.ndarray, timesteps) -> np.ndarray:
    """`sqrt(a_t) * x0 + sqrt(1 - a_t) * noise` (DDPM forward process) for DDIM and LCM."""
    a = alphas_cumprod[np.atleast_1d(np.asarray(timesteps, dtype=np.int64))]
    return per_sample(np.sqrt(a), original.ndim) * original + per_sample(np.sqrt(1 - a), original.ndim) * noise
