"""graphm's compiled kernels (typed Cython + OpenMP): see _conv.pyx for the three conv kernels.

Importing this package loads the two extension modules, and with them the OpenMP runtime.
Two things are settled first, because afterwards it is too late:

* **How waiting threads wait.** A thread that has finished its share of a parallel loop waits
  for the others, and between loops for the next one. OpenMP runtimes by default *spin* for a
  while (GCC's libgomp about 300,000 times, a few milliseconds) before they sleep. On a machine
  where another program keeps a core busy, the spinning threads take the cores from that
  program and from the thread that still has work to do, and a training step of many small
  kernels became about 3 times slower than on an idle machine (``benchmarks/bench_busy.py``).
  Threads that sleep at once (``OMP_WAIT_POLICY=PASSIVE``) leave the core to whoever needs it,
  and the busy step was twice as fast, but each wake-up costs microseconds, which made the
  step about 20% slower on an idle machine. So graphm's default is :data:`DEFAULT_WAIT_POLICY`:
  passive, after a spin of 1,000 turns (about 10 microseconds, long enough for the threads of
  one loop to meet at its end; in the benchmark 5-25% slower than spinning when idle, still
  about twice as fast when busy). ``GOMP_SPINCOUNT`` is libgomp's; LLVM's runtime ignores it
  and sleeps at once. The runtime reads these variables once, when it is loaded, so they are
  set here, just before the extensions load it, and only if the user chose no policy of their
  own: any of :data:`WAIT_POLICY_VARIABLES` set (even to an empty string) leaves all of them
  alone. They are removed from the environment again once the
  runtime has read them, so that child processes and other runtimes see the user's environment
  unchanged. If another library (PyTorch, for one) loaded the same runtime before ``import
  graphm``, it has already read its settings and graphm cannot change them: :data:`wait_policy`
  then says so.
* **A missing build.** A source checkout has ``.pyx`` files but no compiled modules until it is
  built; the ImportError then says how to build them rather than naming a module the user has
  never heard of.
"""
import importlib
import importlib.machinery
import os
import sys

#: The environment variables by which a user chooses how OpenMP threads wait: the standard one,
#: GCC's (libgomp) spin count, and LLVM/Intel's (libomp) block time and library mode.
WAIT_POLICY_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "KMP_LIBRARY")

#: The policy graphm chooses when the user chose none (see the module's docstring for why).
DEFAULT_WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "1000"}

#: One line on the wait policy in force and who chose it (shown by ``graphm info``).
wait_policy = "none (serial build)"

# shared-library names of the OpenMP runtimes: GCC's, LLVM's, Intel's
_RUNTIME_NAMES = ("libgomp", "libomp", "libiomp5")


def choose_wait_policy(environ, runtime_loaded=False):
    """Decide the wait policy for the OpenMP runtime about to be loaded.

    Parameters
    ----------
    environ : mapping
        The environment (``os.environ``).
    runtime_loaded : bool
        True if an OpenMP runtime is already loaded in this process (it has read its settings).

    Returns
    -------
    (dict, str)
        The variables to set (empty: leave the environment alone) and the line for
        :data:`wait_policy`.
    """
    chosen = [f"{name}={environ[name]}" for name in WAIT_POLICY_VARIABLES if name in environ]
    if chosen:
        return {}, f"{', '.join(chosen)} (set by the user)"
    if runtime_loaded:
        return {}, ("the OpenMP runtime's own default (another library loaded the runtime "
                      "before graphm; export OMP_WAIT_POLICY=PASSIVE to choose)")
    settings = ", ".join(f"{name}={value}" for name, value in DEFAULT_WAIT_POLICY.items())
    return dict(DEFAULT_WAIT_POLICY), f"{settings} (graphm's default)"


def _runtime_loaded():
    """True if this process has an OpenMP runtime loaded already (Linux: /proc/self/maps)."""
    try:
        with open("/proc/self/maps") as maps:
            text = maps.read()
    except OSError:        # not Linux: assume not, the usual case
        return False
    return any(f"/{name}" in text for name in _RUNTIME_NAMES)


def _not_built(error):
    """The ImportError to raise when an extension module is missing or cannot be loaded."""
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    build = f"in {root} run `pip install -e .` (or `python setup.py build_ext --inplace`)"
    if isinstance(error, ModuleNotFoundError) and error.name and \
            error.name.startswith(__name__ + "."):
        name = error.name.rsplit(".", 1)[1]
        expected = name + importlib.machinery.EXTENSION_SUFFIXES[0]
        others = sorted(entry for entry in os.listdir(here) if entry.startswith(name + ".")
                        and entry.endswith((".so", ".pyd")))
        found = (f"there is only {', '.join(others)}, built for another Python"
                 if others else "it is not built")
        return ImportError(
            f"graphm's compiled kernels are missing: {here} has no {expected} for Python "
            f"{sys.version_info.major}.{sys.version_info.minor} ({found}). If this is graphm's "
            f"source checkout, build them: {build}; to use an installed graphm instead, run "
            "Python from another folder.")
    return ImportError(f"graphm's compiled kernels in {here} could not be loaded ({error}); "
                       f"rebuild them: {build}")


def _load():
    global wait_policy
    settings, wait_policy = choose_wait_policy(os.environ, _runtime_loaded())
    os.environ.update(settings)
    try:
        openmp = importlib.import_module(__name__ + "._openmp")   # loads the OpenMP runtime
        importlib.import_module(__name__ + "._conv")
    except ImportError as error:
        raise _not_built(error) from None
    finally:
        for name in settings:        # the runtime has read them: give the environment back
            os.environ.pop(name, None)
    if not openmp.openmp_enabled():
        wait_policy = "none (serial build)"


_load()
