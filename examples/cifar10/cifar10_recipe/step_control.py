"""Between two training steps: the run manager's hook that writes checkpoints inside an epoch
(``--checkpoint-every``) and stops training on SIGTERM or SIGINT, with the same decision in every process."""
import signal
import threading
import time
from typing import Any, Callable, Dict, Optional

import torch
import torch.distributed as dist

from .config import checkpoint_interval
from .distributed import Distributed
from .epoch import EpochProgress, EpochTally, TrainingStopped

#: With several processes, steps between two agreements on a stop signal (each costs an all-reduce).
SIGNAL_POLL_EVERY = 4


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


class CheckpointAndStop:
    """The hook (:class:`~cifar10_recipe.epoch.StepHook`) of one epoch that writes a checkpoint inside it when
    ``--checkpoint-every`` says so and stops training on a signal, agreed across processes (the main process's clock
    decides the time; any process's signal stops all of them).

    Args:
        checkpoint_every: ``--checkpoint-every``.
        steps_per_epoch: Steps of an epoch.
        epoch: The epoch (0-based).
        signals: The stop signals received.
        distributed: This process's place in a multi-process job.
        device: Where the agreement's all-reduce runs.
        save: Writes a checkpoint at an epoch's progress.
        last_checkpoint: When the last checkpoint was written (``time.monotonic``); updated by :meth:`saved`.
    """

    def __init__(self, checkpoint_every: str, steps_per_epoch: int, epoch: int, signals: StopSignals,
                 distributed: Distributed, device: torch.device, save: Callable[[EpochProgress], None],
                 last_checkpoint: float):
        self.unit, self.amount = checkpoint_interval(checkpoint_every)
        self.steps_per_epoch, self.epoch, self.signals = steps_per_epoch, epoch, signals
        self.distributed, self.device, self.save = distributed, device, save
        self.last_checkpoint = last_checkpoint

    def after_step(self, steps_done: int, tally: EpochTally) -> None:
        checkpoint_now, stop_now = self.poll(steps_done)
        if (checkpoint_now or stop_now) and steps_done < self.steps_per_epoch:
            progress = tally.progress(steps_done)
            if stop_now:
                raise TrainingStopped(progress)
            self.save(progress)
            self.saved()

    def end_epoch(self) -> None:
        pass

    def poll(self, steps_done: int):
        """(write a checkpoint now, stop now) after ``steps_done`` steps of the epoch."""
        global_step = self.epoch * self.steps_per_epoch + steps_done
        by_steps = self.unit == "steps" and global_step % self.amount == 0
        if self.distributed.enabled and steps_done % SIGNAL_POLL_EVERY:
            return by_steps, False
        by_time = self.unit == "seconds" and time.monotonic() - self.last_checkpoint >= self.amount
        stop = self.signals.received is not None
        if self.distributed.enabled:
            flags = torch.tensor([int(by_time and self.distributed.is_main), int(stop)], device=self.device)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            by_time, stop = bool(flags[0]), bool(flags[1])
        return by_steps or by_time, stop

    def stop_requested(self) -> bool:
        """Whether any process received a stop signal (between epochs)."""
        stop = self.signals.received is not None
        if self.distributed.enabled:
            flag = torch.tensor([int(stop)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag[0])
        return stop

    def saved(self) -> None:
        self.last_checkpoint = time.monotonic()
