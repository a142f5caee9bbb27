"""The ``graphm`` command: ``graphm train``, ``graphm info``, ``graphm bench``.

``graphm train`` with no arguments trains a small convolutional network on the 8x8 digits that
ship with graphm and prints its test accuracy; ``--model autoencoder`` trains a convolutional
autoencoder (conv down, transposed conv up) instead. Progress bars show the running loss; at the
end the output folder holds the checkpoint and PNG plots. A checkpoint is written atomically
after every epoch, so Ctrl-C loses at most the epoch in progress, and ``--resume`` continues from
it with the same result as a run that was never interrupted.

Exit status: 0 done, 1 training failed (a NaN or infinite loss, a bad file), 2 bad arguments,
130 interrupted by Ctrl-C.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import sys
import time

import numpy as np

__all__ = ["main", "make_cnn", "make_autoencoder", "train"]

CHECKPOINT_NAME = "checkpoint.npz"
DEFAULT_EPOCHS = {"cnn": 15, "autoencoder": 20}
DEFAULT_LR = {"cnn": 3e-3, "autoencoder": 1e-2}
#: The settings a run is made of; a checkpoint stores them and --resume reuses them.
CONFIG_DEFAULTS = dict(model="cnn", dataset="digits", data=None, epochs=None, batch_size=64,
                       lr=None, optimizer="adam", seed=0, test_size=0.2)


class TrainingError(Exception):
    """Training cannot go on (the message says why); the command exits with status 1."""


# --------------------------------------------------------------------------------------------
# The two models
# --------------------------------------------------------------------------------------------

def make_cnn(input_shape=(1, 8, 8), classes=10):
    """Two conv-ReLU-maxpool stages and a linear classifier (LeNet's shape, smaller).

    ``(N, C, H, W) -> (N, 32, H/2, W/2) -> (N, 64, H/4, W/4) -> (N, classes)`` logits.
    """
    from graphm import nn
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * (height // 4) * (width // 4), classes))


def make_autoencoder(input_shape=(1, 8, 8)):
    """Strided convolutions down to ``(32, H/4, W/4)``, transposed convolutions back up.

    Each ``ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1)`` exactly doubles the
    size, undoing its ``Conv2d(k=3, stride=2, padding=1)``; a sigmoid keeps outputs in [0, 1].
    """
    from graphm import nn
    channels = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
        nn.ConvTranspose2d(16, channels, 3, stride=2, padding=1, output_padding=1), nn.Sigmoid())


# --------------------------------------------------------------------------------------------
# graphm train
# --------------------------------------------------------------------------------------------

def _load_data(config):
    """Training and test arrays for the run's dataset; CNN inputs normalised per channel."""
    from graphm import data
    if config["dataset"] == "digits":
        images, labels = data.load_digits()
        x_train, x_test, y_train, y_test = data.train_test_split(
            images, labels, test_size=config["test_size"], seed=config["seed"], stratify=labels)
    else:
        if not config["data"]:
            raise TrainingError("--dataset mnist needs --data PATH: the folder with the four "
                                "IDX files (train-images-idx3-ubyte[.gz], ...)")
        x_train, y_train = data.load_mnist(config["data"], "train")
        x_test, y_test = data.load_mnist(config["data"], "test")
    normalization = None
    if config["model"] == "cnn":
        mean, std = data.channel_stats(x_train)
        normalization = {"mean": mean, "std": std}
        x_train = data.normalize(x_train, mean, std)
        x_test = data.normalize(x_test, mean, std)
    return x_train, y_train, x_test, y_test, normalization


def _make_optimizer(config, parameters):
    from graphm import optim
    kind = config["optimizer"]
    if kind == "adam":
        return optim.Adam(parameters, lr=config["lr"])
    if kind == "adamw":
        return optim.AdamW(parameters, lr=config["lr"])
    return optim.SGD(parameters, lr=config["lr"], momentum=0.9, nesterov=True)


