"""The versions dynconv claims are the versions it is tested with: the README and the installation page name the
same ones, and the package's lower bounds are the lowest of them (nothing older is claimed). The versions of every
test run are in pytest's header (``conftest.py``), so CI's log records what it tested."""
import re
import tomllib
from pathlib import Path

from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CLAIM = {
    ROOT / "README.md": r"tested with Python ([\d.]+), timm ([\d.]+), PyTorch ([\d.]+) on CPU and ([\d.]+) on CUDA",
    ROOT / "docs" / "installation.rst": r"tested with Python ([\d.]+), timm ([\d.]+) and PyTorch ([\d.]+) \(CPU\) and "
                                        r"([\d.]+) \(CUDA\)",
}


def _claims():
    claims = {}
    for path, pattern in CLAIM.items():
        match = re.search(pattern, " ".join(path.read_text().split()))
        assert match, f"{path.name} no longer says which versions it is tested with (pattern {pattern!r})"
        claims[path.name] = dict(zip(("python", "timm", "torch_cpu", "torch_cuda"), match.groups(), strict=True))
    return claims


def test_readme_and_installation_page_name_the_same_tested_versions():
    readme, installation = _claims().values()
    assert readme == installation


def test_the_package_claims_nothing_older_than_it_is_tested_with():
    tested = next(iter(_claims().values()))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lower = {re.split(r"[<>=!~ ]", requirement)[0]: Version(requirement.split(">=")[1])
             for requirement in project["dependencies"] if ">=" in requirement}
    assert lower["torch"] == min(Version(tested["torch_cpu"]), Version(tested["torch_cuda"]))
    assert lower["timm"] == Version(tested["timm"])
    assert Version(project["requires-python"].removeprefix(">=")) == Version(tested["python"])
