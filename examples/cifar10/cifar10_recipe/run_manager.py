"""The run manager: a run folder and what happens in it.

A run folder holds ``config.json`` (the preset's name and every resolved field), ``metrics.jsonl`` (one line per
epoch), ``curves.png``, ``summary.json`` and ``checkpoints/``. The run manager trains ``--runs`` seeds in
``seed<N>/`` folders of their own (each a complete, resumable run folder), evaluates, keeps the best weights, and
writes checkpoints at epoch ends and, on a stop signal or ``--checkpoint-every``, between steps
(:mod:`~cifar10_recipe.step_control`). The training itself is the :class:`~cifar10_recipe.trainer.Trainer`'s; what
is checked before a run starts is :mod:`~cifar10_recipe.run_setup`'s.
"""
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import timm
import torch

from dynconv.records import provenance

from .checkpoint import (
    BEST,
    checkpoint_position,
    describe,
    load_newest_valid,
    remove_temporaries,
    save_checkpoint,
    save_weights,
)
from .config import TrainConfig
from .data import Cifar10
from .distributed import SINGLE_PROCESS, Distributed
from .epoch import EpochProgress, NonFiniteLossError, ProgressBar, TrainingStopped, set_rng_state
from .execution import configure_execution, uses_bf16
from .loaders import build_loaders, epoch_seed
from .report import epoch_line, plot_curves, spread, write_metrics
from .step_control import CheckpointAndStop, StopSignals
from .trainer import Trainer

#: Exit status of a run stopped by SIGTERM or SIGINT after writing a resumable checkpoint (sysexits' EX_TEMPFAIL:
#: "a temporary failure; the user is invited to retry"), so that a job script can tell it from a failure (2).
STOPPED_EXIT_STATUS = 75


class TrainingError(RuntimeError):
    """Training cannot go on; the message says what happened and what was kept."""


class RunStopped(RuntimeError):  # noqa: N818 (a requested stop, not an error)
    """The run stopped on a signal after writing a resumable checkpoint; the message says how to resume."""