class _Runner:
    """One training step and one evaluation, in eager or compiled mode (same numbers)."""

    def __init__(self, model, mode, loss_function, example):
        import graphm
        self.model, self.mode, self.loss_function = model, mode, loss_function
        self.compiled = graphm.compile(model, example, loss=loss_function) \
            if mode == "compiled" else None

    def train_step(self, inputs, targets):
        """Loss (float) and outputs of one batch; gradients are added into ``.grad``."""
        if self.compiled is not None:
            return self.compiled.forward_backward(inputs, targets)
        import graphm
        outputs = self.model(graphm.tensor(inputs))
        loss = self.loss_function(outputs, targets)
        loss.backward()
        return loss.item(), outputs.numpy()

    def predict(self, inputs, batch_size=512):
        import graphm
        results = []
        for start in range(0, len(inputs), batch_size):
            batch = inputs[start:start + batch_size]
            if self.compiled is not None:
                results.append(self.compiled(batch))
            else:
                with graphm.no_grad():
                    results.append(self.model(graphm.tensor(batch)).numpy())
        return np.concatenate(results)


def _metrics(kind, outputs, targets, loss_function):
    loss = float(loss_function(outputs, targets))
    if kind == "cnn":
        return {"loss": loss, "accuracy": float((outputs.argmax(axis=1) == targets).mean())}
    return {"loss": loss, "mse": loss}


def _resume_config(args, given, path):
    """The run's settings from the checkpoint; settings given on the command line must agree."""
    import graphm
    state = graphm.load(path)
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise TrainingError(f"{path} is a graphm checkpoint but not one written by "
                            "`graphm train` (it has no training configuration)")
    config = dict(state["config"])
    for key, value in given.items():
        if key != "epochs" and value is not None and value != config.get(key):
            raise TrainingError(f"--resume: the checkpoint was trained with "
                                f"--{key.replace('_', '-')} {config.get(key)}, but "
                                f"--{key.replace('_', '-')} {value} was given; leave it out to "
                                "continue the same run")
    if given.get("epochs") is not None:
        config["epochs"] = given["epochs"]
    return config, state


