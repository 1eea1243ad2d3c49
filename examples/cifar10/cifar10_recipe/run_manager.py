"""The run manager: a run folder and what happens in it.

A run folder holds ``config.json`` (the preset's name and every resolved field), ``metrics.jsonl`` (one line per
epoch), ``curves.png``, ``summary.json`` and ``checkpoints/``. The run manager starts a run in a new folder or
resumes one (``--resume auto``: whichever the folder calls for), checks everything a user can get wrong before it
writes anything, trains ``--runs`` seeds in ``seed<N>/`` folders of their own (each a complete, resumable run folder),
writes checkpoints at epoch ends and, on a stop signal or ``--checkpoint-every``, between steps, and evaluates
checkpoints. The training itself is the :class:`~cifar10_recipe.trainer.Trainer`'s.
"""
import dataclasses
import json
import signal
import statistics
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import timm
import torch
import torch.distributed as dist

from dynconv.records import provenance

from .checkpoint import (
    BEST,
    CheckpointError,
    checkpoint_position,
    describe,
    has_checkpoint,
    load_newest_valid,
    load_weights,
    remove_temporaries,
    save_checkpoint,
    save_weights,
)
from .config import (
    TrainConfig,
    checkpoint_interval,
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
from .report import epoch_line, plot_curves, spread, write_metrics
from .trainer import (
    EpochProgress,
    NonFiniteLossError,
    Trainer,
    TrainingStopped,
    build_model,
    check_model,
    evaluate,
    set_rng_state,
)

#: Exit status of a run stopped by SIGTERM or SIGINT after writing a resumable checkpoint (sysexits' EX_TEMPFAIL:
#: "a temporary failure; the user is invited to retry"), so that a job script can tell it from a failure (2).
STOPPED_EXIT_STATUS = 75
#: With several processes, steps between two agreements on a stop signal (each costs an all-reduce).
SIGNAL_POLL_EVERY = 4


class TrainingError(RuntimeError):
    """Training cannot go on; the message says what happened and what was kept."""


class RunStopped(RuntimeError):  # noqa: N818 (a requested stop, not an error)
    """The run stopped on a signal after writing a resumable checkpoint; the message says how to resume."""


class StopSignals:
    """Context manager turning SIGTERM and SIGINT into a request to stop after the current step (:attr:`received`
    names the signal); a second SIGINT interrupts at once, as Ctrl-C twice does elsewhere. Outside the main thread
    (where Python cannot set handlers) it does nothing."""

    def __init__(self):
        self.received: Optional[str] = None
        self._previous: Dict[int, Any] = {}

    def _handle(self, number, frame) -> None:
        if self.received is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(number).name

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGTERM, signal.SIGINT):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()


def resolve_run(preset: str, overrides: Dict[str, Any], resume: Optional[str] = None,
                allow_config_change: bool = False) -> Tuple[TrainConfig, Path, str, Optional[str]]:
    """The configuration, run folder, preset name and way of starting (``None``: a new run; ``"resume"``; ``"auto"``:
    a new run in a folder that may hold a run that never checkpointed) of a new run (``preset`` <- ``overrides``), of
    the run in ``resume`` (its ``config.json`` <- ``overrides``, which may change only resumable fields unless
    ``allow_config_change``), or, for ``resume="auto"``, of whichever ``--out`` calls for: the run there if it has a
    checkpoint, else a new one."""
    if resume == "auto":
        out = overrides.get("out")
        if not out:
            raise ValueError("--resume auto needs --out RUN_DIR: the folder to resume from, or to start in if it holds "
                             "no checkpoint yet")
        if (Path(out) / "config.json").is_file() and has_checkpoint(Path(out) / "checkpoints"):
            return (*resolve_run(preset, overrides, out, allow_config_change)[:3], "resume")
        config = resolve_config(preset, overrides)
        return config, Path(out), preset, "auto"
    if resume is None:
        config = resolve_config(preset, overrides)
        return config, Path(config.out or f"runs/{datetime.now():%Y%m%d-%H%M%S}-{preset}"), preset, None
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
    return config, run_dir, preset, "resume"


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


