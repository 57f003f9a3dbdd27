"""The numpy schedulers against the diffusers schedulers they replace (torch only here, in the tests).

One shared mixin, like diffusers' `SchedulerCommonTest`: each scheduler class adds its diffusers twin and its
config; the mixin drives both through the pipeline's schedule (txt2img or img2img), the same fake model outputs
(seeded numpy noise) and, for LCM, the same injected noise, and compares every number the pipeline reads.
"""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest

from edge_cer.errors import EdgeCerError
from edge_cer.schedulers import SCHEDULERS, img2img_timesteps, load_scheduler_config, scheduler_from_config

torch = pytest.importorskip("torch", reason="parity tests compare against diffusers (torch)")
diffusers = pytest.importorskip("diffusers", reason="parity tests compare against diffusers")
from diffusers.schedulers import scheduling_lcm  # noqa: E402

SHAPE = (1, 4, 8, 8)
SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
STEP_COUNTS = (1, 2, 4, 20, 25)
STRENGTHS = (1.0, 0.75, 0.3)
# One step, given the same inputs, agrees to float32 rounding; over a free-running loop the differences (a few
# ulps per step, from the order of float32 operations) grow with the sample, so that check is scaled to it.
STEP_TOL = {"rtol": 1e-5, "atol": 1e-5}
LOOP_TOL = 1e-4


def _diffusers_pipeline_timesteps(theirs, steps: int, strength: float):
    """`StableDiffusionImg2ImgPipeline.get_timesteps`, run on the diffusers scheduler."""
    theirs.set_timesteps(steps)
    init_timestep = min(int(steps * strength), steps)
    t_start = max(steps - init_timestep, 0)
    if hasattr(theirs, "set_begin_index"):
        theirs.set_begin_index(t_start * theirs.order)
    return theirs.timesteps[t_start * theirs.order :]


def _their_x0(theirs, out):
    """diffusers' x0 estimate: `pred_original_sample`, LCM's `denoised`, or DPM's history (it returns none)."""
    for field in ("pred_original_sample", "denoised"):
        if getattr(out, field, None) is not None:
            return getattr(out, field)
    return theirs.model_outputs[-1]


def _assert_close(ours, theirs, what: str, **tol):
    theirs = theirs.numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    np.testing.assert_allclose(np.asarray(ours, dtype=np.float64), theirs.astype(np.float64), err_msg=what,
                               **(tol or STEP_TOL))


