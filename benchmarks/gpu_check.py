"""The one GPU check: every throughput number ffr needs from a GPU machine, in at most 8 minutes on one H100.

    make gpu-check          # python benchmarks/gpu_check.py --out benchmarks/results --docs docs/cluster.md
    make gpu-check-smoke    # --smoke: tiny random models on the CPU, about a minute (tests/test_gpu_check.py)

Sections, in this order (random weights built from configs: the compute of the real models, no download):

1. ``sd15``      SD1.5-shaped ladder, 512², 25 steps, CFG 7.5, batch 8: fp16, bf16, fp16+channels_last,
                 fp16+compile (torch.compile mode ``default``: max-autotune tunes for minutes), fp16+xformers
                 (when installed); ratio = vs fp16.
2. ``ray-data``  the generation job (custom recipe, the SD1.5-shaped model, fp16, 10 steps, 4 shards of 24) as a
                 Ray Data job over the GPU actor pool against the same ShardWorker in a bare loop; steady images/s
                 (between the first and last shard: no start-up) and the ratio Ray / bare.
3. ``sdxl``      SDXL-shaped ladder (UNet 2.6B, both text encoders), 1024², 20 steps, CFG 5, batch 4: fp16, bf16,
                 fp16+channels_last; ratio = vs fp16.
4. ``few-step``  the ``sdxl-turbo`` family on the SDXL-shaped model: 512², 1 step, guidance 0, batch 16.
5. ``ray-train`` ResNet-50 training steps (bf16 autocast, channels_last, batch 128, 224² tensors on the GPU): Ray
                 Train's TorchTrainer (one worker per GPU, DDP) against the same steps in a plain loop.
6. ``d3s-eval``  ``ffr d3s eval`` (Ray Data, one actor per GPU) with ResNet-50 over 4,000 256² images against
                 the same Predictor in a local loop; images/s and the ratio.

A section that would overrun ``--budget-s`` is skipped and named as skipped. Results: ``gpu_check.json`` (device,
versions, every number, each section's wall time) and ``gpu_check.md`` (one table) under ``--out``; ``--docs FILE``
puts the table between the ``<!-- gpu-check:begin -->`` and ``<!-- gpu-check:end -->`` markers of FILE.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))  # tiny_diffusers: the smoke mode's models

from gpu_throughput import build_sd15_shaped, measure, skip_reason  # noqa: E402

BEGIN, END = "<!-- gpu-check:begin -->", "<!-- gpu-check:end -->"
# Seconds each section is expected to take on one H100 (model builds included); a section starts only when this
# much of the budget is left.
ESTIMATES = {"sd15": 150, "ray-data": 60, "sdxl": 120, "few-step": 20, "ray-train": 60, "d3s-eval": 45}


class Check:
    """The run's settings (full or smoke), its clock and its results."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.smoke, self.budget = args.smoke, args.budget_s
        self.cuda = torch.cuda.is_available()
        self.device = torch.cuda.get_device_name(0) if self.cuda else "cpu"
        self.work = args.work_dir or tempfile.mkdtemp(prefix="ffr-gpu-check-")
        self.started = time.perf_counter()
        self.sections: dict[str, dict[str, Any]] = {}
        self._models: dict[str, str] = {}

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.started)

    def model(self, kind: str) -> str:
        """The random-weight model of ``kind`` (sd15 | sdxl), saved once under the work folder."""
        if kind not in self._models:
            path = os.path.join(self.work, kind)
            if not os.path.exists(os.path.join(path, "model_index.json")):
                import tiny_diffusers

                if self.smoke:
                    (tiny_diffusers.build_tiny_sd if kind == "sd15" else tiny_diffusers.build_tiny_sdxl)(path)
                else:
                    (build_sd15_shaped if kind == "sd15" else build_sdxl_shaped)(path)
            self._models[kind] = path
        return self._models[kind]

    def settings(self, **extra) -> dict[str, Any]:
        return {"device": "cuda" if self.cuda else "cpu", **extra}


