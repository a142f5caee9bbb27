"""Thread control and build information for graphm's compiled kernels.

The kernels take the thread count as an argument (``prange(..., num_threads=n)``) instead of
reading OpenMP's global state, so graphm never changes the thread count of other libraries
(NumPy's BLAS, PyTorch) living in the same process.
"""
import os

from graphm._kernels._openmp import openmp_enabled as _compiled_with_openmp

__all__ = ["get_num_threads", "openmp_enabled", "set_num_threads"]


def openmp_enabled():
    """Return True if the kernels were compiled with OpenMP, False for a serial build."""
    return bool(_compiled_with_openmp())


MAX_NUM_THREADS = 1024   # far above any CPU graphm runs on, far below the kernels' C int


def _default_num_threads():
    """``OMP_NUM_THREADS`` if it is set to a positive integer (at most ``MAX_NUM_THREADS``),
    else the CPUs we may run on."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return min(int(env), MAX_NUM_THREADS)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_num_threads = _default_num_threads()


def set_num_threads(n):
    """Set how many threads graphm's kernels use (results do not depend on it, bit for bit).

    Parameters
    ----------
    n : int
        A positive integer, at most ``MAX_NUM_THREADS`` (1024). Values above the number of CPUs
        are allowed (they only oversubscribe). In a serial build (``openmp_enabled()`` is
        False) the value is kept but has no effect.

    Raises
    ------
    TypeError
        If ``n`` is not an int.
    ValueError
        If ``n`` is below 1 or above ``MAX_NUM_THREADS``: the range is checked here, when the
        value is set, not at the next kernel call.
    """
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"set_num_threads: n must be an int, got {n!r} of type {type(n).__name__}")
    n = int(n.__index__()) if not isinstance(n, int) else n
    if not 1 <= n <= MAX_NUM_THREADS:
        raise ValueError(f"set_num_threads: n must be between 1 and {MAX_NUM_THREADS}, got {n}")
    _num_threads = n


def get_num_threads():
    """Return the number of threads graphm's kernels use."""
    return _num_threads
