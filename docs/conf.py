"""Sphinx configuration. Tables of the model zoo and of the recipe's flags are generated from the code at build
time, so the documentation cannot drift from what is registered."""
from pathlib import Path

import dynconv

project = "dynconv"
author = "dynconv developers"
copyright = "2026, dynconv developers"
release = dynconv.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
    "myst_parser",
]
# the lab notebook's Markdown pages link to records by their repository paths, which are not documents
suppress_warnings = ["myst.xref_missing"]
autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = [("Shape", "params_style")]
# torch's own docstrings carry references Sphinx cannot resolve; inherited members stay out of our pages
nitpicky = False
html_theme = "furo"
html_title = f"dynconv {release}"
exclude_patterns = ["_build", "generated/*.inc.rst"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
templates_path = []
html_static_path = ["_static"]
html_favicon = "_static/favicon.svg"


def _generate(app):
    # built with ``python -m sphinx`` from the repository's root, which puts the root (and so docs/) on the path
    from docs.generate_charts import write_charts
    from docs.generate_tables import write_tables

    write_tables(Path(app.srcdir) / "generated")
    write_charts(Path(app.srcdir) / "generated")


def setup(app):
    app.connect("builder-inited", _generate)
