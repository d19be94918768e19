"""``ffr d3s splits|eval|demo``: shift splits, per-background evaluation, and the embedded offline D3S.

    ffr d3s splits s3://bucket/d3s --seed 0                      # ImageNet-9 correlated / anti-correlated views
    ffr d3s splits s3://bucket/d3s --assignment 2,8,4,9,1,6,7,3,0  # D3S's own super-class → background map
    ffr d3s eval --data s3://bucket/d3s --model resnet50 --model timm:vit_base_patch16_224 \\
        --reference s3://bucket/imagenet/val --out s3://bucket/d3s-eval --gpus-per-actor 1 --actors 8
    ffr d3s demo --out d3s_demo_out                              # digits on 10 procedural backgrounds, CPU
    ffr d3s correlation --data s3://bucket/d3s --split imagenet9-2-8-4-9-1-6-7-3-0 \
        --model erm=s3://bucket/runs/erm-run --model disentangled=s3://bucket/runs/dis-run:fg --out s3://bucket/corr
    ffr d3s disentangle-demo --out d3s_disentangle_out           # the whole disentanglement study, offline, CPU
"""

from __future__ import annotations

import argparse
import io
import json
import os

EXAMPLES = """\
examples:
  ffr d3s demo                                                    # offline, CPU: writes ./d3s_demo_out
  ffr d3s splits s3://bucket/d3s --seed 0                         # ImageNet-9 correlated / anti-correlated views
  ffr d3s eval --data s3://bucket/d3s --model resnet50 --model timm:vit_base_patch16_224 \\
      --reference s3://bucket/imagenet/val --out s3://bucket/d3s-eval --gpus-per-actor 1 --actors 8
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="d3s_command", metavar="{splits,eval,demo,correlation,disentangle-demo}",
                                required=True)
    s = sub.add_parser("splits", help="write correlated / anti-correlated Parquet views over a D3S output")
    s.add_argument("data", help="a generation output root (local or s3://)")
    s.add_argument("--seed", type=int, default=0, help="seed of the background permutation")
    s.add_argument("--draw", choices=["ffr", "d3s"], default="ffr",
                   help="how the seed draws it: ffr's generator, or D3S's np.random.seed(seed); np.random.choice "
                        "(its seed 0 gives D3S's committed 2,8,4,9,1,6,7,3,0)")
    s.add_argument("--assignment", default=None, metavar="B0,B1,...",
                   help="explicit background index per super-class instead of a draw (D3S: 2,8,4,9,1,6,7,3,0)")
    s.add_argument("--mapping", default="imagenet9", help="'imagenet9' or a JSON {names, classes} file")
    s.add_argument("--name", default=None, help="view name under DATA/splits/ (default: imagenet9-seed{SEED})")
    s.add_argument("--review", choices=["accepted"], default=None, help="only images accepted in review")
    e = sub.add_parser("eval", help="per-background top-1/top-5 of classifiers (Ray Data batch inference)")
    e.add_argument("--data", help="a generation output root (local or s3://)")
    e.add_argument("--model", action="append", dest="models",
                   help="torchvision NAME[:weights|:random|:path], timm:NAME[:path|:random], clip:MODEL or "
                        "checkpoint:PATH; repeatable (--list-models: every family)")
    e.add_argument("--list-models", action="store_true", help="print the model families and their spec syntax")
    e.add_argument("--clip-template", action="append", dest="clip_templates", default=None,
                   help="CLIP zero-shot prompt with {class} (default 'a photo of a {class}.'); repeat to ensemble")
    e.add_argument("--out", help="output folder (local or s3://)")
    e.add_argument("--split", default=None, help="a view: NAME/correlated or NAME/anti-correlated")
    e.add_argument("--reference", default=None, help="ImageNet-val-layout folder for the reference accuracy")
    e.add_argument("--class-table", default="imagenet", help="'imagenet', 'data/digit_classes.tsv' or a TSV")
    e.add_argument("--review", choices=["accepted"], default=None, help="only images accepted in review")
    e.add_argument("--batch-size", type=int, default=64, help="images per model call")
    e.add_argument("--actors", type=int, default=1, help="actor pool size (one per GPU on a GPU cluster)")
    e.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs per actor (0 on a CPU machine)")
    e.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs per actor")
    e.add_argument("--local", action="store_true", help="run in this process without Ray")
    e.add_argument("--limit", type=int, default=None, help="first N images only (smoke runs)")
    e.add_argument("--verbose", action="store_true", help="show Ray Data's execution banners and progress bars")
    d = sub.add_parser("demo", help="the embedded offline D3S end to end (CPU)")
    d.add_argument("--out", default="d3s_demo_out", help="output folder (relative to where the command runs)")
    d.add_argument("--per-group", type=int, default=8, help="images per (digit, background)")
    d.add_argument("--epochs", type=int, default=12, help="epochs of the plain-background classifier")
    d.add_argument("--seed", type=int, default=0, help="seed of the images, the split views and the classifier")
    d.add_argument("--local", action="store_true", help="generate and evaluate without Ray")
    c = sub.add_parser("correlation", help="D3S's spurious-correlation experiment: linear heads on frozen features, "
                                           "trained on correlated, tested on correlated and anti-correlated")
    c.add_argument("--data", required=True, help="a D3S output with split views (local or s3://)")
    c.add_argument("--split", required=True, help="the view name under DATA/splits/ (ffr d3s splits)")
    c.add_argument("--model", action="append", required=True, dest="models", metavar="LABEL=RUN[:all|fg|bg]",
                   help="an ffr train run directory or checkpoint and which features its head reads; repeatable")
    c.add_argument("--out", required=True, help="output folder (local or s3://)")
    c.add_argument("--val-data", default=None, help="a second D3S output for the held-out views (D3S's val set)")
    c.add_argument("--held-out-fraction", type=float, default=0.2,
                   help="without --val-data: the share of DATA held out (the d3s reader's rule)")
    c.add_argument("--seed", type=int, default=0, help="seed of the held-out share and of the heads")
    c.add_argument("--steps", type=int, default=20000, help="SGD steps per head (D3S: 100000)")
    c.add_argument("--eval-every", type=int, default=1000, help="steps between selection scores")
    c.add_argument("--review", choices=["accepted"], default=None, help="only images accepted in review")
    m = sub.add_parser("disentangle-demo", help="the embedded disentanglement study end to end (CPU, offline)")
    m.add_argument("--out", default="d3s_disentangle_out")
    m.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")


def _existing(path: str) -> str:
    """A name that may also be a local file (a mapping, a class table): absolute when such a file exists here."""
    from ffr.storage import absolute

    return absolute(path) if os.path.exists(os.path.expanduser(path)) else path


def run(args: argparse.Namespace) -> int:
    from ffr.storage import absolute

    # Paths against the directory the command runs in, once, before Ray starts (actors run elsewhere).
    if args.d3s_command == "splits":
        from ffr.datasets.d3s_splits import write_splits

        print(json.dumps(write_splits(absolute(args.data), args.seed, _existing(args.mapping), args.name,
                                      args.review, args.assignment, args.draw), indent=2))
    elif args.d3s_command == "eval":
        from ffr.d3s.evaluate import EvalConfig, evaluate
        from ffr.d3s.models import resolve_spec
        from ffr.errors import FFRError

        if args.list_models:
            from ffr.d3s.models import list_families

            print(list_families())
            return 0
        missing = [flag for flag, value in (("--data", args.data), ("--model", args.models), ("--out", args.out))
                   if not value]
        if missing:
            raise FFRError(f"ffr d3s eval needs {', '.join(missing)}; see ffr d3s eval --help (or --list-models)")
        cfg = EvalConfig(data=absolute(args.data), models=[resolve_spec(m) for m in args.models],
                         output=absolute(args.out), split=args.split, reference=absolute(args.reference),
                         class_table=_existing(args.class_table), review=args.review,
                         batch_size=args.batch_size, min_actors=args.actors, max_actors=args.actors,
                         num_gpus_per_actor=args.gpus_per_actor, num_cpus_per_actor=args.cpus_per_actor,
                         local=args.local, limit=args.limit, verbose=args.verbose,
                         **({"clip_templates": args.clip_templates} if args.clip_templates else {}))
        result = evaluate(cfg)
        print(_read_text(args.out, "summary.md"), end="")
        print(json.dumps(result["timing"]))
    elif args.d3s_command == "correlation":
        from ffr.d3s.correlation import CorrelationConfig, markdown, run_correlation

        result = run_correlation(CorrelationConfig(
            data=absolute(args.data), split=args.split, models=args.models, output=absolute(args.out),
            val_data=absolute(args.val_data),
            held_out_fraction=args.held_out_fraction, seed=args.seed, review=args.review,
            head={"steps": args.steps, "eval_every": args.eval_every}))
        print(markdown(result), end="")
    elif args.d3s_command == "disentangle-demo":
        from ffr.d3s.disentangle_demo import run_study
        from ffr.errors import FFRError

        try:
            seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
        except ValueError:
            raise FFRError(f"--seeds {args.seeds!r}; expected comma-separated integers, e.g. 0,1,2") from None
        if not seeds:
            raise FFRError("--seeds is empty; expected comma-separated integers, e.g. 0,1,2")
        print(run_study(args.out, seeds=seeds)["markdown"], end="")
    else:
        from ffr.d3s.embedded import run_demo

        out = absolute(args.out)
        result = run_demo(out, per_group=args.per_group, epochs=args.epochs, seed=args.seed,
                          runner="local" if args.local else "ray")
        print(demo_text(out, result, args.per_group))
    return 0


def demo_text(out: str, result: dict, per_group: int) -> str:
    """What ``ffr d3s demo`` prints: where everything went, the split views' sizes and the evaluation, as
    tables a person reads (not Python dicts, wide markdown or raw CSV)."""
    import pandas as pd

    views = pd.DataFrame({"split view": list(result["splits"]), "images": list(result["splits"].values())})
    summary = pd.read_csv(io.StringIO(_read_text(f"{out}/eval", "summary.csv")))
    per_background = pd.read_csv(io.StringIO(_read_text(f"{out}/eval", "per_background.csv")))
    shown = [c for c in ("background", "n", "top1", "top5", "drop_top1") if c in per_background.columns]
    models = []
    for row in summary.to_dict("records"):
        reference = (f"; on plain backgrounds {row['reference_top1']:.3f}, a drop of {row['drop_top1']:.3f}"
                     if pd.notna(row.get("reference_top1")) else "")
        models.append(f"{row['model']}: top-1 {row['top1']:.3f}, top-5 {row['top5']:.3f} over {row['n_images']} "
                      f"images{reference}; worst background {row['worst_background']} ({row['worst_top1']:.3f})")
    return "\n".join([
        f"generated {result['generation']['accepted']} images ({per_group} per digit and background) in {out}/d3s",
        f"split views (in {out}/d3s/splits/digits):", views.to_string(index=False), "",
        *models, "", "per background (accuracy; drop = plain-background top-1 minus this one):",
        per_background[shown].to_string(index=False, float_format=lambda v: f"{v:.3f}"), "",
        f"written under {out}: d3s/ (shards, contact sheets), d3s/splits/digits/, eval/ (predictions.parquet, "
        "per_background.csv, summary.md, heatmaps/), models/"])


def _read_text(folder: str, name: str) -> str:
    from ffr.storage import filesystem, join

    fs, base = filesystem(folder)
    return fs.cat_file(join(base, name)).decode()
