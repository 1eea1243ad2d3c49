"""An epoch in progress: the sums its metrics are made of, its time, the check for a non-finite loss, and the hooks
that act between its steps (a progress bar, the run manager's checkpoints and stop signals).

A checkpoint inside an epoch stores an :class:`EpochProgress`, so that the resumed epoch reports what the
uninterrupted one would have.
"""
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Protocol

import torch
import torch.distributed as dist
from tqdm import tqdm

from .distributed import Distributed, all_reduce_sum

NAN_CHECK_EVERY = 50  # steps between checks for a non-finite loss (each check synchronises a GPU)
PROGRESS_EVERY = 20  # steps between updates of the progress bar's loss


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int):
        super().__init__(f"the training loss became non-finite at step {step}")
        self.step = step


@dataclass
class EpochProgress:
    """How far an epoch got: the steps done and the sums its metrics are made of (summed over processes), so that an
    epoch resumed from a checkpoint inside it reports what the uninterrupted epoch reports.

    Attributes:
        step: Steps done in the epoch.
        loss_sum: Sum of the training loss over the images seen.
        correct: Training images classified correctly.
        seen: Training images seen.
        skipped: Steps skipped for a non-finite loss (``--on-nan skip``).
        seconds: Training time spent in the epoch so far.
        rng_states: Each process's global torch RNG state (dropout draws from it), CPU and, on a GPU, CUDA.
    """

    step: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    skipped: int = 0
    seconds: float = 0.0
    rng_states: Optional[List[Dict[str, torch.Tensor]]] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class TrainingStopped(Exception):  # noqa: N818 (a requested stop, not an error)
    """Training stopped between two steps because a hook asked (a stop signal); ``progress`` says where."""

    def __init__(self, progress: EpochProgress):
        super().__init__(f"training stopped after step {progress.step} of the epoch")
        self.progress = progress


def rng_state(device: torch.device) -> Dict[str, torch.Tensor]:
    """This process's global RNG states (CPU, and the device's on a GPU)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Dict[str, torch.Tensor], device: torch.device) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


class EpochTimer:
    """Training time of an epoch so far: CUDA events on a GPU (so queued work is counted), the wall clock
    otherwise; ``before`` is what a resumed epoch had spent already."""

    def __init__(self, device: torch.device, before: float = 0.0):
        self.device, self.before = device, before
        self.start = time.perf_counter()
        self.start_event = None
        if device.type == "cuda":
            self.start_event = torch.cuda.Event(enable_timing=True)
            self.start_event.record()

    def seconds(self) -> float:
        if self.start_event is None:
            return self.before + time.perf_counter() - self.start
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        torch.cuda.synchronize(self.device)
        return self.before + self.start_event.elapsed_time(end) / 1000


class EpochTally:
    """The running sums of one epoch (from a checkpoint's ``start`` on), and the first step with a non-finite loss.

    The loss is checked without a synchronisation at every step and raised on every ``NAN_CHECK_EVERY`` steps, before
    any checkpoint and at the end (:class:`NonFiniteLossError`, naming the first bad step counted from the start of
    training). With several processes the sums are global: the main process carries a resumed epoch's, the others add
    their own from zero, and :meth:`progress` and :meth:`result` sum them.

    Args:
        device: Where the batches are.
        start: The progress the epoch resumes from (steps, sums, seconds).
        first_step: The epoch's first step counted from the start of training.
        distributed: This process's place in a multi-process job.
    """

    def __init__(self, device: torch.device, start: EpochProgress, first_step: int, distributed: Distributed):
        carried = distributed.is_main
        self.device, self.start, self.first_step, self.distributed = device, start, first_step, distributed
        self.loss_sum = torch.full((), start.loss_sum if carried else 0.0, device=device, dtype=torch.float64)
        self.correct = torch.full((), start.correct if carried else 0, device=device, dtype=torch.long)
        self.seen = start.seen if carried else 0
        self.skipped = start.skipped  # skipped steps are agreed across processes, so each counts all of them
        self.first_bad = torch.full((), -1, device=device, dtype=torch.long)
        self.timer = EpochTimer(device, start.seconds)
        self.last_loss: Optional[torch.Tensor] = None

    def count(self, step: int, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, skipped: bool) -> None:
        """Add step ``step`` (of the epoch) to the sums, or count it as skipped."""
        if skipped:
            self.skipped += 1
            return
        loss = loss.detach()
        self.loss_sum += loss.double() * len(labels)
        self.correct += (logits.argmax(dim=1) == labels).sum()
        self.seen += len(labels)
        self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(loss), self.first_step + step,
                                     self.first_bad)
        self.last_loss = loss
        if (step + 1) % NAN_CHECK_EVERY == 0:
            self.raise_if_non_finite()

    def raise_if_non_finite(self) -> None:
        first_bad = self.first_bad
        if self.distributed.enabled:
            first_bad = first_bad.clone()
            dist.all_reduce(first_bad, op=dist.ReduceOp.MAX)
        if first_bad.item() >= 0:
            raise NonFiniteLossError(int(first_bad.item()))

    def progress(self, steps_done: int) -> EpochProgress:
        """The epoch's progress after ``steps_done`` steps, summed over processes, with every process's RNG state."""
        self.raise_if_non_finite()
        loss_sum, correct, seen = all_reduce_sum([self.loss_sum.item(), self.correct.item(), self.seen], self.device)
        states = [rng_state(self.device)]
        if self.distributed.enabled:
            states = [None] * self.distributed.world_size
            dist.all_gather_object(states, {k: v.cpu() for k, v in rng_state(self.device).items()})
        return EpochProgress(step=steps_done, loss_sum=loss_sum, correct=int(correct), seen=int(seen),
                             skipped=self.skipped, seconds=self.timer.seconds(), rng_states=states)

    def result(self) -> Dict[str, float]:
        """The finished epoch's training metrics (the loss checked once more)."""
        self.raise_if_non_finite()
        seconds = self.timer.seconds()
        loss_sum, correct, seen = all_reduce_sum([self.loss_sum.item(), self.correct.item(), self.seen], self.device)
        return {"train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                "images_per_s": (seen - self.start.seen) / max(seconds - self.start.seconds, 1e-9),
                "train_s": seconds, "skipped_steps": int(self.skipped)}


class StepHook(Protocol):
    """Acts between two steps of an epoch: after every step, and once at its end."""

    def after_step(self, steps_done: int, tally: EpochTally) -> None:
        """``steps_done`` steps of the epoch are done; may raise :class:`TrainingStopped` to stop training."""

    def end_epoch(self) -> None:
        """The epoch's steps are done."""


class ProgressBar:
    """A terminal progress bar over the epoch's steps, with the latest loss."""

    def __init__(self, steps: int, start: int, epoch: int, epochs: int):
        self.bar = tqdm(total=steps - start, desc=f"epoch {epoch + 1}/{epochs}", leave=False, dynamic_ncols=True)

    def after_step(self, steps_done: int, tally: EpochTally) -> None:
        self.bar.update(1)
        if (steps_done - 1) % PROGRESS_EVERY == 0 and tally.last_loss is not None:
            self.bar.set_postfix(loss=f"{tally.last_loss.item():.3f}")

    def end_epoch(self) -> None:
        self.bar.close()
