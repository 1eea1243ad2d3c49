"""The recipe's configuration as data: one frozen dataclass, every field a command-line flag.

A run's configuration is resolved as: dataclass defaults <- the preset's values <- flags given on the command line.
The resolved configuration is written to ``config.json`` in the run directory.

What each field is for is metadata on the field, not a list kept elsewhere: ``model=True`` fields are
``timm.create_model`` arguments (:func:`model_arguments`), ``resumable=True`` fields may change when a run is resumed
because they do not change what is computed (:func:`resumable_fields`).
"""
import argparse
import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from dynconv.layers import block_kinds
from dynconv.models.dynconvnet import CIFAR10_MEAN, CIFAR10_STD

from .presets import PRESETS

#: Side of a CIFAR-10 image in pixels.
IMAGE_SIZE = 32


def _opt(default: Any, help: str, choices: Optional[Tuple[str, ...]] = None, model: bool = False,
         resumable: bool = False):
    return field(default=default, metadata={"help": help, "choices": choices, "model": model, "resumable": resumable})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Units are in the help strings."""

    # model
    model: str = _opt("dynconv_cifar", "registered timm model name")
    num_experts: Optional[int] = _opt(None, "branches K of every dynamic block (default: the model's own)", model=True)
    block: Optional[str] = _opt(None, f"block kind of the model: {', '.join(block_kinds())} (default: the model's "
                                      "own)", model=True)
    num_classes: int = _opt(10, "logits of the classifier (the coursework used 20 for 10 classes)", model=True)
    drop_rate: Optional[float] = _opt(None, "dropout of the classifier head (default: the model's own)", model=True)
    model_kwargs: str = _opt("", "further timm.create_model arguments as a JSON object, e.g. any DynConvNetCfg field: "
                                 "'{\"num_experts\": [[1, 2], [1, 2], [1, 2]], \"kernel_size\": [1, 3]}'")
    # data
    data_dir: Optional[str] = _opt(None, "folder holding cifar-10-batches-py/ (default: $CIFAR10_ROOT, else ./data)",
                                   resumable=True)
    download: bool = _opt(False, "download CIFAR-10 with torchvision (md5-checked) if missing", resumable=True)
    subset: int = _opt(0, "train on a fixed random selection of N training images (0: all 50000)")
    test_subset: int = _opt(0, "evaluate on a fixed random selection of N test images (0: all 10000)")
    loader: str = _opt("tensor", "data pipeline: torchvision (PIL transforms in workers) or tensor (on-device batches)",
                       ("torchvision", "tensor"))
    workers: Optional[int] = _opt(None, "DataLoader worker processes (torchvision loader; default: up to 4, no more "
                                        "than the CPUs each process has)", resumable=True)
    normalization: str = _opt("cifar10", "input normalisation: cifar10 (the training set's per-channel mean and std) "
                                         "or coursework (0.5 and 0.5, as the coursework did)",
                              ("cifar10", "coursework"))
    crop_padding: int = _opt(4, "random-crop padding in pixels (0: no crop)")
    pad_mode: str = _opt("zeros", "random-crop padding mode", ("zeros", "reflect"))
    flip: str = _opt("random", "horizontal flips: random, alternate (airbench: flip every other epoch), none",
                     ("random", "alternate", "none"))
    cutout: int = _opt(16, "Cutout hole side in pixels (0: no Cutout)")
    cutout_holes: int = _opt(1, "Cutout holes per image")
    # optimisation
    epochs: int = _opt(50, "training epochs")
    batch_size: int = _opt(64, "images per optimizer step: the global batch, split evenly across torchrun processes")
    optimizer: str = _opt("adam", "optimizer: adam, adamw, sgd, or muon (Muon for the convolution filters, SGD with "
                                  "--lr, --momentum, --nesterov, --weight-decay for the rest; airbench94_muon)",
                          ("adam", "adamw", "sgd", "muon"))
    lr: float = _opt(1e-3, "peak learning rate")
    weight_decay: float = _opt(1e-4, "weight decay (L2 for adam and sgd, decoupled for adamw)")
    momentum: float = _opt(0.9, "SGD momentum")
    nesterov: bool = _opt(False, "Nesterov momentum (sgd, muon)")
    muon_lr: float = _opt(0.24, "Muon's lr for the convolution filters (optimizer=muon): the size of each step "
                                "relative to the filters, whose norm Muon keeps fixed")
    muon_momentum: float = _opt(0.6, "Muon's momentum for the convolution filters (optimizer=muon)")
    decay_all: bool = _opt(True, "apply weight decay to norm and bias parameters too (the coursework did)")
    bias_lr_scale: float = _opt(1.0, "lr multiplier for BatchNorm shifts; their weight decay is divided by it, so "
                                     "every parameter decays equally per step (airbench uses 64)")
    routing_lr_scale: float = _opt(1.0, "lr multiplier for the routing heads (every dynconv Router's parameters); "
                                        "their weight decay is divided by it, so they decay per step as before")
    routing_decay_scale: float = _opt(1.0, "multiplier of the routing heads' per-step weight decay (0: no decay on "
                                           "them)")
    schedule: str = _opt("step", "lr schedule: step (StepLR per epoch), linear (warm-up, linear decay to 0), cosine, "
                                 "or triangle (airbench94: linear from --lr-start-factor to the peak at "
                                 "--warmup-epochs, then linear to --lr-end-factor at the last step)",
                         ("step", "linear", "cosine", "triangle"))
    step_size: int = _opt(30, "StepLR period in epochs (schedule=step)")
    gamma: float = _opt(0.1, "StepLR factor (schedule=step)")
    warmup_epochs: float = _opt(0.0, "linear warm-up length in epochs (schedule=linear/cosine/triangle)")
    lr_start_factor: float = _opt(0.0, "lr of the first step as a fraction of --lr (schedule=triangle)")
    lr_end_factor: float = _opt(0.0, "lr of the last step as a fraction of --lr (schedule=triangle)")
    label_smoothing: float = _opt(0.0, "label smoothing of the cross-entropy loss")
    temperature_start: float = _opt(0.0, "anneal every routing temperature linearly from this value to 1 over "
                                         "--temperature-epochs (Dynamic Convolution uses 30; 0: off)")
    temperature_epochs: float = _opt(10.0, "length of the temperature annealing in epochs")
    init_blend_epochs: float = _opt(0.0, "KernelWarehouse: anneal each layer's init blend (its fixed cell assignment "
                                         "against its attention) from 1 to 0 over this many epochs (the authors: 20 of "
                                         "ResNet's 300 epochs; 0: off, the attention alone from the start)")
    ema_decay: float = _opt(0.0, "evaluate an exponential moving average of the weights with this per-step decay "
                                 "(0: off)")
    lookahead_every: int = _opt(0, "lookahead weight averaging (airbench94): every N steps a slow copy of the weights "
                                   "and BatchNorm statistics moves toward the model, which restarts from it; the "
                                   "model ends as the slow copy (0: off)")
    lookahead_decay: float = _opt(0.95, "per-step decay of the lookahead average at the end of training; it grows as "
                                        "(step / total steps) cubed")
    freeze_norm_weights: bool = _opt(False, "keep every BatchNorm scale at 1 (not trained; airbench94)")
    whiten: bool = _opt(False, "initialise a patch stem by patch whitening of training images and freeze its weights")
    whiten_bias_epochs: int = _opt(0, "with --whiten: train the stem's bias for this many epochs, then freeze it "
                                      "(airbench94: 3; 0: it trains throughout)")
    whiten_bias_lr_scale: float = _opt(1.0, "with --whiten: lr multiplier for the stem's bias; its weight decay is "
                                            "divided by it (airbench94_muon: 64, as for BatchNorm shifts)")
    whiten_bias_decay: bool = _opt(False, "with --whiten-bias-epochs: the stem bias's lr decays linearly from its peak "
                                          "to 0 over those epochs (airbench94_muon) instead of following --schedule "
                                          "until it freezes (airbench94)")
    # evaluation
    tta: int = _opt(0, "test-time augmentation at the final evaluation: 0 none, 1 mirror, 2 mirror and 1-pixel "
                       "translations (airbench94's level 2)")
    eval_every: int = _opt(1, "evaluate every N epochs (the last epoch is always evaluated)")
    # execution
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N", resumable=True)
    threads: int = _opt(0, "CPU threads for torch (0: torch's default)", resumable=True)
    amp: str = _opt("auto", "mixed precision: auto (bf16 on CUDA and on CPUs with native bf16, else off), bf16, "
                          "none", ("auto", "bf16", "none"))
    channels_last: bool = _opt(False, "channels-last memory format for model and batches")
    reuse_memory: bool = _opt(True, "keep freed memory in the C heap (glibc mallopt), so that each step reuses the "
                                    "last step's pages instead of faulting in new ones (the process holds its peak "
                                    "memory)", resumable=True)
    compile: str = _opt("none", "torch.compile the train step: none, default, max-autotune, or reduce-overhead (CUDA "
                                "graphs); evaluation stays eager",
                        ("none", "default", "max-autotune", "reduce-overhead"))
    sync_bn: bool = _opt(False, "with several processes (torchrun): BatchNorm statistics over the global batch")
    seed: int = _opt(0, "random seed (weights, data order, augmentation)")
    runs: int = _opt(1, "train this many runs with seeds seed, seed+1, ... and report mean and std")
    deterministic: bool = _opt(False, "deterministic algorithms: identical metrics for identical seeds")
    out: Optional[str] = _opt(None, "run directory (default: runs/<timestamp>-<preset>)", resumable=True)
    save_every: int = _opt(1, "write the resume checkpoint every N epochs (and after the last)", resumable=True)
    checkpoint_every: str = _opt("0", "also write one inside epochs: every N steps ('200') or every N seconds or "
                                      "minutes of training ('90s', '15m'); 0: at epoch ends only", resumable=True)
    keep_checkpoints: int = _opt(2, "checkpoints kept (the newest, and older ones to fall back to if it is damaged)",
                                 resumable=True)
    on_nan: str = _opt("stop", "on a non-finite loss: stop (naming the step; checked every 50 steps) or skip the step "
                               "(checked every step)", ("stop", "skip"), resumable=True)
    progress: str = _opt("auto", "progress bar: auto (only on a terminal), on, off", ("auto", "on", "off"),
                         resumable=True)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            _check_type(f, getattr(self, f.name))
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"--{_flag(f.name)} must be one of {choices}, got {getattr(self, f.name)!r}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"--{_flag(f.name)} must be a finite number, got {value}")
        checkpoint_interval(self.checkpoint_every)
        for name in ("epochs", "batch_size", "eval_every", "cutout_holes", "runs", "save_every", "num_classes",
                     "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{_flag(name)} must be >= 1, got {getattr(self, name)}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers}")
        for name in ("subset", "test_subset", "crop_padding", "cutout", "threads", "step_size",
                     "lookahead_every", "whiten_bias_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "bias_lr_scale", "routing_lr_scale", "gamma", "temperature_epochs", "muon_lr",
                     "whiten_bias_lr_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{_flag(name)} must be > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "routing_decay_scale", "warmup_epochs", "temperature_start", "init_blend_epochs",
                     "lr_start_factor",
                     "lr_end_factor"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        for name in ("momentum", "muon_momentum", "ema_decay", "label_smoothing", "lookahead_decay"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"--{_flag(name)} must be in [0, 1), got {getattr(self, name)}")
        if self.drop_rate is not None and not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"--drop-rate must be in [0, 1), got {self.drop_rate}")
        if self.num_experts is not None and self.num_experts < 1:
            raise ValueError(f"--num-experts must be >= 1, got {self.num_experts}")
        if self.whiten_bias_epochs and not self.whiten:
            raise ValueError(f"--whiten-bias-epochs {self.whiten_bias_epochs} needs --whiten")
        if self.whiten_bias_decay and not self.whiten_bias_epochs:
            raise ValueError("--whiten-bias-decay needs --whiten-bias-epochs > 0 (the epochs over which it decays)")
        if self.whiten_bias_lr_scale != 1.0 and not self.whiten:
            raise ValueError(f"--whiten-bias-lr-scale {self.whiten_bias_lr_scale} needs --whiten")
        given = sorted(set(self.parsed_model_kwargs) & set(_flag_model_arguments(self)))
        if given:
            raise ValueError(f"--model-kwargs sets {given}, which their own flags set too; give each once")
        if self.tta not in (0, 1, 2):
            raise ValueError(f"--tta must be 0, 1 or 2, got {self.tta}")
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"--warmup-epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        if self.crop_padding >= IMAGE_SIZE or self.cutout > IMAGE_SIZE:
            raise ValueError(f"--crop-padding must be < {IMAGE_SIZE} and --cutout <= {IMAGE_SIZE} (the image side), "
                             f"got {self.crop_padding} and {self.cutout}")
        if self.loader == "torchvision" and (self.pad_mode != "zeros" or self.flip == "alternate"):
            raise ValueError(f"--loader torchvision supports --pad-mode zeros and --flip random or none only, got "
                             f"--pad-mode {self.pad_mode} --flip {self.flip} (use --loader tensor)")

    @property
    def parsed_model_kwargs(self) -> Dict[str, Any]:
        """``--model-kwargs`` as a dict (``{}`` when empty)."""
        if not self.model_kwargs:
            return {}
        try:
            value = json.loads(self.model_kwargs)
        except ValueError as error:
            raise ValueError(f"--model-kwargs must be a JSON object, got {self.model_kwargs!r} ({error})") from None
        if not isinstance(value, dict):
            raise ValueError(f"--model-kwargs must be a JSON object, got {self.model_kwargs!r}")
        return value

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _check_type(f: dataclasses.Field, value: Any) -> None:
    """Reject a value of the wrong type (a config.json edited by hand) and non-finite numbers, naming the flag."""
    kind = _field_type(f)
    if value is None and f.default is None:
        return
    # bool is an int to Python, but --epochs true is not a number of epochs
    ok = (isinstance(value, bool) if kind is bool else
          isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else
          isinstance(value, int) and not isinstance(value, bool) if kind is int else isinstance(value, kind))
    if not ok:
        raise ValueError(f"--{_flag(f.name)} must be {kind.__name__}, got {value!r} ({type(value).__name__})")
    if kind is float and not math.isfinite(value):
        raise ValueError(f"--{_flag(f.name)} must be a finite number, got {value}")


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
    """The ``timm.create_model`` arguments the configuration sets: its ``model=True`` fields that are not ``None``
    (``None`` keeps the model's own default), and those of ``--model-kwargs``."""
    return {**_flag_model_arguments(config), **config.parsed_model_kwargs}


def _flag_model_arguments(config: TrainConfig) -> Dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(TrainConfig)
            if f.metadata["model"] and getattr(config, f.name) is not None}


