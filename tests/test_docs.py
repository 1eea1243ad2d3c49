"""The Sphinx documentation builds with warnings as errors (and its generated tables from the live code)."""
import importlib
import re
import subprocess
from pathlib import Path

import pytest

from dynconv.models import list_models
from tools import check_docs_browser

DOCS = Path(__file__).parents[1] / "docs"


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory):
    """The HTML folder of one Sphinx build with warnings as errors (the browser check's own), shared by the tests
    below; None if the build failed (its warnings are in the first test's captured output)."""
    try:
        return check_docs_browser.build_docs(tmp_path_factory.mktemp("docs") / "html")
    except subprocess.CalledProcessError:
        return None


@pytest.mark.slow
def test_docs_build_without_warnings(built_docs):
    html = built_docs
    assert html is not None, "the Sphinx build failed or warned: see the captured output"
    models_page = (html / "models.html").read_text()
    assert "dynconv_cifar_tiny" in models_page and "dynconv_cifar_odconv" in models_page
    papers_page = (html / "papers.html").read_text()
    assert "od_resnet50_4x" in papers_page and "ODConv README" in papers_page


@pytest.mark.parametrize("module_name", ["dynconv", "dynconv.layers", "dynconv.models"])
def test_api_reference_covers_every_public_name(module_name):
    api = (DOCS / "api.rst").read_text()
    module = importlib.import_module(module_name)
    # named in an autodoc directive (``.. autoclass:: dynconv.layers.X``) or in an automodule ``:members:`` list
    missing = [name for name in module.__all__ if name != "__version__" and not re.search(rf"\b{name}\b", api)]
    assert not missing, f"docs/api.rst does not document {module_name}: {missing}"


def test_api_reference_lists_every_registered_model():
    api = (DOCS / "api.rst").read_text()
    modules = "dynconvnet|paper_nets|kernelwarehouse_nets"
    missing = [name for name in list_models() if not re.search(rf"\.({modules})\.{name}\n", api)]
    assert not missing, f"docs/api.rst does not list the entry points {missing}"


def test_block_cost_chart_divides_by_the_static_layer_of_the_same_group(tmp_path):
    from docs.generate_charts import relative_block_costs

    table = tmp_path / "bench.csv"
    table.write_text("group,implementation,median_s\n"
                     "s1 8->8@4 B=64 K=4 forward_backward contiguous,static,0.002\n"
                     "s1 8->8@4 B=64 K=4 forward_backward contiguous,fused,0.006\n"
                     "s1 8->8@4 B=64 K=4 forward_backward channels_last,static,0.001\n"
                     "s1 8->8@4 B=64 K=4 forward_backward channels_last,fused,0.005\n"
                     "s1 8->8@4 B=1 K=4 forward_backward contiguous,fused,0.9\n"
                     "s2 8->8@4 B=64 K=2 forward_backward contiguous,fused,0.9\n")
    # the faster static layout is the baseline; other batches, K and passes are left out
    assert relative_block_costs(table) == {"s1": {"fused": 5.0}}


def test_compiled_block_chart_pairs_each_path_with_its_own_baseline(tmp_path):
    from docs.generate_charts import compiled_block_ratios

    table = tmp_path / "bench_compiled.csv"
    group = "s1 8->8@4 B=64 K=2 {mode} channels_last {path}"
    table.write_text("group,implementation,median_s\n"
                     f"{group.format(mode='forward_backward', path='eager')},floor,0.002\n"
                     f"{group.format(mode='forward_backward', path='eager')},fused,0.006\n"
                     f"{group.format(mode='forward_backward', path='eager')},static,0.001\n"
                     f"{group.format(mode='forward_backward', path='eager')},condconv,0.004\n"
                     f"{group.format(mode='forward_backward', path='compiled')},floor,0.004\n"
                     f"{group.format(mode='forward_backward', path='compiled')},fused,0.005\n"
                     f"{group.format(mode='forward', path='compiled')},fused,0.9\n"
                     "s1 8->8@4 B=64 K=2 forward_backward channels_last,fused,0.9\n")
    # compiled fused over compiled floor (not eager floor); the forward pass and uncompiled-suite groups left out
    assert compiled_block_ratios(table) == {
        ("s1 B=64 K=2", "compiled"): {"fused/floor": 1.25},
        ("s1 B=64 K=2", "eager"): {"fused/floor": 3.0, "condconv/static": 4.0}}


def test_generated_readme_blocks_are_current():
    from docs import generate_tables

    stale = generate_tables.stale_readmes()
    assert not stale, f"{stale}: regenerate with python -m docs.generate_tables --readmes"


def test_readme_blocks_are_replaced_between_their_markers_only():
    from docs.generate_tables import replace_blocks

    text = "a\n<!-- generated:x -->\nold\n<!-- /generated:x -->\nb\n"
    assert replace_blocks(text, {"x": "new\n"}) == "a\n<!-- generated:x -->\nnew\n<!-- /generated:x -->\nb\n"
    with pytest.raises(ValueError, match="no generator for the README block 'x'"):
        replace_blocks(text, {})


def test_the_readmes_python_snippets_run():
    readme = (DOCS.parent / "README.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert snippets
    namespace: dict = {}
    for snippet in snippets:
        exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 (our own README)


@pytest.mark.slow
def test_the_docs_render_in_a_browser_without_missing_images_broken_links_or_console_errors(built_docs, tmp_path):
    if check_docs_browser.find_chromium() is None:
        pytest.skip("no Chromium here (apt install chromium): the browser check is skipped")
    pytest.importorskip("playwright", reason="no Playwright here (pip install -e '.[browser]'): the browser check is "
                                             "skipped")
    html = built_docs
    assert html is not None, "the Sphinx build failed or warned: see the captured output"
    problems = check_docs_browser.check_pages(html, tmp_path / "screenshots")
    assert not problems, "\n".join(problems)
    assert {p.name for p in (tmp_path / "screenshots").iterdir()} == {
        f"{page.removesuffix('.html')}.png" for page in check_docs_browser.PAGES}