class SchedulerCommonTest:
    """Shared parity loop; subclasses set `name` (ours), `diffusers_class` and `base_config`."""

    name: str
    diffusers_class: str
    base_config: dict = SD_BETAS
    prediction_types = ("epsilon", "v_prediction", "sample")
    spacings = ("leading", "trailing", "linspace")

    def check_full_loop(self, make_ours, theirs, steps: int, strength: float, seed: int = 0):
        """Drive ours and diffusers through one generation; `make_ours()` builds a fresh numpy scheduler."""
        rng = np.random.default_rng(seed)
        ours, twin = make_ours(), make_ours()  # twin: the free-running trajectory, as the engine runs it
        # Precondition: the schedule the pipeline reads
        if strength == 1.0:
            ours.set_timesteps(steps)
            twin.set_timesteps(steps)
            theirs.set_timesteps(steps)
            timesteps, their_timesteps = ours.timesteps, theirs.timesteps
        else:
            timesteps = img2img_timesteps(ours, steps, strength)
            img2img_timesteps(twin, steps, strength)
            their_timesteps = _diffusers_pipeline_timesteps(theirs, steps, strength)
        assert timesteps.dtype == their_timesteps.numpy().dtype
        np.testing.assert_array_equal(timesteps, their_timesteps.numpy())
        np.testing.assert_array_equal(ours.timesteps, theirs.timesteps.numpy())
        for table in ("sigmas", "alphas_cumprod"):
            if hasattr(theirs, table):
                _assert_close(getattr(ours, table), getattr(theirs, table), table, rtol=1e-6, atol=1e-7)
        _assert_close(ours.init_noise_sigma, torch.as_tensor(theirs.init_noise_sigma), "init_noise_sigma")

        # Starting latents: noise * init_noise_sigma (txt2img) or the noised picture latents (img2img)
        noise = rng.standard_normal(SHAPE).astype(np.float32)
        if strength == 1.0:
            sample = noise * ours.init_noise_sigma
            their_sample = torch.from_numpy(noise) * theirs.init_noise_sigma
        else:
            picture = rng.standard_normal(SHAPE).astype(np.float32)
            sample = ours.add_noise(picture, noise, timesteps[:1])
            their_sample = theirs.add_noise(torch.from_numpy(picture), torch.from_numpy(noise), their_timesteps[:1])
        _assert_close(sample, their_sample, "starting latents")
        assert sample.dtype == np.float32
        free_sample = sample

        # Under test: every step, given the same model output (and LCM noise) as diffusers
        for i, (t, their_t) in enumerate(zip(timesteps, their_timesteps)):
            model_input = ours.scale_model_input(sample, t)
            their_input = theirs.scale_model_input(their_sample, their_t)
            _assert_close(model_input, their_input, f"scale_model_input at step {i}")
            model_output = rng.standard_normal(SHAPE).astype(np.float32)
            step_noise = rng.standard_normal(SHAPE).astype(np.float32)
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(scheduling_lcm, "randn_tensor", lambda *a, **k: torch.from_numpy(step_noise.copy()))
                theirs_out = theirs.step(torch.from_numpy(model_output), their_t, their_sample)
            out = ours.step(model_output, t, sample, noise=step_noise)
            assert out.prev_sample.dtype == np.float32
            _assert_close(out.prev_sample, theirs_out.prev_sample, f"prev_sample at step {i}")
            _assert_close(out.pred_original_sample, _their_x0(theirs, theirs_out), f"pred_original_sample at step {i}")
            # Lockstep: both continue from diffusers' sample, so each step is checked on its own.
            their_sample = theirs_out.prev_sample
            sample = their_sample.numpy().copy()
            twin.scale_model_input(free_sample, t)
            free_sample = twin.step(model_output, t, free_sample, noise=step_noise).prev_sample
        # Postcondition: the free-running trajectory ends where diffusers' does
        scale = max(1.0, float(np.abs(sample).max()))
        np.testing.assert_allclose(free_sample, sample, rtol=0, atol=LOOP_TOL * scale, err_msg="free-running loop")

    def run_case(self, steps: int, strength: float, **config):
        config = {**self.base_config, **config}
        theirs = getattr(diffusers, self.diffusers_class).from_config(config)
        make_ours = lambda: SCHEDULERS[self.name](**config)  # noqa: E731
        if int(steps * strength) == 0:
            with pytest.raises(EdgeCerError, match="runs no denoising step"):
                img2img_timesteps(make_ours(), steps, strength)
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # diffusers' deprecation chatter
            self.check_full_loop(make_ours, theirs, steps, strength)

    def test_full_loops(self):
        """Every prediction type x spacing x step count x strength matches diffusers."""
        for prediction_type, spacing, steps, strength in itertools.product(
            self.prediction_types, self.spacings, STEP_COUNTS, STRENGTHS
        ):
            case = dict(prediction_type=prediction_type, timestep_spacing=spacing, steps_offset=1)
            try:
                self.run_case(steps, strength, **case)
            except AssertionError as exc:
                raise AssertionError(f"{self.name} {case} steps={steps} strength={strength}: {exc}") from None

    def test_linear_betas_and_no_offset(self):
        """The `linear` beta schedule and steps_offset 0 (non-SD configs) match too."""
        for steps in (4, 25):
            self.run_case(steps, 1.0, beta_schedule="linear", beta_start=0.0001, beta_end=0.02, steps_offset=0)


class TestEuler(SchedulerCommonTest):
    name, diffusers_class = "euler", "EulerDiscreteScheduler"

    def test_final_sigma_min(self):
        self.run_case(20, 1.0, final_sigmas_type="sigma_min", timestep_spacing="leading", steps_offset=1)

    def test_integer_timestep_is_refused(self):
        ours = SCHEDULERS["euler"](**SD_BETAS)
        ours.set_timesteps(4)
        with pytest.raises(ValueError, match="enumerate"):
            ours.step(np.zeros(SHAPE, np.float32), 1, np.zeros(SHAPE, np.float32))


class TestDDIM(SchedulerCommonTest):
    name, diffusers_class = "ddim", "DDIMScheduler"
    base_config = {**SD_BETAS, "clip_sample": False, "set_alpha_to_one": False}

    def test_alpha_to_one_and_clipping(self):
        """set_alpha_to_one and clip_sample (DDIM's defaults) change the last step and x0; both match."""
        for clip in (True, False):
            self.run_case(20, 1.0, set_alpha_to_one=True, clip_sample=clip, timestep_spacing="trailing")
            self.run_case(25, 0.75, set_alpha_to_one=True, clip_sample=clip, clip_sample_range=0.5)


