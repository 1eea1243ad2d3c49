"""Writing a standalone benchmark's record: the JSON (medians, ratios, provenance) and its markdown table."""
import json
from pathlib import Path
from typing import Any, Dict


def write_record(out: Path, record: Dict[str, Any], markdown: str) -> None:
    """Write ``<out>.json`` and ``<out>.md`` (creating the folder) and print the table."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