def build_sdxl_shaped(path: str, seed: int = 0) -> str:
    """A random-weight pipeline with SDXL base's module shapes (UNet 2.6B, CLIP-L and OpenCLIP-bigG text towers),
    built on the GPU (random init of 3.5B parameters on a CPU takes minutes) and saved in fp16 (~7 GB)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from tiny_diffusers import tiny_tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        unet = UNet2DConditionModel(
            sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=1280 + 6 * 256)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=1024,
                            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.13025)
        common = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)
        text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                                    num_attention_heads=12, hidden_act="quick_gelu", **common))
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(
            hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
            projection_dim=1280, hidden_act="gelu", **common))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, unet=unet,
                                     tokenizer=tiny_tokenizer(), tokenizer_2=tiny_tokenizer(), scheduler=scheduler)
    pipe.to(torch.float16).save_pretrained(path)
    del pipe
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return path


# --- sections ---------------------------------------------------------------------------------------------


def _ladder(check: Check, kind: str, variants: dict[str, dict], batch: int, steps: int, guidance: float,
            size: int, repeats: int, extra: dict | None = None) -> list[dict]:
    from pipelines.backends import create

    rows, base = [], None
    for name, settings in variants.items():
        reason = skip_reason(settings)
        if reason:
            rows.append({"configuration": name, "skipped": reason})
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            backend = create("diffusers", {"model": check.model(kind), **check.settings(**settings), **(extra or {})},
                             batch_size=batch)
        ips, peak = measure(backend, batch, repeats, steps, guidance, size=size)
        base = base or (name, ips)  # the first variant that ran is the ladder's baseline
        rows.append({"configuration": f"{name}, batch {batch}, {steps} steps, {size}²", "images_per_s": ips,
                     "ratio": ips / base[1], "ratio_of": base[0], "peak_gib": peak})
        del backend
        _free()
    return rows


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sd15(check: Check) -> list[dict]:
    if check.smoke:
        variants = {"fp32+channels_last": {"dtype": "fp32", "channels_last": True}, "fp16": {"dtype": "fp16"}}
        return _ladder(check, "sd15", variants, batch=2, steps=2, guidance=7.5, size=32, repeats=1)
    variants = {"fp16": {"dtype": "fp16"}, "bf16": {"dtype": "bf16"},
                "fp16+channels_last": {"dtype": "fp16", "channels_last": True},
                "fp16+compile": {"dtype": "fp16", "compile": True, "compile_mode": "default"},
                "fp16+xformers": {"dtype": "fp16", "attention": "xformers"}}
    return _ladder(check, "sd15", variants, batch=8, steps=25, guidance=7.5, size=512, repeats=2)


def sdxl(check: Check) -> list[dict]:
    if check.smoke:
        variants = {"fp32": {"dtype": "fp32"}, "fp16": {"dtype": "fp16"}}
        return _ladder(check, "sdxl", variants, batch=2, steps=2, guidance=5.0, size=32, repeats=1)
    variants = {"fp16": {"dtype": "fp16"}, "bf16": {"dtype": "bf16"},
                "fp16+channels_last": {"dtype": "fp16", "channels_last": True}}
    return _ladder(check, "sdxl", variants, batch=4, steps=20, guidance=5.0, size=1024, repeats=1)


def few_step(check: Check) -> list[dict]:
    dtype = "fp32" if check.smoke else "fp16"
    batch, size = (2, 32) if check.smoke else (16, 512)
    rows = _ladder(check, "sdxl", {f"sdxl-turbo {dtype}": {"dtype": dtype}}, batch=batch, steps=1, guidance=0.0,
                   size=size, repeats=1 if check.smoke else 3, extra={"family": "sdxl-turbo"})
    for row in rows:
        row.pop("ratio", None)
    return rows


def _generation_config(check: Check, root: str, runner: str) -> dict:
    per_group, shard, steps, size = (4, 4, 2, 32) if check.smoke else (24, 24, 10, 512)
    return {"recipe": {"name": "custom", "options": {"classes": ["cat", "dog"], "attributes": ["indoors", "outdoors"],
                                                     "templates": ["a photo of a {class} {attribute}"]}},
            "output": root, "budget": {"per_group": per_group}, "shard_size": shard, "batch_size": 2 if check.smoke
            else 8, "generator": {"steps": steps, "guidance_scale": 7.5, "height": size, "width": size},
            "backend": {"name": "diffusers", "settings": {"model": check.model("sd15"),
                                                          **check.settings(dtype="fp32" if check.smoke else "fp16")}},
            "filters": {"gray_threshold": 0}, "runner": runner, "progress": False, "contact_sheet_size": 2,
            "ray": {"min_actors": 1, "max_actors": 1, "num_gpus_per_actor": 1 if check.cuda else 0}}


def ray_data(check: Check) -> list[dict]:
    from _gen_common import steady_rate

    import pipelines

    rates = {}
    for runner in ("local", "ray"):
        root = os.path.join(check.work, f"generation-{runner}")
        started = time.perf_counter()
        summary = pipelines.generate(_generation_config(check, root, runner))
        rates[runner] = {"steady": steady_rate(root), "end_to_end": summary["rows_done"] /
                         (time.perf_counter() - started)}
    bare, ray = rates["local"], rates["ray"]
    return [{"configuration": "bare loop (ShardWorker in-process)", "images_per_s": bare["steady"],
             "end_to_end_images_per_s": bare["end_to_end"]},
            {"configuration": "Ray Data job, 1 GPU actor", "images_per_s": ray["steady"],
             "end_to_end_images_per_s": ray["end_to_end"], "ratio": ray["steady"] / bare["steady"],
             "ratio_of": "bare loop (steady)"}]


def _train_steps(config: dict) -> dict:
    """Timed training steps of a torchvision ResNet on random tensors; under Ray Train the model is prepared
    (DDP across workers) and the rate is reported, else returned."""
    import torchvision

    distributed = config.get("ray", False)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = torchvision.models.get_model(config["arch"], weights=None).to(device, memory_format=torch.channels_last)
    if distributed:
        import ray.train.torch

        model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batch, size = config["batch"], config["size"]
    x = torch.randn(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> None:
        with amp:
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(config["warmup"]):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(config["steps"]):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    metrics = {"images_per_s": config["steps"] * batch / (time.perf_counter() - started)}
    if distributed:
        import ray.train

        # Ray Train 2.60 keeps only metrics that come with a checkpoint: rank 0 attaches an empty one
        with tempfile.TemporaryDirectory() as folder:
            rank0 = ray.train.get_context().get_world_rank() == 0
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if rank0 else None)
    return metrics


def ray_train(check: Check) -> list[dict]:
    import ray.train
    from ray.train.torch import TorchTrainer

    from ffr.ray_session import ensure_ray

    config = ({"arch": "resnet18", "batch": 4, "size": 64, "warmup": 1, "steps": 2} if check.smoke else
              {"arch": "resnet50", "batch": 128, "size": 224, "warmup": 10, "steps": 40})
    plain = _train_steps(config)["images_per_s"]
    _free()
    ensure_ray()
    workers = max(1, torch.cuda.device_count()) if check.cuda else 1
    trainer = TorchTrainer(_train_steps, train_loop_config={**config, "ray": True},
                           scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=check.cuda),
                           run_config=ray.train.RunConfig(name="gpu-check", storage_path=os.path.join(
                               check.work, "ray-train")))
    started = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - started
    if result.error is not None:
        raise result.error
    per_worker = float(result.metrics["images_per_s"])  # rank 0's; every worker runs the same steps
    what = f"{config['arch']}, batch {config['batch']}/worker, {config['size']}²"
    return [{"configuration": f"plain loop, {what}", "images_per_s": plain},
            {"configuration": f"Ray Train, {workers} worker(s) (DDP), {what}", "images_per_s": per_worker * workers,
             "ratio": per_worker / plain, "ratio_of": "plain loop (per GPU)", "fit_wall_s": wall}]


def d3s_eval(check: Check) -> list[dict]:
    import pipelines
    from ffr.d3s.evaluate import EvalConfig, evaluate

    per_group, size = (10, 32) if check.smoke else (1000, 256)
    data = os.path.join(check.work, "eval-images")
    if not os.path.exists(os.path.join(data, "summary.json")):
        pipelines.generate({"recipe": "colored-digits", "output": data, "budget": {"per_group": per_group},
                            "generator": {"height": size, "width": size}, "shard_size": 1000, "batch_size": 250,
                            "image_format": "jpg", "runner": "local", "progress": False, "contact_sheet_size": 2})
    spec = "resnet18:random" if check.smoke else "resnet50:random"
    rows, rates = [], {}
    for local in (True, False):
        cfg = EvalConfig(data=data, models=[spec], output=os.path.join(check.work, f"eval-{local}"),
                         batch_size=4 if check.smoke else 256, local=local,
                         num_gpus_per_actor=1 if check.cuda else 0,
                         num_cpus_per_actor=1 if check.smoke else max(1, (os.cpu_count() or 2) - 2))
        timing = evaluate(cfg)["timing"][spec]
        steady = timing.get("steady_images_per_s")
        # steady: after the pool is up and the first batch is back (a long run's rate); a tiny run may have none
        rate = steady if not local and steady and steady == steady else timing["images"] / timing["seconds"]
        rates[local] = rate
        rows.append({"configuration": f"{'local loop' if local else 'Ray Data, 1 actor per GPU'}, {spec}, "
                                      f"{timing['images']} images {size}²", "images_per_s": rate})
    rows[1].update(ratio=rates[False] / rates[True], ratio_of="local loop")
    return rows


SECTIONS: dict[str, Callable[[Check], list[dict]]] = {
    "sd15": sd15, "ray-data": ray_data, "sdxl": sdxl, "few-step": few_step, "ray-train": ray_train,
    "d3s-eval": d3s_eval}


# --- output -----------------------------------------------------------------------------------------------


def markdown(record: dict) -> str:
    mode = "CPU smoke run (tiny models; not throughput)" if record["smoke"] else "full check"
    lines = [f"GPU check on **{record['device']}** ({mode}): torch {record['torch']}, diffusers "
             f"{record['diffusers']}, {record['date']}, {record['wall_s']:.0f} s (`make gpu-check`).", "",
             "| section | configuration | images/s | ratio | peak GiB |", "|---|---|---|---|---|"]
    for name, section in record["sections"].items():
        if section.get("skipped"):
            lines.append(f"| {name} | skipped: {section['skipped']} | | | |")
            continue
        for row in section["rows"]:
            if row.get("skipped"):
                lines.append(f"| {name} | {row['configuration']}: skipped ({row['skipped']}) | | | |")
                continue
            ratio = f"×{row['ratio']:.2f} vs {row.get('ratio_of', '')}" if row.get("ratio") is not None else ""
            peak = f"{row['peak_gib']:.1f}" if row.get("peak_gib") else ""
            lines.append(f"| {name} | {row['configuration']} | {row['images_per_s']:.1f} | {ratio} | {peak} |")
    return "\n".join(lines) + "\n"


def include(docs: str, table: str) -> None:
    """Put ``table`` between the markers of ``docs`` (the rest of the file is kept byte for byte)."""
    with open(docs) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{docs} has no {BEGIN} ... {END} block")
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    with open(docs, "w") as f:
        f.write(pattern.sub(lambda _: f"{BEGIN}\n{table}{END}", text))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny random models on the CPU (what CI runs)")
    parser.add_argument("--out", default="benchmarks/results", help="where gpu_check.json and gpu_check.md go")
    parser.add_argument("--docs", default=None, help="a Markdown file whose gpu-check block gets the table")
    parser.add_argument("--budget-s", type=float, default=480.0, help="skip sections that would overrun this")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma list, in this order: "
                                                                        + ",".join(SECTIONS))
    parser.add_argument("--work-dir", default=None, help="models and outputs (default: a new temporary folder)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.sections.split(",")) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; expected some of {list(SECTIONS)}")
    check = Check(args)
    import diffusers

    print(f"gpu check on {check.device} ({'smoke' if check.smoke else 'full'}), budget {check.budget:.0f} s, "
          f"work folder {check.work}", flush=True)
    for name in args.sections.split(","):
        estimate = 5 if check.smoke else ESTIMATES[name]
        if check.left() < estimate:
            check.sections[name] = {"skipped": f"{check.left():.0f} s of the budget left, needs ~{estimate} s"}
            print(f"[{name}] skipped: {check.sections[name]['skipped']}", flush=True)
            continue
        started = time.perf_counter()
        rows = SECTIONS[name](check)
        check.sections[name] = {"rows": rows, "wall_s": round(time.perf_counter() - started, 1)}
        for row in rows:
            print(f"[{name}] {json.dumps(row, default=float)}", flush=True)
        _free()
    record = {"device": check.device, "smoke": check.smoke, "torch": torch.__version__,
              "diffusers": diffusers.__version__, "cuda": torch.version.cuda if check.cuda else None,
              "gpus": torch.cuda.device_count() if check.cuda else 0,
              "date": datetime.date.today().isoformat(), "wall_s": round(time.perf_counter() - check.started, 1),
              "sections": check.sections}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
        json.dump(record, f, indent=1, default=float)
    table = markdown(record)
    with open(os.path.join(args.out, "gpu_check.md"), "w") as f:
        f.write(table)
    if args.docs:
        include(args.docs, table)
    print(table, flush=True)
    return record


if __name__ == "__main__":
    main()