class TestLCM(SchedulerCommonTest):
    name, diffusers_class = "lcm", "LCMScheduler"
    spacings = ("leading",)  # LCM ignores timestep_spacing: its steps come from the distillation schedule

    def test_more_steps_than_distilled_is_refused(self):
        ours = SCHEDULERS["lcm"](**SD_BETAS, original_inference_steps=20)
        with pytest.raises(EdgeCerError, match="at most 20 steps"):
            ours.set_timesteps(25)

    def test_missing_noise_is_refused(self):
        ours = SCHEDULERS["lcm"](**SD_BETAS)
        ours.set_timesteps(4)
        with pytest.raises(ValueError, match="noise"):
            ours.step(np.zeros(SHAPE, np.float32), ours.timesteps[0], np.zeros(SHAPE, np.float32))


class TestDPMSolver(SchedulerCommonTest):
    name, diffusers_class = "dpm++2m", "DPMSolverMultistepScheduler"

    def test_order_and_final_step_options(self):
        """First order throughout, heun correction, lower_order_final off, sigma_min end, clipped lambdas."""
        for extra in (
            {"solver_order": 1},
            {"solver_type": "heun"},
            {"lower_order_final": False, "final_sigmas_type": "sigma_min"},
            {"euler_at_final": True, "final_sigmas_type": "sigma_min"},
            {"lambda_min_clipped": -5.1, "timestep_spacing": "linspace"},
        ):
            for steps, strength in ((10, 1.0), (20, 0.75), (25, 1.0)):
                self.run_case(steps, strength, **extra)

    def test_unsupported_option_is_refused(self):
        with pytest.raises(EdgeCerError, match="use_karras_sigmas"):
            SCHEDULERS["dpm++2m"](**SD_BETAS, use_karras_sigmas=True)
        with pytest.raises(EdgeCerError, match="sde-dpmsolver"):
            SCHEDULERS["dpm++2m"](**SD_BETAS, algorithm_type="sde-dpmsolver++")


# ---- scheduler_config.json files as SD checkpoints ship them (key for key as on the Hub) ----

SD15_PNDM = {
    "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
    "clip_sample": False,
}
SD21_DDIM_V = {
    "_class_name": "DDIMScheduler", "_diffusers_version": "0.8.0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000,
    "prediction_type": "v_prediction", "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "trained_betas": None,
}
LCM_CONFIG = {
    "_class_name": "LCMScheduler", "_diffusers_version": "0.22.0.dev0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "clip_sample_range": 1.0,
    "dynamic_thresholding_ratio": 0.995, "num_train_timesteps": 1000, "original_inference_steps": 50,
    "prediction_type": "epsilon", "rescale_betas_zero_snr": False, "sample_max_value": 1.0,
    "set_alpha_to_one": True, "steps_offset": 1, "thresholding": False, "timestep_scaling": 10.0,
    "timestep_spacing": "leading", "trained_betas": None,
}
DPM_CONFIG_TEXT = """{
  "_class_name": "DPMSolverMultistepScheduler", "_diffusers_version": "0.21.0", "algorithm_type": "dpmsolver++",
  "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": false,
  "dynamic_thresholding_ratio": 0.995, "euler_at_final": false, "lambda_min_clipped": -Infinity,
  "lower_order_final": true, "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0,
  "set_alpha_to_one": false, "skip_prk_steps": true, "solver_order": 2, "solver_type": "midpoint",
  "steps_offset": 1, "thresholding": false, "timestep_spacing": "leading", "trained_betas": null,
  "use_karras_sigmas": false, "variance_type": null
}"""
# Outdated configs the pipeline "fixes": no steps_offset, clip_sample on.
OLD_DDIM = {"_class_name": "DDIMScheduler", **SD_BETAS, "clip_sample": True}
OLD_PNDM = {"_class_name": "PNDMScheduler", **SD_BETAS, "set_alpha_to_one": False, "steps_offset": 0}

CLASS_FOR = {name: cls.__name__ for name, cls in SCHEDULERS.items()}


