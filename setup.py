"""Build graphm's Cython kernels, with OpenMP when the compiler has it.

Environment switches (read at build time):

``GRAPHM_NO_OPENMP=1``  build the kernels serially even if OpenMP is available.
``GRAPHM_DEBUG=1``      bounds checking and wraparound on, ``-O0 -g``: for running the test-suite
                        against index errors, not for speed.
"""
import os
import shutil
import subprocess
import tempfile
import textwrap

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("GRAPHM_DEBUG", "0") == "1"
NO_OPENMP = os.environ.get("GRAPHM_NO_OPENMP", "0") == "1"

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
        openmp_flag = None if NO_OPENMP else self._probe_openmp()
        if NO_OPENMP:
            print("graphm: GRAPHM_NO_OPENMP=1, building the kernels serially")
        elif openmp_flag is None:
            print("graphm: WARNING: this compiler cannot build OpenMP programs; "
                  "building the kernels serially (graphm.openmp_enabled() will be False)")
        for ext in self.extensions:
            ext.extra_compile_args += ["-O0", "-g"] if DEBUG else ["-O3"]
            if openmp_flag:
                ext.extra_compile_args.append(openmp_flag)
                ext.extra_link_args.append(openmp_flag)
        super().build_extensions()

    def _probe_openmp(self):
        flag = "/openmp" if self.compiler.compiler_type == "msvc" else "-fopenmp"
        tmp = tempfile.mkdtemp(prefix="graphm_openmp_probe_")
        try:
            source = os.path.join(tmp, "probe.c")
            with open(source, "w") as f:
                f.write(OPENMP_PROBE)
            objects = self.compiler.compile([source], output_dir=tmp, extra_postargs=[flag])
            self.compiler.link_executable(objects, "probe", output_dir=tmp, extra_postargs=[flag])
            result = subprocess.run([os.path.join(tmp, "probe")], capture_output=True, timeout=60)
            return flag if result.returncode == 0 else None
        except Exception as error:  # compile, link or run failed: no usable OpenMP
            print(f"graphm: OpenMP probe failed: {error}")
            return None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def kernel(name):
    return Extension(f"graphm._kernels.{name}", [f"graphm/_kernels/{name}.pyx"],
                     include_dirs=["graphm/_kernels"])


setup(
    ext_modules=cythonize([kernel("_conv"), kernel("_openmp")], compiler_directives=DIRECTIVES,
                          # a rebuild with other switches must not reuse stale .c files
                          force=True),
    cmdclass={"build_ext": BuildExtWithOpenMP},
)
