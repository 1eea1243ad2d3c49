"""Train a dynconv model on CIFAR-10.

    python examples/cifar10/train.py --preset cpu          # 2-core CPU recipe (see README.md beside this file)
    python examples/cifar10/train.py --preset coursework   # the coursework's recipe, needs a GPU for 50 epochs
    python examples/cifar10/train.py --help                # every flag; each overrides the preset

Results, with hardware, commands and versions: ``examples/cifar10/README.md``.

A run writes into its directory (``--out``, default ``runs/<timestamp>-<preset>``): ``config.json`` (the resolved
configuration), ``metrics.jsonl`` (one line per epoch), ``curves.png``, ``summary.json`` and ``checkpoints/``
(safetensors weights, resume state). ``--resume RUN_DIR`` continues a run; ``--eval CHECKPOINT`` only evaluates.
"""
import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import timm
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from dynconv import RoutingRecorder, routing_modules, temperature_schedule
from dynconv.models import list_models

from cifar10_recipe.checkpoint import (
    BEST,
    CheckpointError,
    checkpoint_epoch,
    load_checkpoint,
    load_weights,
    remove_temporaries,
    save_checkpoint,
    save_weights,
)
from cifar10_recipe.config import (
    TrainConfig,
    add_config_arguments,
    config_differences,
    load_config_file,
    model_arguments,
    presets_help,
    resolve_config,
    upgrade_config_dict,
)
from cifar10_recipe.data import Cifar10, DatasetError, load_cifar10
from cifar10_recipe.distributed import (
    SINGLE_PROCESS,
    Distributed,
    all_reduce_sum,
    convert_sync_batchnorm,
    init_distributed,
)
from cifar10_recipe.loaders import TensorLoader, TorchvisionLoader, epoch_seed
from cifar10_recipe.presets import PRESETS
from cifar10_recipe.provenance import provenance
from cifar10_recipe.report import epoch_line, plot_curves, routing_health, spread, write_metrics
from cifar10_recipe.whitening import init_patch_whitening


class TrainingError(RuntimeError):
    """Training cannot go on; the message says what happened and what was kept."""


# configuration fields that may change when a run is resumed: they do not change what is computed
RESUMABLE_CHANGES = frozenset({"device", "threads", "workers", "progress", "out", "data_dir", "download", "save_every",
                               "on_nan"})

# ---------------------------------------------------------------------------------------------------------------
#  Setup: device, precision, determinism
# ---------------------------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} asked for CUDA, but torch.cuda.is_available() is False")
    return device


def uses_bf16(config: TrainConfig, device: torch.device) -> bool:
    """Whether the run computes in bf16: ``--amp auto`` picks it on CUDA and on CPUs with native bf16 (AVX-512 BF16
    or AMX); elsewhere bf16 is emulated and, measured on a 2-core AVX2 EPYC, 8-11x slower than float32
    (``benchmarks/results/cpu_precision.json``)."""
    if config.amp != "auto":
        return config.amp == "bf16"
    return device.type == "cuda" or (device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_context(config: TrainConfig, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16) if uses_bf16(config, device) else nullcontext()


def configure_execution(config: TrainConfig, device: torch.device) -> None:
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


# ---------------------------------------------------------------------------------------------------------------
#  Model, optimizer, learning-rate schedule
# ---------------------------------------------------------------------------------------------------------------


def check_model(config: TrainConfig) -> None:
    """Build the model on the meta device (no memory, no compute), so that a bad model name or override fails
    before anything is written to the run folder."""
    if not timm.is_model(config.model):
        raise ValueError(f"--model {config.model!r} is not a registered model; dynconv's are "
                         f"{', '.join(list_models())}")
    arguments = model_arguments(config)
    try:
        timm.create_model(config.model, device="meta", **arguments)
    except ValueError:
        raise
    except Exception as error:  # an override the model does not take, e.g. --block for a timm ResNet
        raise ValueError(f"--model {config.model} cannot be built with {arguments}: {error}") from None


def build_model(config: TrainConfig, device: torch.device) -> nn.Module:
    model = timm.create_model(config.model, **model_arguments(config)).to(device)
    return model.to(memory_format=torch.channels_last) if config.channels_last else model


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    norm_biases = {id(m.bias) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine}
    params = [p for p in model.parameters() if p.requires_grad]
    vector_decay = config.weight_decay if config.decay_all else 0.0
    groups = [
        {"params": [p for p in params if p.ndim > 1]},
        {"params": [p for p in params if p.ndim <= 1 and id(p) not in norm_biases], "weight_decay": vector_decay},
        # BatchNorm shifts: scaled lr, decay divided by the scale, so they decay per step like everything else
        {"params": [p for p in params if id(p) in norm_biases], "lr": config.lr * config.bias_lr_scale,
         "weight_decay": vector_decay / config.bias_lr_scale},
    ]
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                           weight_decay=config.weight_decay)


