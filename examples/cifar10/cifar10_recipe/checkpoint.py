"""Checkpoints that survive a kill at any moment and load without running code.

Layout of ``<run>/checkpoints/``::

    epoch0007.safetensors   model weights (safetensors; metadata holds the resolved config and the epoch)
    epoch0007.state.pt      resume state: optimizer, scheduler, epoch, metrics history (tensors and plain
                            containers only, read with torch.load(weights_only=True))
    last.json               manifest naming the newest complete pair; written last, atomically
    best.safetensors        weights of the epoch with the best test accuracy

Every file is written to a temporary name, flushed to disk (fsync) and renamed over its target, so a reader sees the
old file or the new one, never a torn one. The manifest switches to a new pair only after both files are on disk;
older pairs are deleted after that. A kill therefore leaves the previous checkpoint intact.

There is no RNG snapshot: every epoch's randomness is drawn from generators seeded with (seed, epoch), so resuming
at an epoch boundary reproduces the uninterrupted run without one.
"""
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

MANIFEST = "last.json"
BEST = "best.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or corrupted; the message names the file."""


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary_path)``, fsync the result and rename it to ``path``; on any failure ``path`` is
    untouched and the temporary file removed."""
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(temporary)
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def weights_of(model: nn.Module) -> Dict[str, torch.Tensor]:
    """A state dict fit for safetensors: contiguous CPU tensors (channels-last parameters are copied)."""
    return {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}


def save_weights(path: Path, model: nn.Module, config: Dict[str, Any], epoch: int) -> None:
    """Write ``model``'s weights to ``path`` atomically, with the resolved config and the epoch as metadata."""
    metadata = {"config": json.dumps(config), "epoch": str(epoch), "format": "dynconv-recipe-1"}
    try:
        atomic_write(path, lambda temporary: save_file(weights_of(model), str(temporary), metadata=metadata))
    except (OSError, SafetensorError) as error:
        raise CheckpointError(f"could not write {path} ({error}); the previous file there is intact") from None


def load_weights(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Weights and the resolved training config of a ``.safetensors`` checkpoint."""
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
        weights = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} is corrupted or truncated ({error})") from None
    if "config" not in metadata:
        raise CheckpointError(f"checkpoint {path} has no training config in its metadata; was it written by train.py?")
    return weights, {"config": json.loads(metadata["config"]), "epoch": int(metadata["epoch"])}


def save_checkpoint(folder: Path, model: nn.Module, state: Dict[str, Any], config: Dict[str, Any],
                    epoch: int) -> None:
    """Write the weights and resume state of ``epoch``, then point the manifest at them and drop older pairs."""
    stem = f"epoch{epoch:04d}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        save_weights(folder / f"{stem}.safetensors", model, config, epoch)
        atomic_write(folder / f"{stem}.state.pt", lambda temporary: torch.save(state, temporary))
        manifest = {"epoch": epoch, "weights": f"{stem}.safetensors", "state": f"{stem}.state.pt"}
        atomic_write(folder / MANIFEST, lambda temporary: temporary.write_text(json.dumps(manifest)))
    except (OSError, SafetensorError) as error:
        raise CheckpointError(f"could not write the checkpoint of epoch {epoch} to {folder} ({error}); the previous "
                              "checkpoint there is intact") from None
    for path in folder.glob("epoch*"):
        if not path.name.startswith(stem):
            path.unlink(missing_ok=True)


def remove_temporaries(folder: Path) -> None:
    """Delete temporary files a killed writer left behind (they never replaced a real file)."""
    for path in folder.glob(".*.tmp*"):
        path.unlink(missing_ok=True)


def checkpoint_epoch(folder: Path) -> Optional[int]:
    """The epoch of the newest complete checkpoint in ``folder``, or ``None`` if there is none (or it is unreadable)."""
    try:
        return int(json.loads((folder / MANIFEST).read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_checkpoint(folder: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Weights and resume state of the newest complete checkpoint in ``folder``."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"no checkpoint to resume from: {manifest_path} does not exist")
    try:
        manifest = json.loads(manifest_path.read_text())
        weights_path, state_path = folder / manifest["weights"], folder / manifest["state"]
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint manifest {manifest_path} is corrupted ({error})") from None
    weights, _ = load_weights(weights_path)
    if not state_path.is_file():
        raise CheckpointError(f"resume state {state_path} named by {manifest_path} does not exist")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for bad input; all mean the same to the user
        raise CheckpointError(f"resume state {state_path} is corrupted or truncated ({error})") from None
    if state.get("epoch") != manifest["epoch"]:
        raise CheckpointError(f"resume state {state_path} is for epoch {state.get('epoch')}, the manifest says "
                              f"{manifest['epoch']}")
    return weights, state
