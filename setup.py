"""Build graphm's Cython kernels, with OpenMP when the compiler has it.

Environment switches (read at build time):

``GRAPHM_NO_OPENMP=1``  build the kernels serially even if OpenMP is available.
``GRAPHM_PORTABLE=1``   compile the plain-C GEMM micro-kernel (gemm_microkernel_portable.h)
                        instead of the one written with GCC vector extensions: what MSVC always
                        gets, forced on any compiler (CI checks that it passes the kernel tests).
``GRAPHM_DEBUG=1``      bounds checking and wraparound on, ``-O0 -g`` (``/Od /Zi`` for MSVC):
                        for running the test-suite against index errors, not for speed.

The usual compiler variables work as for any setuptools build: ``CC=clang`` (Debian's clang
finds OpenMP through ``libomp-dev``), and on macOS, as scikit-learn does, Apple's clang with
Homebrew's libomp through ``CPPFLAGS="-Xpreprocessor -fopenmp"``, ``CFLAGS=-I<libomp>/include``
and ``LDFLAGS="-L<libomp>/lib -lomp"``: when ``CPPFLAGS`` names OpenMP, no flag is added here.

Flags fit the compiler: ``-O3`` and ``-fopenmp`` for GCC and Clang, ``/O2`` and ``/openmp`` for
MSVC.  Nothing x86-specific is asked for on other CPUs: the micro-kernel's AVX2/AVX-512 clones
and CPU detection are compiled only for x86-64 (guarded in the header, so that a cross-compiler
gets it right too, and here by ``platform.machine()``).
"""
import os
import platform
import sys
import shutil
import subprocess
import tempfile
import textwrap

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("GRAPHM_DEBUG", "0") == "1"
NO_OPENMP = os.environ.get("GRAPHM_NO_OPENMP", "0") == "1"
PORTABLE = os.environ.get("GRAPHM_PORTABLE", "0") == "1"
X86_64 = platform.machine().lower() in ("x86_64", "amd64")

# C macros for every kernel (the header reads them; _openmp.microkernel() reports the choice).
MACROS = ([("GRAPHM_PORTABLE", "1")] if PORTABLE else []) + \
         ([] if X86_64 else [("GRAPHM_NO_MULTIVERSION", "1")])

# All compiler directives live here, so that the debug switch reaches every kernel.
DIRECTIVES = {
    "language_level": 3,
    "cdivision": True,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "embedsignature": True,
}

OPENMP_PROBE = textwrap.dedent("""
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int threads = 0;
        #pragma omp parallel num_threads(2) reduction(+:threads)
        threads += 1;
        printf("%d\\n", threads);
        return threads == 2 ? 0 : 1;
    }
""")


class BuildExtWithOpenMP(build_ext):
    """build_ext that compiles and runs a tiny OpenMP program first (scikit-learn does the same)."""

    def build_extensions(self):
        msvc = self.compiler.compiler_type == "msvc"
        openmp_flags = None if NO_OPENMP else self._probe_openmp(self._openmp_flags(msvc))
        if NO_OPENMP:
            print("graphm: GRAPHM_NO_OPENMP=1, building the kernels serially")
        elif openmp_flags is None:
            print("graphm: WARNING: this compiler cannot build OpenMP programs; "
                  "building the kernels serially (graphm.openmp_enabled() will be False)")
        if msvc:
            optimise = ["/Od", "/Zi"] if DEBUG else ["/O2"]
        else:
            optimise = ["-O0", "-g"] if DEBUG else ["-O3"]
        for ext in self.extensions:
            ext.extra_compile_args += optimise
            if openmp_flags:
                ext.extra_compile_args += openmp_flags
                if not msvc:  # MSVC's linker finds the OpenMP runtime by itself
                    ext.extra_link_args += openmp_flags
        compiler = "msvc" if msvc else os.path.basename(self.compiler.compiler_so[0])
        microkernel = "portable C" if PORTABLE or msvc else "GCC vector extensions"
        clones = X86_64 and not msvc and "clang" not in compiler
        openmp = ("off" if openmp_flags is None else " ".join(openmp_flags) or "flags from CPPFLAGS")
        print(f"graphm: compiler {compiler}; micro-kernel: {microkernel}"
              f"{', x86-64 target clones' if clones else ''}; OpenMP: {openmp}")
        super().build_extensions()

    @staticmethod
    def _openmp_flags(msvc):
        if msvc:
            return ["/openmp"]
        if sys.platform == "darwin" and "openmp" in os.environ.get("CPPFLAGS", ""):
            return []  # Apple's clang: -Xpreprocessor -fopenmp and -lomp come from the environment
        return ["-fopenmp"]

    def _probe_openmp(self, flags):
        """The flags if a tiny OpenMP program compiles, links and runs two threads, else None."""
        # MSVC's linker takes no /openmp; elsewhere LDFLAGS (macOS: -lomp) must reach the probe
        link_flags = ([] if self.compiler.compiler_type == "msvc"
                      else flags + os.environ.get("LDFLAGS", "").split())
        tmp = tempfile.mkdtemp(prefix="graphm_openmp_probe_")
        try:
            source = os.path.join(tmp, "probe.c")
            with open(source, "w") as f:
                f.write(OPENMP_PROBE)
            objects = self.compiler.compile([source], output_dir=tmp, extra_postargs=flags)
            self.compiler.link_executable(objects, "probe", output_dir=tmp,
                                          extra_postargs=link_flags)
            result = subprocess.run([os.path.join(tmp, "probe")], capture_output=True, timeout=60)
            return flags if result.returncode == 0 else None
        except Exception as error:  # compile, link or run failed: no usable OpenMP
            print(f"graphm: OpenMP probe failed: {error}")
            return None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def kernel(name):
    return Extension(f"graphm._kernels.{name}", [f"graphm/_kernels/{name}.pyx"],
                     include_dirs=["graphm/_kernels"], define_macros=MACROS)


setup(
    ext_modules=cythonize([kernel("_conv"), kernel("_openmp")], compiler_directives=DIRECTIVES,
                          # a rebuild with other switches must not reuse stale .c files
                          force=True),
    cmdclass={"build_ext": BuildExtWithOpenMP},
)