def lr_factor(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of the peak lr after ``step`` optimizer steps (a LambdaLR stepped once per batch).

    ``step`` equals torch's StepLR(step_size, gamma) stepped once per epoch, as the coursework did.
    """
    total = config.epochs * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if config.schedule == "step":
            return config.gamma ** (step // steps_per_epoch // config.step_size) if config.step_size else 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if config.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def count_flops(model: nn.Module, device: torch.device) -> int:
    """Forward FLOPs for one 3x32x32 image (eval mode; multiply-adds count as two)."""
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32, device=device))
    model.train(was_training)
    return counter.get_total_flops()


def whiten_stem(model: nn.Module, images: torch.Tensor, mean, std) -> None:
    """Initialise the model's patch stem by patch whitening of ``images`` (uint8) and freeze its weights."""
    conv = getattr(getattr(model, "stem", None), "conv", None)
    if not isinstance(conv, nn.Conv2d) or conv.bias is None or conv.padding != (0, 0):
        raise ValueError("--whiten needs a model with a patch stem (stem='patch'), such as dynconv_cifar_fast")
    mean = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    init_patch_whitening(conv, (images.float() / 255 - mean) / std)
    conv.weight.requires_grad_(False)


# ---------------------------------------------------------------------------------------------------------------
#  Data
# ---------------------------------------------------------------------------------------------------------------


def build_loaders(config: TrainConfig, data: Cifar10, device: torch.device, mean, std,
                  distributed: Distributed = SINGLE_PROCESS):
    """Train and test loaders; with several processes each gets its share of every global batch."""
    common = dict(device=device, mean=mean, std=std, crop_padding=config.crop_padding, pad_mode=config.pad_mode,
                  flip=config.flip, cutout=config.cutout, cutout_holes=config.cutout_holes,
                  channels_last=config.channels_last, seed=config.seed, rank=distributed.rank,
                  world_size=distributed.world_size)
    if config.loader == "torchvision":
        loader_cls = TorchvisionLoader
        common.update(workers=config.workers, persistent_workers=not config.deterministic)
    else:
        loader_cls = TensorLoader
    batch_size = config.batch_size // distributed.world_size
    # processes must run the same number of steps, so a distributed epoch drops its last partial global batch
    train = loader_cls(data.train_images, data.train_labels, batch_size=batch_size, train=True,
                       drop_last=distributed.enabled, **common)
    test = loader_cls(data.test_images, data.test_labels, batch_size=max(batch_size, 500), train=False, **common)
    return train, test


# ---------------------------------------------------------------------------------------------------------------
#  One epoch of training, one evaluation
# ---------------------------------------------------------------------------------------------------------------


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int):
        super().__init__(f"the training loss became non-finite at step {step}")
        self.step = step


NAN_CHECK_EVERY = 50  # steps between checks for a non-finite loss (each check synchronises a GPU)


