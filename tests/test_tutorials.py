"""Every tutorial in tutorials/ runs as a plain script, outside Sphinx, without error.

The documentation build runs them too (sphinx-gallery), but a student runs them with
``python tutorials/plot_....py``: each one here runs in its own interpreter, with matplotlib's
non-interactive backend, two graphm threads, in an empty working directory (a tutorial must not
depend on where it is started or write files), under a time limit that catches a hang.  The
tutorials are written to take well under 30 s each on two cores; the limit is looser so that a
busy test machine does not turn slowness into a failure.
"""
import os
import pathlib
import subprocess
import sys
import time

import pytest

TUTORIALS_DIR = pathlib.Path(__file__).resolve().parent.parent / "tutorials"
TUTORIALS = sorted(TUTORIALS_DIR.glob("plot_*.py"))
TIME_LIMIT_SECONDS = 120


def test_there_are_tutorials():
    assert len(TUTORIALS) >= 4, f"expected the tutorials in {TUTORIALS_DIR}, found {TUTORIALS}"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path):
    # As in docs/conf.py: two graphm threads, serial BLAS, and idle OpenMP threads that sleep
    # rather than spin (spinning threads on a machine busy with other tests slow small
    # convolutions down by orders of magnitude).
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    runner = ("import runpy, sys; sys.argv = [sys.argv[1]]; "
              "runpy.run_path(sys.argv[0], run_name='__main__')")
    start = time.perf_counter()
    try:
        result = subprocess.run([sys.executable, "-c", runner, str(path)], cwd=tmp_path,
                                env=env, capture_output=True, text=True,
                                timeout=TIME_LIMIT_SECONDS)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{path.name} did not finish within {TIME_LIMIT_SECONDS} s "
                    f"(a hang?); output so far:\n{error.stdout}\n{error.stderr}")
    seconds = time.perf_counter() - start
    assert result.returncode == 0, (
        f"{path.name} failed (exit code {result.returncode}) after {seconds:.1f} s\n"
        f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-8000:]}")
    assert list(tmp_path.iterdir()) == [], f"{path.name} wrote files into its working directory"
