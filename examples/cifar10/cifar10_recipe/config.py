"""The recipe's configuration as data: one frozen dataclass, every field a command-line flag.

A run's configuration is resolved as: dataclass defaults <- the preset's values <- flags given on the command line.
The resolved configuration is written to ``config.json`` in the run directory.
"""
import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from .presets import PRESETS


def _opt(default: Any, help: str, choices: Optional[Tuple[str, ...]] = None):
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Units are in the help strings."""

    # model
    model: str = _opt("dynconv_cifar", "registered timm model name")
    num_experts: Optional[int] = _opt(None, "branches K of every dynamic block (default: the model's own)")
    block: Optional[str] = _opt(None, "block kind of the model: branch, static, condconv, dyconv, odconv (default: the "
                                      "model's own)")
    num_classes: int = _opt(10, "logits of the classifier (the coursework used 20 for 10 classes)")
    drop_rate: Optional[float] = _opt(None, "dropout of the classifier head (default: the model's own)")
    # data
    data_dir: Optional[str] = _opt(None, "folder holding cifar-10-batches-py/ (default: $CIFAR10_ROOT, else ./data)")
    download: bool = _opt(False, "download CIFAR-10 with torchvision (md5-checked) if missing")
    subset: int = _opt(0, "train on a fixed random selection of N training images (0: all 50000)")
    test_subset: int = _opt(0, "evaluate on a fixed random selection of N test images (0: all 10000)")
    loader: str = _opt("tensor", "data pipeline: torchvision (PIL transforms in workers) or tensor (on-device batches)",
                       ("torchvision", "tensor"))
    workers: int = _opt(4, "DataLoader worker processes (torchvision loader)")
    crop_padding: int = _opt(4, "random-crop padding in pixels (0: no crop)")
    pad_mode: str = _opt("zeros", "random-crop padding mode", ("zeros", "reflect"))
    flip: str = _opt("random", "horizontal flips: random, alternate (airbench: flip every other epoch), none",
                     ("random", "alternate", "none"))
    cutout: int = _opt(16, "Cutout hole side in pixels (0: no Cutout)")
    cutout_holes: int = _opt(1, "Cutout holes per image")
    # optimisation
    epochs: int = _opt(50, "training epochs")
    batch_size: int = _opt(64, "images per optimizer step: the global batch, split evenly across torchrun processes")
    optimizer: str = _opt("adam", "optimizer", ("adam", "adamw", "sgd"))
    lr: float = _opt(1e-3, "peak learning rate")
    weight_decay: float = _opt(1e-4, "weight decay (L2 for adam and sgd, decoupled for adamw)")
    momentum: float = _opt(0.9, "SGD momentum")
    nesterov: bool = _opt(False, "Nesterov momentum (sgd)")
    decay_all: bool = _opt(True, "apply weight decay to norm and bias parameters too (the coursework did)")
    bias_lr_scale: float = _opt(1.0, "lr multiplier for BatchNorm shifts; their weight decay is divided by it, so "
                                     "every parameter decays equally per step (airbench uses 64)")
    schedule: str = _opt("step", "lr schedule: step (StepLR per epoch), linear (warm-up, linear decay to 0), cosine",
                         ("step", "linear", "cosine"))
    step_size: int = _opt(30, "StepLR period in epochs (schedule=step)")
    gamma: float = _opt(0.1, "StepLR factor (schedule=step)")
    warmup_epochs: float = _opt(0.0, "linear warm-up length in epochs (schedule=linear/cosine)")
    label_smoothing: float = _opt(0.0, "label smoothing of the cross-entropy loss")
    temperature_start: float = _opt(0.0, "anneal every routing temperature linearly from this value to 1 over "
                                         "--temperature-epochs (Dynamic Convolution uses 30; 0: off)")
    temperature_epochs: float = _opt(10.0, "length of the temperature annealing in epochs")
    ema_decay: float = _opt(0.0, "evaluate an exponential moving average of the weights with this per-step decay "
                                 "(0: off)")
    whiten: bool = _opt(False, "initialise a patch stem by patch whitening of training images and freeze its weights")
    # evaluation
    tta: int = _opt(0, "test-time augmentation at the final evaluation: 0 none, 1 mirror, 2 mirror and 1-pixel "
                       "translations (airbench94's level 2)")
    eval_every: int = _opt(1, "evaluate every N epochs (the last epoch is always evaluated)")
    # execution
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N")
    threads: int = _opt(0, "CPU threads for torch (0: torch's default)")
    amp: str = _opt("auto", "mixed precision: auto (bf16 on CUDA and on CPUs with native bf16, else off), bf16, "
                          "none", ("auto", "bf16", "none"))
    channels_last: bool = _opt(False, "channels-last memory format for model and batches")
    compile: bool = _opt(False, "torch.compile the model")
    sync_bn: bool = _opt(False, "with several processes (torchrun): BatchNorm statistics over the global batch")
    seed: int = _opt(0, "random seed (weights, data order, augmentation)")
    runs: int = _opt(1, "train this many runs with seeds seed, seed+1, ... and report mean and std")
    deterministic: bool = _opt(False, "deterministic algorithms: identical metrics for identical seeds")
    out: Optional[str] = _opt(None, "run directory (default: runs/<timestamp>-<preset>)")
    save_every: int = _opt(1, "write the resume checkpoint every N epochs (and after the last)")
    on_nan: str = _opt("stop", "on a non-finite loss: stop (naming the step; checked every 50 steps) or skip the step "
                               "(checked every step)", ("stop", "skip"))
    progress: str = _opt("auto", "progress bar: auto (only on a terminal), on, off", ("auto", "on", "off"))

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_every", "cutout_holes", "runs", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{_flag(name)} must be >= 1, got {getattr(self, name)}")
        for name in ("subset", "test_subset", "workers", "crop_padding", "cutout", "threads", "step_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if not self.bias_lr_scale > 0:
            raise ValueError(f"--bias-lr-scale must be > 0, got {self.bias_lr_scale}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if self.temperature_start < 0 or self.temperature_epochs <= 0:
            raise ValueError(f"--temperature-start must be >= 0 and --temperature-epochs > 0, got "
                             f"{self.temperature_start} and {self.temperature_epochs}")
        if self.tta not in (0, 1, 2):
            raise ValueError(f"--tta must be 0, 1 or 2, got {self.tta}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise ValueError(f"--warmup-epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"--{_flag(f.name)} must be one of {choices}, got {getattr(self, f.name)!r}")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _field_type(f: dataclasses.Field) -> type:
    hint = typing.get_type_hints(TrainConfig)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field. Defaults are suppressed, so only explicit flags reach the result."""
    group = parser.add_argument_group("training configuration (each overrides the preset)")
    for f in dataclasses.fields(TrainConfig):
        kind = _field_type(f)
        help_text = f"{f.metadata['help']} (default {f.default!r})"
        if kind is bool:
            group.add_argument(f"--{_flag(f.name)}", action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(f"--{_flag(f.name)}", type=kind, default=argparse.SUPPRESS,
                               choices=f.metadata.get("choices"), help=help_text, metavar=kind.__name__.upper())


def resolve_config(preset: str, overrides: Dict[str, Any], base: Optional[Dict[str, Any]] = None) -> TrainConfig:
    """Defaults <- ``base`` (a saved config) or the preset <- ``overrides``."""
    if preset not in PRESETS:
        raise ValueError(f"--preset must be one of {tuple(PRESETS)}, got {preset!r}")
    values = dict(PRESETS[preset] if base is None else base)
    values.update(overrides)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown configuration keys {sorted(unknown)}")
    return TrainConfig(**values)


def config_differences(old: Dict[str, Any], new: Dict[str, Any]) -> Dict[str, Tuple[Any, Any]]:
    """Fields whose values differ between two configurations, as name -> (old, new)."""
    return {name: (old.get(name), new.get(name)) for name in sorted(set(old) | set(new))
            if old.get(name) != new.get(name)}


def presets_help() -> str:
    lines = ["presets (values that differ from the defaults):"]
    for name, values in PRESETS.items():
        lines.append(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    return "\n".join(lines)


def model_arguments(config: TrainConfig) -> Dict[str, Any]:
    """The ``timm.create_model`` arguments the configuration sets (the model's own defaults for the rest)."""
    overrides = {name: getattr(config, name) for name in ("num_experts", "drop_rate", "block")
                 if getattr(config, name) is not None}
    return {"num_classes": config.num_classes, **overrides}


#: Configuration keys renamed since runs were first recorded: old name -> new name.
RENAMED_KEYS = {"num_convs": "num_experts"}


def upgrade_config_dict(values: Dict[str, Any]) -> Dict[str, Any]:
    """A saved configuration with renamed keys (:data:`RENAMED_KEYS`) under their current names, so that runs and
    checkpoints written before a rename still resume and load."""
    return {RENAMED_KEYS.get(name, name): value for name, value in values.items()}


def load_config_file(path) -> Dict[str, Any]:
    with open(path) as file:
        return upgrade_config_dict(json.load(file))
