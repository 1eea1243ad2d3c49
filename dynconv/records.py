"""Records of measurements: where a recorded number comes from (the commit, the command, the machine and the versions
it was measured with), and the writer of a standalone benchmark's record.

Every training run of the recipe writes :func:`provenance` into its ``summary.json`` and every benchmark into its
record, so a committed number names what produced it.
"""
import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Dict, List, Optional

import timm
import torch

# the checkout the library runs from (an installed copy outside git gives no commit)
_REPO = Path(__file__).resolve().parents[1]


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


def _this_command() -> List[str]:
    """This process's command line after ``python``: ``-m package.module ...`` for a module run as a script."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name not in ("__main__", None):
        return ["-m", spec.name.removesuffix(".__main__"), *sys.argv[1:]]
    return sys.argv


def provenance(device: torch.device, argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Commit, command line (shell-quoted, so that a flag such as ``--model-kwargs '{"k": 1}'`` pastes back as it
    ran), date, machine (CPU, cores, GPU) and versions, for a run's summary."""
    return {
        "commit": git_commit(),
        "command": shlex.join(["python", *(_this_command() if argv is None else argv)]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        },
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__},
    }


def write_record(out: Path, record: Dict[str, Any], markdown: str) -> None:
    """Write ``<out>.json`` and ``<out>.md`` (creating the folder) and print the table."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