def checkpoint_interval(value: str) -> Tuple[str, float]:
    """``--checkpoint-every`` as (unit, amount): ``("steps", 200)``, ``("seconds", 900.0)``, or ``("off", 0)``.

    Example:
        >>> checkpoint_interval("200"), checkpoint_interval("15m"), checkpoint_interval("0")
        (('steps', 200), ('seconds', 900.0), ('off', 0))
    """
    text = value.strip().lower()
    try:
        if text.endswith(("s", "m")):
            amount = float(text[:-1]) * (60 if text.endswith("m") else 1)
            if math.isfinite(amount) and amount > 0:
                return "seconds", amount
        elif int(text) >= 0:
            return ("steps", int(text)) if int(text) else ("off", 0)
    except ValueError:
        pass
    raise ValueError(f"--checkpoint-every must be a number of steps ('200'), seconds ('90s') or minutes ('15m'), or "
                     f"0; got {value!r}")


def resumable_fields() -> frozenset:
    """Names of the fields that may change when a run is resumed (``resumable=True``): where and how it runs, not
    what it computes."""
    return frozenset(f.name for f in dataclasses.fields(TrainConfig) if f.metadata["resumable"])


#: Input normalisation (per-channel mean, std of pixel values in [0, 1]) by ``--normalization``; the coursework
#: normalised with 0.5 and 0.5.
NORMALIZATIONS = {"cifar10": (CIFAR10_MEAN, CIFAR10_STD), "coursework": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}

