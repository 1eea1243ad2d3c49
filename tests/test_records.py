"""Every published number traces to a committed record that names its commit, command, machine and versions.

- Every run record (``summary.json`` under ``examples/cifar10/records/``) carries its provenance; every other record
  folder has a ``provenance.json``.
- Every entry of ``examples/cifar10/results.json`` (which feeds the docs' tables) names its raw record and agrees
  with it.
- Every percentage with two decimals that a person wrote in README.md, examples/cifar10/README.md, CHANGELOG.md and
  docs/ is a value of the records its paragraph cites (a ``records: <path or group:id> ...`` comment before it:
  ``<!-- records: ... -->`` in Markdown, ``.. records: ...`` in reStructuredText; it holds until the next one), or one
  of the few numbers quoted from outside sources, listed here with their source. Generated blocks are checked by
  the generator's own test instead.
"""
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set

import pytest

from cifar10_recipe.report import spread
from docs import generate_tables

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "examples" / "cifar10" / "records"
RESULTS = ROOT / "examples" / "cifar10" / "results.json"
# written by hand: docs/generated/ and docs/_build/ (build outputs, when present) are the generators' to check
DOCUMENTS = [ROOT / "README.md", ROOT / "examples" / "cifar10" / "README.md", ROOT / "CHANGELOG.md",
             *sorted(path for path in [*(ROOT / "docs").rglob("*.rst"), *(ROOT / "docs").rglob("*.md")]
                     if path.relative_to(ROOT / "docs").parts[0] not in ("generated", "_build"))]
