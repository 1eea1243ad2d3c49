"""The run manager: a run folder and what happens in it.

A run folder holds ``config.json`` (the preset's name and every resolved field), ``metrics.jsonl`` (one line per
epoch), ``curves.png``, ``summary.json`` and ``checkpoints/``. The run manager starts a run in a new folder or
resumes one, checks everything a user can get wrong before it writes anything, trains ``--runs`` seeds in
``seed<N>/`` folders of their own (each a complete, resumable run folder) and evaluates checkpoints. The training
itself is the :class:`~cifar10_recipe.trainer.Trainer`'s.
"""
import dataclasses
import json
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import timm
import torch
import torch.distributed as dist

from .checkpoint import (
    BEST,
    CheckpointError,
    checkpoint_epoch,
    load_checkpoint,
    load_weights,
    remove_temporaries,
    save_checkpoint,
    save_weights,
)
from .config import (
    TrainConfig,
    config_differences,
    load_config_file,
    resolve_config,
    resumable_fields,
    upgrade_config_dict,
)
from .data import Cifar10, load_cifar10
from .distributed import SINGLE_PROCESS, Distributed, init_distributed
from .execution import autocast_context, configure_execution, resolve_device, uses_bf16
from .loaders import build_loaders, epoch_seed
from .provenance import provenance
from .report import epoch_line, plot_curves, spread, write_metrics
from .trainer import NonFiniteLossError, Trainer, build_model, check_model, evaluate


class TrainingError(RuntimeError):
    """Training cannot go on; the message says what happened and what was kept."""


def resolve_run(preset: str, overrides: Dict[str, Any], resume: Optional[str] = None,
                allow_config_change: bool = False) -> Tuple[TrainConfig, Path, str]:
    """The configuration, run folder and preset name of a new run (``preset`` <- ``overrides``) or of the run in
    ``resume`` (its ``config.json`` <- ``overrides``, which may change only resumable fields unless
    ``allow_config_change``)."""
    if resume is None:
        config = resolve_config(preset, overrides)
        return config, Path(config.out or f"runs/{datetime.now():%Y%m%d-%H%M%S}-{preset}"), preset
    run_dir = Path(resume)
    if not (run_dir / "config.json").is_file():
        raise CheckpointError(f"--resume {run_dir}: no config.json there; is it a run directory?")
    saved = load_config_file(run_dir / "config.json")
    preset = saved.pop("preset", "") or ""
    config = resolve_config(preset or "cpu", overrides, base=saved)
    changed = {k: v for k, v in config_differences(saved, config.to_dict()).items() if k not in resumable_fields()}
    if changed and not allow_config_change:
        details = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise ValueError(f"--resume {run_dir}: the flags change the saved configuration ({details}); "
                         "pass --allow-config-change to accept")
    if config.runs > 1:
        raise ValueError("--resume continues a single run; resume each seed<N>/ directory of a --runs run")
    return config, run_dir, preset


def load_data(config: TrainConfig) -> Cifar10:
    """The configured data (``--subset``/``--test-subset`` applied), checked against ``--num-classes``."""
    data = load_cifar10(config.data_dir, config.download).subset(config.subset, config.test_subset)
    labels = int(max(data.train_labels.max(), data.test_labels.max())) + 1
    if config.num_classes < labels:
        raise ValueError(f"--num-classes {config.num_classes} is fewer than the {labels} classes of the labels in "
                         f"{data.root}")
    return data


