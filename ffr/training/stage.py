"""One training run (one stage), start to finish, without Ray.

``run_stage`` builds the data, model and method, restores the latest checkpoint if there is one, then
trains epoch by epoch: validation after every epoch, one metrics record, one checkpoint. Everything that
depends on where it runs — rank, device, all-reduce, checkpoint storage — comes through a
:class:`Session`; ``ffr.training.ray_train`` provides the Ray Train one, the default runs in-process.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch

import ffr.methods
from ffr.backbones import create_backbone, describe
from ffr.errors import FFRError
from ffr.metrics import summarize
from ffr.runs import SCORE, append_metrics, selection_score, write_steps
from ffr.storage import filesystem
from ffr.training import loop
from ffr.training.config import StageSpec, TrainConfig, resolved
from ffr.training.data import ExperimentData
from ffr.training.sampling import EpochSampler

EVAL_BATCH = 256


class Session:
    """A single local process. Subclasses override the distributed and checkpointing parts."""

    rank, world_size = 0, 1

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device or torch.device("cpu")

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def gather(self, obj: Any) -> list[Any]:
        return [obj]

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Make every worker's BatchNorm statistics rank 0's before evaluating (DDP only)."""

    def restore(self) -> dict | None:
        """The latest checkpoint's state of this run, when resuming."""
        return None

    def report(self, metrics: dict, state: dict | None, epoch: int) -> None:
        """Called on every worker after every epoch; ``state`` (the checkpoint) only on rank 0."""

    def log(self, line: str) -> None:
        print(line, flush=True)


EPOCH_LINE_GROUPS = 16  # more groups than this (D3S: 1000 classes × 10 backgrounds): the worst ones only


