"""Checkpoints that survive a kill at any moment and load without running code.

Layout of ``<run>/checkpoints/``::

    epoch0007.safetensors              model weights after epoch 8 (safetensors; metadata: config, epoch)
    epoch0007.state.pt                 its resume state: optimizer, scheduler, epoch, metrics history (tensors and
                                       plain containers only, read with torch.load(weights_only=True))
    epoch0008-step000012.safetensors   a checkpoint inside epoch 9, after 12 of its steps (on a stop signal or
    epoch0008-step000012.state.pt      --checkpoint-every): the state also holds the epoch's progress and RNG states
    last.json                          manifest naming the newest complete pair; written last, atomically
    best.safetensors                   weights of the epoch with the best test accuracy

Every file is written to a temporary name, flushed to disk (fsync) and renamed over its target, so a reader sees the
old file or the new one, never a torn one. The manifest switches to a new pair only after both files are on disk;
pairs beyond the newest ``keep`` are deleted after that. A kill therefore leaves the previous checkpoint intact, and
a damaged newest checkpoint falls back to the one before (:func:`load_newest_valid`).

Epoch-end checkpoints need no RNG snapshot: every epoch's randomness is drawn from generators seeded with (seed,
epoch), so resuming at an epoch boundary reproduces the uninterrupted run. A checkpoint inside an epoch stores the
global RNG states (dropout) and the loader skips the batches already trained on.
"""
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

MANIFEST = "last.json"
BEST = "best.safetensors"
#: Checkpoint pairs kept by default: the newest, and one before it to fall back to if the newest is damaged.
DEFAULT_KEEP = 2

#: Where training stands: (epoch, steps done in it), or (epoch, None) once the epoch is complete.
Position = Tuple[int, Optional[int]]


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


def checkpoint_stem(epoch: int, step: Optional[int] = None) -> str:
    """File stem of the checkpoint after ``epoch`` (complete when ``step`` is None, else ``step`` steps into it)."""
    return f"epoch{epoch:04d}" if step is None else f"epoch{epoch:04d}-step{step:06d}"


def _position_of(stem: str) -> Optional[Position]:
    """The position a checkpoint stem names, or None for a name that is not a checkpoint's."""
    epoch, _, step = stem.removeprefix("epoch").partition("-step")
    if not epoch.isdigit() or (step and not step.isdigit()):
        return None
    return int(epoch), int(step) if step else None


def _order(position: Position) -> Tuple[int, float]:
    return position[0], float("inf") if position[1] is None else position[1]


def complete_pairs(folder: Path) -> List[Position]:
    """Positions of the checkpoints in ``folder`` whose two files both exist, newest first."""
    positions = []
    for path in folder.glob("epoch*.state.pt"):
        position = _position_of(path.name.removesuffix(".state.pt"))
        if position is not None and (folder / f"{checkpoint_stem(*position)}.safetensors").is_file():
            positions.append(position)
    return sorted(positions, key=_order, reverse=True)


def save_checkpoint(folder: Path, model: nn.Module, state: Dict[str, Any], config: Dict[str, Any], epoch: int,
                    step: Optional[int] = None, keep: int = DEFAULT_KEEP) -> None:
    """Write the weights and resume state of ``epoch`` (``step`` steps into it, or complete), then point the manifest
    at them and drop all but the newest ``keep`` pairs."""
    stem = checkpoint_stem(epoch, step)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        save_weights(folder / f"{stem}.safetensors", model, config, epoch)
        atomic_write(folder / f"{stem}.state.pt", lambda temporary: torch.save(state, temporary))
        manifest = {"epoch": epoch, "step": step, "weights": f"{stem}.safetensors", "state": f"{stem}.state.pt"}
        atomic_write(folder / MANIFEST, lambda temporary: temporary.write_text(json.dumps(manifest)))
    except (OSError, SafetensorError) as error:
        where = f"epoch {epoch + 1}" + ("" if step is None else f", step {step}")
        raise CheckpointError(f"could not write the checkpoint of {where} to {folder} ({error}); the previous "
                              "checkpoint there is intact and resumable") from None
    kept = {checkpoint_stem(*position) for position in complete_pairs(folder)[:keep]} | {stem}
    for path in folder.glob("epoch*"):
        if path.name.split(".")[0] not in kept:
            path.unlink(missing_ok=True)


def remove_temporaries(folder: Path) -> None:
    """Delete temporary files a killed writer left behind (they never replaced a real file)."""
    for path in folder.glob(".*.tmp*"):
        path.unlink(missing_ok=True)


def checkpoint_position(folder: Path) -> Optional[Position]:
    """The position of the newest complete checkpoint in ``folder`` (its manifest's), or ``None`` if there is none
    (or the manifest is unreadable)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        return int(manifest["epoch"]), manifest.get("step")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def describe(position: Position) -> str:
    """``"epoch 8"`` or ``"epoch 8, step 12"`` (1-based epochs, as the run prints them)."""
    return f"epoch {position[0] + 1}" + ("" if position[1] is None else f", step {position[1]}")


def _load_pair(folder: Path, position: Position) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    stem = checkpoint_stem(*position)
    weights, _ = load_weights(folder / f"{stem}.safetensors")
    state_path = folder / f"{stem}.state.pt"
    if not state_path.is_file():
        raise CheckpointError(f"resume state {state_path} does not exist")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for bad input; all mean the same to the user
        raise CheckpointError(f"resume state {state_path} is corrupted or truncated ({error})") from None
    if not isinstance(state, dict) or (state.get("epoch"), state.get("step")) != position:
        found = (state.get("epoch"), state.get("step")) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"resume state {state_path} is for {found}, its name says {position}")
    return weights, state


def load_checkpoint(folder: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Weights and resume state of the checkpoint the manifest of ``folder`` names (no fallback)."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"no checkpoint to resume from: {manifest_path} does not exist")
    try:
        manifest = json.loads(manifest_path.read_text())
        position = (int(manifest["epoch"]), manifest.get("step"))
        expected = checkpoint_stem(*position)
        if manifest["weights"] != f"{expected}.safetensors" or manifest["state"] != f"{expected}.state.pt":
            raise ValueError(f"it names {manifest['weights']} and {manifest['state']} for {position}")
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint manifest {manifest_path} is corrupted ({error})") from None
    return _load_pair(folder, position)


def load_newest_valid(folder: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any], List[str]]:
    """Weights and resume state of the newest checkpoint in ``folder`` that loads: the manifest's, else the newest
    other complete pair; also one line for each damaged checkpoint passed over.

    Raises:
        CheckpointError: no checkpoint in ``folder`` loads (the message names each and why).
    """
    problems: List[str] = []
    try:
        weights, state = load_checkpoint(folder)
        return weights, state, problems
    except CheckpointError as error:
        problems.append(str(error))
    tried = checkpoint_position(folder)
    for position in complete_pairs(folder):
        if position == tried:
            continue
        try:
            weights, state = _load_pair(folder, position)
        except CheckpointError as error:
            problems.append(str(error))
            continue
        return weights, state, [f"{problem}; resuming from the previous checkpoint, {describe(position)}"
                                for problem in problems]
    raise CheckpointError("; ".join(problems) if problems else f"no checkpoint to resume from in {folder}")


def has_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` holds a manifest or a complete checkpoint pair (something ``--resume`` can try)."""
    return (folder / MANIFEST).is_file() or bool(complete_pairs(folder))