#: Configuration keys renamed since runs were first recorded: old name -> new name.
RENAMED_KEYS = {"num_convs": "num_experts"}
# before --normalization existed, these models' cfgs carried the coursework's normalisation and the recipe used it
_COURSEWORK_NORMALIZED_MODELS = ("dynconv_cifar", "dynconv_cifar_static", "dynconv_cifar_condconv",
                                 "dynconv_cifar_dyconv", "dynconv_cifar_odconv")


def upgrade_config_dict(values: Dict[str, Any]) -> Dict[str, Any]:
    """A saved configuration in today's terms, so that runs and checkpoints written before a change still resume and
    load: renamed keys (:data:`RENAMED_KEYS`) under their current names, and the normalisation they were trained with
    where it was implicit."""
    upgraded = {RENAMED_KEYS.get(name, name): value for name, value in values.items()}
    if isinstance(upgraded.get("compile"), bool):  # before the modes, --compile was on or off
        upgraded["compile"] = "default" if upgraded["compile"] else "none"
    if "normalization" not in upgraded and "model" in upgraded:
        upgraded["normalization"] = ("coursework" if upgraded["model"] in _COURSEWORK_NORMALIZED_MODELS
                                     else "cifar10")
    return upgraded


def load_config_file(path) -> Dict[str, Any]:
    """A saved ``config.json`` as a dict in today's terms; ``ValueError`` naming the file if it is not a JSON object."""
    try:
        with open(path) as file:
            values = json.load(file)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable configuration ({error})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path} is not a configuration: expected a JSON object, got {type(values).__name__}")
    return upgrade_config_dict(values)
