"""graphm's compiled kernels (typed Cython + OpenMP): see _conv.pyx for the three conv kernels."""
