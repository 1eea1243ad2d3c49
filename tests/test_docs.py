"""The Sphinx documentation builds with warnings as errors (and its generated tables from the live code)."""
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).parents[1] / "docs"


def test_docs_build_without_warnings(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d", str(tmp_path / "doctrees"),
         str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    models_page = (tmp_path / "html" / "models.html").read_text()
    assert "dynconv_cifar_tiny" in models_page and "dynconv_cifar_odconv" in models_page
