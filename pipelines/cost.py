"""``estimate_generation(config) -> CostEstimate``: what ``ffr generate`` would make and cost (``--dry-run``).

Accepted images per group come from the same budget code the run uses (pipelines/budget.py: the dataset's
populated groups only); time per image from the throughput table (ffr/throughput.yaml) for the backend's model on
the chosen GPU type, at the recipe's steps (× strength for img2img) and size. Nothing is written and no storage is
read: the recipe is built without its path checks (D3S's guide folders are listed only by a real run).
"""

from __future__ import annotations

from typing import Any

from ffr.cost import CPU, CostEstimate, Throughput, format_bytes, hours
from pipelines.budget import group_budgets
from pipelines.config import GenerateConfig, to_config
from pipelines.manifest import check_generator


def _seconds_per_image(settings: dict[str, Any], rate: dict[str, float], family: dict[str, Any]) -> float:
    if "images_per_s" in rate:  # renderers without denoising steps (procedural)
        return 1.0 / rate["images_per_s"]
    steps: float = int(settings["steps"])
    if settings.get("mode") == "img2img":
        steps = max(1, int(steps * float(settings.get("strength") or 1.0)))  # diffusers runs int(steps × strength)
    if family.get("cfg_in_rate") and float(settings.get("guidance_scale") or 0.0) <= 1.0:
        steps *= 0.5  # diffusers skips the unconditional pass without CFG: one denoiser call a step, not two
    pixels = int(settings.get("height") or 512) * int(settings.get("width") or 512)
    scale = pixels / float(family.get("pixels", 512**2))
    return (steps + float(family.get("extra_steps_per_image", 0))) * scale / rate["image_steps_per_s"]


def group_names(spec, counts: dict[tuple[int, int], int]) -> dict[str, int]:
    """{"class/bias": n} in group order; a class name the table repeats (ImageNet's two "crane") gets its index."""
    names = [spec.pair_name(y, b) for y, b in sorted(counts)]
    repeated = {n for n in names if names.count(n) > 1}
    return {(f"{name} (class {y})" if name in repeated else name): counts[(y, b)]
            for name, (y, b) in zip(names, sorted(counts))}


def estimate_generation(config: GenerateConfig | dict[str, Any], gpu: str | None = None,
                        table: Throughput | None = None) -> CostEstimate:
    """The dry run of one generation config: images per group, GPU-hours on ``gpu`` (None: the table's default;
    "cpu" when the config asks for no GPU), storage bytes. Raises FFRError on a bad config, like the run."""
    from pipelines.recipes import RECIPES

    cfg = to_config(config)
    table = table or Throughput.load()
    recipe = RECIPES.get(cfg.recipe.name)(cfg.recipe.options)  # no check(): it lists guide folders on storage
    spec = recipe.spec()
    budgets = recipe.assign_budgets(group_budgets(spec, cfg.budget), cfg.seed)
    settings, _ = check_generator(recipe, cfg.generator)
    backend = cfg.backend.name or recipe.default_backend
    model = str(cfg.backend.settings.get("model") or backend)
    device = table.gpu(gpu) if cfg.ray.num_gpus_per_actor > 0 or backend != "procedural" else CPU
    actors = cfg.ray.max_actors if cfg.runner == "ray" else 1
    how = (f"{backend}" if backend == model else f"{backend} {model}, {settings['mode']} {settings['steps']} steps")
    est = CostEstimate(f"ffr generate --dry-run: recipe {recipe.name} ({how}, {settings['height']}×{settings['width']})"
                       f" → {cfg.output}; nothing is generated or written", device)
    est.groups = group_names(spec, budgets)
    if backend == "diffusers":  # the sampler changes how images look: say which one runs
        chosen = cfg.backend.settings.get("scheduler")
        est.notes.append(f"sampler: {chosen}, set by backend.settings.scheduler" if chosen else
                         "sampler: the model's own scheduler (backend.settings.scheduler unset)")
    jobs = [("images", est.images, settings)]
    extra = recipe.preparation_images()
    if extra is not None:
        what, count, extra_settings = extra
        jobs.append((what, count, {**settings, **extra_settings}))
        est.notes.append(f"{what}: {count:,} images made once before the others ({extra_settings.get('steps')} "
                         "steps), counted in the estimate")
    found = table.generation(model, device)
    pixels = int(settings.get("height") or 512) * int(settings.get("width") or 512)
    image_bytes, bytes_source = table.image_bytes(cfg.image_format, pixels)
    per_image = image_bytes * (2 if settings["mode"] == "img2img" else 1)  # img2img keeps each guide beside its image
    per_image += table.storage("per_image_overhead_bytes")
    est.storage_bytes = int(sum(count for _, count, _ in jobs) * per_image)
    if found is None:
        est.gpu_hours = None
        est.sources.append(f"no entry for model {model!r} on {device} in {table.origin}; add one with "
                           "--throughput FILE (generation.<family>.models / gpus)")
    else:
        rate, family = found
        seconds = sum(count * _seconds_per_image(s, rate.values, family) for _, count, s in jobs)
        est.gpu_hours = hours(seconds)
        est.wall_hours = est.gpu_hours / max(1, actors)
        est.sources.append(rate.line())
    guide = " and its img2img guide" if settings["mode"] == "img2img" else ""
    est.sources.append(f"storage: {format_bytes(per_image)} per image{guide} ({cfg.image_format}: {bytes_source})")
    factor = cfg.budget.max_factor
    worst = "" if est.gpu_hours is None else f", {est.gpu_hours * factor:,.1f} hours"
    est.notes.append(f"budgets count ACCEPTED images: filter rejects are replaced, at most budget.max_factor = "
                     f"{factor:g} × each target (worst case {format_bytes(est.storage_bytes * factor)}{worst})")
    if actors > 1:
        est.notes.append(f"wall time over {actors} actors (ray.max_actors), one {device} each")
    return est
