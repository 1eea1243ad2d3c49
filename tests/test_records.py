"""Every published number traces to a committed record that names its commit, command, machine and versions.

- Every run record (``summary.json`` under ``examples/cifar10/records/``) carries its provenance; every other record
  folder has a ``provenance.json``.
- Every entry of ``examples/cifar10/results.json`` (which feeds the docs' tables) names its raw record and agrees
  with it.
- Every percentage with two decimals in README.md, examples/cifar10/README.md and docs/*.rst is a value of some raw
  record (runs, benchmarks), or one of the few numbers quoted from outside sources, listed here with their source.
"""
import functools
import json
import re
from pathlib import Path
from typing import Any, Iterator, Set

import pytest

from docs import generate_tables

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "examples" / "cifar10" / "records"
RESULTS = ROOT / "examples" / "cifar10" / "results.json"
DOCUMENTS = [ROOT / "README.md", ROOT / "examples" / "cifar10" / "README.md", ROOT / "CHANGELOG.md",
             *sorted((ROOT / "docs").rglob("*.rst")), *sorted((ROOT / "docs").rglob("*.md"))]
RECORD_SOURCES = [RECORDS, ROOT / "benchmarks" / "results"]
# numbers the documents quote from outside this repository's records: number -> where it comes from
QUOTED = {
    "91.07": "the coursework report's accuracy plot (docs/coursework.rst)",
}
PROVENANCE_KEYS = ("commit", "command", "machine", "versions")


def _json_documents(path: Path) -> Iterator[Any]:
    text = path.read_text()
    if path.suffix == ".jsonl":
        yield from (json.loads(line) for line in text.splitlines() if line.strip())
    else:
        yield json.loads(text)


def _numbers(value: Any) -> Iterator[float]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield float(value)


@functools.cache
def _recorded_percentages() -> Set[str]:
    """Every number of every raw record, as a percentage and as itself, to two decimals; and the statistics the one
    generator derives from them (each results.json group's mean and sd over its runs' records)."""
    found = set()
    for folder in RECORD_SOURCES:
        for path in [*folder.rglob("*.json"), *folder.rglob("*.jsonl")]:
            for document in _json_documents(path):
                for number in _numbers(document):
                    found.update({f"{100 * number:.2f}", f"{number:.2f}"})
    for group in json.loads(RESULTS.read_text()).get("groups", {}):
        stats = generate_tables.group_stats(group)
        for number in _numbers([list(stats["acc"]), list(stats["tta"])] if stats else []):
            found.add(f"{100 * number:.2f}")
    # the four-axis study's means over seeds, which the generator derives from its run records
    for entry in generate_tables.four_axis_results()["points"].values():
        for number in _numbers([entry["test_acc"], entry["test_acc_tta"]]):
            found.add(f"{100 * number:.2f}")
    return found


def _has_provenance(provenance: dict) -> bool:
    commit_named = isinstance(provenance.get("commit"), str) or bool(provenance.get("commit_note"))
    return commit_named and all(provenance.get(key) for key in PROVENANCE_KEYS[1:])


@pytest.mark.parametrize("summary", sorted(RECORDS.rglob("summary.json")), ids=lambda p: str(p.relative_to(RECORDS)))
def test_every_run_record_names_its_commit_command_machine_and_versions(summary):
    provenance = json.loads(summary.read_text()).get("provenance", {})
    assert _has_provenance(provenance), f"{summary}: provenance {provenance}"
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", provenance["commit"])
    assert (summary.parent / "metrics.jsonl").is_file() and (summary.parent / "config.json").is_file()


def test_every_other_record_folder_has_a_provenance_file():
    run_folders = {summary.parent for summary in RECORDS.rglob("summary.json")}
    for folder in sorted({path.parent for path in RECORDS.rglob("*") if path.is_file()} - run_folders):
        derived = any(run.parent == folder for run in run_folders)  # a report over the run records inside it
        if derived:
            continue
        provenance = folder / "provenance.json"
        assert provenance.is_file(), f"{folder} holds records but no provenance.json"
        assert _has_provenance(json.loads(provenance.read_text())), provenance


def _numbers_of(record: Path) -> Set[str]:
    """Every number of one record (a JSON file, or every JSON file of a run folder), to two decimals as a
    percentage."""
    paths = [record] if record.is_file() else [*record.glob("*.json"), *record.glob("*.jsonl")]
    return {f"{100 * number:.2f}" for path in paths for document in _json_documents(path)
            for number in _numbers(document)}


@pytest.mark.parametrize("entry", json.loads(RESULTS.read_text())["results"], ids=lambda e: e.get("record", "?"))
def test_every_results_entry_names_a_record_that_agrees(entry):
    assert "record" in entry, f"results.json entry without a record: {entry}"
    record = RECORDS.parent / entry["record"]
    assert record.exists(), f"{entry['record']} does not exist"
    own = _numbers_of(record)
    for key in ("test_acc_mean", "test_acc_tta_mean"):
        if entry[key] is None:  # a run without test-time augmentation
            continue
        assert f"{100 * entry[key]:.2f}" in own, f"{entry['record']}: {key} {entry[key]} is not in that record"
    if (record / "summary.json").is_file():
        summary = json.loads((record / "summary.json").read_text())
        assert (summary["test_acc"], summary["test_acc_tta"], summary["epochs"]) == (
            entry["test_acc_mean"], entry["test_acc_tta_mean"], entry["epochs"])


def test_every_published_percentage_is_in_a_record():
    recorded = _recorded_percentages()
    unrecorded = []
    for document in DOCUMENTS:
        for number, line in ((n, i) for i, text in enumerate(document.read_text().splitlines(), 1)
                             for n in re.findall(r"(\d+\.\d\d)%", text)):
            if number not in recorded and number not in QUOTED:
                unrecorded.append(f"{document.relative_to(ROOT)}:{line}: {number}%")
    assert not unrecorded, "numbers without a record (re-measure and commit the record, or remove the claim):\n" + \
        "\n".join(unrecorded)
