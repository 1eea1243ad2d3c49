"""The trainer: a model with everything that updates it (optimizer, lr schedule, weight average, precision,
processes, compilation, routing temperature), one epoch of training, and evaluation with test-time augmentation.

It knows nothing of run folders: :mod:`cifar10_recipe.run_manager` decides when to train, evaluate and save.
"""
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

import timm
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from dynconv import RoutingRecorder, init_blend_schedule, routing_modules, temperature_schedule
from dynconv.models import list_models
from dynconv.temperature import init_blend_modules

from .config import NORMALIZATIONS, TrainConfig, model_arguments
from .distributed import SINGLE_PROCESS, Distributed, all_reduce_sum, convert_sync_batchnorm
from .execution import autocast_context
from .loaders import Loader
from .lookahead import Lookahead
from .optimization import build_optimizer, lr_factors
from .report import routing_health
from .whitening import init_patch_whitening

NAN_CHECK_EVERY = 50  # steps between checks for a non-finite loss (each check synchronises a GPU)
WHITENING_IMAGES = 5000  # training images whose patch covariance initialises a whitened stem


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


class StepControl(Protocol):
    """What the run manager decides between steps (the same answer in every process)."""

    def poll(self, steps_done: int) -> Tuple[bool, bool]:
        """(write a checkpoint now, stop now) after ``steps_done`` steps of the current epoch."""

    def save(self, progress: EpochProgress) -> None:
        """Write a checkpoint inside the epoch, at ``progress``."""


class TrainingStopped(Exception):  # noqa: N818 (a requested stop, not an error)
    """Training stopped between two steps because the run manager asked (a stop signal); ``progress`` says where."""

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


def check_model(config: TrainConfig) -> None:
    """Build the configured model on the meta device (no memory, no compute), so that a bad model name, override or
    ``--whiten`` on a model without a patch stem fails before anything is written to the run folder."""
    if not timm.is_model(config.model):
        raise ValueError(f"--model {config.model!r} is not a registered model; dynconv's are "
                         f"{', '.join(list_models())}")
    arguments = model_arguments(config)
    try:
        model = timm.create_model(config.model, device="meta", **arguments)
    except ValueError:
        raise
    except Exception as error:  # an override the model does not take, e.g. --block for a timm ResNet
        raise ValueError(f"--model {config.model} cannot be built with {arguments}: {error}") from None
    if config.whiten:
        patch_stem(model)


def build_model(config: TrainConfig, device: torch.device) -> nn.Module:
    """The configured model on ``device`` (channels-last with ``--channels-last``)."""
    model = timm.create_model(config.model, **model_arguments(config)).to(device)
    return model.to(memory_format=torch.channels_last) if config.channels_last else model


def patch_stem(model: nn.Module) -> nn.Conv2d:
    """The convolution of ``model``'s patch stem (``stem="patch"``: unpadded, with a bias), which ``--whiten``
    initialises; ``ValueError`` if the model has none."""
    conv = getattr(getattr(model, "stem", None), "conv", None)
    if not isinstance(conv, nn.Conv2d) or conv.bias is None or conv.padding != (0, 0):
        raise ValueError("--whiten needs a model with a patch stem (stem='patch'), such as dynconv_cifar_fast")
    return conv


def whiten_stem(model: nn.Module, images: torch.Tensor, normalization: str) -> None:
    """Initialise ``model``'s patch stem by patch whitening of ``images`` (uint8, (N, 3, H, W)), normalised as the
    loaders normalise them, and freeze its weights (its bias trains; ``--whiten-bias-epochs`` freezes it later)."""
    conv = patch_stem(model)
    mean, std = (torch.tensor(v, device=images.device).view(1, -1, 1, 1) for v in NORMALIZATIONS[normalization])
    init_patch_whitening(conv, (images.float() / 255 - mean) / std)
    conv.weight.requires_grad_(False)


def count_flops(model: nn.Module, device: torch.device) -> int:
    """Forward FLOPs for one 3x32x32 image (eval mode; multiply-adds count as two)."""
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32, device=device))
    model.train(was_training)
    return counter.get_total_flops()


def tta_logits(model: nn.Module, images: torch.Tensor, tta: int, logits: torch.Tensor) -> torch.Tensor:
    """``logits`` (the model's on ``images``) averaged over test-time augmentations: level 1 adds the mirror image,
    level 2 also the image translated by one pixel up-left and down-right (reflect padding), each mirrored too
    (airbench94's level 2).

    Shape:
        - images: (B, C, H, W)
        - logits: (B, num_classes), returned likewise
    """
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
def evaluate(model: nn.Module, loader: Loader, autocast=None, tta: int = 0) -> Dict[str, Any]:
    """Test loss and accuracy of ``model`` on ``loader``; with ``tta`` > 0 also the accuracy of the
    test-time-augmented logits. For a model with routers also their health per stage on the test images (plain
    forward passes only; :func:`~cifar10_recipe.report.routing_health`). Sums over processes when there are several.
    """
    model.eval()
    autocast = autocast or nullcontext()
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
        result["routing"] = routing_health(recorder.weights, recorder.attentions)
    return result


