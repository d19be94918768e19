"""GPU throughput of the diffusers backend: an SD1.5-shaped random-weight pipeline, 512², 25 steps, CFG.

Random weights cost the same compute as trained ones, so this needs no download. The pipeline is built from
configs (UNet block_out_channels 320/640/1280/1280, cross-attention 768, SD VAE, CLIP-L-sized text encoder),
saved once to ``--model-dir`` and then loaded through the real ``DiffusersBackend`` for every variant, so the
numbers are those of the production code path (fixed-shape micro-batches, per-image generators, PIL output).

    python benchmarks/gpu_throughput.py                  # GPU: batch sweep 1,4,8,16 × variants
    python benchmarks/gpu_throughput.py --smoke          # CPU: tiny shapes, 2 steps, checks the script runs

Prints images/s per GPU (one process drives one device) and the ratio to the baseline variant (the first one
listed) at the same batch size. Variants that cannot run here (half precision or xformers without CUDA,
xformers not installed) are listed as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import warnings

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

GPU_VARIANTS = {
    "fp16": dict(dtype="fp16"),
    "bf16": dict(dtype="bf16"),
    "fp16+channels_last": dict(dtype="fp16", channels_last=True),
    "fp16+compile": dict(dtype="fp16", compile=True),
    "fp16+compile+channels_last": dict(dtype="fp16", compile=True, channels_last=True),
    "fp16+xformers": dict(dtype="fp16", attention="xformers"),
    "fp32": dict(dtype="fp32"),
}
SMOKE_VARIANTS = {
    "fp32": dict(dtype="fp32"),
    "fp32+channels_last": dict(dtype="fp32", channels_last=True),
    "fp16": dict(dtype="fp16"),
    "fp32+xformers": dict(dtype="fp32", attention="xformers"),
    # Not run by default: inductor's CPU compile takes minutes even for the tiny model (ask with --variants).
    "fp32+compile": dict(dtype="fp32", compile=True),
}
SMOKE_DEFAULT = ["fp32", "fp32+channels_last", "fp16", "fp32+xformers"]


def build_sd15_shaped(path: str, seed: int = 0) -> str:
    """Save a random-weight pipeline with SD1.5's module shapes (fp16 weights on disk: ~2 GB)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from tiny_diffusers import tiny_tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768, attention_head_dim=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )
    # CLIP ViT-L/14 text tower (SD1.5's); the tiny character tokenizer only yields ids < 1000, which is fine
    # for timing: the encoder does the same work for any ids.
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=0, eos_token_id=1, pad_token_id=1))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tiny_tokenizer(),
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.to(torch.float16).save_pretrained(path)
    return path


def skip_reason(settings: dict) -> str | None:
    cuda = torch.cuda.is_available()
    if settings.get("dtype", "fp32") != "fp32" and not cuda:
        return "half precision needs CUDA"
    if settings.get("attention") == "xformers":
        try:
            import xformers  # noqa: F401
        except ImportError:
            return "xformers not installed"
        if not cuda:
            return "xformers needs CUDA"
    return None


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(backend, batch: int, repeats: int, steps: int, guidance_scale: float,
            size: int | None = None) -> tuple[float, float]:
    """(images/s over ``repeats`` timed calls after one warm-up call, peak GPU memory in GiB); ``size``: the
    image side (default: the model's)."""
    backend.batch_size = batch  # one pipeline call per generate(): the micro-batch is the whole batch
    rows = [{"prompt": f"a photo of a dog, number {i}", "negative_prompt": "blurry", "seed": i, "steps": steps,
             "guidance_scale": guidance_scale, **({"width": size, "height": size} if size else {})}
            for i in range(batch)]
    backend.generate(rows)  # warm-up: cuDNN autotune, torch.compile for this shape
    _sync()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(repeats):
        images = backend.generate(rows)
        assert len(images) == batch
    _sync()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    return batch * repeats / seconds, peak


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes and 2 steps, runs on CPU")
    parser.add_argument("--batches", default=None, help="comma list; default 1,4,8,16 (smoke: 1,2)")
    parser.add_argument("--steps", type=int, default=None, help="default 25 (smoke: 2)")
    parser.add_argument("--guidance-scale", type=float, default=7.5, help="> 1 runs CFG (doubles the UNet batch)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per point; default 3 (smoke: 1)")
    parser.add_argument("--variants", default=None, help="comma list of variant names; the first is the baseline")
    parser.add_argument("--compile-mode", default="max-autotune-no-cudagraphs")
    parser.add_argument("--scheduler", default="dpm++", help="a scheduler name of the diffusers backend")
    parser.add_argument("--model-dir", default=None, help="reuse/save the random-weight model here")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    from pipelines.backends import create

    table = SMOKE_VARIANTS if args.smoke else GPU_VARIANTS
    names = args.variants.split(",") if args.variants else (SMOKE_DEFAULT if args.smoke else list(table))
    unknown = [n for n in names if n not in table]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; expected some of {list(table)}")
    batches = [int(b) for b in (args.batches or ("1,2" if args.smoke else "1,4,8,16")).split(",")]
    steps = args.steps or (2 if args.smoke else 25)
    repeats = args.repeats or (1 if args.smoke else 3)

    model_dir = args.model_dir or tempfile.mkdtemp(prefix="ffr-bench-model-")
    if not os.path.exists(os.path.join(model_dir, "model_index.json")):
        started = time.perf_counter()
        if args.smoke:
            from tiny_diffusers import build_tiny_sd

            build_tiny_sd(model_dir)
        else:
            build_sd15_shaped(model_dir)
        print(f"built random-weight model in {model_dir} ({time.perf_counter() - started:.1f}s)", flush=True)

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    size = "32²" if args.smoke else "512²"
    print(f"device: {device} | torch {torch.__version__} | {size}, {steps} steps, guidance {args.guidance_scale}, "
          f"scheduler {args.scheduler}, {repeats} timed call(s) per point", flush=True)
    unit = "GPU" if torch.cuda.is_available() else "device"
    results: list[dict] = []
    baseline: dict[int, float] = {}
    for name in names:
        reason = skip_reason(table[name])
        if reason:
            print(f"{name:<28} skipped: {reason}", flush=True)
            results.append({"variant": name, "skipped": reason})
            continue
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            backend = create("diffusers", {"model": model_dir, "scheduler": args.scheduler,
                                           "compile_mode": args.compile_mode, **table[name]})
        load_s = time.perf_counter() - started
        for batch in batches:
            started = time.perf_counter()
            ips, peak = measure(backend, batch, repeats, steps, args.guidance_scale)
            wall = time.perf_counter() - started
            if name == names[0]:
                baseline[batch] = ips
            ratio = ips / baseline[batch] if batch in baseline else float("nan")
            print(f"{name:<28} batch {batch:>3}: {ips:8.3f} images/s per {unit} | x{ratio:5.2f} vs {names[0]} "
                  f"| peak {peak:5.1f} GiB | load {load_s:5.1f}s, point wall {wall:6.1f}s", flush=True)
            results.append({"variant": name, "batch": batch, "images_per_s": ips, "ratio_vs_baseline": ratio,
                            "peak_gib": peak, "device": device, "steps": steps})
        del backend
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
