# The one place where graphm touches OpenMP directly (scikit-learn's _openmp_helpers.pxd is the
# model).  When the extension is compiled without -fopenmp, _OPENMP is undefined, omp.h is not
# included, and the stand-ins below make the same code build serially: Cython then turns every
# prange into a plain loop.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define GRAPHM_OPENMP_ENABLED 1
    #else
    #define GRAPHM_OPENMP_ENABLED 0
    static int omp_get_max_threads(void) { return 1; }
    static int omp_get_thread_num(void) { return 0; }
    #endif
    """
    bint GRAPHM_OPENMP_ENABLED
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil
