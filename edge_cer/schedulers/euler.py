"""Euler sampler (Algorithm 2 of Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models", without churn): a numpy port of diffusers 0.42 `EulerDiscreteScheduler`."""

from __future__ import annotations

import logging

import numpy as np

from edge_cer.schedulers._common import (
    PREDICTION_TYPES,
    SchedulerOutput,
    StepIndex,
    check_choice,
    check_num_inference_steps,
    per_sample,
    refuse_unsupported,
    spaced_timesteps,
    training_alphas_cumprod,
)

logger = logging.getLogger(__name__)

# diffusers options this port does not implement; accepted only at these (default) values.
_UNSUPPORTED = {
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "timestep_type": "discrete",
    "rescale_betas_zero_snr": False,
}


class EulerDiscreteScheduler(StepIndex):
    """Euler steps on the sigma (noise-to-signal) scale; `timesteps` are float32 and may be fractional.

    Args:
        num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas: the training noise schedule
            (diffusers' meaning; SD uses 1000, 0.00085, 0.012, "scaled_linear").
        prediction_type: what the UNet predicts: "epsilon", "v_prediction" (section 2.4 of Imagen Video,
            arXiv:2210.02303) or "sample".
        timestep_spacing: "linspace", "leading" or "trailing" (Table 2 of arXiv:2305.08891).
        steps_offset: added to `leading` timesteps (SD configs use 1).
        final_sigmas_type: "zero" (step to a clean sample) or "sigma_min" (stop at the smallest training sigma).
        Other keys of a scheduler_config.json are ignored, as diffusers' `from_config` does; diffusers options this
        port lacks are refused unless they hold their default.
    """

    order = 1

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas=None,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
        final_sigmas_type: str = "zero",
        **other,
    ):
        refuse_unsupported(type(self).__name__, other, _UNSUPPORTED)
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        check_choice("final_sigmas_type", final_sigmas_type, ("zero", "sigma_min"))
        self.num_train_timesteps = num_train_timesteps
        self.prediction_type = prediction_type
        self.timestep_spacing = timestep_spacing
        self.steps_offset = steps_offset
        self.final_sigmas_type = final_sigmas_type
        self.alphas_cumprod = training_alphas_cumprod(
            num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas
        )
        self._train_sigmas = np.sqrt((1 - self.alphas_cumprod) / self.alphas_cumprod)  # float32, as diffusers
        self.num_inference_steps: int | None = None
        self.timesteps = np.arange(num_train_timesteps - 1, -1, -1, dtype=np.float32)
        self.sigmas = np.concatenate([self._train_sigmas[::-1], [0]]).astype(np.float32)
        self.is_scale_input_called = False

    @property
    def init_noise_sigma(self) -> np.float32:
        """Standard deviation of the txt2img starting noise."""
        max_sigma = self.sigmas.max()
        if self.timestep_spacing in ("linspace", "trailing"):
            return max_sigma
        return np.sqrt(max_sigma**2 + 1)

    def set_timesteps(self, num_inference_steps: int) -> None:
        check_num_inference_steps(num_inference_steps, self.num_train_timesteps)
        self.num_inference_steps = num_inference_steps
        timesteps = spaced_timesteps(
            self.timestep_spacing, self.num_train_timesteps, num_inference_steps, self.steps_offset
        ).astype(np.float32)
        # Sigmas at fractional timesteps: linear interpolation of the training sigmas (in double, as diffusers).
        train_sigmas = self._train_sigmas.astype(np.float64)
        sigmas = np.interp(timesteps, np.arange(len(train_sigmas)), train_sigmas)
        sigma_last = train_sigmas[0] if self.final_sigmas_type == "sigma_min" else 0.0
        self.sigmas = np.append(sigmas, sigma_last).astype(np.float32)
        self.timesteps = timesteps
        self._step_index = None
        self._begin_index = None

    def scale_model_input(self, sample: np.ndarray, timestep) -> np.ndarray:
        """`x / sqrt(sigma^2 + 1)`: the UNet was trained on unit-variance inputs."""
        if self._step_index is None:
            self._init_step_index(timestep)
        sigma = self.sigmas[self._step_index]
        self.is_scale_input_called = True
        return sample / np.sqrt(sigma**2 + 1)

    def step(self, model_output: np.ndarray, timestep, sample: np.ndarray, noise=None) -> SchedulerOutput:
        if isinstance(timestep, (int, np.integer)):
            raise ValueError(
                "Passing integer indices (e.g. from `enumerate(timesteps)`) as timesteps to "
                "`EulerDiscreteScheduler.step()` is not supported; pass one of `scheduler.timesteps`."
            )
        if not self.is_scale_input_called:
            logger.warning("call `scale_model_input` before `step`: the Euler model input must be scaled")
        if self._step_index is None:
            self._init_step_index(timestep)
        sigma = self.sigmas[self._step_index]
        sigma_hat = sigma  # no churn (s_churn = 0), so sigma_hat = sigma * (0 + 1)

        # 1. compute predicted original sample (x_0) from sigma-scaled predicted noise
        if self.prediction_type == "epsilon":
            pred_original_sample = sample - sigma_hat * model_output
        elif self.prediction_type == "v_prediction":
            pred_original_sample = model_output * (-sigma / np.sqrt(sigma**2 + 1))
            pred_original_sample += sample / (sigma**2 + 1)
        else:
            pred_original_sample = model_output.copy()

        # 2. Convert to an ODE derivative, 3. take the Euler step; in place on one buffer, same rounding.
        prev_sample = np.subtract(sample, pred_original_sample)
        prev_sample /= sigma_hat
        prev_sample *= self.sigmas[self._step_index + 1] - sigma_hat
        prev_sample += sample
        self._step_index += 1
        return SchedulerOutput(prev_sample, pred_original_sample)

    def add_noise(self, original: np.ndarray, noise: np.ndarray, timesteps) -> np.ndarray:
        """`x0 + sigma * noise` at the schedule position of `timesteps` (or the begin index, in img2img)."""
        sigma = self.sigmas[self._noise_indices(timesteps)]
        return original + noise * per_sample(sigma, original.ndim)