def train(args):
    """``graphm train``: returns the exit status."""
    import graphm
    from graphm import data, optim
    from graphm import functional as F
    from graphm import viz
    from tqdm.auto import tqdm

    started = time.perf_counter()
    given = {key: getattr(args, key) for key in CONFIG_DEFAULTS}
    state = None
    if args.resume:
        config, state = _resume_config(args, given, args.resume)
    else:
        config = {key: (CONFIG_DEFAULTS[key] if value is None else value)
                  for key, value in given.items()}
        for key, per_model in (("epochs", DEFAULT_EPOCHS), ("lr", DEFAULT_LR)):
            if config[key] is None:
                config[key] = per_model[config["model"]]
    out = args.out or (os.path.dirname(os.path.abspath(args.resume)) if args.resume
                       else "graphm-run")
    if os.path.exists(out) and not os.path.isdir(out):
        raise TrainingError(f"--out {out}: that is a file; give a folder for the checkpoint "
                            "and the plots")
    if config["data"] and config["dataset"] != "mnist":
        raise TrainingError(f"--data {config['data']} is read only with --dataset mnist "
                            f"(the dataset is {config['dataset']})")
    os.makedirs(out, exist_ok=True)
    checkpoint_path = os.path.join(out, CHECKPOINT_NAME)
    graphm.set_num_threads(args.threads)
    graphm.manual_seed(config["seed"])

    x_train, y_train, x_test, y_test, normalization = _load_data(config)
    kind = config["model"]
    input_shape = x_train.shape[1:]
    model = make_cnn(input_shape) if kind == "cnn" else make_autoencoder(input_shape)
    loss_function = F.cross_entropy if kind == "cnn" else F.mse_loss
    # the autoencoder's target is its own input
    train_targets, test_targets = (y_train, y_test) if kind == "cnn" else (x_train, x_test)
    optimizer = _make_optimizer(config, model.parameters())
    epochs = config["epochs"]
    scheduler = optim.CosineAnnealingLR(optimizer, T_max=epochs)
    loader = data.DataLoader(x_train, train_targets, batch_size=config["batch_size"],
                             shuffle=True, seed=config["seed"])
    history = {f"{split}_{name}": [] for split in ("train", "test")
               for name in (("loss", "accuracy") if kind == "cnn" else ("loss", "mse"))}
    start_epoch, step = 0, 0
    if state is not None:
        graphm.load(args.resume, architecture=model)        # the same network, or a clear error
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scheduler.T_max = epochs
        scheduler._apply()
        history = {key: list(values) for key, values in state["history"].items()}
        start_epoch, step = int(state["epoch"]), int(state["step"])
        if start_epoch >= epochs:
            raise TrainingError(f"--resume: {args.resume} has already trained {start_epoch} "
                                f"epochs; pass --epochs N with N > {start_epoch} to train more")
        print(f"resuming {args.resume} after epoch {start_epoch} of {epochs}")

    runner = _Runner(model, args.mode, loss_function, x_train[:config["batch_size"]])
    print(f"graphm train: {kind} on {config['dataset']} ({len(x_train)} training, "
          f"{len(x_test)} test samples of shape {tuple(input_shape)}), {args.mode} mode, "
          f"{config['optimizer']} lr={config['lr']}, batch {config['batch_size']}, "
          f"{epochs} epochs, {args.threads} threads, seed {config['seed']}")

    # the last complete checkpoint: the one resumed from until this run writes its own
    saved_epoch = start_epoch if state is not None else None
    saved_path = args.resume if state is not None else None
    bar = None
    try:
        for epoch in range(start_epoch, epochs):
            loader.epoch = epoch                    # the batch order depends on (seed, epoch)
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
                       disable=args.quiet, leave=False, file=sys.stderr, dynamic_ncols=True)
            total_loss = total_correct = seen = 0
            for batch_index, (inputs, targets) in enumerate(bar):
                step += 1
                optimizer.zero_grad()
                loss, outputs = runner.train_step(inputs, targets)
                if not math.isfinite(loss):
                    last = (f"the last complete checkpoint (epoch {saved_epoch}) is "
                            f"{saved_path}" if saved_epoch else "no checkpoint was written")
                    raise TrainingError(
                        f"the loss became {loss} at step {step} (epoch {epoch + 1}, batch "
                        f"{batch_index + 1}); training stopped before updating the weights with "
                        f"it. {last[0].upper() + last[1:]}. Try a smaller --lr (now "
                        f"{config['lr']}).")
                optimizer.step()
                total_loss += loss * len(inputs)
                seen += len(inputs)
                postfix = {"loss": f"{total_loss / seen:.4f}"}
                if kind == "cnn":
                    total_correct += int((outputs.argmax(axis=1) == targets).sum())
                    postfix["acc"] = f"{100 * total_correct / seen:.1f}%"
                bar.set_postfix(postfix, refresh=False)
            bar.close()
            scheduler.step()
            train_metrics = {"loss": total_loss / seen}
            if kind == "cnn":
                train_metrics["accuracy"] = total_correct / seen
            else:
                train_metrics["mse"] = train_metrics["loss"]
            test_metrics = _metrics(kind, runner.predict(x_test), test_targets, loss_function)
            for split, metrics in (("train", train_metrics), ("test", test_metrics)):
                for name, value in metrics.items():
                    history[f"{split}_{name}"].append(value)
            print(_epoch_line(kind, epoch + 1, epochs, train_metrics, test_metrics,
                              time.perf_counter() - started), flush=True)
            graphm.save({"config": config, "model": model.state_dict(),
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "history": history, "epoch": epoch + 1, "step": step,
                         "normalization": normalization},
                        checkpoint_path, architecture=model.architecture())
            saved_epoch, saved_path = epoch + 1, checkpoint_path
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        where = (f"the last complete checkpoint (epoch {saved_epoch}) is {saved_path}; "
                 f"continue with: graphm train --resume {saved_path}"
                 if saved_epoch else "no epoch was complete, so no checkpoint was written")
        print(f"\ninterrupted: {where}", file=sys.stderr)
        return 130
    finally:
        if bar is not None:
            bar.close()

    final = {key: values[-1] for key, values in history.items() if values}
    written = [checkpoint_path,
               viz.plot_curves(history, os.path.join(out, "curves.png"),
                               metric="accuracy" if kind == "cnn" else "mse")]
    first_conv = next(m for m in model.modules() if type(m).__name__ == "Conv2d")
    written.append(viz.plot_filters(first_conv.weight, os.path.join(out, "filters.png")))
    if kind == "autoencoder":
        reconstructions = runner.predict(x_test[:10])
        written.append(viz.plot_reconstructions(x_test[:10], reconstructions,
                                                os.path.join(out, "reconstructions.png")))
    elapsed = time.perf_counter() - started
    if kind == "cnn":
        correct = round(final["test_accuracy"] * len(y_test))
        print(f"test accuracy: {100 * final['test_accuracy']:.2f}% ({correct}/{len(y_test)}) "
              f"after {epochs} epochs, {elapsed:.1f} s")
    else:
        print(f"test reconstruction MSE: {final['test_mse']:.5f} after {epochs} epochs, "
              f"{elapsed:.1f} s")
    print("wrote:\n" + "\n".join(f"  {path}" for path in written))
    return 0


