"""Model families of the diffusers backend: the scheduler, guidance and step rules a checkpoint was made for.

A few-step distilled model is cheap (SDXL-Turbo: one step at ~0.2 s on an A100, against 1.6 s for SD1.5 at 50)
but only under the sampling it was distilled for: its own scheduler, a few steps, and no classifier-free
guidance when the guidance was distilled into the weights (CFG > 1 then doubles the cost and burns the image).
``backend.settings.family`` names the family; the driver checks the run's ``generator`` settings against it
before Ray starts (one line naming the value and the rule), the backend sets the family's scheduler when
``scheduler`` is not set, and the actor checks the loaded pipeline's class. ``family: null`` applies no rule.

The values are the model cards' and diffusers' documented usage:

- ``lcm-lora``: SD1.x/SDXL + the LCM-LoRA adapter (latent-consistency/lcm-lora-sdv1-5), LCMScheduler,
  2–8 steps, guidance 1–2 (1 turns CFG off).
- ``hyper-sd``: SD1.x/SDXL + a Hyper-SD N-step LoRA (ByteDance/Hyper-SD): DDIM with trailing timesteps (or TCD
  for the 1-step LoRA), 1–8 steps, guidance 0.
- ``tcd``: SD1.x/SDXL + a TCD LoRA (h1t/TCD-SD15-LoRA): TCDScheduler, eta 0.3, 2–8 steps, guidance 0.
- ``sdxl-turbo``: stabilityai/sdxl-turbo: Euler ancestral with trailing timesteps, 1–4 steps, guidance 0.
- ``sd3``: SD3 / SD3.5 Medium and Large: flow-matching Euler (the model's own), CFG (3.5–7), ~28 steps.
- ``sd3-turbo``: SD3.5 Large Turbo: flow-matching Euler, 1–8 steps (4 recommended), guidance 0.
- ``flux-schnell``: FLUX.1-schnell: flow-matching Euler, 1–4 steps, guidance 0 (no guidance embedding), T5
  prompts up to 256 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ffr.errors import FFRError
from ffr.registry import Registry

SD_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")


@dataclass(frozen=True)
class Family:
    name: str
    pipelines: tuple[str, ...]  # text-to-image pipeline classes the family's checkpoints load as
    steps: tuple[int, int]  # allowed (min, max) denoising steps
    max_guidance: float | None  # None: CFG allowed; else guidance above this contradicts the family
    recommended: str  # what the model card uses, for error lines and docs
    scheduler: str | None = None  # a SCHEDULERS name set when backend.settings.scheduler is null
    schedulers: tuple[str, ...] = ()  # scheduler names that fit (empty: any); the first is the default
    call_kwargs: dict[str, Any] = field(default_factory=dict)  # extra pipeline-call arguments
    needs_adapter: bool = False  # the distillation lives in a LoRA that every row must use

    def check(self, steps: int | None, guidance: float | None, where: str = "generator") -> None:
        """One FFRError line for steps or guidance this family's checkpoints were not made for."""
        lo, hi = self.steps
        if steps is not None and not lo <= int(steps) <= hi:
            raise FFRError(f"{where}.steps = {steps} does not fit family {self.name!r}: it samples in {lo}–{hi} "
                           f"steps ({self.recommended})")
        if guidance is not None and self.max_guidance is not None and float(guidance) > self.max_guidance:
            what = "turns on classifier-free guidance, which" if self.max_guidance <= 1 else "is more guidance than"
            raise FFRError(f"{where}.guidance_scale = {guidance:g} {what} guidance-distilled family {self.name!r} "
                           f"was not made for; expected <= {self.max_guidance:g} ({self.recommended})")

    def check_scheduler(self, scheduler: str | None) -> None:
        if scheduler is not None and self.schedulers and scheduler not in self.schedulers:
            raise FFRError(f"backend.settings.scheduler = {scheduler!r} does not fit family {self.name!r}; expected "
                           f"one of {', '.join(self.schedulers)} (or null: {self.scheduler or 'the model’s own'})")

    def check_pipeline(self, pipeline_class: str, model: str) -> None:
        if self.pipelines and pipeline_class not in self.pipelines:
            raise FFRError(f"model {model!r} loads as {pipeline_class}, which is not a {self.name!r} checkpoint; "
                           f"expected {' or '.join(self.pipelines)} (or set backend.settings.family to its family)")


FAMILIES: Registry[Family] = Registry("model family")


def _family(family: Family) -> None:
    FAMILIES.register(family.name)(family)


_family(Family("lcm-lora", SD_PIPELINES, (1, 8), 2.0, "LCM-LoRA: 4 steps, guidance 1", scheduler="lcm",
               schedulers=("lcm",), needs_adapter=True))
_family(Family("hyper-sd", SD_PIPELINES, (1, 8), 1.0, "Hyper-SD: N-step LoRA, N steps, guidance 0",
               scheduler="ddim_trailing", schedulers=("ddim_trailing", "tcd"), needs_adapter=True))
_family(Family("tcd", SD_PIPELINES, (1, 8), 1.0, "TCD-LoRA: 4 steps, guidance 0, eta 0.3", scheduler="tcd",
               schedulers=("tcd",), call_kwargs={"eta": 0.3}, needs_adapter=True))
_family(Family("sdxl-turbo", ("StableDiffusionXLPipeline",), (1, 4), 1.0, "SDXL-Turbo: 1–4 steps, guidance 0",
               scheduler="euler_a_trailing", schedulers=("euler_a_trailing", "lcm")))
_family(Family("sd3", ("StableDiffusion3Pipeline",), (1, 100), None, "SD3.5: 28 steps, guidance 3.5–7"))
_family(Family("sd3-turbo", ("StableDiffusion3Pipeline",), (1, 8), 1.0, "SD3.5 Large Turbo: 4 steps, guidance 0"))
_family(Family("flux-schnell", ("FluxPipeline",), (1, 4), 1.0, "FLUX.1-schnell: 4 steps, guidance 0",
               call_kwargs={"max_sequence_length": 256}))


def known_family(name: str | None) -> str | None:
    """Pydantic validator: a registered family name or None."""
    if name is not None and name not in FAMILIES:
        raise ValueError(f"unknown model family; expected one of: {', '.join(FAMILIES.names())}")
    return name
