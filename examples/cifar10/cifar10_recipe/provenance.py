"""Where a recorded number comes from: the commit, the command, the machine and the versions it was measured with.

Every run writes this into its ``summary.json``, so a committed record names what produced it.
"""
import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

import timm
import torch

_REPO = Path(__file__).resolve().parents[3]


def git_commit(repo: Path = _REPO) -> Optional[str]:
    """The checked-out commit of ``repo``, suffixed ``-dirty`` when tracked files differ from it; None outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux, else what :mod:`platform` says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device: torch.device, argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Commit, command line (shell-quoted, so that a flag such as ``--model-kwargs '{"k": 1}'`` pastes back as it
    ran), date, machine (CPU, cores, GPU) and versions, for a run's summary."""
    argv = sys.argv if argv is None else argv
    return {
        "commit": git_commit(),
        "command": shlex.join(["python", *argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        },
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__},
    }
