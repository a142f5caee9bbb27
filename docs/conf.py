"""Sphinx configuration of graphm's documentation site.

Build it from the repository root with::

    python -m sphinx -W -b html docs docs/_build/html

Every tutorial in ``tutorials/`` runs while the site is built (sphinx-gallery), so its figures
are made by the installed graphm; a tutorial that raises stops the build.
"""
import importlib.metadata
import os
import pathlib
import shutil
import sys

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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for _gallery.py beside this file

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

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "sg_execution_times.rst"]
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
    # Each tutorial's run time, on auto_tutorials/sg_execution_times (linked from the gallery's
    # index).  sphinx-gallery also writes a site-wide copy, docs/sg_execution_times.rst: it is
    # ignored by git and left out of the build (exclude_patterns) as it says the same thing.
    "write_computation_times": True,
    "download_all_examples": False,
    "remove_config_comments": True,
    "image_scrapers": ("matplotlib",),
    # matplotlib's defaults before each tutorial, then the site's: figures for a projector.
    "reset_modules": ("matplotlib", "_gallery.projector_figures"),
    "min_reported_time": 1,
    "show_memory": False,
}
# Stop at the first tutorial that raises instead of after all of them (also set by
# ``-D abort_on_example_error=1``).
abort_on_example_error = True

# -- math, offline -------------------------------------------------------------------------
# The site ships its own MathJax, so formulas render with no network: a site built on a laptop
# and opened in a classroom without internet, or from file://.  The docs extra installs
# sphinx-mathjax-offline, a package that vendors MathJax 3.2.2; the part of it that pages load
# is copied into _static/mathjax when the build finishes (copy_mathjax below).  Without it the
# build stops: a site that silently falls back to a CDN shows raw TeX offline.
MATHJAX_PACKAGE = "sphinx-mathjax-offline"
# What tex-chtml.js loads on demand: TeX extensions (autoload), the CommonHTML fonts, and the
# accessibility menu (assistive MathML, speech).  The other bundles of the package are unused.
MATHJAX_PARTS = ("tex-chtml.js", "input/tex/extensions", "output/chtml/fonts", "a11y", "sre", "ui")


def _vendored_mathjax():
    try:
        distribution = importlib.metadata.distribution(MATHJAX_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(
            f"the site ships MathJax from the Python package {MATHJAX_PACKAGE!r}, which is not "
            f"installed: pip install -e \".[docs]\" (or pip install {MATHJAX_PACKAGE})") from None
    directory = pathlib.Path(distribution.locate_file(f"{MATHJAX_PACKAGE}/static/mathjax"))
    missing = [part for part in MATHJAX_PARTS if not (directory / part).exists()]
    if missing:
        raise RuntimeError(f"{MATHJAX_PACKAGE} {distribution.version} is installed but its "
                           f"MathJax in {directory} lacks {', '.join(missing)}")
    return directory


MATHJAX_DIR = _vendored_mathjax()
mathjax_path = "mathjax/tex-chtml.js"    # relative: served from the site's own _static/
# textmacros: ``\_`` and other text-mode macros inside ``\text{...}``/``\texttt{...}``
# (``\texttt{graphm.spec.conv\_out\_spatial}``); MathJax 3 leaves them raw without it.
mathjax3_config = {
    "loader": {"load": ["[tex]/textmacros"]},
    "tex": {"packages": {"[+]": ["textmacros"]}},
}


def copy_mathjax(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    target = pathlib.Path(app.outdir) / "_static" / "mathjax"
    for part in MATHJAX_PARTS:
        source = MATHJAX_DIR / part
        if source.is_dir():
            shutil.copytree(source, target / part, dirs_exist_ok=True)
        else:
            (target / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / part)


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
# A page at the top of the site with no toctree of its own has nothing for the left sidebar's
# section navigation to list: drop the sidebar there instead of showing an empty column.
html_sidebars = {
    page.stem: [] for page in pathlib.Path(__file__).parent.glob("*.rst")
    if page.stem == root_doc or ".. toctree::" not in page.read_text(encoding="utf-8")
}
html_show_sourcelink = False


# -- ``.. graphm-help:: train``: the command's own --help text, captured at build time --------
# The command line page shows what ``graphm ... --help`` prints *now*, so it cannot drift from
# graphm/cli.py.  A command that fails to print its help fails the build.

import subprocess  # noqa: E402

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


# -- the run-time page: offline too ---------------------------------------------------------
# sphinx-gallery's sg_execution_times pages load jQuery and DataTables from CDNs to make the
# table sortable.  The site works offline, so drop that block: the table is a plain table.
EXECUTION_TIMES_PAGES = ("auto_tutorials/sg_execution_times",)


def drop_cdn_scripts(app, docname, source):
    if docname not in EXECUTION_TIMES_PAGES:
        return
    text = source[0]
    start = text.find(".. container::")
    end = text.find(".. list-table::", start)
    if start < 0 or end < 0:
        raise RuntimeError(f"{docname}: sphinx-gallery's run-time page changed form; "
                           "update drop_cdn_scripts in docs/conf.py")
    source[0] = text[:start] + text[end:]


# -- source pages link back to the documentation --------------------------------------------
# sphinx.ext.viewcode writes one page per module of source, and beside each definition a link
# back to where it is documented.  It builds that link from a single prefix per module, the one
# under which the module's first documented object appeared: graphm.graph's objects are
# documented as graphm.GraphM but also graphm.graph.Program, graphm.checkpoint's as graphm.save
# but also graphm.checkpoint.load_header, so links such as autograd.html#graphm.Program pointed
# at no anchor.  Give each documented object the anchor its source page links to as well.

def add_viewcode_anchors(app, doctree, docname):
    from sphinx import addnodes
    from sphinx.ext.viewcode import _get_full_modname

    viewcode_modules = getattr(app.env, "_viewcode_modules", {})
    for signature in doctree.findall(addnodes.desc_signature):
        module, fullname = signature.get("module"), signature.get("fullname")
        if not module or not fullname or not signature["ids"]:
            continue
        entry = viewcode_modules.get(_get_full_modname(module, fullname) or module)
        if not entry:
            continue
        anchor = f"{entry[3]}.{fullname}"      # entry: code, tags, used names, link prefix
        if anchor not in signature["ids"]:
            signature["ids"].append(anchor)


def setup(app):
    app.add_directive("graphm-help", GraphmHelp)
    app.connect("doctree-resolved", add_viewcode_anchors)
    app.connect("source-read", drop_cdn_scripts)
    app.connect("build-finished", copy_mathjax)
