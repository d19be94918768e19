"""The Ray-free training core: data loading, one epoch of training, prediction, feature extraction.

torchvision-references style: ``train_one_epoch`` / ``predict`` / ``extract_features``. Distributed
concerns come in as plain callables (``all_reduce``), so the same functions run in a bare Python loop
(benchmarks) and inside Ray Train workers.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ffr import backbones
from ffr.backbones import Preprocessing
from ffr.datasets.base import GroupedImageDataset, GroupedSplit
from ffr.errors import FFRError
from ffr.groups import GroupSpec
from ffr.methods.base import Method
from ffr.runs import CHECKPOINT_FILE
from ffr.storage import ensure_dir, filesystem, join


def device(use_gpu: bool) -> torch.device:
    """CUDA when asked for and present; else CPU (GPU code paths must also run on CPU)."""
    return torch.device("cuda") if use_gpu and torch.cuda.is_available() else torch.device("cpu")


def preprocessing(cfg) -> Preprocessing:
    """A run's preprocessing, for train and eval alike: its backbone's (mean, std, interpolation; resize, no
    crop, no flip) at the run's ``image_size``."""
    return backbones.preprocessing(cfg.backbone).at(cfg.image_size)


class InMemoryDataset(torch.utils.data.Dataset):
    """A GroupedImageDataset decoded and transformed once (deterministic transform), then served from RAM."""

    def __init__(self, base: GroupedImageDataset) -> None:
        items = [base[i] for i in range(len(base))]
        self.images = torch.stack([it[0] for it in items]) if items else torch.zeros(0)
        self.labels = torch.as_tensor([it[1:5] for it in items], dtype=torch.int64).reshape(-1, 4)
        self.groups = base.groups

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        y, b, source, g = self.labels[i].tolist()
        return self.images[i], y, b, source, g, i


class CorruptedImageDataset(torch.utils.data.Dataset):
    """Training images degraded as FFR's quality ablation does it: the corruption runs on the image at its own
    (generated) size, *before* the resize, with fresh randomness for every draw.

    Indexed by ``(epoch, position, index)`` — what :class:`ffr.training.sampling.EpochSampler` yields with
    ``tagged=True`` — so draw ``position`` of ``epoch`` gets its own generator (``Corrupt.rng``): other noise every
    epoch, the same in a rerun and under any number of DDP or loader workers. A plain index (evaluation) gets a
    fixed generator per image. ``in_memory`` keeps the decoded images at their own size; the corruption and the
    resize still run on every draw."""

    def __init__(self, split: GroupedSplit, prep: Preprocessing, corrupt: Callable,
                 group_spec: GroupSpec | None = None, in_memory: bool = False, augment: bool = False) -> None:
        self.base = GroupedImageDataset(split, prep.transform(augment), group_spec)
        self.corrupt = corrupt
        self.groups = self.base.groups
        self.decoded = [self._decode(i) for i in range(len(self.base))] if in_memory else None

    def _decode(self, i: int) -> np.ndarray:
        return np.asarray(self.base.split.load_image(self.base.keys[i]).convert("RGB"))

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item):
        epoch, position, i = item if isinstance(item, tuple) else (-1, int(item), int(item))
        from PIL import Image

        pixels = self.decoded[i] if self.decoded is not None else self._decode(i)
        corrupted = self.corrupt(Image.fromarray(pixels), self.corrupt.rng(epoch, position))
        b = self.base
        return b.transform(corrupted), int(b.y[i]), int(b.b[i]), int(b.source[i]), int(b.groups[i]), i


def image_dataset(split: GroupedSplit, prep: Preprocessing, group_spec: GroupSpec | None = None,
                  in_memory: bool = False, corrupt: Callable | None = None,
                  augment: bool = False) -> torch.utils.data.Dataset:
    """A split's images as tensors, through ``prep`` (:func:`preprocessing`); ``corrupt`` (an
    ``ffr.corruptions.Corrupt``) degrades them before the resize, anew on every draw (index the dataset with a
    tagged EpochSampler); ``augment`` (training only): RandomResizedCrop + flip instead of the resize (D3S)."""
    if corrupt is not None:
        return CorruptedImageDataset(split, prep, corrupt, group_spec, in_memory, augment)
    ds = GroupedImageDataset(split, prep.transform(augment), group_spec)
    return InMemoryDataset(ds) if in_memory else ds


def loader(dataset, batch_size: int, sampler=None, indices: np.ndarray | None = None,
           workers: int = 0) -> torch.utils.data.DataLoader:
    """A DataLoader over ``sampler`` or fixed ``indices`` (in order). Worker processes use forkserver:
    forking a Ray worker is unsafe."""
    if sampler is None:
        sampler = (np.arange(len(dataset)) if indices is None else np.asarray(indices)).tolist()
    extra = {"multiprocessing_context": "forkserver", "persistent_workers": True} if workers > 0 else {}
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, **extra)


