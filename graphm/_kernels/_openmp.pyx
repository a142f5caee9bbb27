"""Build-time facts about OpenMP, readable from Python."""
from graphm._kernels._openmp_helpers cimport GRAPHM_OPENMP_ENABLED, omp_get_max_threads


def openmp_enabled():
    """True if this extension was compiled with OpenMP (``-fopenmp``), False for a serial build."""
    return bool(GRAPHM_OPENMP_ENABLED)


def openmp_max_threads():
    """OpenMP's own default thread count (1 in a serial build); graphm passes its own count."""
    return omp_get_max_threads()