RECORD_SOURCES = [RECORDS, ROOT / "benchmarks" / "results"]
# numbers the documents quote from outside this repository's records: number -> where it comes from
QUOTED = {
    "91.07": "the coursework report's accuracy plot (docs/coursework.rst)",
    "0.03": "ODConv's largest gap to the published parameter counts (papers.rst; tests/test_paper_nets.py)",
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


CITATION = re.compile(r"^\s*(?:<!--|\.\.)\s*records:\s*(.+?)\s*(?:-->)?\s*$")
GENERATED = re.compile(r"<!-- (/?)generated:[\w-]+ -->")
PERCENTAGE = re.compile(r"(\d+\.\d\d)%")


def _resolve(token: str) -> Path:
    """A cited path: from the repository's root, or from examples/cifar10 for ``records/...``."""
    path = RECORDS.parent / token if token.startswith("records/") else ROOT / token
    if not path.exists():
        raise ValueError(f"cited record {token!r} does not exist ({path})")
    return path


def _percent(number: float) -> str:
    return f"{100 * number:.2f}"


def _seed_statistics(runs: Iterator[Path]) -> Set[str]:
    """Mean and sample sd of test accuracy (with and without TTA) over each set of seeds ``<name>-s<N>``."""
    seeds: Dict[str, list] = defaultdict(list)
    for summary in runs:
        seeds[re.sub(r"-s\d+$", "", summary.parent.name)].append(json.loads(summary.read_text()))
    found = set()
    for summaries in seeds.values():
        for key in ("test_acc", "test_acc_tta"):
            stats = spread(summaries, key)
            if stats:
                found.update({_percent(stats["mean"]), _percent(stats["std"]), f"{stats['std']:.2f}"})
    return found


def cited_percentages(token: str) -> Set[str]:
    """The percentages (two decimals) one citation allows.

    - ``group:<id>``: a results.json group's accuracy mean and sd and every number of its runs' summaries;
    - a shipped ``.safetensors`` file: the numbers of its metadata;
    - a JSON file: every number in it (a ``metrics.jsonl`` only when cited by name);
    - a folder: every number of its JSON records and its runs' ``summary.json`` (not their per-epoch metrics), and the
      mean and sd over each run's seeds.
    """
    if token.startswith("group:"):
        group = json.loads(RESULTS.read_text())["groups"].get(token[len("group:"):])
        if group is None:
            raise ValueError(f"cited group {token!r} is not in results.json")
        stats = generate_tables.group_stats(token[len("group:"):])
        found = {_percent(n) for n in _numbers([list(stats["acc"]), list(stats["tta"])] if stats else [])}
        found.update(f"{n:.2f}" for n in _numbers([stats["acc"][1], stats["tta"][1]] if stats else []) if n)
        for record in group["records"]:  # results.json names records from examples/cifar10
            found |= cited_percentages(str((RECORDS.parent / record).resolve().relative_to(ROOT)))
        return found
    path = _resolve(token)
    if path.suffix == ".safetensors":  # shipped weights: the accuracies in their metadata
        from cifar10_recipe.shipping import read_metadata

        return {_percent(n) for n in _numbers(read_metadata(path))}
    if path.is_file():
        return {_percent(n) for document in _json_documents(path) for n in _numbers(document)}
    files = [f for f in [*path.rglob("*.json"), *path.rglob("*.jsonl")]
             if f.name not in ("metrics.jsonl", "config.json")]
    found = {_percent(n) for f in files for document in _json_documents(f) for n in _numbers(document)}
    return found | _seed_statistics(path.rglob("summary.json"))


def uncited_percentages(text: str, name: str = "document") -> List[str]:
    """Every hand-written percentage of ``text`` that the records cited before it do not hold (``name:line: n%``)."""
    allowed: Optional[Set[str]] = None
    generated = False
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        marker = GENERATED.search(line)
        if marker:
            generated = not marker.group(1)
            continue
        citation = CITATION.match(line)
        if citation:
            allowed = set().union(*(cited_percentages(token) for token in citation.group(1).split()))
            continue
        if generated:
            continue
        for value in PERCENTAGE.findall(line):
            if value in QUOTED:
                continue
            if allowed is None:
                problems.append(f"{name}:{number}: {value}% (no records cited before it)")
            elif value not in allowed:
                problems.append(f"{name}:{number}: {value}% (not in the records cited before it)")
    return problems


def test_a_wrong_digit_or_a_number_from_another_record_is_caught():
    """The check itself: a right number passes, the same number with one digit changed or a number that only another
    record holds does not."""
    summary = json.loads((RECORDS / "cpu-recipe" / "xeon-muon-e9-s0" / "summary.json").read_text())
    other = json.loads((RECORDS / "cpu-recipe" / "xeon-muon-e9-s1" / "summary.json").read_text())
    right = _percent(summary["test_acc"])
    wrong = right[:-1] + str((int(right[-1]) + 1) % 10)
    citation = "<!-- records: records/cpu-recipe/xeon-muon-e9-s0 -->"
    assert uncited_percentages(f"{citation}\nreaches {right}%") == []
    assert uncited_percentages(f"{citation}\nreaches {wrong}%")
    if _percent(other["test_acc"]) not in cited_percentages("records/cpu-recipe/xeon-muon-e9-s0"):
        assert uncited_percentages(f"{citation}\nreaches {_percent(other['test_acc'])}%")
    assert uncited_percentages(f"reaches {right}%")  # nothing cited
    assert uncited_percentages(f"<!-- generated:x -->\n{wrong}%\n<!-- /generated:x -->") == []
    mean = statistics.fmean([json.loads((RECORDS / "cpu-recipe" / f"xeon-muon-e9-s{seed}" / "summary.json")
                                        .read_text())["test_acc"] for seed in range(3)])
    assert uncited_percentages(f".. records: group:cpu\n{_percent(mean)}%") == []
    with pytest.raises(ValueError, match="does not exist"):
        uncited_percentages("<!-- records: records/no-such-record -->")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_published_percentage_is_in_the_records_it_cites(document):
    problems = uncited_percentages(document.read_text(), str(document.relative_to(ROOT)))
    assert not problems, ("percentages the cited records do not hold (cite the record with a `records:` comment "
                          "before the paragraph, re-measure, or remove the claim):\n" + "\n".join(problems))
