"""Before a run writes anything: its configuration, folder and way of starting resolved, its data loaded and checked,
its model built on the meta device; and evaluating a saved checkpoint."""
import dataclasses
import json
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch.distributed as dist

from .checkpoint import CheckpointError, has_checkpoint, load_weights
from .config import (
    TrainConfig,
    config_differences,
    load_config_file,
    resolve_config,
    resumable_fields,
    upgrade_config_dict,
)
from .data import Cifar10, load_cifar10
from .distributed import init_distributed
from .evaluation import evaluate
from .execution import autocast_context, configure_execution, resolve_device
from .loaders import build_loaders
from .model_setup import build_model, check_model
from .run_manager import RunManager


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
    # a field the saved configuration lacks was added after the run started; at its default it behaves as before
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    changed = {k: v for k, v in config_differences(saved, config.to_dict()).items()
               if k not in resumable_fields() and not (k not in saved and v[1] == defaults[k])}
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