class _EpochTimer:
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


class RoutingSchedule:
    """A value of the routing networks that follows a schedule over (fractional) epochs: ``setter`` of every module
    in ``modules``, called only when the value changes."""

    def __init__(self, schedule: Callable[[float], float], modules: List[nn.Module], setter: str):
        self.schedule, self.modules, self.setter = schedule, modules, setter
        self.current: Optional[float] = None

    def apply(self, epochs_done: float) -> None:
        value = self.schedule(epochs_done)
        if value != self.current:
            for module in self.modules:
                getattr(module, self.setter)(value)
            self.current = value


class Trainer:
    """A model and everything that updates it.

    Builds the model (seeded with ``config.seed``; patch-whitened with ``--whiten``; BatchNorm scales frozen with
    ``--freeze-norm-weights``), the optimizer, a per-step learning-rate schedule of ``steps_per_epoch`` steps per
    epoch, the weight averages (``--ema-decay``, ``--lookahead-every``), the autocast context, the
    DistributedDataParallel wrapper and ``torch.compile`` of the train step, and the routing-temperature annealing.

    Args:
        config: The run's configuration.
        device: Where to train.
        steps_per_epoch: Optimizer steps per epoch (the train loader's length).
        whitening_images: uint8 training images, (N, 3, H, W), for ``--whiten``.
        distributed: This process's place in a multi-process job.
    """

    def __init__(self, config: TrainConfig, device: torch.device, steps_per_epoch: int,
                 whitening_images: Optional[torch.Tensor] = None, distributed: Distributed = SINGLE_PROCESS):
        self.config, self.distributed = config, distributed
        self.steps_per_epoch = steps_per_epoch
        torch.manual_seed(config.seed)
        model = build_model(config, device)
        if config.whiten:
            whiten_stem(model, whitening_images[:WHITENING_IMAGES].to(device), config.normalization)
        if config.freeze_norm_weights:
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                    module.weight.requires_grad_(False)
        if config.sync_bn and distributed.enabled:
            model = convert_sync_batchnorm(model, device)
        self.model = model
        self.optimizer = build_optimizer(config, model, patch_stem(model).bias if config.whiten else None)
        self.lookahead = (Lookahead(model, config.lookahead_every, config.epochs * steps_per_epoch,
                                    config.lookahead_decay) if config.lookahead_every else None)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           lr_factors(config, steps_per_epoch, self.optimizer))
        self.ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
                    if config.ema_decay else None)
        self.autocast = autocast_context(config, device)
        self.params = sum(p.numel() for p in model.parameters())
        self.flops = count_flops(model, device)
        step_model = model
        if distributed.enabled:
            step_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if config.compile != "none":
            step_model = torch.compile(step_model, mode=None if config.compile == "default" else config.compile)
        self.step_model = step_model
        # the routing schedules' modules are found once, and set only when the value changes: annealing runs before
        # every step. The average's routers follow the schedules too: temperatures and blends are buffers outside
        # the checkpoint (persistent=False), which the average would otherwise average, so a resumed run would
        # evaluate at another value
        annealed = [model] + ([self.ema.module] if self.ema is not None else [])
        self._schedules: List[RoutingSchedule] = []
        if config.temperature_start:
            self._schedules.append(RoutingSchedule(
                temperature_schedule(config.temperature_start, 1.0, config.temperature_epochs),
                [r for m in annealed for r in routing_modules(m)], "set_temperature"))
        if config.init_blend_epochs:
            self._schedules.append(RoutingSchedule(init_blend_schedule(config.init_blend_epochs),
                                                   [r for m in annealed for r in init_blend_modules(m)],
                                                   "set_init_blend"))

    @property
    def eval_model(self) -> nn.Module:
        """The model that is evaluated and saved as the best weights: the weight average if there is one."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def train_epoch(self, loader: Loader, epoch: int, show_progress: bool = False,
                    progress: Optional[EpochProgress] = None, control: Optional[StepControl] = None
                    ) -> Dict[str, float]:
        """One pass over ``loader`` as epoch ``epoch`` (0-based), or the rest of one from ``progress`` (a checkpoint
        inside the epoch; the loader must start at ``progress.step``). Training time is measured with CUDA events on a
        GPU (data augmentation included).

        After every step ``control`` (the run manager) may have a checkpoint written (:meth:`StepControl.save`) or
        training stopped: then :class:`TrainingStopped` is raised with the epoch's progress, after the step.

        A non-finite loss raises :class:`NonFiniteLossError` (checked every ``NAN_CHECK_EVERY`` steps and before any
        checkpoint, naming the first bad step counted from the start of training) or, with ``--on-nan skip``, skips
        that step (checked every step). With several processes the decisions are agreed across them and the metrics
        summed over them.
        """
        config, model, device = self.config, self.step_model, loader.device
        progress = progress or EpochProgress()
        model.train()
        if config.whiten_bias_epochs:
            patch_stem(self.model).bias.requires_grad_(epoch < config.whiten_bias_epochs)
        # the sums so far are global ones: the main process carries them, the others add their own from zero
        carried = self.distributed.is_main
        total_loss = torch.full((), progress.loss_sum if carried else 0.0, device=device, dtype=torch.float64)
        correct = torch.full((), progress.correct if carried else 0, device=device, dtype=torch.long)
        first_bad = torch.full((), -1, device=device, dtype=torch.long)
        # skipped steps are agreed across processes, so each counts all of them
        seen, skipped = progress.seen if carried else 0, progress.skipped
        first_step = epoch * self.steps_per_epoch
        timer = _EpochTimer(device, progress.seconds)
        steps = self.steps_per_epoch
        bar = tqdm(loader, total=steps - progress.step, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                   disable=not show_progress, dynamic_ncols=True)
        for step, (images, labels) in enumerate(bar, start=progress.step):
            for schedule in self._schedules:
                schedule.apply(epoch + step / steps)
            with self.autocast:
                logits = model(images)
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=config.label_smoothing)
            if config.on_nan == "skip" and not self._all_finite(loss):
                skipped += 1
                self.scheduler.step()
                if self.lookahead is not None:
                    self.lookahead.step(self.model, first_step + step + 1)
            else:
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                if self.lookahead is not None:
                    self.lookahead.step(self.model, first_step + step + 1)
                if self.ema is not None:
                    self.ema.update_parameters(self.model)
                total_loss += loss.detach().double() * len(labels)
                correct += (logits.argmax(dim=1) == labels).sum()
                seen += len(labels)
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), first_step + step,
                                        first_bad)
                if (step + 1) % NAN_CHECK_EVERY == 0:
                    self._raise_if_non_finite(first_bad)
                if show_progress and step % 20 == 0:
                    bar.set_postfix(loss=f"{loss.item():.3f}")
            checkpoint_now, stop_now = control.poll(step + 1) if control is not None else (False, False)
            if (checkpoint_now or stop_now) and step + 1 < steps:
                self._raise_if_non_finite(first_bad)
                done = self._progress(step + 1, total_loss, correct, seen, skipped, timer.seconds(), device)
                if stop_now:
                    raise TrainingStopped(done)
                control.save(done)
        self._raise_if_non_finite(first_bad)
        seconds = timer.seconds()
        total_loss, correct, seen = all_reduce_sum([total_loss.item(), correct.item(), seen], device)
        return {"train_loss": total_loss / max(seen, 1), "train_acc": correct / max(seen, 1),
                "images_per_s": (seen - progress.seen) / max(seconds - progress.seconds, 1e-9),
                "train_s": seconds, "skipped_steps": int(skipped)}

    def _progress(self, step: int, total_loss: torch.Tensor, correct: torch.Tensor, seen: int, skipped: int,
                  seconds: float, device: torch.device) -> EpochProgress:
        """The epoch's progress after ``step`` steps, summed over processes, with every process's RNG state."""
        loss_sum, correct_sum, seen_sum = all_reduce_sum([total_loss.item(), correct.item(), seen], device)
        states = [rng_state(device)]
        if self.distributed.enabled:
            states = [None] * self.distributed.world_size
            dist.all_gather_object(states, {k: v.cpu() for k, v in rng_state(device).items()})
        return EpochProgress(step=step, loss_sum=loss_sum, correct=int(correct_sum), seen=int(seen_sum),
                             skipped=skipped, seconds=seconds, rng_states=states)

    def evaluate(self, loader: Loader, tta: int = 0) -> Dict[str, Any]:
        """:func:`evaluate` of the weight average (or the model), eager: a compiled evaluation graph would cost
        another compilation for little gain."""
        return evaluate(self.eval_model, loader, self.autocast, tta)

    def weights_finite(self) -> bool:
        return all(torch.isfinite(p).all() for p in self.model.parameters())

    def state_dict(self) -> Dict[str, Any]:
        """What resuming needs besides the model's weights: optimizer, schedule and weight-average state."""
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.lookahead is not None:
            state["lookahead"] = self.lookahead.state_dict()
        return state

    def load_state_dict(self, weights: Dict[str, torch.Tensor], state: Dict[str, Any]) -> None:
        """Restore the model's ``weights`` and the :meth:`state_dict` ``state``."""
        self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if self.lookahead is not None:
            self.lookahead.load_state_dict(state["lookahead"])

    def _all_finite(self, loss: torch.Tensor) -> bool:
        finite = torch.isfinite(loss).to(torch.int32)
        if self.distributed.enabled:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite.item())

    def _raise_if_non_finite(self, first_bad: torch.Tensor) -> None:
        if self.distributed.enabled:
            first_bad = first_bad.clone()
            dist.all_reduce(first_bad, op=dist.ReduceOp.MAX)
        if first_bad.item() >= 0:
            raise NonFiniteLossError(int(first_bad.item()))