def _diffusers_loaded(folder, name):
    """What diffusers runs: the folder's scheduler, given to an SD img2img pipeline (which applies its forcing),
    then optionally swapped with `X.from_config(pipe.scheduler.config)`."""
    from diffusers import StableDiffusionImg2ImgPipeline

    config = diffusers.DDIMScheduler.load_config(folder)  # any scheduler class reads the json
    loaded = getattr(diffusers, config["_class_name"]).from_pretrained(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = StableDiffusionImg2ImgPipeline(vae=None, text_encoder=None, tokenizer=None, unet=None,
                                              scheduler=loaded, safety_checker=None, feature_extractor=None,
                                              requires_safety_checker=False)
    if name is None or CLASS_FOR[name] == config["_class_name"]:
        return pipe.scheduler
    return getattr(diffusers, CLASS_FOR[name]).from_config(pipe.scheduler.config)


@pytest.mark.parametrize(
    "config, names",
    [
        (SD15_PNDM, ("euler", "ddim", "dpm++2m", "lcm")),
        (SD21_DDIM_V, (None, "euler", "dpm++2m")),
        (LCM_CONFIG, (None, "euler")),
        (DPM_CONFIG_TEXT, (None, "ddim", "euler")),
        (OLD_DDIM, (None, "euler", "lcm")),
        (OLD_PNDM, ("ddim", "euler", "dpm++2m")),
    ],
    ids=["sd15-pndm", "sd21-ddim-v", "lcm", "dpm-infinity", "old-ddim", "old-pndm"],
)
def test_config_round_trip(tmp_path, config, names):
    """scheduler_from_config(json, name) is the scheduler diffusers' pipeline runs for that json and swap."""
    path = tmp_path / "scheduler_config.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config, indent=2))
    for name in names:
        ours = scheduler_from_config(load_scheduler_config(path), name)
        theirs = _diffusers_loaded(tmp_path, name)
        assert type(ours).__name__ == type(theirs).__name__
        for key in ("prediction_type", "timestep_spacing", "steps_offset", "clip_sample", "lambda_min_clipped"):
            if hasattr(ours, key) and key in theirs.config:
                assert getattr(ours, key) == theirs.config[key], (name, key)
        steps = 4 if isinstance(ours, SCHEDULERS["lcm"]) else 25
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            SchedulerCommonTest().check_full_loop(
                lambda: scheduler_from_config(load_scheduler_config(path), name), theirs, steps, 1.0
            )


def test_dpm_config_holds_infinity(tmp_path):
    path = tmp_path / "scheduler_config.json"
    path.write_text(DPM_CONFIG_TEXT)
    scheduler = scheduler_from_config(load_scheduler_config(path))
    assert scheduler.lambda_min_clipped == -np.inf


def test_forcing_follows_diffusers_use_default_values():
    """Forced keys the file lacked do not survive a swap: an old DDIM config's Euler runs steps_offset 0, and a
    PNDM config without clip_sample gives DDIM clip_sample=True (DDIM's default; no forcing after the swap)."""
    assert scheduler_from_config(OLD_DDIM).steps_offset == 1
    assert scheduler_from_config(OLD_DDIM).clip_sample is False
    assert scheduler_from_config(OLD_DDIM, "euler").steps_offset == 0
    no_clip = {k: v for k, v in SD15_PNDM.items() if k != "clip_sample"}
    assert scheduler_from_config(no_clip, "ddim").clip_sample is True
    assert scheduler_from_config(SD15_PNDM, "ddim").clip_sample is False


def test_bad_names_and_configs_are_refused(tmp_path):
    with pytest.raises(EdgeCerError, match="euler, ddim, lcm, dpm\\+\\+2m"):
        scheduler_from_config(SD15_PNDM, "heun")
    with pytest.raises(EdgeCerError, match="PNDMScheduler.*no numpy port"):
        scheduler_from_config(SD15_PNDM)
    with pytest.raises(EdgeCerError, match="no scheduler config"):
        load_scheduler_config(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(EdgeCerError, match="not valid JSON"):
        load_scheduler_config(tmp_path / "bad.json")


def test_img2img_zero_steps_is_refused():
    scheduler = scheduler_from_config(SD15_PNDM, "euler")
    with pytest.raises(EdgeCerError, match="runs no denoising step"):
        img2img_timesteps(scheduler, 4, 0.2)
    assert len(img2img_timesteps(scheduler, 4, 0.25)) == 1
    assert scheduler.begin_index == 3