class _StepControl:
    """The run manager's side of :class:`~cifar10_recipe.trainer.StepControl` for one epoch: when to write a
    checkpoint inside it (``--checkpoint-every``) and whether a stop signal came, agreed across processes; and the
    writing itself."""

    def __init__(self, run: "RunManager", trainer: Trainer, epoch: int, epoch_lr: float,
                 history: List[Dict[str, Any]], best: Dict[str, Any], signals: StopSignals):
        self.run, self.trainer, self.epoch, self.epoch_lr = run, trainer, epoch, epoch_lr
        self.history, self.best, self.signals = history, best, signals
        self.unit, self.amount = checkpoint_interval(run.config.checkpoint_every)

    def poll(self, steps_done: int) -> Tuple[bool, bool]:
        distributed = self.run.distributed
        global_step = self.epoch * self.trainer.steps_per_epoch + steps_done
        by_steps = self.unit == "steps" and global_step % self.amount == 0
        if distributed.enabled and steps_done % SIGNAL_POLL_EVERY:
            return by_steps, False
        by_time = self.unit == "seconds" and time.monotonic() - self.run.last_checkpoint >= self.amount
        stop = self.signals.received is not None
        if distributed.enabled:
            # the main process's clock decides the time; any process's signal stops all of them
            flags = torch.tensor([int(by_time and distributed.is_main), int(stop)], device=self.run.device)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            by_time, stop = bool(flags[0]), bool(flags[1])
        return by_steps or by_time, stop

    def stop_requested(self) -> bool:
        """Whether any process received a stop signal (between epochs)."""
        stop = self.signals.received is not None
        if self.run.distributed.enabled:
            flag = torch.tensor([int(stop)], device=self.run.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag[0])
        return stop

    def save(self, progress: EpochProgress) -> None:
        run, trainer = self.run, self.trainer
        if not trainer.weights_finite():
            raise TrainingError(f"the weights became non-finite in epoch {self.epoch + 1}; no checkpoint was written "
                                f"at step {progress.step}, earlier ones in {run.run_dir / 'checkpoints'} are intact")
        if run.distributed.is_main:
            state = {**trainer.state_dict(), "epoch": self.epoch, "step": progress.step, "history": self.history,
                     "best": self.best, "progress": progress.to_dict(), "elapsed_s": run.elapsed(),
                     "epoch_lr": self.epoch_lr}
            save_checkpoint(run.run_dir / "checkpoints", trainer.model, state, run.config.to_dict(), self.epoch,
                            progress.step, keep=run.config.keep_checkpoints)
        self.saved()

    def saved(self) -> None:
        self.run.last_checkpoint = time.monotonic()


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
        start_mode: ``None`` (a new run in a new folder), ``"resume"`` (continue the run in ``run_dir``) or ``"auto"``
            (a new run in a folder that may hold a run that never wrote a checkpoint).
    """

    def __init__(self, config: TrainConfig, run_dir: Path, preset: str, data: Cifar10, device: torch.device,
                 distributed: Distributed = SINGLE_PROCESS, argv: Optional[List[str]] = None,
                 start_mode: Optional[str] = None):
        self.config, self.run_dir, self.preset, self.data = config, run_dir, preset, data
        self.device, self.distributed, self.argv = device, distributed, argv
        self.start_mode = start_mode
        # the wall time a resumed run had spent before, when this process started training, when it last checkpointed
        self.elapsed_before, self.wall_start, self.last_checkpoint = 0.0, time.perf_counter(), time.monotonic()

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
        self.wall_start, self.last_checkpoint = time.perf_counter(), time.monotonic()
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
        progress: Optional[EpochProgress] = None
        if resume:
            if distributed.is_main:
                remove_temporaries(checkpoints)
            weights, state, problems = load_newest_valid(checkpoints)
            for problem in problems:
                self.say(f"warning: {problem}")
            trainer.load_state_dict(weights, state)
            history, best = state["history"], state["best"]
            if state.get("progress") is not None:
                progress = EpochProgress(**state["progress"])
        start_epoch = state["epoch"] if progress is not None else (history[-1]["epoch"] + 1 if history else 0)
        if resume:
            self.elapsed_before = state.get("elapsed_s") or (history[-1]["elapsed_s"] if history else 0.0)
        show_progress = config.progress == "on" or (config.progress == "auto" and sys.stderr.isatty())
        self.say(f"{config.model}: {trainer.params / 1e6:.2f}M params, {trainer.flops / 1e6:.0f} MFLOPs/image | "
                 f"{len(data.train_labels)} train / {len(data.test_labels)} test images from {data.root} | device "
                 f"{self.device} | seed {config.seed} | run dir {run_dir}"
                 + (f" | {distributed.world_size} processes" if distributed.enabled else "")
                 + ("" if progress is None else f" | resuming at {describe((start_epoch, progress.step))}"))
        with StopSignals() as signals:
            for epoch in range(start_epoch, config.epochs):
                # dropout and worker-less torchvision transforms; each process its own stream (rank 0 = single
                # process); inside a resumed epoch, the streams where the checkpoint left them
                torch.manual_seed(epoch_seed(config.seed, epoch) + 7919 * distributed.rank)
                start_step = 0
                if progress is not None:
                    start_step = progress.step
                    self._restore_rng(progress)
                train_loader.set_epoch(epoch, start_step)
                # the lr the epoch started with, also for an epoch resumed inside
                row: Dict[str, Any] = {"epoch": epoch, "lr": trainer.lr if progress is None else state["epoch_lr"]}
                control = _StepControl(self, trainer, epoch, row["lr"], history, best, signals)
                try:
                    row.update(trainer.train_epoch(train_loader, epoch, show_progress, progress, control))
                except NonFiniteLossError as error:
                    saved = checkpoint_position(checkpoints)
                    last_good = ("no checkpoint was saved yet" if saved is None else
                                 f"the last good checkpoint is {describe(saved)} in {checkpoints}; continue from it "
                                 f"with --resume {run_dir} and a lower --lr (with --allow-config-change)")
                    raise TrainingError(f"{error} (epoch {epoch + 1}); nothing was saved after it; {last_good}; "
                                        "--on-nan skip skips such steps instead") from None
                except TrainingStopped as stopped:
                    control.save(stopped.progress)
                    raise self._stopped(signals, (epoch, stopped.progress.step)) from None
                progress = None
                last = epoch + 1 == config.epochs
                if (epoch + 1) % config.eval_every == 0 or last:
                    row.update(trainer.evaluate(test_loader, tta=config.tta if last else 0))
                row["elapsed_s"] = self.elapsed()
                history.append(row)
                self.say(epoch_line(row, config.epochs))
                if not trainer.weights_finite():
                    raise TrainingError(f"the weights became non-finite in epoch {epoch + 1}; nothing of this epoch "
                                        f"was saved, earlier checkpoints in {checkpoints} are intact")
                if row.get("test_acc") is not None and row["test_acc"] > best["test_acc"]:
                    best = {"test_acc": row["test_acc"], "epoch": epoch}
                    if distributed.is_main:
                        save_weights(checkpoints / BEST, trainer.eval_model, config.to_dict(), epoch)
                stop = not last and control.stop_requested()  # every process takes part
                if distributed.is_main:
                    write_metrics(run_dir / "metrics.jsonl", history)
                if (epoch + 1) % config.save_every == 0 or last or stop:
                    if distributed.is_main:
                        state = {**trainer.state_dict(), "epoch": epoch, "step": None, "history": history,
                                 "best": best}
                        save_checkpoint(checkpoints, trainer.model, state, config.to_dict(), epoch,
                                        keep=config.keep_checkpoints)
                    control.saved()
                if stop:
                    raise self._stopped(signals, (epoch, None))
        return self._summarise(trainer, history, best, origin)

    def _stopped(self, signals: StopSignals, position: Tuple[int, Optional[int]]) -> RunStopped:
        checkpoints = self.run_dir / "checkpoints"
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


def open_run(preset: str, overrides: Dict[str, Any], resume: Optional[str] = None,
             allow_config_change: bool = False, argv: Optional[List[str]] = None) -> RunManager:
    """Everything a user can get wrong, checked before anything is written: the configuration, the device, the
    model (built on the meta device), the data and its labels, the run folder. Joins the torchrun process group when
    there is one."""
    config, run_dir, preset, start_mode = resolve_run(preset, overrides, resume, allow_config_change)
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
    return RunManager(config, run_dir, preset, data, device, distributed, argv, start_mode)


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