def train_epoch(model, loader, optimizer, scheduler, config: TrainConfig, autocast, show_progress: bool,
                desc: str, first_step: int = 0, ema: Optional[AveragedModel] = None,
                on_step: Optional[Callable[[float], None]] = None,
                distributed: Distributed = SINGLE_PROCESS) -> Dict[str, float]:
    """One pass over ``loader``. Training time is measured with CUDA events on a GPU (data augmentation included).

    A non-finite loss raises :class:`NonFiniteLossError` (checked every ``NAN_CHECK_EVERY`` steps, naming the first
    bad step, ``first_step`` counting the steps of earlier epochs) or, with ``--on-nan skip``, skips that step (checked
    every step). ``on_step`` is called before every step with the fraction of the epoch done (temperature annealing).
    With several processes the decisions are agreed across them and the metrics summed over them.
    """
    model.train()
    device = loader.device
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)
    seen = skipped = 0
    on_cuda = device.type == "cuda"
    if on_cuda:
        start_event, end_event = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start_event.record()
    start = time.perf_counter()
    steps = len(loader)
    bar = tqdm(loader, total=steps, desc=desc, leave=False, disable=not show_progress, dynamic_ncols=True)
    for step, (images, labels) in enumerate(bar):
        if on_step is not None:
            on_step(step / steps)
        with autocast:
            logits = model(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=config.label_smoothing)
        if config.on_nan == "skip" and not _all_finite(loss, distributed):
            skipped += 1
            scheduler.step()
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        total_loss += loss.detach() * len(labels)
        correct += (logits.argmax(dim=1) == labels).sum()
        seen += len(labels)
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), first_step + step, first_bad)
        if (step + 1) % NAN_CHECK_EVERY == 0:
            _raise_if_non_finite(first_bad, distributed)
        if show_progress and step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    _raise_if_non_finite(first_bad, distributed)
    if on_cuda:
        end_event.record()
        torch.cuda.synchronize(device)
        seconds = start_event.elapsed_time(end_event) / 1000
    else:
        seconds = time.perf_counter() - start
    total_loss, correct, seen = all_reduce_sum([total_loss.item(), correct.item(), seen], device)
    return {"train_loss": total_loss / max(seen, 1), "train_acc": correct / max(seen, 1),
            "images_per_s": seen / seconds, "train_s": seconds, "skipped_steps": skipped}


def _all_finite(loss: torch.Tensor, distributed: Distributed) -> bool:
    finite = torch.isfinite(loss).to(torch.int32)
    if distributed.enabled:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


def _raise_if_non_finite(first_bad: torch.Tensor, distributed: Distributed) -> None:
    if distributed.enabled:
        first_bad = first_bad.clone()
        dist.all_reduce(first_bad, op=dist.ReduceOp.MAX)
    if first_bad.item() >= 0:
        raise NonFiniteLossError(int(first_bad.item()))


def tta_logits(model: nn.Module, images: torch.Tensor, tta: int, logits: torch.Tensor) -> torch.Tensor:
    """``logits`` (the model's on ``images``) averaged over test-time augmentations: level 1 adds the mirror image,
    level 2 also the image translated by one pixel up-left and down-right (reflect padding), each mirrored too
    (airbench94's level 2)."""
    if tta >= 1:
        logits = 0.5 * (logits + model(images.flip(3)).float())
    if tta == 2:
        height, width = images.shape[-2:]
        padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
        shifted = (padded[:, :, :height, :width], padded[:, :, 2:, 2:])
        translated = sum(0.5 * (model(x).float() + model(x.flip(3)).float()) for x in shifted) / len(shifted)
        logits = 0.5 * logits + 0.5 * translated
    return logits


@torch.no_grad()
def evaluate(model, loader, autocast, tta: int = 0) -> Dict[str, Any]:
    """Test loss and accuracy; with ``tta`` > 0 also the accuracy of the test-time-augmented logits. For a model with
    routers also their health per stage on the test images (plain forward passes only; :func:`routing_health`)."""
    model.eval()
    recorder = RoutingRecorder(model) if routing_modules(model) else None
    total_loss = torch.zeros((), device=loader.device)
    correct = torch.zeros((), device=loader.device, dtype=torch.long)
    correct_tta = torch.zeros((), device=loader.device, dtype=torch.long)
    seen = 0
    for images, labels in loader:
        with autocast:
            with recorder or nullcontext():
                logits = model(images).float()
            if tta:
                correct_tta += (tta_logits(model, images, tta, logits).argmax(dim=1) == labels).sum()
        total_loss += F.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(dim=1) == labels).sum()
        seen += len(labels)
    total_loss, correct, correct_tta, seen = all_reduce_sum(
        [total_loss.item(), correct.item(), correct_tta.item(), seen], loader.device)
    result = {"test_loss": total_loss / seen, "test_acc": correct / seen,
              "test_acc_tta": correct_tta / seen if tta else None}
    if recorder is not None:
        result["routing"] = routing_health(recorder.weights)
    return result


# ---------------------------------------------------------------------------------------------------------------
#  A whole run
# ---------------------------------------------------------------------------------------------------------------


