"""The trainer: a model with everything that updates it (optimizer, lr schedule, weight average, precision,
processes, compilation, routing schedules), and one epoch of training.

It knows nothing of run folders: :mod:`cifar10_recipe.run_manager` decides when to train, evaluate and save, through
the hooks it passes to :meth:`Trainer.train_epoch`.
"""
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from dynconv import init_blend_schedule, routing_modules, temperature_schedule
from dynconv.temperature import init_blend_modules

from .config import TrainConfig
from .distributed import SINGLE_PROCESS, Distributed, convert_sync_batchnorm
from .epoch import EpochProgress, EpochTally, StepHook
from .evaluation import evaluate
from .execution import autocast_context
from .loaders import Loader
from .lookahead import Lookahead
from .model_setup import WHITENING_IMAGES, build_model, count_flops, patch_stem, whiten_stem
from .optimization import build_optimizer, lr_factors


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
        self.schedules: List[RoutingSchedule] = []
        if config.temperature_start:
            self.schedules.append(RoutingSchedule(
                temperature_schedule(config.temperature_start, 1.0, config.temperature_epochs),
                [r for m in annealed for r in routing_modules(m)], "set_temperature"))
        if config.init_blend_epochs:
            self.schedules.append(RoutingSchedule(init_blend_schedule(config.init_blend_epochs),
                                                   [r for m in annealed for r in init_blend_modules(m)],
                                                   "set_init_blend"))

    @property
    def eval_model(self) -> nn.Module:
        """The model that is evaluated and saved as the best weights: the weight average if there is one."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def train_epoch(self, loader: Loader, epoch: int, hooks: Sequence[StepHook] = (),
                    progress: Optional[EpochProgress] = None) -> Dict[str, float]:
        """One pass over ``loader`` as epoch ``epoch`` (0-based), or the rest of one from ``progress`` (a checkpoint
        inside the epoch; the loader must start at ``progress.step``), with ``hooks`` called after every step (they
        may write checkpoints or stop training: :class:`~cifar10_recipe.epoch.TrainingStopped`). Returns the epoch's
        training metrics; a non-finite loss raises :class:`~cifar10_recipe.epoch.NonFiniteLossError` unless
        ``--on-nan skip`` skips its step (:class:`~cifar10_recipe.epoch.EpochTally`).
        """
        start = progress or EpochProgress()
        first_step = epoch * self.steps_per_epoch
        tally = EpochTally(loader.device, start, first_step, self.distributed)
        self.begin_epoch(epoch)
        for step, (images, labels) in enumerate(loader, start=start.step):
            for schedule in self.schedules:
                schedule.apply(epoch + step / self.steps_per_epoch)
            with self.autocast:
                logits = self.step_model(images)
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing)
            skipped = self.config.on_nan == "skip" and not self._all_finite(loss)
            if not skipped:
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
            self._advance(first_step + step + 1, updated=not skipped)
            tally.count(step, loss, logits, labels, skipped)
            for hook in hooks:
                hook.after_step(step + 1, tally)
        for hook in hooks:
            hook.end_epoch()
        return tally.result()

    def begin_epoch(self, epoch: int) -> None:
        """Train mode, and the whitened stem's bias frozen from ``--whiten-bias-epochs`` on."""
        self.step_model.train()
        if self.config.whiten_bias_epochs:
            patch_stem(self.model).bias.requires_grad_(epoch < self.config.whiten_bias_epochs)

    def _advance(self, global_step: int, updated: bool) -> None:
        """After step ``global_step`` (counted from 1): the lr schedule and the lookahead average move on (a skipped
        step too, so that the schedule stays on time), the weight average takes an update."""
        self.scheduler.step()
        if self.lookahead is not None:
            self.lookahead.step(self.model, global_step)
        if updated and self.ema is not None:
            self.ema.update_parameters(self.model)

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