def write_config(run_dir: Path, preset: str, config: TrainConfig) -> None:
    """Write the run folder's ``config.json`` (the preset's name and every resolved field)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps({"preset": preset, **config.to_dict()}, indent=2) + "\n")
    except OSError as error:
        raise TrainingError(f"cannot write to the run directory {run_dir} ({error.strerror}); choose another --out"
                            ) from None


class RunManager:
    """One run folder and the training in it.

    Args:
        config: The resolved configuration.
        run_dir: The run folder (``seed<N>/`` folders inside it with ``--runs``).
        preset: The preset's name, as recorded in ``config.json``.
        data: The configured data (:func:`load_data`).
        device: Where to train (``cuda:LOCAL_RANK`` for a torchrun process).
        distributed: This process's place in a multi-process job; only the main process writes.
        argv: The command line, for the record.
    """

    def __init__(self, config: TrainConfig, run_dir: Path, preset: str, data: Cifar10, device: torch.device,
                 distributed: Distributed = SINGLE_PROCESS, argv: Optional[List[str]] = None):
        self.config, self.run_dir, self.preset, self.data = config, run_dir, preset, data
        self.device, self.distributed, self.argv = device, distributed, argv

    def say(self, message: str) -> None:
        if self.distributed.is_main:
            print(message, flush=True)

    def start(self, resume: bool = False) -> Dict[str, Any]:
        """Write ``config.json`` (for a resumed run: the configuration it continues with, accepted changes included)
        and train every seed; returns the summary (or the ``--runs`` aggregate)."""
        if self.distributed.is_main:
            if not resume and (self.run_dir / "config.json").exists():
                raise ValueError(f"{self.run_dir} already holds a run; use --resume {self.run_dir} or another --out")
            write_config(self.run_dir, self.preset, self.config)
        if self.config.runs > 1:
            return self.train_seeds()
        return self.train(resume)

    def train(self, resume: bool = False) -> Dict[str, Any]:
        """Train (or continue training) one seed and return its summary."""
        wall_start = time.perf_counter()
        config, run_dir, distributed, data = self.config, self.run_dir, self.distributed, self.data
        origin = provenance(self.device, self.argv)  # taken now: the commit checked out later need not be the one run
        configure_execution(config, self.device)
        train_loader, test_loader = build_loaders(config, data, self.device, distributed)
        trainer = Trainer(config, self.device, len(train_loader), data.train_images, distributed)
        checkpoints = run_dir / "checkpoints"
        if distributed.is_main:
            checkpoints.mkdir(parents=True, exist_ok=True)
        history: List[Dict[str, Any]] = []
        best = {"test_acc": -1.0, "epoch": -1}
        if resume:
            if distributed.is_main:
                remove_temporaries(checkpoints)
            weights, state = load_checkpoint(checkpoints)
            trainer.load_state_dict(weights, state)
            history, best = state["history"], state["best"]
        start_epoch = history[-1]["epoch"] + 1 if history else 0
        elapsed_before = history[-1]["elapsed_s"] if history else 0.0
        show_progress = config.progress == "on" or (config.progress == "auto" and sys.stderr.isatty())
        self.say(f"{config.model}: {trainer.params / 1e6:.2f}M params, {trainer.flops / 1e6:.0f} MFLOPs/image | "
                 f"{len(data.train_labels)} train / {len(data.test_labels)} test images from {data.root} | device "
                 f"{self.device} | seed {config.seed} | run dir {run_dir}"
                 + (f" | {distributed.world_size} processes" if distributed.enabled else ""))
        for epoch in range(start_epoch, config.epochs):
            # dropout and worker-less torchvision transforms; each process its own stream (rank 0 = single process)
            torch.manual_seed(epoch_seed(config.seed, epoch) + 7919 * distributed.rank)
            train_loader.set_epoch(epoch)
            row: Dict[str, Any] = {"epoch": epoch, "lr": trainer.lr}
            try:
                row.update(trainer.train_epoch(train_loader, epoch, show_progress))
            except NonFiniteLossError as error:
                saved = checkpoint_epoch(checkpoints)
                last_good = ("no checkpoint was saved yet" if saved is None else
                             f"the last good checkpoint is epoch {saved + 1} in {checkpoints}; continue from it with "
                             f"--resume {run_dir} and a lower --lr (with --allow-config-change)")
                raise TrainingError(f"{error} (epoch {epoch + 1}); nothing was saved after it; {last_good}; "
                                    "--on-nan skip skips such steps instead") from None
            last = epoch + 1 == config.epochs
            if (epoch + 1) % config.eval_every == 0 or last:
                row.update(trainer.evaluate(test_loader, tta=config.tta if last else 0))
            row["elapsed_s"] = elapsed_before + time.perf_counter() - wall_start
            history.append(row)
            self.say(epoch_line(row, config.epochs))
            if not trainer.weights_finite():
                raise TrainingError(f"the weights became non-finite in epoch {epoch + 1}; nothing of this epoch was "
                                    f"saved, earlier checkpoints in {checkpoints} are intact")
            if row.get("test_acc") is not None and row["test_acc"] > best["test_acc"]:
                best = {"test_acc": row["test_acc"], "epoch": epoch}
                if distributed.is_main:
                    save_weights(checkpoints / BEST, trainer.eval_model, config.to_dict(), epoch)
            if not distributed.is_main:
                continue
            write_metrics(run_dir / "metrics.jsonl", history)
            if (epoch + 1) % config.save_every == 0 or last:
                state = {**trainer.state_dict(), "epoch": epoch, "history": history, "best": best}
                save_checkpoint(checkpoints, trainer.model, state, config.to_dict(), epoch)
        return self._summarise(trainer, history, best, origin)

    def _summarise(self, trainer: Trainer, history: List[Dict[str, Any]], best: Dict[str, Any],
                   origin: Dict[str, Any]) -> Dict[str, Any]:
        config, device, distributed = self.config, self.device, self.distributed
        final = history[-1]
        train_seconds = sum(row["train_s"] for row in history)
        # what the first epoch cost beyond a steady one: torch.compile's compilation (--compile), cuDNN's algorithm
        # search, oneDNN's primitive creation; reported apart so that speed comparisons can leave it out
        overhead = (history[0]["train_s"] - statistics.median(row["train_s"] for row in history[1:])
                    if len(history) > 1 else None)
        summary = {
            "model": config.model, "preset": self.preset, "test_acc": final.get("test_acc"),
            "test_acc_tta": final.get("test_acc_tta"), "tta": config.tta, "best_test_acc": best["test_acc"],
            "best_epoch": best["epoch"], "epochs": len(history), "wall_s": final["elapsed_s"],
            "train_s": train_seconds, "images_per_s": len(self.data.train_labels) * len(history) / train_seconds,
            "first_epoch_overhead_s": overhead, "compile": config.compile,
            "params": trainer.params, "flops_per_image": trainer.flops,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(), "processes": distributed.world_size, "torch": torch.__version__,
            "timm": timm.__version__, "seed": config.seed, "data_root": str(self.data.root),
            "precision": "bf16 autocast" if uses_bf16(config, device) else "float32",
            "provenance": origin,
        }
        if not distributed.is_main:
            return summary
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        plot_curves(history, self.run_dir / "curves.png",
                    f"{config.model} ({self.preset or 'custom'}), seed {config.seed}")
        tta = f", with TTA {100 * final['test_acc_tta']:.2f}%" if config.tta else ""
        first = "" if overhead is None else f" (first-epoch overhead {overhead:.1f}s)"
        self.say(f"done: test accuracy {100 * final['test_acc']:.2f}%{tta} (best {100 * best['test_acc']:.2f}% at "
                 f"epoch {best['epoch'] + 1}), training {train_seconds:.1f}s{first}, wall {final['elapsed_s']:.0f}s, "
                 f"run dir {self.run_dir}")
        return summary

    def train_seeds(self) -> Dict[str, Any]:
        """``config.runs`` runs with seeds seed, seed+1, ... in ``run_dir/seed<N>``; writes and returns the aggregate.

        Training time is the median over runs, robust to a first run that pays for torch.compile.
        """
        config = self.config
        summaries = []
        for index in range(config.runs):
            seed_config = dataclasses.replace(config, seed=config.seed + index, runs=1)
            seed_dir = self.run_dir / f"seed{seed_config.seed}"
            if self.distributed.is_main:
                # each seed's folder is a complete run folder of its own, so `--resume seed<N>` continues it
                write_config(seed_dir, self.preset, seed_config)
            seed_run = RunManager(seed_config, seed_dir, self.preset, self.data, self.device, self.distributed,
                                  self.argv)
            summaries.append(seed_run.train())
        aggregate = {"runs": config.runs, "test_acc": spread(summaries, "test_acc"),
                     "test_acc_tta": spread(summaries, "test_acc_tta"),
                     "train_s_median": statistics.median(s["train_s"] for s in summaries),
                     "wall_s_median": statistics.median(s["wall_s"] for s in summaries),
                     **{k: summaries[0][k] for k in ("model", "preset", "tta", "epochs", "params", "flops_per_image",
                                                     "device", "torch", "timm", "provenance")}}
        if not self.distributed.is_main:
            return aggregate
        (self.run_dir / "runs.json").write_text(json.dumps(aggregate, indent=2) + "\n")
        lines = [f"{config.runs} runs of {config.model} ({self.preset or 'custom'}) on {aggregate['device']}:"]
        for key, label in (("test_acc", "test accuracy"), ("test_acc_tta", f"with TTA level {config.tta}")):
            if aggregate[key]:
                lines.append(f"  {label}: {100 * aggregate[key]['mean']:.2f}% +- {100 * aggregate[key]['std']:.2f}")
        lines.append(f"  training time (median): {aggregate['train_s_median']:.2f}s, wall (median) "
                     f"{aggregate['wall_s_median']:.1f}s")
        self.say("\n".join(lines))
        return aggregate


def open_run(preset: str, overrides: Dict[str, Any], resume: Optional[str] = None,
             allow_config_change: bool = False, argv: Optional[List[str]] = None) -> RunManager:
    """Everything a user can get wrong, checked before anything is written: the configuration, the device, the
    model (built on the meta device), the data and its labels, the run folder. Joins the torchrun process group when
    there is one."""
    config, run_dir, preset = resolve_run(preset, overrides, resume, allow_config_change)
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
    data = load_data(config)
    return RunManager(config, run_dir, preset, data, device, distributed, argv)


def evaluate_checkpoint(path: Path, overrides: Dict[str, Any]) -> Dict[str, Any]:
    """Evaluate a ``.safetensors`` checkpoint written by the recipe on the test set, rebuilding the model from the
    configuration saved in it (``overrides`` change where and how it is evaluated)."""
    weights, info = load_weights(path)
    saved = upgrade_config_dict(info["config"])
    config = resolve_config(saved.pop("preset", "") or "cpu", overrides, base=saved)
    device = resolve_device(config.device)
    configure_execution(config, device)
    check_model(config)
    data = load_data(dataclasses.replace(config, subset=0))
    model = build_model(config, device)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        first_line = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise CheckpointError(f"{path} does not hold weights of {config.model} as configured "
                              f"({model_description(saved, overrides)}): {first_line}") from None
    _, test_loader = build_loaders(config, data, device)
    result = {"checkpoint": str(path), "epoch": info["epoch"],
              **evaluate(model, test_loader, autocast_context(config, device), config.tta)}
    print(json.dumps(result), flush=True)
    return result


def model_description(saved: Dict[str, Any], overrides: Dict[str, Any]) -> str:
    changed = {k: v for k, v in overrides.items() if saved.get(k) != v}
    return f"saved model {saved.get('model')!r}" + (f", flags {changed}" if changed else "")
