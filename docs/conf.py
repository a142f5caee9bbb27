"""Sphinx configuration of graphm's documentation site.

Build it from the repository root with::

    python -m sphinx -W -b html docs docs/_build/html

Every tutorial in ``tutorials/`` runs while the site is built (sphinx-gallery), so its figures
are made by the installed graphm; a tutorial that raises stops the build.
"""
import os

# Threads first, before anything imports graphm, NumPy or matplotlib.  graphm's kernels read
# OMP_NUM_THREADS for their default thread count, and OpenMP/BLAS thread pools that are alive
# when a process forks can deadlock the child.  Keep graphm at two threads (what the
# tutorials are written and timed for) and NumPy's BLAS serial, unless the caller chose.
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Idle OpenMP threads sleep instead of spinning.  With spinning (the default of GNU OpenMP), a
# machine busy with other work (tests running beside the docs build) makes every parallel region
# wait for a descheduled thread: the tutorials' many small convolutions became 10-80x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
for _blas_threads in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ.setdefault(_blas_threads, "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import graphm  # noqa: E402  (after the thread limits, on purpose)

graphm.set_num_threads(min(2, graphm.get_num_threads()))

project = "graphm"
author = "the graphm authors"
copyright = "2025, the graphm authors"
version = release = graphm.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = []
default_role = "py:obj"
root_doc = "index"

# -- API reference: numpydoc docstrings, autodoc pages written by hand in api/ ----------------
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"           # numpydoc's Parameters sections say the types
autosummary_generate = False         # the API pages are hand-written: nothing is generated
numpydoc_show_class_members = False  # classes list their members with explicit directives
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# -- the tutorials --------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../tutorials",
    "gallery_dirs": "auto_tutorials",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "write_computation_times": False,   # would write an untracked file into docs/
    "download_all_examples": False,
    "remove_config_comments": True,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "min_reported_time": 1,
    "show_memory": False,
}
# Stop at the first tutorial that raises instead of after all of them (also set by
# ``-D abort_on_example_error=1``).
abort_on_example_error = True

# -- HTML -----------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"graphm {release}"
html_static_path = ["_static"]
html_css_files = ["graphm.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
    "header_links_before_dropdown": 7,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"index": [], "getting_started": [], "torchlean": [], "cli": []}
html_show_sourcelink = False


# -- ``.. graphm-help:: train``: the command's own --help text, captured at build time --------
# The command line page shows what ``graphm ... --help`` prints *now*, so it cannot drift from
# graphm/cli.py.  A command that fails to print its help fails the build.

import subprocess  # noqa: E402
import sys  # noqa: E402

from docutils import nodes  # noqa: E402
from docutils.parsers.rst import Directive  # noqa: E402


class GraphmHelp(Directive):
    """Insert the output of ``python -m graphm <arguments> --help`` as a literal block."""

    optional_arguments = 10

    def run(self):
        command = [sys.executable, "-m", "graphm", *self.arguments, "--help"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                                env=dict(os.environ, COLUMNS="96"))
        if result.returncode != 0:
            raise self.error(f"{' '.join(command[1:])} failed with exit code "
                             f"{result.returncode}:\n{result.stderr}")
        shown = " ".join(["graphm", *self.arguments, "--help"])
        block = nodes.literal_block(text=f"$ {shown}\n{result.stdout.rstrip()}")
        block["language"] = "text"
        return [block]


def setup(app):
    app.add_directive("graphm-help", GraphmHelp)
