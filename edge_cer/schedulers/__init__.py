"""numpy ports of the diffusers 0.42 schedulers that SD checkpoints ship with, drop-in for the torch-free engine.

    config = load_scheduler_config("model/scheduler/scheduler_config.json")
    scheduler = scheduler_from_config(config, name="dpm++2m")   # name=None: the config's own `_class_name`
    scheduler.set_timesteps(25)
    latents = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        latents = scheduler.step(unet(model_input, t), t, latents).prev_sample
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np

from edge_cer.errors import EdgeCerError
from edge_cer.schedulers._common import SchedulerOutput
from edge_cer.schedulers.ddim import DDIMScheduler
from edge_cer.schedulers.dpm_solver import DPMSolverMultistepScheduler
from edge_cer.schedulers.euler import EulerDiscreteScheduler
from edge_cer.schedulers.lcm import LCMScheduler

Scheduler = EulerDiscreteScheduler | DDIMScheduler | LCMScheduler | DPMSolverMultistepScheduler

# --scheduler names -> classes
SCHEDULERS: dict[str, type[Scheduler]] = {
    "euler": EulerDiscreteScheduler,
    "ddim": DDIMScheduler,
    "lcm": LCMScheduler,
    "dpm++2m": DPMSolverMultistepScheduler,
}
_BY_CLASS_NAME = {cls.__name__: cls for cls in SCHEDULERS.values()}

__all__ = [
    "SCHEDULERS",
    "DDIMScheduler",
    "DPMSolverMultistepScheduler",
    "EulerDiscreteScheduler",
    "LCMScheduler",
    "Scheduler",
    "SchedulerOutput",
    "img2img_timesteps",
    "load_scheduler_config",
    "scheduler_from_config",
]


def load_scheduler_config(path: str | Path) -> dict:
    """Read a diffusers scheduler_config.json.

    DPM-Solver configs may hold `"lambda_min_clipped": -Infinity`, which is not standard JSON; Python's json reads
    it as -inf (as diffusers does), so we accept it too.
    """
    path = Path(path)
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise EdgeCerError(f"{path}: no scheduler config; export the model with `edge-cer export sd`") from exc
    except json.JSONDecodeError as exc:
        raise EdgeCerError(f"{path}: not valid JSON ({exc}); re-export the model or fix the file") from exc
    if not isinstance(config, dict):
        raise EdgeCerError(f"{path}: expected a JSON object of scheduler settings")
    return config


def _pipeline_forcing(config: dict) -> dict:
    """What diffusers' SD pipelines do to the scheduler they are built with (`StableDiffusion*Pipeline.__init__`,
    "outdated config" deprecations): `steps_offset` != 1 becomes 1; `clip_sample` True becomes False."""
    config = dict(config)
    if config.get("steps_offset", 1) != 1:
        config["steps_offset"] = 1
    if config.get("clip_sample", False) is True:
        config["clip_sample"] = False
    return config


def scheduler_from_config(config: dict, name: str | None = None) -> Scheduler:
    """The scheduler a diffusers SD pipeline ends up with for this scheduler_config.json.

    name=None (or the config's own class): `StableDiffusionImg2ImgPipeline.from_pretrained(model)` -- the config's
    `_class_name`, with the pipeline's forcing applied to its full config (defaults included), so a config without
    `steps_offset` runs with steps_offset=1.

    name="euler" | "ddim" | "lcm" | "dpm++2m": the usual swap, `pipe.scheduler = X.from_config(pipe.scheduler.config)`.
    Only keys the file actually holds carry over (with the pipeline's forcing applied); keys the loaded scheduler took
    as defaults are listed in its `_use_default_values` and dropped, so X uses its own defaults for them: e.g. SD-1.5's
    PNDM config (no `timestep_spacing`) gives Euler "linspace", and a config without `clip_sample` gives DDIM
    clip_sample=True, since no forcing runs after the swap.
    """
    if name is not None and name not in SCHEDULERS:
        raise EdgeCerError(f"--scheduler {name!r} is unknown; use one of: {', '.join(SCHEDULERS)}")
    class_name = config.get("_class_name")
    own = _BY_CLASS_NAME.get(class_name)
    target = SCHEDULERS[name] if name is not None else own
    if target is None:
        raise EdgeCerError(
            f"scheduler_config.json: `_class_name` {class_name!r} has no numpy port; "
            f"choose one with --scheduler ({', '.join(SCHEDULERS)})"
        )
    in_file = {k: v for k, v in config.items() if not k.startswith("_")}
    if target is own:
        defaults = {**_constructor_defaults(own), **in_file}
        return own(**_pipeline_forcing(defaults))
    return target(**_pipeline_forcing(in_file))


def _constructor_defaults(cls: type) -> dict:
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def img2img_timesteps(scheduler: Scheduler, steps: int, strength: float) -> np.ndarray:
    """`StableDiffusionImg2ImgPipeline.get_timesteps`: the tail of a `steps`-step schedule that strength covers.

    Builds the full schedule, keeps the last `min(int(steps * strength), steps)` timesteps (floor, not round) and
    tells the scheduler where it starts (`set_begin_index`). Start from `add_noise(latents, noise, timesteps[:1])`.
    """
    if not 0.0 < strength <= 1.0:
        raise EdgeCerError(f"--strength {strength}: must be in (0, 1]")
    scheduler.set_timesteps(steps)
    init_timestep = min(int(steps * strength), steps)
    if init_timestep == 0:
        raise EdgeCerError(
            f"--strength {strength} with --steps {steps} runs no denoising step (int({steps} * {strength}) = 0); "
            f"raise --strength to at least {1 / steps:.3g} or raise --steps"
        )
    t_start = steps - init_timestep
    scheduler.set_begin_index(t_start * scheduler.order)
    return scheduler.timesteps[t_start * scheduler.order :]