def build_optimizer(name: str, params, lr: float, weight_decay: float, momentum: float = 0.9):
    """All layers are trained; coupled L2 weight decay, as in the FFR code."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    raise FFRError(f"optimizer {name!r} is unknown; expected adam or sgd")


def freeze_batchnorm(model: nn.Module) -> None:
    """BatchNorm layers to eval mode: they normalize with, and no longer update, their running statistics."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def mixed_batches(batches, mix_batches):
    """Each batch of ``batches`` followed by one of the class-only stream ``mix_batches`` (as many): the rows of
    the second keep their image and class, and get bias and group -1 (no label) so no group counts them."""
    for (x, y, b, source, g, idx), (mx, my, mb, msource, _mg, midx) in zip(batches, mix_batches, strict=True):
        unknown = torch.full_like(mb, -1)
        yield (torch.cat([x, mx]), torch.cat([y, my]), torch.cat([b, unknown]), torch.cat([source, msource]),
               torch.cat([g, unknown]), torch.cat([idx, midx]))


def train_one_epoch(model: nn.Module, batches, method: Method, optimizer, device: torch.device, n_groups: int,
                    on_batch: Callable[[int], None] | None = None, freeze_bn: bool = False,
                    step_log: list[dict] | None = None, first_step: int = 0) -> torch.Tensor:
    """One pass over ``batches``. Returns this worker's float64 tensor [loss sum, rows, rows of a class-only
    stream (group -1), draws of group 0, ..., draws of group G-1], ready to be all-reduced (loss sum =
    per-batch loss × batch size). ``freeze_bn``: BatchNorm statistics stay as they are (FFR's frozen-BN
    ablation). ``step_log``: the method's per-step terms (``Method.step_log``) are appended to it, each with
    its global step number (``first_step`` + 1 for the first batch)."""
    model.train()
    for module in method.modules.values():
        module.train()
    if freeze_bn:
        freeze_batchnorm(model)
    totals = torch.zeros(3 + n_groups, dtype=torch.float64)
    for i, (x, y, _b, _source, g, _idx) in enumerate(batches):
        x, y, g = x.to(device, non_blocking=True), y.to(device), g.to(device)
        loss = method.train_step(model, x, y, g, optimizer)  # the method's step(s): the model's, its critics'
        totals[0] += float(loss.detach()) * len(y)
        totals[1] += len(y)
        known = g[g >= 0].cpu()
        totals[2] += len(y) - len(known)
        totals[3:] += torch.bincount(known, minlength=n_groups).to(torch.float64)
        if step_log is not None:
            terms = method.step_log()
            if terms is not None:
                step_log.append({"step": first_step + i + 1, **terms})
        if on_batch is not None:
            on_batch(i)
    return totals


@torch.no_grad()
def predict(model: nn.Module, batches, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, dataset index) for every example ``batches`` yields."""
    model.eval()
    preds, index = [], []
    for x, *_rest, idx in batches:
        preds.append(model(x.to(device)).argmax(1).cpu())
        index.append(idx)
    if not preds:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return torch.cat(preds).numpy(), torch.cat(index).numpy()


@torch.no_grad()
def extract_features(model: nn.Module, batches, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(penultimate features, dataset index); ``model`` must be an ffr.backbones.Classifier (unwrapped)."""
    model.eval()
    feats, index = [], []
    for x, *_rest, idx in batches:
        feats.append(model.features(x.to(device)).float().cpu())
        index.append(idx)
    return torch.cat(feats).numpy(), torch.cat(index).numpy()


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DDP wrapper."""
    return model.module if hasattr(model, "module") else model


def save_state(state: dict, directory: str) -> str:
    """Write a checkpoint's ``model.pt`` into a local directory or a URI."""
    buf = io.BytesIO()
    torch.save(state, buf)
    fs, inner = filesystem(directory)
    ensure_dir(fs, inner)
    with fs.open(join(inner, CHECKPOINT_FILE), "wb") as f:
        f.write(buf.getvalue())
    return join(directory, CHECKPOINT_FILE)


def load_state(directory: str) -> dict:
    """Read ``model.pt`` from a checkpoint directory (local or URI)."""
    fs, inner = filesystem(directory)
    path = join(inner, CHECKPOINT_FILE)
    if not fs.exists(path):
        raise FFRError(f"checkpoint {directory!r} has no {CHECKPOINT_FILE}; expected a training checkpoint directory")
    with fs.open(path, "rb") as f:
        return torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=False)