def run(config: TrainConfig, run_dir: Path, resume: bool = False, preset: str = "",
        data: Optional[Cifar10] = None, distributed: Distributed = SINGLE_PROCESS,
        device: Optional[torch.device] = None, argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Train (or continue training) one seed and return its summary. Writes everything into ``run_dir`` (the main
    process only, when there are several)."""
    wall_start = time.perf_counter()
    device = device or resolve_device(config.device)
    origin = provenance(device, argv)  # taken now: the commit checked out later need not be the one that ran
    configure_execution(config, device)
    say = print if distributed.is_main else lambda *args, **kwargs: None
    if data is None:
        data = load_cifar10(config.data_dir, config.download).subset(config.subset, config.test_subset)
    if distributed.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(config.seed)
    model = build_model(config, device)
    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    if config.whiten:
        whiten_stem(model, data.train_images[:5000].to(device), mean, std)
    train_loader, test_loader = build_loaders(config, data, device, mean, std, distributed)
    if config.sync_bn and distributed.enabled:
        model = convert_sync_batchnorm(model, device)
    optimizer = build_optimizer(config, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, len(train_loader)))
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True) \
        if config.ema_decay else None
    eval_model = ema.module if ema is not None else model
    autocast = autocast_context(config, device)
    checkpoints = run_dir / "checkpoints"
    if distributed.is_main:
        checkpoints.mkdir(exist_ok=True)
    history: List[Dict[str, Any]] = []
    best = {"test_acc": -1.0, "epoch": -1}
    if resume:
        if distributed.is_main:
            remove_temporaries(checkpoints)
        weights, state = load_checkpoint(checkpoints)
        model.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        history, best = state["history"], state["best"]
    start_epoch = history[-1]["epoch"] + 1 if history else 0
    params = sum(p.numel() for p in model.parameters())
    flops = count_flops(model, device)
    step_model = model
    if distributed.enabled:
        step_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        step_model = torch.compile(step_model)
    show_progress = config.progress == "on" or (config.progress == "auto" and sys.stderr.isatty())
    elapsed_before = history[-1]["elapsed_s"] if history else 0.0
    temperature = temperature_schedule(config.temperature_start or 1.0, 1.0, config.temperature_epochs)
    # found once, and set only when the value changes: annealing runs before every step
    routers = routing_modules(model) if config.temperature_start else []
    current_temperature: Optional[float] = None

    say(f"{config.model}: {params / 1e6:.2f}M params, {flops / 1e6:.0f} MFLOPs/image | {len(data.train_labels)} "
        f"train / {len(data.test_labels)} test images from {data.root} | device {device} | seed {config.seed} | "
        f"run dir {run_dir}" + (f" | {distributed.world_size} processes" if distributed.enabled else ""), flush=True)
    for epoch in range(start_epoch, config.epochs):
        # dropout and worker-less torchvision transforms; each process its own stream (rank 0 = single process)
        torch.manual_seed(epoch_seed(config.seed, epoch) + 7919 * distributed.rank)
        train_loader.set_epoch(epoch)
        row: Dict[str, Any] = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        anneal = None
        if routers:
            def anneal(fraction: float, epoch: int = epoch) -> None:
                nonlocal current_temperature
                value = temperature(epoch + fraction)
                if value != current_temperature:
                    for router in routers:
                        router.set_temperature(value)
                    current_temperature = value
        try:
            row.update(train_epoch(step_model, train_loader, optimizer, scheduler, config, autocast, show_progress,
                                   f"epoch {epoch + 1}/{config.epochs}", epoch * len(train_loader), ema, anneal,
                                   distributed))
        except NonFiniteLossError as error:
            saved = checkpoint_epoch(checkpoints)
            last_good = ("no checkpoint was saved yet" if saved is None else
                         f"the last good checkpoint is epoch {saved + 1} in {checkpoints}; continue from it with "
                         f"--resume {run_dir} and a lower --lr (with --allow-config-change)")
            raise TrainingError(f"{error} (epoch {epoch + 1}); nothing was saved after it; {last_good}; "
                                "--on-nan skip skips such steps instead") from None
        last = epoch + 1 == config.epochs
        if (epoch + 1) % config.eval_every == 0 or last:
            # eager: a compiled eval graph would cost another compilation for little gain
            row.update(evaluate(eval_model, test_loader, autocast, tta=config.tta if last else 0))
        row["elapsed_s"] = elapsed_before + time.perf_counter() - wall_start
        history.append(row)
        say(epoch_line(row, config.epochs), flush=True)
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise TrainingError(f"the weights became non-finite in epoch {epoch + 1}; nothing of this epoch was saved, "
                                f"earlier checkpoints in {checkpoints} are intact")
        if row.get("test_acc") is not None and row["test_acc"] > best["test_acc"]:
            best = {"test_acc": row["test_acc"], "epoch": epoch}
            if distributed.is_main:
                save_weights(checkpoints / BEST, eval_model, config.to_dict(), epoch)
        if not distributed.is_main:
            continue
        write_metrics(run_dir / "metrics.jsonl", history)
        if (epoch + 1) % config.save_every == 0 or last:
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch,
                     "history": history, "best": best}
            if ema is not None:
                state["ema"] = ema.state_dict()
            save_checkpoint(checkpoints, model, state, config.to_dict(), epoch)

    final = history[-1]
    train_seconds = sum(row["train_s"] for row in history)
    summary = {
        "model": config.model, "preset": preset, "test_acc": final.get("test_acc"),
        "test_acc_tta": final.get("test_acc_tta"), "tta": config.tta, "best_test_acc": best["test_acc"],
        "best_epoch": best["epoch"], "epochs": len(history), "wall_s": final["elapsed_s"], "train_s": train_seconds,
        "images_per_s": len(data.train_labels) * len(history) / train_seconds, "params": params,
        "flops_per_image": flops, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "processes": distributed.world_size, "torch": torch.__version__,
        "timm": timm.__version__, "seed": config.seed, "data_root": str(data.root),
        "precision": "bf16 autocast" if uses_bf16(config, device) else "float32",
        "provenance": origin,
    }
    if not distributed.is_main:
        return summary
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_curves(history, run_dir / "curves.png", f"{config.model} ({preset or 'custom'}), seed {config.seed}")
    tta = f", with TTA {100 * final['test_acc_tta']:.2f}%" if config.tta else ""
    say(f"done: test accuracy {100 * final['test_acc']:.2f}%{tta} (best {100 * best['test_acc']:.2f}% at epoch "
        f"{best['epoch'] + 1}), training {train_seconds:.1f}s, wall {final['elapsed_s']:.0f}s, run dir {run_dir}",
        flush=True)
    return summary


def write_config(run_dir: Path, preset: str, config: TrainConfig) -> None:
    """Write the run folder's ``config.json`` (the preset's name and every resolved field)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps({"preset": preset, **config.to_dict()}, indent=2) + "\n")
    except OSError as error:
        raise TrainingError(f"cannot write to the run directory {run_dir} ({error.strerror}); choose another --out"
                            ) from None


