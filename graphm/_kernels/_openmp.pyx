"""Build-time facts about OpenMP and the GEMM micro-kernel, readable from Python."""
from graphm._kernels._openmp_helpers cimport GRAPHM_OPENMP_ENABLED, omp_get_max_threads

cdef extern from "gemm_microkernel.h":
    # 1 when this build compiled the plain-C micro-kernel (MSVC, or GRAPHM_PORTABLE=1)
    int GRAPHM_MICROKERNEL_PORTABLE


def openmp_enabled():
    """True if this extension was compiled with OpenMP (``-fopenmp``), False for a serial build."""
    return bool(GRAPHM_OPENMP_ENABLED)


def openmp_max_threads():
    """OpenMP's own default thread count (1 in a serial build); graphm passes its own count."""
    return omp_get_max_threads()


def microkernel():
    """Which GEMM micro-kernel was compiled: ``"vector"`` (GCC/Clang vector extensions) or
    ``"portable"`` (plain C: MSVC, or a build with ``GRAPHM_PORTABLE=1``)."""
    return "portable" if GRAPHM_MICROKERNEL_PORTABLE else "vector"