def _epoch_line(kind, epoch, epochs, train_metrics, test_metrics, elapsed):
    if kind == "cnn":
        return (f"epoch {epoch}/{epochs}: train loss {train_metrics['loss']:.4f} acc "
                f"{100 * train_metrics['accuracy']:.2f}% | test loss {test_metrics['loss']:.4f} "
                f"acc {100 * test_metrics['accuracy']:.2f}% | {elapsed:.1f} s")
    return (f"epoch {epoch}/{epochs}: train MSE {train_metrics['mse']:.5f} | test MSE "
            f"{test_metrics['mse']:.5f} | {elapsed:.1f} s")


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
    print(f"OpenMP: {'on' if graphm.openmp_enabled() else 'off (serial build)'}")
    print(f"threads: {graphm.get_num_threads()} (CPUs usable: {cpus}; set with "
          "graphm.set_num_threads or OMP_NUM_THREADS)")
    print(f"numpy {np.__version__}, BLAS: {_blas_description()}")
    print(f"torch: {'installed (for graphm.interop and the benchmarks)' if torch_spec else 'not installed (optional: pip install torch==2.13.0)'}")
    if args.checkpoint:
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
        if isinstance(state, dict) and "history" in state:
            history = state["history"]
            last = {key: values[-1] for key, values in history.items() if values}
            print(f"  trained epochs: {state.get('epoch')}; last test metrics: " +
                  ", ".join(f"{k[5:]}={v:.4f}" for k, v in last.items() if k.startswith("test_")))
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
# main
# --------------------------------------------------------------------------------------------

def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text):
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _fraction(text):
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="graphm", description="graphm: train and inspect small convolutional networks.")
    commands = parser.add_subparsers(dest="command", metavar="{train,info,bench}")
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
    t.add_argument("--epochs", type=_positive_int,
                   help=f"epochs in total (default {DEFAULT_EPOCHS['cnn']} for cnn, "
                        f"{DEFAULT_EPOCHS['autoencoder']} for autoencoder)")
    t.add_argument("--batch-size", type=_positive_int,
                   help=f"default {CONFIG_DEFAULTS['batch_size']}")
    t.add_argument("--lr", type=_positive_float,
                   help=f"initial learning rate, lowered along a cosine (default "
                        f"{DEFAULT_LR['cnn']} for cnn, {DEFAULT_LR['autoencoder']} for "
                        "autoencoder)")
    t.add_argument("--optimizer", choices=["adam", "adamw", "sgd"],
                   help="sgd is SGD with Nesterov momentum 0.9 (default adam)")
    t.add_argument("--test-size", type=_fraction,
                   help="fraction of digits held out for testing (default 0.2)")
    t.add_argument("--threads", type=_positive_int, default=2,
                   help="threads for graphm's kernels (default 2; results do not depend on it)")
    t.add_argument("--seed", type=int, help="seeds weights, split and batch order (default 0)")
    t.add_argument("--mode", choices=["eager", "compiled"], default="eager",
                   help="eager Tensors or a compiled GraphM program (same numbers; default eager)")
    t.add_argument("--out", metavar="DIR",
                   help="where to write checkpoint.npz and the plots (default ./graphm-run, or "
                        "the checkpoint's folder with --resume)")
    t.add_argument("--resume", metavar="CHECKPOINT",
                   help="continue the run saved in CHECKPOINT (its settings are reused; "
                        "--epochs may raise the total)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(handler=train)

    i = commands.add_parser("info", help="versions, OpenMP, threads, BLAS; describe a checkpoint")
    i.add_argument("checkpoint", nargs="?", help="a checkpoint to describe")
    i.set_defaults(handler=info)

    # listed for `graphm --help`; its arguments belong to the benchmark, so main() hands them
    # over without parsing (see _BENCH_HELP)
    commands.add_parser("bench", help="graphm vs PyTorch timings: conv (default), step, train "
                                      "(needs torch)", add_help=False)
    return parser


def main(argv=None):
    """Entry point of the ``graphm`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        args = argparse.Namespace(command="bench", arguments=argv[1:], handler=bench)
    else:
        args = build_parser().parse_args(argv)
    from graphm.checkpoint import CheckpointError
    try:
        return args.handler(args)
    except (TrainingError, CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"graphm {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
