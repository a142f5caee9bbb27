"""The ``graphm`` command: ``graphm train``, ``graphm info``, ``graphm bench``, ``graphm certify``.

``graphm train`` with no arguments trains a small convolutional network on the 8x8 digits that
ship with graphm and prints its test accuracy; ``--model autoencoder`` trains a convolutional
autoencoder (conv down, transposed conv up) instead. Progress bars show the running loss; at the
end the output folder holds the checkpoint and PNG plots. The training itself lives in
:mod:`graphm.train` and the two networks in :mod:`graphm.nn.models`: this module only reads the
arguments, checks them, and reports.

Every failure is one line on stderr, ``graphm <command>: error: <what and what to do>``, never a
traceback, and the exit status says what kind it was:

=====  ========================================================================================
0      done
1      a failure at run time: a bad or unreadable file, an output folder that cannot be
       written, a full disk, a loss that became NaN or infinite
2      bad arguments (argparse's convention), including a value the data cannot satisfy
       (``--test-size`` leaving no test samples)
130    interrupted (Ctrl-C); the last complete checkpoint is kept and named
=====  ========================================================================================

Output cut short by its reader (``graphm info | head -3``) ends quietly with status 1.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import stat
import sys
import time

import numpy as np

from graphm.train import CONFIG_DEFAULTS, DEFAULT_EPOCHS, DEFAULT_LR, TrainingError, _plural

__all__ = ["main", "build_parser"]

#: ``--threads`` above this is surely a typo (and would overflow OpenMP's C int long before).
MAX_THREADS = 1024


# --------------------------------------------------------------------------------------------
# graphm train
# --------------------------------------------------------------------------------------------

def _check_regular_file(path, flag):
    """Raise TrainingError if ``path`` exists but is not a regular file.

    Opening a FIFO blocks until someone writes to it, and a directory or a device is no
    checkpoint either, so this is checked with ``stat`` before anything opens the path. A path
    that does not exist is left to :func:`graphm.load`, whose message says so.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        raise TrainingError(f"{flag}{path}: cannot read it ({error.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)"
                if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device")
        raise TrainingError(f"{flag}{path}: that is {kind}, not a checkpoint file")


def _epoch_line(kind, record, total_seconds):
    """One line per epoch: its metrics, the time it took, and the time since the start."""
    train_metrics, test_metrics = record["train"], record["test"]
    timing = f"epoch {record['seconds']:.1f} s, total {total_seconds:.1f} s"
    head = f"epoch {record['epoch']}/{record['epochs']}"
    if kind == "cnn":
        return (f"{head}: train loss {train_metrics['loss']:.4f} acc "
                f"{100 * train_metrics['accuracy']:.2f}% | test loss {test_metrics['loss']:.4f} "
                f"acc {100 * test_metrics['accuracy']:.2f}% | {timing}")
    return (f"{head}: train MSE {train_metrics['mse']:.5f} | test MSE "
            f"{test_metrics['mse']:.5f} | {timing}")


def train(args):
    """``graphm train``: returns the exit status."""
    import graphm
    from graphm import train as training
    from tqdm.auto import tqdm

    started = time.perf_counter()
    given = {key: getattr(args, key) for key in CONFIG_DEFAULTS}
    state = None
    if args.resume:
        _check_regular_file(args.resume, "--resume ")
        state = graphm.load(args.resume)
        config = training.resume_config(given, state, args.resume)
    else:
        config = training.resolve_config(given)
    out = args.out or (os.path.dirname(os.path.abspath(args.resume)) if args.resume
                       else "graphm-run")
    graphm.set_num_threads(args.threads)
    run = training.Training(config, out, mode=args.mode, state=state,
                            resume_path=args.resume)
    epochs = config["epochs"]
    if state is not None:
        print(f"resuming {args.resume} after epoch {run.start_epoch} of {epochs}")
    print(f"graphm train: {run.kind} on {config['dataset']} ({len(run.x_train)} training, "
          f"{len(run.x_test)} test samples of shape {tuple(run.x_train.shape[1:])}), "
          f"{args.mode} mode, {config['optimizer']} lr={config['lr']}, batch "
          f"{config['batch_size']}, {_plural(epochs, 'epoch')}, "
          f"{_plural(args.threads, 'thread')}, seed {config['seed']}", flush=True)

    def progress(batches, description):
        return tqdm(batches, desc=description, unit="batch", disable=args.quiet, leave=False,
                    file=sys.stderr, dynamic_ncols=True)

    try:
        for record in run.epochs(progress):
            print(_epoch_line(run.kind, record, time.perf_counter() - started), flush=True)
    except KeyboardInterrupt:
        where = (f"{run.last_checkpoint()}; continue with: graphm train --resume "
                 f"{run.saved_path}" if run.saved_epoch is not None
                 else "no epoch was complete, so no checkpoint was written")
        print(f"\ngraphm train: interrupted: {where}", file=sys.stderr)
        return 130

    written = [run.checkpoint_path] + run.write_plots()
    final = {key: values[-1] for key, values in run.history.items() if values}
    elapsed = time.perf_counter() - started
    if run.kind == "cnn":
        correct = round(final["test_accuracy"] * len(run.y_test))
        print(f"test accuracy: {100 * final['test_accuracy']:.2f}% ({correct}/{len(run.y_test)})"
              f" after {_plural(epochs, 'epoch')}, {elapsed:.1f} s")
    else:
        print(f"test reconstruction MSE: {final['test_mse']:.5f} after "
              f"{_plural(epochs, 'epoch')}, {elapsed:.1f} s")
    print("wrote:\n" + "\n".join(f"  {path}" for path in written))
    return 0


# --------------------------------------------------------------------------------------------
# graphm info
# --------------------------------------------------------------------------------------------

def _blas_description():
    """NumPy's BLAS, from its build configuration (``numpy.show_config``)."""
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:     # older NumPy, or a build without that section: not worth failing over
        return "unknown"


def info(args):
    """``graphm info``: versions, OpenMP, threads, BLAS; with a path, describe a checkpoint."""
    import graphm
    from graphm import checkpoint
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    torch_spec = importlib.util.find_spec("torch")
    print(f"graphm {graphm.__version__} ({os.path.dirname(graphm.__file__)})")
    print(f"python {platform.python_version()} on {platform.platform()}")
    from graphm import _kernels
    print(f"OpenMP: {'on' if graphm.openmp_enabled() else 'off (serial build)'}"
          + (f"; waiting threads: {_kernels.wait_policy}" if graphm.openmp_enabled() else ""))
    print(f"threads: {graphm.get_num_threads()} (CPUs usable: {cpus}; set with "
          "graphm.set_num_threads or OMP_NUM_THREADS)")
    print(f"numpy {np.__version__}, BLAS: {_blas_description()}")
    print(f"torch: {'installed (for graphm.interop and the benchmarks)' if torch_spec else 'not installed (optional: pip install torch==2.13.0)'}")
    if args.checkpoint:
        sys.stdout.flush()       # the lines above come first even if the checkpoint is bad
        _check_regular_file(args.checkpoint, "")
        header = checkpoint.load_header(args.checkpoint)
        print(f"\ncheckpoint {args.checkpoint}: format {header['format']} v{header['version']}, "
              f"written by graphm {header.get('graphm_version')}")
        architecture = header.get("architecture")
        if isinstance(architecture, dict) and architecture.get("type") == "Sequential":
            for index, layer in enumerate(architecture.get("layers", [])):
                args_text = ", ".join(f"{k}={v}" for k, v in layer.get("args", {}).items())
                print(f"  ({index}) {layer.get('type')}({args_text})")
        else:
            print(f"  architecture: {architecture}")
        state = graphm.load(args.checkpoint)
        if isinstance(state, dict) and isinstance(state.get("history"), dict):
            last = {key: values[-1] for key, values in state["history"].items()
                    if isinstance(values, list) and values
                    and isinstance(values[-1], (int, float))}
            metrics = ", ".join(f"{k[5:]}={v:.4f}" for k, v in last.items()
                                if k.startswith("test_"))
            print(f"  trained epochs: {state.get('epoch')}"
                  + (f"; last test metrics: {metrics}" if metrics else ""))
    return 0


# --------------------------------------------------------------------------------------------
# graphm bench
# --------------------------------------------------------------------------------------------

def _benchmark_script(name):
    """``benchmarks/<name>.py`` of the source checkout graphm runs from (benchmarks are not
    installed with the package)."""
    import graphm
    root = os.path.dirname(os.path.dirname(os.path.abspath(graphm.__file__)))
    path = os.path.join(root, "benchmarks", f"{name}.py")
    if not os.path.isfile(path):
        raise TrainingError(f"graphm bench runs benchmarks/{name}.py from graphm's source "
                            f"checkout, and there is none beside this installation ({root}). "
                            "Install graphm from a clone (pip install -e .) to benchmark.")
    return path


#: ``graphm bench NAME`` runs ``benchmarks/<file>.py``
BENCHMARKS = {"conv": "bench_conv", "step": "bench_train_step", "train": "bench_train"}
_BENCH_HELP = """usage: graphm bench [conv|step|train] [arguments of that benchmark]

Compare graphm with PyTorch (same process, same thread count); needs torch.
  conv   conv2d / conv_transpose2d forward and forward+backward (benchmarks/bench_conv.py),
         the default
  step   one training step of a LeNet-style CNN, batch 64, 28x28
         (benchmarks/bench_train_step.py)
  train  whole epochs of the `graphm train` CNN on the digits (benchmarks/bench_train.py)
Arguments after the name go to the benchmark: graphm bench conv --help
"""


def bench(args):
    """``graphm bench``: run one of benchmarks/*.py in this process."""
    arguments = list(args.arguments)
    if arguments[:1] in (["-h"], ["--help"]):
        print(_BENCH_HELP, end="")
        return 0
    which = arguments.pop(0) if arguments[:1] and arguments[0] in BENCHMARKS else "conv"
    path = _benchmark_script(BENCHMARKS[which])
    if importlib.util.find_spec("torch") is None:
        raise TrainingError("the benchmarks compare graphm with PyTorch, which is not installed: "
                            "pip install torch==2.13.0")
    spec = importlib.util.spec_from_file_location(f"graphm_{BENCHMARKS[which]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    program, sys.argv[0] = sys.argv[0], f"graphm bench {which}"   # for the benchmark's usage
    try:
        result = module.main(arguments)
    finally:
        sys.argv[0] = program
    return result if isinstance(result, int) else 0


# --------------------------------------------------------------------------------------------
# graphm certify
# --------------------------------------------------------------------------------------------

def certify(args):
    """``graphm certify``: certified accuracy of a trained CNN on its test digits, per eps.

    The ball is taken in pixel units (``[0, 1]``, clipped to that range) and mapped through the
    checkpoint's normalization at both corners (a monotone, correctly rounded map, so the
    normalized box contains every normalized image of the ball); graphm.verify then bounds
    the margins of the network as it computes them.
    """
    import graphm
    from graphm import checkpoint, data, verify
    from graphm import train as training
    from graphm.ops.interval import round_down, round_up, scalar_up
    from tqdm.auto import tqdm

    for value in args.eps:
        if not (math.isfinite(value) and value >= 0):
            raise TrainingError(f"--eps {value}: expected numbers >= 0 (the L-inf radius in "
                                "pixel units, pixels being in [0, 1])", exit_status=2)
    _check_regular_file(args.checkpoint, "--checkpoint ")
    header = checkpoint.load_header(args.checkpoint)
    state = graphm.load(args.checkpoint)
    if not (isinstance(state, dict) and isinstance(state.get("config"), dict)
            and "model" in state):
        raise TrainingError(f"--checkpoint {args.checkpoint}: not a checkpoint written by "
                            "graphm train (no config and model state in it)")
    config = state["config"]
    if config.get("model") != "cnn":
        raise TrainingError(f"--checkpoint {args.checkpoint}: holds an {config.get('model')}, "
                            "and only a classifier can be certified (graphm train --model cnn)")
    model = graphm.nn.from_architecture(header["architecture"])
    model.load_state_dict(state["model"])
    graphm.set_num_threads(args.threads)
    # the run's own test split, in raw pixels (the autoencoder's inputs are not normalized)
    _, _, pixels, labels, _ = training.load_data({**config, "model": "autoencoder"})
    if args.limit:
        pixels, labels = pixels[:args.limit], labels[:args.limit]
    norm = state.get("normalization") or {}
    mean = np.asarray(norm.get("mean", np.zeros(pixels.shape[1])), pixels.dtype)
    std = np.asarray(norm.get("std", np.ones(pixels.shape[1])), pixels.dtype)
    print(f"graphm certify: {args.checkpoint}, {len(labels)} test digits of shape "
          f"{tuple(pixels.shape[1:])}, method {args.method}, "
          f"{_plural(args.threads, 'thread')}", flush=True)
    with graphm.no_grad():
        logits = np.concatenate([model(graphm.tensor(data.normalize(pixels[i:i + 512], mean,
                                                                    std))).numpy()
                                 for i in range(0, len(labels), 512)])
    clean = float(np.mean(logits.argmax(axis=1) == labels))
    print(f"clean accuracy: {100 * clean:.2f}%")
    accuracies = []
    for eps in args.eps:
        started = time.perf_counter()
        certified = 0
        batches = range(0, len(labels), args.batch_size)
        for start in tqdm(batches, desc=f"eps {eps:g}", unit="batch", disable=args.quiet,
                          leave=False, file=sys.stderr, dynamic_ncols=True):
            batch = pixels[start:start + args.batch_size]
            # the ball in pixels, corners rounded outward, clipped to [0, 1]
            radius = scalar_up(eps, batch.dtype)
            low = np.maximum(round_down(batch - radius), batch.dtype.type(0))
            high = np.minimum(round_up(batch + radius), batch.dtype.type(1))
            result = verify.certify_box(model, data.normalize(low, mean, std),
                                        data.normalize(high, mean, std),
                                        labels[start:start + args.batch_size], args.method)
            certified += int(result.certified.sum())
        accuracy = certified / len(labels)
        accuracies.append(accuracy)
        print(f"eps {eps:g}: certified accuracy {100 * accuracy:.2f}% ({certified}/"
              f"{len(labels)}), {time.perf_counter() - started:.1f} s", flush=True)
    out = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    os.makedirs(out, exist_ok=True)
    figure = verify.plot_certified_accuracy(args.eps, {args.method: accuracies},
                                            os.path.join(out, "certified_accuracy.png"),
                                            clean=clean)
    print(f"wrote:\n  {figure}")
    return 0


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

class _ArgumentParser(argparse.ArgumentParser):
    """argparse, with each error on one line: ``graphm train: error: ...`` (then exit 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _integer(text, low, high=None):
    """``text`` as an int in ``[low, high]``, or an argparse error saying what was expected."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise argparse.ArgumentTypeError(f"expected a whole number {bound}, got {text!r}")
    return value


# argparse names a type function in some messages, so each reads as the value it expects
def positive_integer(text):
    return _integer(text, 1)


def thread_count(text):
    return _integer(text, 1, MAX_THREADS)


def seed(text):
    return _integer(text, 0, 2 ** 64 - 1)


def positive_number(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1 (exclusive), "
                                         f"got {text!r}")
    return value


def folder(text):
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a folder name, got {text!r}")
    return text


def build_parser():
    """The parser of ``graphm``, its subcommands and their options."""
    import graphm
    parser = _ArgumentParser(
        prog="graphm", description="graphm: train and inspect small convolutional networks.",
        epilog="Exit status: 0 done, 1 failed at run time, 2 bad arguments, 130 interrupted.")
    parser.add_argument("--version", action="version", version=f"graphm {graphm.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{train,info,bench,certify}")
    commands.required = True

    t = commands.add_parser("train", help="train a CNN (or an autoencoder) and write plots",
                            description="Train a small CNN on the 8x8 digits (default) or MNIST; "
                                        "write a checkpoint and PNG plots into --out.")
    # None means "not given": the defaults (or, with --resume, the checkpoint's) fill them in
    t.add_argument("--model", choices=["cnn", "autoencoder"],
                   help="cnn: classify digits; autoencoder: reconstruct them (default cnn)")
    t.add_argument("--dataset", choices=["digits", "mnist"],
                   help="digits: 8x8, shipped with graphm; mnist: IDX files at --data "
                        "(default digits)")
    t.add_argument("--data", metavar="PATH", help="folder with MNIST/Fashion-MNIST IDX files")
    t.add_argument("--epochs", type=positive_integer, metavar="N",
                   help=f"epochs in total (default {DEFAULT_EPOCHS['cnn']} for cnn, "
                        f"{DEFAULT_EPOCHS['autoencoder']} for autoencoder)")
    t.add_argument("--batch-size", type=positive_integer, metavar="N",
                   help=f"default {CONFIG_DEFAULTS['batch_size']}")
    t.add_argument("--lr", type=positive_number,
                   help=f"initial learning rate, lowered along a cosine (default "
                        f"{DEFAULT_LR['cnn']} for cnn, {DEFAULT_LR['autoencoder']} for "
                        "autoencoder)")
    t.add_argument("--optimizer", choices=["adam", "adamw", "sgd"],
                   help="sgd is SGD with Nesterov momentum 0.9 (default adam)")
    t.add_argument("--test-size", type=fraction, metavar="FRACTION",
                   help="fraction of digits held out for testing (default 0.2)")
    t.add_argument("--threads", type=thread_count, default=2, metavar="N",
                   help=f"threads for graphm's kernels, 1 to {MAX_THREADS} (default 2; results "
                        "do not depend on it)")
    t.add_argument("--seed", type=seed, metavar="N",
                   help="seeds weights, split and batch order; 0 or more (default 0)")
    t.add_argument("--mode", choices=["eager", "compiled"], default="eager",
                   help="eager Tensors or a compiled GraphM program (same numbers; default eager)")
    t.add_argument("--out", metavar="DIR", type=folder,
                   help="where to write checkpoint.npz and the plots (default ./graphm-run, or "
                        "the checkpoint's folder with --resume); created if missing, and "
                        "tested for writing before training starts")
    t.add_argument("--resume", metavar="CHECKPOINT",
                   help="continue the run saved in CHECKPOINT (its settings are reused; "
                        "--epochs may raise the total)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(handler=train)

    i = commands.add_parser("info", help="versions, OpenMP, threads, BLAS; describe a checkpoint")
    i.add_argument("checkpoint", nargs="?", help="a checkpoint to describe")
    i.set_defaults(handler=info)

    c = commands.add_parser("certify", help="certified accuracy of a trained CNN for each eps "
                                            "(interval bounds, CROWN)",
                            description="Prove, for each test digit, that no image within eps "
                                        "(L-inf, pixel units) of it changes the trained CNN's "
                                        "label, with bounds that are sound in floating point; "
                                        "print the certified accuracy per eps and write "
                                        "certified_accuracy.png.")
    c.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="a checkpoint of graphm train --model cnn (e.g. graphm-run/checkpoint.npz)")
    c.add_argument("--eps", type=float, nargs="+", default=[0.005, 0.01, 0.02], metavar="EPS",
                   help="L-inf radii in pixel units, pixels in [0, 1] (default 0.005 0.01 0.02)")
    c.add_argument("--method", choices=["crown", "crown-ibp", "ibp"], default="crown",
                   help="crown: CROWN on the margins (tightest); crown-ibp: CROWN with interval "
                        "pre-activation bounds (faster); ibp: interval bounds (default crown)")
    c.add_argument("--limit", type=positive_integer, metavar="N",
                   help="certify the first N test digits only (default all)")
    c.add_argument("--batch-size", type=positive_integer, default=32, metavar="N",
                   help="digits bounded together (default 32)")
    c.add_argument("--threads", type=thread_count, default=2, metavar="N",
                   help="threads for graphm's kernels (default 2)")
    c.add_argument("--out", metavar="DIR", type=folder,
                   help="where to write certified_accuracy.png (default the checkpoint's folder)")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.set_defaults(handler=certify)

    # listed for `graphm --help`; its arguments belong to the benchmark, so main() hands them
    # over without parsing (see _BENCH_HELP)
    commands.add_parser("bench", help="graphm vs PyTorch timings: conv (default), step, train "
                                      "(needs torch)", add_help=False)
    return parser


def _describe(error):
    """One line for an exception that reached :func:`main`."""
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror}"
    return str(error) or type(error).__name__


def _run(argv):
    if argv[:1] == ["bench"]:
        args = argparse.Namespace(command="bench", arguments=argv[1:], handler=bench)
    else:
        args = build_parser().parse_args(argv)
    from graphm.checkpoint import CheckpointError
    try:
        status = args.handler(args)
        sys.stdout.flush()       # a closed pipe shows up here, inside the handlers below
        return status
    except BrokenPipeError:      # an OSError, but not a failure: main() ends quietly
        raise
    except TrainingError as error:
        print(f"graphm {args.command}: error: {error}", file=sys.stderr)
        return error.exit_status
    except (CheckpointError, OSError, ValueError) as error:
        print(f"graphm {args.command}: error: {_describe(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ngraphm {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:    # a bug: still one line, with what is needed to report it
        print(f"graphm {args.command}: error: {type(error).__name__}: {_describe(error)} "
              "(this looks like a bug in graphm; please report it with the command you ran)",
              file=sys.stderr)
        return 1


def main(argv=None):
    """Entry point of the ``graphm`` console script; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``graphm`` (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 done, 1 a failure at run time, 2 bad arguments, 130 interrupted. argparse's own
        exits (``--help``, ``--version``, bad arguments) raise SystemExit as usual.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return _run(argv)
    except BrokenPipeError:
        # the reader went away (`graphm info | head -3`): stop quietly; point stdout at
        # /dev/null so that Python's own flush at exit does not complain again
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 1
    except KeyboardInterrupt:          # while parsing or importing
        print("\ngraphm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
