"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
Models", arXiv:2211.01095, Algorithm 2): a numpy port of diffusers 0.42 `DPMSolverMultistepScheduler` for
`algorithm_type="dpmsolver++"` with solver order 1 or 2."""

from __future__ import annotations

import numpy as np

from edge_cer.errors import EdgeCerError
from edge_cer.schedulers._common import (
    PREDICTION_TYPES,
    SchedulerOutput,
    StepIndex,
    check_choice,
    check_num_inference_steps,
    per_sample,
    refuse_unsupported,
    training_alphas_cumprod,
)

_UNSUPPORTED = {
    "thresholding": False,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "use_lu_lambdas": False,
    "use_flow_sigmas": False,
    "rescale_betas_zero_snr": False,
    "use_dynamic_shifting": False,
    "variance_type": None,
}


def _alpha_sigma(sigma: np.float32) -> tuple[np.float32, np.float32]:
    """alpha_t and sigma_t of the VP process at noise-to-signal ratio `sigma`."""
    alpha_t = np.float32(1) / np.sqrt(sigma**2 + 1)
    return alpha_t, sigma * alpha_t


def _log_snr(alpha_t: np.float32, sigma_t: np.float32) -> np.float32:
    """lambda_t = log(alpha_t / sigma_t); +inf at the final sigma 0 (where exp(-h) is 0, as intended)."""
    with np.errstate(divide="ignore"):
        return np.log(alpha_t) - np.log(sigma_t)


class DPMSolverMultistepScheduler(StepIndex):
    """Multistep DPM-Solver++ on the data prediction x0: each step reuses the previous step's x0 (2M).

    The first step run is first order (no history yet; img2img too) and so is the last with
    `final_sigmas_type="zero"`, or with `lower_order_final` when there are fewer than 15 steps.

    Args:
        num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas: the training noise schedule.
        solver_order: 2 (2M, the SD default) or 1 (DPM-Solver++ 1, i.e. DDIM in log-SNR time).
        prediction_type: "epsilon", "v_prediction" (x0 = alpha_t * x - sigma_t * v) or "sample".
        algorithm_type: only "dpmsolver++" ("deis", which diffusers maps to it, is accepted).
        solver_type: "midpoint" (default) or "heun" second-order correction.
        lower_order_final, euler_at_final: first-order steps at the end, for stability with few steps.
        final_sigmas_type: "zero" or "sigma_min".
        lambda_min_clipped: drop timesteps whose log-SNR is below this (-inf keeps all; configs may hold
            `-Infinity`).
        timestep_spacing: "linspace", "leading" or "trailing"; steps_offset: added to `leading` timesteps.
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
        solver_order: int = 2,
        prediction_type: str = "epsilon",
        algorithm_type: str = "dpmsolver++",
        solver_type: str = "midpoint",
        lower_order_final: bool = True,
        euler_at_final: bool = False,
        final_sigmas_type: str = "zero",
        lambda_min_clipped: float = -float("inf"),
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
        **other,
    ):
        refuse_unsupported(type(self).__name__, other, _UNSUPPORTED)
        check_choice("algorithm_type", algorithm_type, ("dpmsolver++", "deis"))  # diffusers maps deis to ++
        check_choice("solver_order", solver_order, (1, 2))
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        check_choice("final_sigmas_type", final_sigmas_type, ("zero", "sigma_min"))
        self.num_train_timesteps = num_train_timesteps
        self.solver_order = solver_order
        self.prediction_type = prediction_type
        self.solver_type = "heun" if solver_type == "heun" else "midpoint"  # diffusers maps logrho/bh1/bh2 too
        self.lower_order_final = lower_order_final
        self.euler_at_final = euler_at_final
        self.final_sigmas_type = final_sigmas_type
        self.lambda_min_clipped = lambda_min_clipped
        self.timestep_spacing = timestep_spacing
        self.steps_offset = steps_offset
        self.alphas_cumprod = training_alphas_cumprod(
            num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas
        )
        alpha_t, sigma_t = np.sqrt(self.alphas_cumprod), np.sqrt(1 - self.alphas_cumprod)
        self.lambda_t = np.log(alpha_t) - np.log(sigma_t)
        self._train_sigmas = np.sqrt((1 - self.alphas_cumprod) / self.alphas_cumprod)
        self.sigmas = self._train_sigmas
        self.num_inference_steps: int | None = None
        self.timesteps = np.arange(num_train_timesteps - 1, -1, -1).astype(np.float32)
        self.model_outputs: list[np.ndarray | None] = [None] * solver_order
        self.lower_order_nums = 0

    def set_timesteps(self, num_inference_steps: int) -> None:
        check_num_inference_steps(num_inference_steps, self.num_train_timesteps)
        # Timesteps whose log-SNR is below lambda_min_clipped are cut from the top of the schedule.
        clipped_idx = np.searchsorted(self.lambda_t[::-1], np.float32(self.lambda_min_clipped))
        last_timestep = self.num_train_timesteps - int(clipped_idx)
        n = num_inference_steps
        if self.timestep_spacing == "linspace":
            timesteps = np.linspace(0, last_timestep - 1, n + 1).round()[::-1][:-1]
        elif self.timestep_spacing == "leading":
            step_ratio = last_timestep // (n + 1)
            timesteps = (np.arange(0, n + 1) * step_ratio).round()[::-1][:-1] + self.steps_offset
        elif self.timestep_spacing == "trailing":
            step_ratio = self.num_train_timesteps / n
            timesteps = np.arange(last_timestep, 0, -step_ratio).round() - 1
        else:
            raise EdgeCerError(
                f"scheduler_config.json: timestep_spacing {self.timestep_spacing!r} is unknown; "
                "use leading, trailing or linspace"
            )
        timesteps = timesteps.astype(np.int64)
        train_sigmas = self._train_sigmas
        sigmas = np.interp(timesteps, np.arange(len(train_sigmas)), train_sigmas.astype(np.float64))
        sigma_last = train_sigmas[0] if self.final_sigmas_type == "sigma_min" else 0.0
        self.sigmas = np.append(sigmas, sigma_last).astype(np.float32)
        self.timesteps = timesteps
        self.num_inference_steps = len(timesteps)
        self.model_outputs = [None] * self.solver_order
        self.lower_order_nums = 0
        self._step_index = None
        self._begin_index = None

    def scale_model_input(self, sample: np.ndarray, timestep=None) -> np.ndarray:
        return sample

    def convert_model_output(self, model_output: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """The data prediction x0 that DPM-Solver++ integrates, from whatever the UNet predicts."""
        if self.prediction_type == "sample":
            return model_output.copy()
        alpha_t, sigma_t = _alpha_sigma(self.sigmas[self._step_index])
        if self.prediction_type == "epsilon":
            x0_pred = sample - sigma_t * model_output
            x0_pred /= alpha_t
        else:  # v_prediction
            x0_pred = alpha_t * sample
            x0_pred -= sigma_t * model_output
        return x0_pred

    def _first_order_update(self, x0: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """DPM-Solver++ 1 (eq. 5 of arXiv:2211.01095): x_t = sigma_t/sigma_s * x - alpha_t * (e^-h - 1) * x0."""
        alpha_t, sigma_t = _alpha_sigma(self.sigmas[self._step_index + 1])
        alpha_s, sigma_s = _alpha_sigma(self.sigmas[self._step_index])
        h = _log_snr(alpha_t, sigma_t) - _log_snr(alpha_s, sigma_s)
        x_t = (sigma_t / sigma_s) * sample
        x_t -= (alpha_t * (np.exp(-h) - np.float32(1.0))) * x0
        return x_t

    def _second_order_update(self, sample: np.ndarray) -> np.ndarray:
        """DPM-Solver++(2M) (Algorithm 2 of arXiv:2211.01095) from the last two x0 predictions."""
        alpha_t, sigma_t = _alpha_sigma(self.sigmas[self._step_index + 1])
        alpha_s0, sigma_s0 = _alpha_sigma(self.sigmas[self._step_index])
        alpha_s1, sigma_s1 = _alpha_sigma(self.sigmas[self._step_index - 1])
        lambda_t, lambda_s0 = _log_snr(alpha_t, sigma_t), _log_snr(alpha_s0, sigma_s0)
        lambda_s1 = _log_snr(alpha_s1, sigma_s1)
        m0, m1 = self.model_outputs[-1], self.model_outputs[-2]
        h, h_0 = lambda_t - lambda_s0, lambda_s0 - lambda_s1
        r0 = h_0 / h
        # D0 = m0, D1 = (m0 - m1) / r0
        d1 = np.subtract(m0, m1)
        d1 *= np.float32(1.0) / r0
        phi = alpha_t * (np.exp(-h) - np.float32(1.0))
        x_t = (sigma_t / sigma_s0) * sample
        x_t -= phi * m0
        if self.solver_type == "midpoint":
            d1 *= np.float32(0.5) * phi
            x_t -= d1
        else:  # heun
            d1 *= alpha_t * ((np.exp(-h) - np.float32(1.0)) / h + np.float32(1.0))
            x_t += d1
        return x_t

    def step(self, model_output: np.ndarray, timestep, sample: np.ndarray, noise=None) -> SchedulerOutput:
        if self.num_inference_steps is None:
            raise ValueError("call `set_timesteps` before `step`")
        if self._step_index is None:
            self._init_step_index(timestep)
        last = len(self.timesteps) - 1
        few_steps = self.lower_order_final and len(self.timesteps) < 15
        lower_order_final = self._step_index == last and (
            self.euler_at_final or few_steps or self.final_sigmas_type == "zero"
        )
        # 1. convert the model output to x0 and push it into the history
        x0_pred = self.convert_model_output(model_output, sample)
        self.model_outputs = [*self.model_outputs[1:], x0_pred]
        # 2. first order without history or at the end, else 2M
        if self.solver_order == 1 or self.lower_order_nums < 1 or lower_order_final:
            prev_sample = self._first_order_update(x0_pred, sample)
        else:
            prev_sample = self._second_order_update(sample)
        self.lower_order_nums = min(self.lower_order_nums + 1, self.solver_order)
        self._step_index += 1
        return SchedulerOutput(prev_sample, x0_pred)

    def add_noise(self, original: np.ndarray, noise: np.ndarray, timesteps) -> np.ndarray:
        """`alpha_t * x0 + sigma_t * noise` at the schedule position of `timesteps` (or the begin index)."""
        alpha_t, sigma_t = _alpha_sigma(self.sigmas[self._noise_indices(timesteps)])
        return per_sample(alpha_t, original.ndim) * original + per_sample(sigma_t, original.ndim) * noise
