"""What `import graphm` does before anything else (issue 11, sections 3 and 4): it says how to
build a source checkout whose kernels are not compiled, and it chooses how the OpenMP
runtime's waiting threads wait, unless the user chose."""
import os
import re
import shutil
import subprocess
import sys

import pytest

import graphm
from graphm import _kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(graphm.__file__)))
WAIT_VARIABLES = _kernels.WAIT_POLICY_VARIABLES


def python(code, cwd=None, **environment):
    """Run ``code`` in a fresh interpreter that imports this graphm (or the one in ``cwd``),
    with no OpenMP wait variable set unless given."""
    env = {key: value for key, value in os.environ.items() if key not in WAIT_VARIABLES}
    env.pop("PYTHONPATH", None)
    if cwd is None:
        env["PYTHONPATH"] = ROOT
    env.update(environment)
    return subprocess.run([sys.executable, "-c", code], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


# -- a source tree without a build -----------------------------------------------------------

@pytest.fixture
def unbuilt_copy(tmp_path):
    """graphm's package copied without its compiled modules, as a fresh clone has it."""
    shutil.copytree(os.path.join(ROOT, "graphm"), tmp_path / "graphm",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    return tmp_path


def last_line(stderr):
    return stderr.strip().splitlines()[-1]


def test_import_without_a_build_says_how_to_build(unbuilt_copy):
    result = python("import graphm", cwd=unbuilt_copy)
    assert result.returncode == 1
    line = last_line(result.stderr)
    assert line.startswith("ImportError: graphm's compiled kernels are missing: "), line
    assert f"{unbuilt_copy / 'graphm' / '_kernels'} has no _openmp." in line
    assert "(it is not built)" in line
    assert f"in {unbuilt_copy} run `pip install -e .`" in line
    assert "python setup.py build_ext --inplace" in line
    assert "ModuleNotFoundError" not in result.stderr


def test_import_with_a_build_for_another_python(unbuilt_copy):
    other = unbuilt_copy / "graphm" / "_kernels" / "_openmp.cpython-39-x86_64-linux-gnu.so"
    other.write_bytes(b"")
    line = last_line(python("import graphm", cwd=unbuilt_copy).stderr)
    assert "there is only _openmp.cpython-39-x86_64-linux-gnu.so, built for another Python" \
        in line and "pip install -e ." in line


def test_import_with_a_broken_build(unbuilt_copy):
    import importlib.machinery
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (unbuilt_copy / "graphm" / "_kernels" / f"_openmp{suffix}").write_bytes(b"not a library")
    line = last_line(python("import graphm", cwd=unbuilt_copy).stderr)
    assert line.startswith("ImportError: graphm's compiled kernels in ") and \
        "could not be loaded (" in line and "rebuild them: in" in line, line


# -- the OpenMP wait policy ------------------------------------------------------------------

def test_choose_wait_policy():
    settings, line = _kernels.choose_wait_policy({})
    assert settings == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "1000"}
    assert line == "OMP_WAIT_POLICY=PASSIVE, GOMP_SPINCOUNT=1000 (graphm's default)"
    for name in WAIT_VARIABLES:            # any one of them is the user's choice: hands off
        settings, line = _kernels.choose_wait_policy({name: "7"})
        assert settings == {} and line == f"{name}=7 (set by the user)"
    settings, line = _kernels.choose_wait_policy({"OMP_WAIT_POLICY": ""})
    assert settings == {}                  # set, even if empty
    settings, line = _kernels.choose_wait_policy({}, runtime_loaded=True)
    assert settings == {} and "another library loaded the runtime" in line


needs_openmp = pytest.mark.skipif(not graphm.openmp_enabled(),
                                  reason="a serial build loads no OpenMP runtime")
REPORT = ("import os, graphm; from graphm import _kernels; print(_kernels.wait_policy); "
          "print(sorted(k for k in os.environ if k in _kernels.WAIT_POLICY_VARIABLES))")


def runtime_settings(stderr):
    """What the runtime says it uses (OMP_DISPLAY_ENV=VERBOSE prints its settings as it
    loads, GCC's and LLVM's alike): {name: value}."""
    return dict(re.findall(r"\b(OMP_WAIT_POLICY|GOMP_SPINCOUNT|KMP_BLOCKTIME)\s*=\s*'([^']*)'",
                           stderr))


@needs_openmp
def test_default_wait_policy_reaches_the_runtime_and_leaves_the_environment():
    result = python(REPORT, OMP_DISPLAY_ENV="VERBOSE")
    assert result.returncode == 0, result.stderr
    policy, leftover = result.stdout.splitlines()
    assert policy == "OMP_WAIT_POLICY=PASSIVE, GOMP_SPINCOUNT=1000 (graphm's default)"
    assert leftover == "[]"                # given back: child processes see the user's env
    seen = runtime_settings(result.stderr)
    assert seen.get("OMP_WAIT_POLICY") == "PASSIVE", result.stderr
    if "GOMP_SPINCOUNT" in seen:           # GCC's libgomp: its spin count, read at load time
        assert seen["GOMP_SPINCOUNT"] == "1000"


@needs_openmp
@pytest.mark.parametrize("name, value, spin", [
    ("OMP_WAIT_POLICY", "ACTIVE", "30000000000"),    # libgomp: spin "forever" (5 min)
    ("OMP_WAIT_POLICY", "PASSIVE", "0"),
    ("GOMP_SPINCOUNT", "12345", "12345"),
])
def test_a_policy_the_user_set_is_respected(name, value, spin):
    result = python(REPORT, OMP_DISPLAY_ENV="VERBOSE", **{name: value})
    assert result.returncode == 0, result.stderr
    policy, leftover = result.stdout.splitlines()
    assert policy == f"{name}={value} (set by the user)"
    assert leftover == f"[{name!r}]"       # untouched
    seen = runtime_settings(result.stderr)
    if "GOMP_SPINCOUNT" in seen:
        assert seen["GOMP_SPINCOUNT"] == spin
    elif name == "OMP_WAIT_POLICY":
        assert seen.get("OMP_WAIT_POLICY") == value


def test_info_shows_the_wait_policy():
    result = subprocess.run([sys.executable, "-m", "graphm", "info"], check=False,
                            capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env={k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES})
    expected = ("OpenMP: on; waiting threads: OMP_WAIT_POLICY=PASSIVE, GOMP_SPINCOUNT=1000 "
                "(graphm's default)" if graphm.openmp_enabled() else "OpenMP: off")
    assert expected in result.stdout
