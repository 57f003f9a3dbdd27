"""Latent Consistency Model multi-step sampling (Luo et al. 2023, arXiv:2310.04378, Algorithm 3): a numpy port of
diffusers 0.42 `LCMScheduler`."""

from __future__ import annotations

import numpy as np

from edge_cer.errors import EdgeCerError
from edge_cer.schedulers._common import (
    PREDICTION_TYPES,
    SchedulerOutput,
    StepIndex,
    add_noise_alphas,
    check_choice,
    check_num_inference_steps,
    refuse_unsupported,
    training_alphas_cumprod,
)

_UNSUPPORTED = {"thresholding": False, "rescale_betas_zero_snr": False}


class LCMScheduler(StepIndex):
    """Each step jumps to a consistency-model x0 estimate, then re-noises it to the next timestep with fresh noise.

    diffusers draws that fresh noise from the pipeline's generator inside `step`; here the caller passes it
    (`noise`, shaped like the sample) on every step but the last, e.g. from `edge_cer.rng.TorchGenerator.randn`
    continuing the generator that drew the initial latents, which reproduces diffusers' stream.

    Args:
        num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas: the training noise schedule.
        original_inference_steps: the distillation schedule (timesteps k-1, 2k-1, ...; k = 1000 // 50) from which
            `set_timesteps` picks evenly spaced ones. LCM ignores `timestep_spacing` and `steps_offset`.
        clip_sample, clip_sample_range, set_alpha_to_one, prediction_type: as in `DDIMScheduler`.
        timestep_scaling: multiplies the timestep in the consistency boundary condition (c_skip, c_out).
    """

    order = 1
    init_noise_sigma = 1.0

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "scaled_linear",
        trained_betas=None,
        original_inference_steps: int = 50,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        set_alpha_to_one: bool = True,
        prediction_type: str = "epsilon",
        timestep_scaling: float = 10.0,
        **other,
    ):
        refuse_unsupported(type(self).__name__, other, _UNSUPPORTED)
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        self.num_train_timesteps = num_train_timesteps
        self.original_inference_steps = original_inference_steps
        self.clip_sample = clip_sample
        self.clip_sample_range = clip_sample_range
        self.prediction_type = prediction_type
        self.timestep_scaling = timestep_scaling
        self.alphas_cumprod = training_alphas_cumprod(
            num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas
        )
        self.final_alpha_cumprod = np.float32(1.0) if set_alpha_to_one else self.alphas_cumprod[0]
        self.num_inference_steps: int | None = None
        self.timesteps = np.arange(num_train_timesteps - 1, -1, -1, dtype=np.int64)

    def set_timesteps(self, num_inference_steps: int) -> None:
        check_num_inference_steps(num_inference_steps, self.num_train_timesteps)
        original_steps = self.original_inference_steps
        if not num_inference_steps <= original_steps <= self.num_train_timesteps:
            raise EdgeCerError(
                f"--steps {num_inference_steps}: LCM picks its steps from the {original_steps}-step distillation "
                f"schedule (`original_inference_steps`), so use at most {original_steps} steps"
            )
        # The distillation schedule, descending, then evenly spaced picks from it.
        k = self.num_train_timesteps // original_steps
        lcm_origin_timesteps = (np.arange(1, original_steps + 1) * k - 1)[::-1]
        inference_indices = np.floor(
            np.linspace(0, len(lcm_origin_timesteps), num=num_inference_steps, endpoint=False)
        ).astype(np.int64)
        self.num_inference_steps = num_inference_steps
        self.timesteps = lcm_origin_timesteps[inference_indices].astype(np.int64)
        self._step_index = None
        self._begin_index = None

    def scale_model_input(self, sample: np.ndarray, timestep=None) -> np.ndarray:
        return sample

    def _boundary_condition_scalings(self, timestep: int) -> tuple[np.float32, np.float32]:
        """c_skip and c_out of the consistency parameterisation (sigma_data = 0.5); float32, because diffusers
        computes them from the pipeline's timestep tensor."""
        sigma_data = np.float32(0.5)
        scaled_timestep = np.float32(timestep) * np.float32(self.timestep_scaling)
        c_skip = sigma_data**2 / (scaled_timestep**2 + sigma_data**2)
        c_out = scaled_timestep / np.sqrt(scaled_timestep**2 + sigma_data**2)
        return c_skip, c_out

    def step(self, model_output: np.ndarray, timestep, sample: np.ndarray, noise=None) -> SchedulerOutput:
        if self.num_inference_steps is None:
            raise ValueError("call `set_timesteps` before `step`")
        if self._step_index is None:
            self._init_step_index(timestep)
        timestep = int(timestep)

        # 1. get previous step value (the last step re-noises nothing, so it reuses t)
        prev_step_index = self._step_index + 1
        prev_timestep = int(self.timesteps[prev_step_index]) if prev_step_index < len(self.timesteps) else timestep

        # 2. compute alphas, betas
        alpha_prod_t = self.alphas_cumprod[timestep]
        alpha_prod_t_prev = self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod
        beta_prod_t = 1 - alpha_prod_t
        beta_prod_t_prev = 1 - alpha_prod_t_prev

        # 3. get scalings for boundary conditions
        c_skip, c_out = self._boundary_condition_scalings(timestep)

        # 4. compute the predicted original sample x_0
        if self.prediction_type == "epsilon":
            predicted_original_sample = sample - np.sqrt(beta_prod_t) * model_output
            predicted_original_sample /= np.sqrt(alpha_prod_t)
        elif self.prediction_type == "sample":
            predicted_original_sample = model_output.copy()
        else:  # v_prediction
            predicted_original_sample = np.sqrt(alpha_prod_t) * sample
            predicted_original_sample -= np.sqrt(beta_prod_t) * model_output
        if self.clip_sample:
            np.clip(predicted_original_sample, -self.clip_sample_range, self.clip_sample_range,
                    out=predicted_original_sample)

        # 5. denoise the model output with the boundary condition
        denoised = predicted_original_sample
        denoised *= c_out
        denoised += c_skip * sample

        # 6. re-noise to the next timestep (multi-step LCM), except after the last step
        if self._step_index != self.num_inference_steps - 1:
            if noise is None:
                raise ValueError(
                    "LCMScheduler.step needs `noise` (shaped like the sample) on every step but the last; "
                    "draw it from the generator that drew the initial latents"
                )
            prev_sample = np.sqrt(beta_prod_t_prev) * noise
            prev_sample += np.sqrt(alpha_prod_t_prev) * denoised
        else:
            prev_sample = denoised
        self._step_index += 1
        return SchedulerOutput(prev_sample, denoised)

    def add_noise(self, original: np.ndarray, noise: np.ndarray, timesteps) -> np.ndarray:
        return add_noise_alphas(self.alphas_cumprod, original, noise, timesteps)