@dataclasses.dataclass
class RunState:
    """Where a run is: its finished epochs' metrics, its best evaluated epoch, and, inside an epoch, the progress
    a checkpoint left and the lr that epoch started with."""

    history: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    best: Dict[str, Any] = dataclasses.field(default_factory=lambda: {"test_acc": -1.0, "epoch": -1})
    progress: Optional[EpochProgress] = None
    epoch_lr: Optional[float] = None
    start_epoch: int = 0


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
        data: The configured data (:func:`~cifar10_recipe.run_setup.load_data`).
        device: Where to train (``cuda:LOCAL_RANK`` for a torchrun process).
        distributed: This process's place in a multi-process job; only the main process writes.
        argv: The command line, for the record.
        start_mode: ``None`` (a new run in a new folder), ``"resume"`` (continue the run in ``run_dir``) or ``"auto"``
            (a new run in a folder that may hold a run that never wrote a checkpoint).
    """

    def __init__(self, config: TrainConfig, run_dir: Path, preset: str, data: Cifar10, device: torch.device,
                 distributed: Distributed = SINGLE_PROCESS, argv: Optional[List[str]] = None,
                 start_mode: Optional[str] = None):
        self.config, self.run_dir, self.preset, self.data = config, run_dir, preset, data
        self.device, self.distributed, self.argv = device, distributed, argv
        self.start_mode = start_mode
        self.checkpoints = run_dir / "checkpoints"
        # the wall time a resumed run had spent before, and when this process started training
        self.elapsed_before, self.wall_start = 0.0, time.perf_counter()

    def elapsed(self) -> float:
        """Wall time of the run so far, the time before a resume included."""
        return self.elapsed_before + time.perf_counter() - self.wall_start

    def say(self, message: str) -> None:
        if self.distributed.is_main:
            print(message, flush=True)

    def start(self) -> Dict[str, Any]:
        """Write ``config.json`` (for a resumed run: the configuration it continues with, accepted changes included)
        and train every seed; returns the summary (or the ``--runs`` aggregate)."""
        if self.distributed.is_main:
            if self.start_mode is None and (self.run_dir / "config.json").exists():
                raise ValueError(f"{self.run_dir} already holds a run; use --resume {self.run_dir} (or --resume auto "
                                 "with this --out) or another --out")
            write_config(self.run_dir, self.preset, self.config)
        if self.config.runs > 1:
            return self.train_seeds()
        return self.train(self.start_mode == "resume")

    def train(self, resume: bool = False) -> Dict[str, Any]:
        """Train (or continue training) one seed and return its summary.

        SIGTERM or SIGINT stops it after the current step with a checkpoint there (:class:`RunStopped`)."""
        self.wall_start = time.perf_counter()
        config = self.config
        origin = provenance(self.device, self.argv)  # taken now: the commit checked out later need not be the one run
        configure_execution(config, self.device)
        train_loader, test_loader = build_loaders(config, self.data, self.device, self.distributed)
        trainer = Trainer(config, self.device, len(train_loader), self.data.train_images, self.distributed)
        if self.distributed.is_main:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
        run = self._restore(trainer) if resume else RunState()
        self._announce(trainer, run)
        with StopSignals() as signals:
            control = CheckpointAndStop(config.checkpoint_every, trainer.steps_per_epoch, run.start_epoch, signals,
                                        self.distributed, self.device, lambda done: None, time.monotonic())
            for epoch in range(run.start_epoch, config.epochs):
                row = self._train_epoch(trainer, train_loader, epoch, run, control)
                self._end_epoch(trainer, test_loader, epoch, row, run, control)
        return self._summarise(trainer, run.history, run.best, origin)

    def _restore(self, trainer: Trainer) -> RunState:
        """The newest valid checkpoint of the run folder, loaded into ``trainer``."""
        if self.distributed.is_main:
            remove_temporaries(self.checkpoints)
        weights, state, problems = load_newest_valid(self.checkpoints)
        for problem in problems:
            self.say(f"warning: {problem}")
        trainer.load_state_dict(weights, state)
        run = RunState(history=state["history"], best=state["best"], epoch_lr=state.get("epoch_lr"))
        if state.get("progress") is not None:
            run.progress = EpochProgress(**state["progress"])
        run.start_epoch = state["epoch"] if run.progress is not None else (
            run.history[-1]["epoch"] + 1 if run.history else 0)
        self.elapsed_before = state.get("elapsed_s") or (run.history[-1]["elapsed_s"] if run.history else 0.0)
        return run

    def _announce(self, trainer: Trainer, run: RunState) -> None:
        config, data, distributed = self.config, self.data, self.distributed
        self.say(f"{config.model}: {trainer.params / 1e6:.2f}M params, {trainer.flops / 1e6:.0f} MFLOPs/image | "
                 f"{len(data.train_labels)} train / {len(data.test_labels)} test images from {data.root} | device "
                 f"{self.device} | seed {config.seed} | run dir {self.run_dir}"
                 + (f" | {distributed.world_size} processes" if distributed.enabled else "")
                 + ("" if run.progress is None else
                    f" | resuming at {describe((run.start_epoch, run.progress.step))}"))

    def _train_epoch(self, trainer: Trainer, loader, epoch: int, run: RunState,
                     control: CheckpointAndStop) -> Dict[str, Any]:
        """One epoch of training (or the rest of one), with its checkpoints and stop signals; returns its metrics."""
        # dropout and worker-less torchvision transforms; each process its own stream (rank 0 = single process);
        # inside a resumed epoch, the streams where the checkpoint left them
        torch.manual_seed(epoch_seed(self.config.seed, epoch) + 7919 * self.distributed.rank)
        start_step = 0 if run.progress is None else run.progress.step
        if run.progress is not None:
            self._restore_rng(run.progress)
        loader.set_epoch(epoch, start_step)
        # the lr the epoch started with, also for an epoch resumed inside
        run.epoch_lr = trainer.lr if run.progress is None else run.epoch_lr
        row: Dict[str, Any] = {"epoch": epoch, "lr": run.epoch_lr}
        control.epoch = epoch
        control.save = lambda progress: self._checkpoint(trainer, epoch, run, progress)
        show = self.config.progress == "on" or (self.config.progress == "auto" and sys.stderr.isatty())
        hooks = [control] + ([ProgressBar(trainer.steps_per_epoch, start_step, epoch, self.config.epochs)]
                             if show else [])
        try:
            row.update(trainer.train_epoch(loader, epoch, hooks, run.progress))
        except NonFiniteLossError as error:
            saved = checkpoint_position(self.checkpoints)
            last_good = ("no checkpoint was saved yet" if saved is None else
                         f"the last good checkpoint is {describe(saved)} in {self.checkpoints}; continue from it "
                         f"with --resume {self.run_dir} and a lower --lr (with --allow-config-change)")
            raise TrainingError(f"{error} (epoch {epoch + 1}); nothing was saved after it; {last_good}; "
                                "--on-nan skip skips such steps instead") from None
        except TrainingStopped as stopped:
            self._checkpoint(trainer, epoch, run, stopped.progress)
            raise self._stopped(control.signals, (epoch, stopped.progress.step)) from None
        run.progress = None
        return row

    def _end_epoch(self, trainer: Trainer, test_loader, epoch: int, row: Dict[str, Any], run: RunState,
                   control: CheckpointAndStop) -> None:
        """Evaluate (every ``--eval-every`` epochs and after the last), keep the best weights, write the metrics and
        the epoch's checkpoint, and stop if a signal came."""
        config, is_main = self.config, self.distributed.is_main
        last = epoch + 1 == config.epochs
        if (epoch + 1) % config.eval_every == 0 or last:
            row.update(trainer.evaluate(test_loader, tta=config.tta if last else 0))
        row["elapsed_s"] = self.elapsed()
        run.history.append(row)
        self.say(epoch_line(row, config.epochs))
        if not trainer.weights_finite():
            raise TrainingError(f"the weights became non-finite in epoch {epoch + 1}; nothing of this epoch was "
                                f"saved, earlier checkpoints in {self.checkpoints} are intact")
        if row.get("test_acc") is not None and row["test_acc"] > run.best["test_acc"]:
            run.best = {"test_acc": row["test_acc"], "epoch": epoch}
            if is_main:
                save_weights(self.checkpoints / BEST, trainer.eval_model, config.to_dict(), epoch)
        stop = not last and control.stop_requested()  # every process takes part
        if is_main:
            write_metrics(self.run_dir / "metrics.jsonl", run.history)
        if (epoch + 1) % config.save_every == 0 or last or stop:
            self._checkpoint(trainer, epoch, run)
            control.saved()
        if stop:
            raise self._stopped(control.signals, (epoch, None))

    def _checkpoint(self, trainer: Trainer, epoch: int, run: RunState,
                    progress: Optional[EpochProgress] = None) -> None:
        """Write the resume checkpoint: at the end of ``epoch``, or inside it at ``progress`` (then with the epoch's
        progress, its starting lr and the wall time so far). The one place that builds the checkpoint's state."""
        if progress is not None and not trainer.weights_finite():
            raise TrainingError(f"the weights became non-finite in epoch {epoch + 1}; no checkpoint was written at "
                                f"step {progress.step}, earlier ones in {self.checkpoints} are intact")
        if self.distributed.is_main:
            state = {**trainer.state_dict(), "epoch": epoch, "step": None if progress is None else progress.step,
                     "history": run.history, "best": run.best}
            if progress is not None:
                state.update(progress=progress.to_dict(), elapsed_s=self.elapsed(), epoch_lr=run.epoch_lr)
            save_checkpoint(self.checkpoints, trainer.model, state, self.config.to_dict(), epoch,
                            None if progress is None else progress.step, keep=self.config.keep_checkpoints)

    def _stopped(self, signals: StopSignals, position: Tuple[int, Optional[int]]) -> RunStopped:
        checkpoints = self.checkpoints
        return RunStopped(f"stopped by {signals.received or 'a signal to another process'} at {describe(position)} "
                          f"of {self.config.epochs}, after writing a checkpoint in {checkpoints}; resume with: python "
                          f"examples/cifar10/train.py --resume {self.run_dir} (or the same command with --resume auto)")

    def _restore_rng(self, progress: EpochProgress) -> None:
        states = progress.rng_states or []
        if len(states) == self.distributed.world_size:
            set_rng_state(states[self.distributed.rank], self.device)
        else:
            self.say(f"warning: the checkpoint holds the random state of {len(states)} processes, this run has "
                     f"{self.distributed.world_size}; the rest of this epoch draws its dropout afresh")

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
                                  self.argv, "auto")
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
