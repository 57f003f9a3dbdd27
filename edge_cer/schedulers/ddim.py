"""Deterministic DDIM (Song et al. 2020, "Denoising Diffusion Implicit Models", eq. 12 with eta = 0): a numpy port of
diffusers 0.42 `DDIMScheduler`."""

from __future__ import annotations

import numpy as np

from edge_cer.schedulers._common import (
    PREDICTION_TYPES,
    SchedulerOutput,
    StepIndex,
    add_noise_alphas,
    check_choice,
    check_num_inference_steps,
    refuse_unsupported,
    spaced_timesteps,
    training_alphas_cumprod,
)

_UNSUPPORTED = {"thresholding": False, "rescale_betas_zero_snr": False}


class DDIMScheduler(StepIndex):
    """DDIM with eta = 0 (what SD pipelines run); integer `timesteps`, no input scaling, `init_noise_sigma` = 1.

    Args:
        num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas: the training noise schedule.
        clip_sample, clip_sample_range: clamp the x0 estimate to [-range, range] (SD pipelines force it off when
            they load a scheduler; see `edge_cer.schedulers.scheduler_from_config`).
        set_alpha_to_one: the alpha product "before" timestep 0 is 1 (True) or alphas_cumprod[0] (False; SD).
        steps_offset: added to `leading` timesteps.
        prediction_type: "epsilon", "v_prediction" or "sample".
        timestep_spacing: "leading", "trailing" or "linspace" (Table 2 of arXiv:2305.08891).
    """

    order = 1
    init_noise_sigma = 1.0

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas=None,
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        clip_sample_range: float = 1.0,
        timestep_spacing: str = "leading",
        **other,
    ):
        refuse_unsupported(type(self).__name__, other, _UNSUPPORTED)
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        self.num_train_timesteps = num_train_timesteps
        self.clip_sample = clip_sample
        self.clip_sample_range = clip_sample_range
        self.steps_offset = steps_offset
        self.prediction_type = prediction_type
        self.timestep_spacing = timestep_spacing
        self.alphas_cumprod = training_alphas_cumprod(
            num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas
        )
        self.final_alpha_cumprod = np.float32(1.0) if set_alpha_to_one else self.alphas_cumprod[0]
        self.num_inference_steps: int | None = None
        self.timesteps = np.arange(num_train_timesteps - 1, -1, -1, dtype=np.int64)

    def set_timesteps(self, num_inference_steps: int) -> None:
        check_num_inference_steps(num_inference_steps, self.num_train_timesteps)
        self.num_inference_steps = num_inference_steps
        timesteps = spaced_timesteps(
            self.timestep_spacing, self.num_train_timesteps, num_inference_steps, self.steps_offset
        )
        self.timesteps = np.round(timesteps).astype(np.int64)
        self._step_index = None
        self._begin_index = None

    def scale_model_input(self, sample: np.ndarray, timestep=None) -> np.ndarray:
        return sample

    def step(self, model_output: np.ndarray, timestep, sample: np.ndarray, noise=None) -> SchedulerOutput:
        if self.num_inference_steps is None:
            raise ValueError("call `set_timesteps` before `step`")
        # 1. get previous step value (=t-1): DDIM walks a fixed stride, whatever the spacing
        timestep = int(timestep)
        prev_timestep = timestep - self.num_train_timesteps // self.num_inference_steps

        # 2. compute alphas, betas
        alpha_prod_t = self.alphas_cumprod[timestep]
        alpha_prod_t_prev = self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod
        beta_prod_t = 1 - alpha_prod_t

        # 3. compute predicted original sample and noise ("predicted x_0" and "direction pointing to x_t", eq. 12)
        if self.prediction_type == "epsilon":
            pred_original_sample = sample - np.sqrt(beta_prod_t) * model_output
            pred_original_sample /= np.sqrt(alpha_prod_t)
            pred_epsilon = model_output
        elif self.prediction_type == "sample":
            pred_original_sample = model_output.copy()
            pred_epsilon = sample - np.sqrt(alpha_prod_t) * pred_original_sample
            pred_epsilon /= np.sqrt(beta_prod_t)
        else:  # v_prediction
            pred_original_sample = np.sqrt(alpha_prod_t) * sample
            pred_original_sample -= np.sqrt(beta_prod_t) * model_output
            pred_epsilon = np.sqrt(alpha_prod_t) * model_output
            pred_epsilon += np.sqrt(beta_prod_t) * sample

        # 4. clip the x_0 estimate (no effect on the direction: use_clipped_model_output is off)
        if self.clip_sample:
            np.clip(pred_original_sample, -self.clip_sample_range, self.clip_sample_range, out=pred_original_sample)

        # 5. x_{t-1} = sqrt(a_prev) * x_0 + sqrt(1 - a_prev) * eps   (eta = 0: no variance term)
        prev_sample = np.sqrt(1 - alpha_prod_t_prev) * pred_epsilon
        prev_sample += np.sqrt(alpha_prod_t_prev) * pred_original_sample
        return SchedulerOutput(prev_sample, pred_original_sample)

    def add_noise(self, original: np.ndarray, noise: np.ndarray, timesteps) -> np.ndarray:
        return add_noise_alphas(self.alphas_cumprod, original, noise, timesteps)
