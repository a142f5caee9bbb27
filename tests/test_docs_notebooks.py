"""Every tutorial's notebook download runs top to bottom in a fresh kernel (``-m docs``).

sphinx-gallery turns each tutorial into a Jupyter notebook offered for download on its page.
After the site is built (``.ci/run`` builds it, then runs this file with ``-m docs``), each
``.ipynb`` in the site's ``_downloads`` is executed with nbclient in a new IPython kernel, in an
empty working directory, with two graphm threads as in the docs build.
"""
import os
import pathlib

import pytest

pytestmark = pytest.mark.docs

REPO = pathlib.Path(__file__).resolve().parent.parent
SITE = pathlib.Path(os.environ.get("GRAPHM_DOCS_SITE", REPO / "docs" / "_build" / "html"))
TUTORIALS = sorted(p.stem for p in (REPO / "tutorials").glob("plot_*.py"))
CELL_TIMEOUT_SECONDS = 300


def downloaded_notebook(name):
    found = sorted((SITE / "_downloads").glob(f"*/{name}.ipynb"))
    assert found, (f"no {name}.ipynb in {SITE / '_downloads'}: build the site first with "
                   "python -m sphinx -W -b html docs docs/_build/html")
    return found[0]


@pytest.mark.parametrize("name", TUTORIALS)
def test_notebook_runs_in_a_fresh_kernel(name, tmp_path, monkeypatch):
    import nbclient
    import nbformat

    # The kernel inherits this environment: the thread settings of docs/conf.py, and the
    # graphm this test imports (PYTHONPATH or the installed package).
    for variable, value in (("OMP_NUM_THREADS", "2"), ("OMP_WAIT_POLICY", "PASSIVE"),
                            ("OPENBLAS_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1")):
        monkeypatch.setenv(variable, os.environ.get(variable, value))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(downloaded_notebook(name), as_version=4)
    assert any(cell.cell_type == "code" for cell in notebook.cells)
    client = nbclient.NotebookClient(notebook, kernel_name="python3",
                                     timeout=CELL_TIMEOUT_SECONDS,
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{name}.ipynb failed in a fresh kernel:\n{str(error)[-4000:]}")
    assert list(tmp_path.iterdir()) == [], f"{name}.ipynb wrote files into its working directory"