def epoch_line(spec: StageSpec, record: dict, group_names: list[str]) -> str:
    """The console line of one epoch; its number is the record's (1-based, as everywhere). With many groups
    (D3S: 10,000) only the worst ones."""
    accs = [(name, record[f"val_acc_group_{g}"]) for g, name in enumerate(group_names)
            if f"val_acc_group_{g}" in record]
    more = ""
    if len(accs) > EPOCH_LINE_GROUPS:
        more = f"  (the worst {EPOCH_LINE_GROUPS // 2} of {len(accs)} groups)"
        accs = sorted(accs, key=lambda na: na[1])[:EPOCH_LINE_GROUPS // 2]
    groups = "  ".join(f"{name} {acc:.3f}" for name, acc in accs) + more
    return (f"[{spec.run_name}] stage {spec.stage} epoch {record['epoch']}/{spec.epochs}  "
            f"loss {record['train_loss']:.4f}  val WGA {record['val_worst_group_acc']:.3f}  "
            f"mean {record['val_mean_group_acc']:.3f} | {groups}")


def epochs_done(state: dict) -> int:
    """How many epochs a checkpoint's state has trained. ``epochs_done`` is written since epochs are numbered
    from 1; a checkpoint written before held only ``epoch``, the 0-based index of its last epoch."""
    return int(state["epochs_done"]) if "epochs_done" in state else int(state["epoch"]) + 1


def _fault_hook(cfg: TrainConfig, epoch: int, rank: int):
    """``epoch``: the epoch's number (1-based, as ``kill_at_epoch`` counts)."""
    fi = cfg.fault_injection
    if fi is None or fi.kill_at_epoch != epoch or fi.rank != rank:
        return None

    def on_batch(i: int) -> None:
        fs, marker = filesystem(fi.marker)
        if i + 1 >= fi.after_batches and not fs.exists(marker):
            time.sleep(fi.delay_s)
            with fs.open(marker, "w") as f:
                f.write(f"killed at epoch {epoch} batch {i}\n")
            os._exit(1)

    return on_batch


def gather_predictions(model, dataset, session: Session, batch: int = EVAL_BATCH) -> np.ndarray:
    """Predictions for the whole dataset, each worker predicting a strided share."""
    share = np.arange(len(dataset))[session.rank::session.world_size]
    preds, index = loop.predict(model, loop.loader(dataset, batch, indices=share), session.device)
    out = np.empty(len(dataset), dtype=np.int64)
    for p, i in session.gather((preds, index)):
        out[i] = p
    return out


def run_stage(cfg: TrainConfig, spec: StageSpec, session: Session, run_directory: str | None = None, *,
              data: ExperimentData) -> list[dict]:
    """Train one stage on ``data`` (in workers: the run's plan, ffr.training.plan); returns the epoch records
    this call produced (rank 0 also writes them)."""
    stage_data = data.stages[spec.stage]
    torch.manual_seed(cfg.seed)
    corrupt = None
    if spec.corruption:  # FFR's stage 1 trains on synthetic images only: all of them are degraded, at their own size
        from ffr.corruptions import Corrupt

        corrupt = Corrupt(spec.corruption, spec.corruption_severity, seed=cfg.seed)
    prep = loop.preprocessing(cfg)  # the backbone's, at the run's image_size
    train_set = loop.image_dataset(stage_data.train, prep, stage_data.train_spec, cfg.cache_in_memory, corrupt,
                                   cfg.augment)
    val_set = loop.image_dataset(data.val, prep, None, cfg.cache_in_memory)
    train_groups = stage_data.train.groups(stage_data.train_spec)
    val_y, val_groups = data.val.y, data.val.groups()
    group_names = data.val.spec.group_names()

    method = ffr.methods.create(spec.method, **spec.method_hparams)
    method.setup(train_groups, stage_data.train_spec.n_groups)
    if spec.preliminary is not None:
        method.use_preliminary(spec.preliminary)
    method.all_reduce = session.all_reduce

    model = create_backbone(cfg.backbone, data.val.spec.n_classes,
                            pretrained=None if spec.init_checkpoint else cfg.pretrained, **cfg.backbone_options)
    state = session.restore()
    init = loop.load_state(spec.init_checkpoint)["model"] if state is None and spec.init_checkpoint else None
    if init is not None and set(init) == set(model.state_dict()):
        # a plain backbone's checkpoint (e.g. FFR's stage 1) goes into the backbone before the method builds its
        # model from it, so a method's own model (D3S's fg/bg split) starts from it, head included, as from
        # pretrained weights
        model.load_state_dict(init)
        head = getattr(model, "head", None)
        if getattr(head, "weight", None) is not None and getattr(head, "bias", None) is not None:
            model.pretrained_head = (head.weight.detach().clone(), head.bias.detach().clone())
        init = None
    model = method.build_model(model, stage_data.train_spec)  # e.g. D3S's fg/bg split with a second head
    extra = method.extra_modules(model)  # e.g. critics: trained, wrapped and checkpointed like the model
    done = 0  # epochs already trained (a resumed run's latest checkpoint says how many)
    if state is not None:
        model.load_state_dict(state["model"])
        method.load_state_dict(state["method"])
        for name, module in extra.items():
            module.load_state_dict(state["method_modules"][name])
        done = epochs_done(state)
    elif init is not None:  # a checkpoint of the method's own model
        model.load_state_dict(init)
    if cfg.sync_batchnorm and session.world_size > 1:  # FFR's BatchNorm saw the whole batch (ffr/training/batchnorm.py)
        from ffr.training import batchnorm

        model = batchnorm.convert(model)
    model = session.prepare_model(model)
    method.modules = {name: session.prepare_model(module) for name, module in extra.items()}
    optimizer = loop.build_optimizer(spec.optimizer, model.parameters(), spec.lr, spec.weight_decay, spec.momentum)
    method.optimizers = method.extra_optimizers(method.modules, spec.lr, spec.weight_decay)
    own = method.model_optimizers(model)  # e.g. the optimiser a method switches to after a warm-up
    if set(own) & set(method.optimizers):
        raise FFRError(f"method {spec.method!r} names optimisers {sorted(set(own) & set(method.optimizers))} twice")
    method.optimizers.update(own)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        for name, extra_optimizer in method.optimizers.items():
            extra_optimizer.load_state_dict(state["method_optimizers"][name])

    local_batch = -(-spec.batch_size // session.world_size)
    draws = method.draws_per_epoch(len(train_set))
    if cfg.steps_per_epoch is not None:  # step-based: a fixed number of batches per epoch on every worker
        draws = cfg.steps_per_epoch * local_batch * session.world_size
    sampler = EpochSampler(len(train_set), method.sampling_weights(train_groups), draws, cfg.seed, session.rank,
                           session.world_size, tagged=corrupt is not None)  # a corrupted image: new noise every epoch
    batches = loop.loader(train_set, local_batch, sampler=sampler, workers=cfg.loader_workers)
    steps = len(batches)  # per worker and epoch, the same on every worker
    mix_sampler = mix_batches = None
    if data.mix is not None:  # a class-only stream: one of its batches joins each batch of the main stream
        mix_set = loop.image_dataset(data.mix, prep, None, cfg.cache_in_memory, None, cfg.augment)
        mix_local = -(-cfg.mix.batch_size // session.world_size)
        mix_sampler = EpochSampler(len(mix_set), None, steps * mix_local * session.world_size, cfg.seed,
                                   session.rank, session.world_size, stream=1)
        mix_batches = loop.loader(mix_set, mix_local, sampler=mix_sampler, workers=cfg.loader_workers)
    records = []
    # Epochs are numbered from 1 wherever a person or a tool sees them (console, metrics.jsonl, the result's
    # best_epoch, MLflow steps, checkpoint_epochNNNN, Tune iterations); ``index`` (from 0) only seeds sampling.
    for index in range(done, spec.epochs):
        epoch = index + 1
        sampler.set_epoch(index)
        n_groups = stage_data.train_spec.n_groups
        epoch_batches = batches
        if mix_batches is not None:
            mix_sampler.set_epoch(index)
            epoch_batches = loop.mixed_batches(batches, mix_batches)
        step_log: list[dict] = []
        started = time.perf_counter()
        totals = session.all_reduce(loop.train_one_epoch(model, epoch_batches, method, optimizer, session.device,
                                                         n_groups, _fault_hook(cfg, epoch, session.rank),
                                                         spec.freeze_bn, step_log, index * steps).to(session.device))
        train_seconds = time.perf_counter() - started
        session.sync_buffers(model)
        val = summarize(gather_predictions(model, val_set, session), val_y, val_groups)
        totals = totals.cpu()
        record = {"stage": spec.stage, "epoch": epoch, "train_loss": float(totals[0] / totals[1].clamp(min=1)),
                  **{f"val_{k}": v for k, v in val.items()}, "attempt_start_epoch": done + 1,
                  # all workers together: the method's draws (+ < world padding), class-only rows apart
                  "train_draws": int(totals[1] - totals[2]),
                  **{f"train_draws_group_{g}": int(totals[3 + g]) for g in range(n_groups)},
                  "train_seconds": train_seconds, "train_samples_per_s": float(totals[1]) / max(train_seconds, 1e-9)}
        if mix_batches is not None:
            record["train_mix_draws"] = int(totals[2])
        if cfg.steps_per_epoch is not None or step_log:
            record["train_steps"] = epoch * steps  # global step at the end of this epoch
        record[SCORE] = selection_score(record["val_worst_group_acc"], epoch)
        checkpoint = None
        if session.rank == 0:
            if run_directory is not None:
                if step_log:  # before the epoch's record: whoever sees the record finds its steps
                    write_steps(run_directory, spec.stage, epoch, step_log)
                append_metrics(run_directory, record)
            session.log(epoch_line(spec, record, group_names))
            checkpoint = {"model": loop.unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                          "epoch": epoch, "epochs_done": epoch, "method": method.state_dict(),
                          "config": resolved(cfg, spec), "metrics": record,
                          # self-describing: `ffr d3s eval checkpoint:RUN` rebuilds the model from these alone
                          **describe(cfg.backbone, cfg.backbone_options, data.val.spec.class_names, prep)}
            if method.modules or method.optimizers:  # only then, so other methods' checkpoints keep their keys
                checkpoint["method_modules"] = {k: loop.unwrap(m).state_dict() for k, m in method.modules.items()}
                checkpoint["method_optimizers"] = {k: o.state_dict() for k, o in method.optimizers.items()}
        session.report(record, checkpoint, epoch)
        records.append(record)
    return records