def run_seeds(config: TrainConfig, run_dir: Path, preset: str, distributed: Distributed = SINGLE_PROCESS,
              device: Optional[torch.device] = None, argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """``config.runs`` runs with seeds seed, seed+1, ... in ``run_dir/seed<N>``; writes and returns the aggregate.

    Training time is the median over runs, robust to a first run that pays for torch.compile.
    """
    data = load_cifar10(config.data_dir, config.download).subset(config.subset, config.test_subset)
    summaries = []
    for index in range(config.runs):
        seed_config = dataclasses.replace(config, seed=config.seed + index, runs=1)
        seed_dir = run_dir / f"seed{seed_config.seed}"
        if distributed.is_main:
            # each seed's folder is a complete run folder of its own, so `--resume seed<N>` continues it
            write_config(seed_dir, preset, seed_config)
        summaries.append(run(seed_config, seed_dir, preset=preset, data=data, distributed=distributed, device=device,
                             argv=argv))
    aggregate = {"runs": config.runs, "test_acc": spread(summaries, "test_acc"),
                 "test_acc_tta": spread(summaries, "test_acc_tta"),
                 "train_s_median": statistics.median(s["train_s"] for s in summaries),
                 "wall_s_median": statistics.median(s["wall_s"] for s in summaries),
                 **{k: summaries[0][k] for k in ("model", "preset", "tta", "epochs", "params", "flops_per_image",
                                                 "device", "torch", "timm", "provenance")}}
    if not distributed.is_main:
        return aggregate
    (run_dir / "runs.json").write_text(json.dumps(aggregate, indent=2) + "\n")
    lines = [f"{config.runs} runs of {config.model} ({preset or 'custom'}) on {aggregate['device']}:"]
    for key, label in (("test_acc", "test accuracy"), ("test_acc_tta", f"with TTA level {config.tta}")):
        if aggregate[key]:
            lines.append(f"  {label}: {100 * aggregate[key]['mean']:.2f}% +- {100 * aggregate[key]['std']:.2f}")
    lines.append(f"  training time (median): {aggregate['train_s_median']:.2f}s, wall (median) "
                 f"{aggregate['wall_s_median']:.1f}s")
    print("\n".join(lines), flush=True)
    return aggregate


def evaluate_checkpoint(path: Path, overrides: Dict[str, Any]) -> Dict[str, Any]:
    """Evaluate a ``.safetensors`` checkpoint on the test set, rebuilding the model from its saved config."""
    weights, info = load_weights(path)
    saved = {**upgrade_config_dict(info["config"]), **overrides}
    config = TrainConfig(**saved)
    device = resolve_device(config.device)
    configure_execution(config, device)
    data = load_cifar10(config.data_dir, config.download).subset(0, config.test_subset)
    model = build_model(config, device)
    model.load_state_dict(weights)
    _, test_loader = build_loaders(config, data, device, model.pretrained_cfg["mean"], model.pretrained_cfg["std"])
    result = {"checkpoint": str(path), "epoch": info["epoch"],
              **evaluate(model, test_loader, autocast_context(config, device), config.tta)}
    print(json.dumps(result), flush=True)
    return result


# ---------------------------------------------------------------------------------------------------------------
#  Command line
# ---------------------------------------------------------------------------------------------------------------


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train a dynconv model on CIFAR-10.", epilog=presets_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu", help=f"named recipe (default cpu): {', '.join(PRESETS)}")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--eval", metavar="CHECKPOINT", help="only evaluate a .safetensors checkpoint")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="with --resume: accept flags that change the saved configuration")
    add_config_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    command = ["examples/cifar10/train.py", *(sys.argv[1:] if argv is None else argv)]
    overrides = {k: v for k, v in vars(args).items()
                 if k not in ("preset", "resume", "eval", "allow_config_change")}
    try:
        if args.eval:
            evaluate_checkpoint(Path(args.eval), overrides)
            return 0
        if args.resume:
            run_dir = Path(args.resume)
            if not (run_dir / "config.json").is_file():
                raise CheckpointError(f"--resume {run_dir}: no config.json there; is it a run directory?")
            saved = load_config_file(run_dir / "config.json")
            preset = saved.pop("preset", "")
            config = resolve_config(preset or "cpu", overrides, base=saved)
            changed = {k: v for k, v in config_differences(saved, config.to_dict()).items()
                       if k not in RESUMABLE_CHANGES}
            if changed and not args.allow_config_change:
                details = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
                raise ValueError(f"--resume {run_dir}: the flags change the saved configuration ({details}); "
                                 "pass --allow-config-change to accept")
        else:
            preset = args.preset
            config = resolve_config(preset, overrides)
            run_dir = Path(config.out or f"runs/{datetime.now():%Y%m%d-%H%M%S}-{preset}")
        if args.resume and config.runs > 1:
            raise ValueError("--resume continues a single run; resume each seed<N>/ directory of a --runs run")
        distributed, device = init_distributed(resolve_device(config.device))
        if distributed.enabled:
            if config.batch_size % distributed.world_size:
                raise ValueError(f"--batch-size {config.batch_size} is the global batch and must be divisible by the "
                                 f"{distributed.world_size} processes")
            # every process must write into the directory the main process named (timestamps may differ)
            names = [str(run_dir)]
            dist.broadcast_object_list(names, src=0)
            run_dir = Path(names[0])
        check_model(config)
        if distributed.is_main:
            if not args.resume and (run_dir / "config.json").exists():
                raise ValueError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
            write_config(run_dir, preset, config)
        if config.runs > 1:
            run_seeds(config, run_dir, preset, distributed, device, argv=command)
        else:
            run(config, run_dir, resume=bool(args.resume), preset=preset, distributed=distributed, device=device,
                argv=command)
    except (DatasetError, CheckpointError, TrainingError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
