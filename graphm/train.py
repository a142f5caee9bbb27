"""The training loop of ``graphm train``, as a library: data, model, optimizer, epochs, checkpoints.

The command line (:mod:`graphm.cli`) only turns arguments into a *config* and prints what this
module reports; everything else happens here, so a script or a notebook can run the same
training::

    from graphm import train
    config = train.resolve_config({"model": "cnn", "epochs": 3})
    run = train.Training(config, "runs/cnn")      # loads the data, builds the model
    for record in run.epochs():                    # one dict per finished epoch
        print(record["epoch"], record["test"]["accuracy"], record["seconds"])
    run.write_plots()

A checkpoint is written atomically (:func:`graphm.save`) after every epoch, so an interruption
loses at most the epoch in progress, and a :class:`Training` built from that checkpoint
(``state=graphm.load(path)``) continues with the same result as a run never interrupted: the
batch order depends only on the seed and the epoch number.
"""
from __future__ import annotations

import errno
import math
import os
import tempfile
import time

import numpy as np

__all__ = ["CHECKPOINT_NAME", "CONFIG_DEFAULTS", "DEFAULT_EPOCHS", "DEFAULT_LR",
           "TrainingError", "resolve_config", "resume_config", "check_output_folder",
           "load_data", "make_optimizer", "Runner", "Training"]

CHECKPOINT_NAME = "checkpoint.npz"
DEFAULT_EPOCHS = {"cnn": 15, "autoencoder": 20}
DEFAULT_LR = {"cnn": 3e-3, "autoencoder": 1e-2}
#: The settings a run is made of; a checkpoint stores them and resuming reuses them.
CONFIG_DEFAULTS = dict(model="cnn", dataset="digits", data=None, epochs=None, batch_size=64,
                       lr=None, optimizer="adam", seed=0, test_size=0.2)
#: What each setting may be; a checkpoint's config is checked against it before it is used.
_CONFIG_CHOICES = dict(model=("cnn", "autoencoder"), dataset=("digits", "mnist"),
                       optimizer=("adam", "adamw", "sgd"))


class TrainingError(Exception):
    """Training cannot start or go on; the message says why and what to do.

    Attributes
    ----------
    exit_status : int
        What the command exits with: 1 (a failure at run time) unless the constructor was
        given ``exit_status=2`` (an argument that the data cannot satisfy).
    """

    def __init__(self, message, exit_status=1):
        super().__init__(message)
        self.exit_status = exit_status


def _plural(count, noun):
    """``1 epoch``, ``2 epochs``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# --------------------------------------------------------------------------------------------
# The configuration of a run
# --------------------------------------------------------------------------------------------

def resolve_config(given):
    """A complete config from the settings given (``None`` or absent: the default).

    Parameters
    ----------
    given : dict
        Any of the keys of :data:`CONFIG_DEFAULTS`.

    Returns
    -------
    dict
        Every key of :data:`CONFIG_DEFAULTS`; ``epochs`` and ``lr`` default per model.
    """
    config = {key: (default if given.get(key) is None else given[key])
              for key, default in CONFIG_DEFAULTS.items()}
    for key, per_model in (("epochs", DEFAULT_EPOCHS), ("lr", DEFAULT_LR)):
        if config[key] is None:
            config[key] = per_model[config["model"]]
    return config


def _check_config(config, path):
    """Raise TrainingError unless ``config`` (read from the checkpoint ``path``) is usable."""
    def bad(what):
        return TrainingError(f"--resume {path}: the checkpoint's training configuration is "
                             f"damaged ({what}); it cannot be resumed")
    if not isinstance(config, dict):
        raise bad(f"it is a {type(config).__name__}, not a dict")
    missing = [key for key in CONFIG_DEFAULTS if key not in config]
    if missing:
        raise bad(f"{', '.join(missing)} missing")
    for key, choices in _CONFIG_CHOICES.items():
        if config[key] not in choices:
            raise bad(f"{key} is {config[key]!r}, not one of {', '.join(choices)}")
    for key in ("epochs", "batch_size", "seed"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < (key != "seed"):
            raise bad(f"{key} is {value!r}")
    for key, low, high in (("lr", 0, math.inf), ("test_size", 0, 1)):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not low < value < high:
            raise bad(f"{key} is {value!r}")
    if config["data"] is not None and not isinstance(config["data"], str):
        raise bad(f"data is {config['data']!r}")


def _history_keys(kind):
    """The history of a run: loss and accuracy (CNN) or MSE (autoencoder), train and test."""
    names = ("loss", "accuracy") if kind == "cnn" else ("loss", "mse")
    return [f"{split}_{name}" for split in ("train", "test") for name in names]


def _check_history(history, kind, epoch, path):
    """Raise TrainingError unless ``history`` has one number per finished epoch for each key."""
    expected = _history_keys(kind)
    problem = None
    if sorted(history) != sorted(expected):
        problem = f"it has {', '.join(sorted(map(str, history))) or 'no keys'}, not " \
                  f"{', '.join(expected)}"
    else:
        for key in expected:
            values = history[key]
            if not isinstance(values, list) or len(values) != epoch or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                problem = f"{key} is not a list of {_plural(epoch, 'number')}, one per epoch"
                break
    if problem is not None:
        raise TrainingError(f"--resume {path}: the checkpoint's training history is damaged "
                            f"({problem}); it cannot be resumed")


def resume_config(given, state, path):
    """The config of the run saved in ``state``; settings given again must agree with it.

    Parameters
    ----------
    given : dict
        Settings given for this run (``None``: not given). ``epochs`` may raise the total.
    state : object
        What :func:`graphm.load` returned for the checkpoint ``path``.
    path : str
        The checkpoint, for messages.

    Returns
    -------
    dict
        The checkpoint's config, with ``epochs`` from ``given`` if it was given.

    Raises
    ------
    TrainingError
        The checkpoint was not written by ``graphm train``, is damaged, or a given setting
        differs from the checkpoint's.
    """
    if not isinstance(state, dict) or "config" not in state:
        raise TrainingError(f"{path} is a graphm checkpoint but not one written by "
                            "`graphm train` (it has no training configuration)")
    _check_config(state["config"], path)
    for key, kind in (("model", dict), ("optimizer", dict), ("scheduler", dict),
                      ("history", dict), ("epoch", int), ("step", int)):
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) \
                or kind is int and value < 0:
            raise TrainingError(f"--resume {path}: the checkpoint's {key!r} is missing or "
                                f"damaged; it cannot be resumed")
    _check_history(state["history"], state["config"]["model"], state["epoch"], path)
    config = dict(state["config"])
    for key, value in given.items():
        if key != "epochs" and value is not None and value != config.get(key):
            flag = f"--{key.replace('_', '-')}"
            raise TrainingError(f"--resume: the checkpoint was trained with {flag} "
                                f"{config.get(key)}, but {flag} {value} was given; leave it out "
                                "to continue the same run")
    if given.get("epochs") is not None:
        config["epochs"] = given["epochs"]
    return config


def check_output_folder(out):
    """Create the folder ``out`` (and its parents) and make sure a file can be written in it.

    Done before training starts, so a read-only file system or a path such as ``/proc/x`` is
    reported at once, not when the first checkpoint is saved.

    Raises
    ------
    TrainingError
        Naming the folder and the operating system's reason.
    """
    if os.path.exists(out) and not os.path.isdir(out):
        raise TrainingError(f"--out {out}: that is a file; give a folder for the checkpoint "
                            "and the plots")
    try:
        os.makedirs(out, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".graphm-write-test.", dir=out)
        try:
            os.write(handle, b"graphm")
            os.fsync(handle)
        finally:
            os.close(handle)
            os.unlink(probe)
    except OSError as error:
        raise TrainingError(f"--out {out}: cannot write there "
                            f"({error.strerror or error}); give a folder you can write to"
                            ) from None


# --------------------------------------------------------------------------------------------
# Data, optimizer, one step
# --------------------------------------------------------------------------------------------

def load_data(config):
    """Training and test arrays for the run's dataset; CNN inputs normalised per channel.

    Returns
    -------
    tuple
        ``(x_train, y_train, x_test, y_test, normalization)``; ``normalization`` is
        ``{"mean", "std"}`` of the training images for the CNN, None for the autoencoder.

    Raises
    ------
    TrainingError
        MNIST without a folder, or a test fraction that leaves one part empty (exit status 2).
    """
    from graphm import data
    if config["dataset"] == "digits":
        if config["data"]:
            raise TrainingError(f"--data {config['data']} is read only with --dataset mnist "
                                f"(the dataset is {config['dataset']})", exit_status=2)
        images, labels = data.load_digits()
        x_train, x_test, y_train, y_test = data.train_test_split(
            images, labels, test_size=config["test_size"], seed=config["seed"], stratify=labels)
        if len(x_train) == 0 or len(x_test) == 0:
            empty, kept = ("training", "test") if len(x_train) == 0 else ("test", "training")
            raise TrainingError(
                f"--test-size {config['test_size']} leaves no {empty} samples (all "
                f"{len(images)} digits go to the {kept} part); give a fraction that keeps at "
                "least one sample of each class in both parts, such as 0.2", exit_status=2)
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


def make_optimizer(config, parameters):
    """Adam, AdamW or SGD with Nesterov momentum 0.9, at ``config["lr"]``."""
    from graphm import optim
    kind = config["optimizer"]
    if kind == "adam":
        return optim.Adam(parameters, lr=config["lr"])
    if kind == "adamw":
        return optim.AdamW(parameters, lr=config["lr"])
    return optim.SGD(parameters, lr=config["lr"], momentum=0.9, nesterov=True)


class Runner:
    """One training step and one evaluation, in eager or compiled mode (same numbers).

    Parameters
    ----------
    model : graphm.nn.Module
    mode : {"eager", "compiled"}
    loss_function : callable
        ``loss_function(outputs, targets)``, e.g. :func:`graphm.functional.cross_entropy`.
    example : ndarray
        A training batch; a compiled program is built for its shape.
    """

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
        """The model's outputs for ``inputs``, in batches, without recording gradients."""
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


class _NoProgress:
    """The progress-bar interface of tqdm, doing nothing."""

    def __init__(self, iterable, description):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def set_postfix(self, values, refresh=True):
        pass

    def close(self):
        pass


# --------------------------------------------------------------------------------------------
# A run
# --------------------------------------------------------------------------------------------

class Training:
    """One training run: data, model, optimizer and schedule, ready to train epoch by epoch.

    Building it does all the work that can fail before training starts: the output folder is
    created and tested for writing, the data is loaded and split, the model (and in compiled
    mode its program) is built, and a checkpoint's state is restored.

    Parameters
    ----------
    config : dict
        From :func:`resolve_config` or :func:`resume_config`.
    out : str
        The folder for ``checkpoint.npz`` and the plots.
    mode : {"eager", "compiled"}
    state : dict, optional
        A checkpoint of this run (``graphm.load(path)``) to continue from.
    resume_path : str, optional
        Where ``state`` was read from, for messages.

    Attributes
    ----------
    model, optimizer, scheduler, runner
        The pieces of the run.
    history : dict of lists
        ``train_loss``, ``test_loss`` and ``train_<m>``, ``test_<m>`` with ``m`` accuracy for
        the CNN, mse for the autoencoder: one value per epoch.
    saved_epoch, saved_path
        The last complete checkpoint on disk (the one resumed from until this run writes its
        own; ``None`` before any).
    """

    def __init__(self, config, out, *, mode="eager", state=None, resume_path=None):
        import graphm
        from graphm import data, optim
        from graphm import functional as F
        from graphm.nn.models import make_autoencoder, make_cnn
        self.config, self.out, self.mode = config, out, mode
        check_output_folder(out)
        self.checkpoint_path = os.path.join(out, CHECKPOINT_NAME)
        graphm.manual_seed(config["seed"])
        (self.x_train, self.y_train, self.x_test, self.y_test,
         self.normalization) = load_data(config)
        self.kind = kind = config["model"]
        input_shape = self.x_train.shape[1:]
        self.model = make_cnn(input_shape) if kind == "cnn" else make_autoencoder(input_shape)
        self.loss_function = F.cross_entropy if kind == "cnn" else F.mse_loss
        # the autoencoder's target is its own input
        self.train_targets, self.test_targets = ((self.y_train, self.y_test) if kind == "cnn"
                                                 else (self.x_train, self.x_test))
        self.optimizer = make_optimizer(config, self.model.parameters())
        self.scheduler = optim.CosineAnnealingLR(self.optimizer, T_max=config["epochs"])
        self.loader = data.DataLoader(self.x_train, self.train_targets,
                                      batch_size=config["batch_size"], shuffle=True,
                                      seed=config["seed"])
        # the autoencoder's loss is its MSE; both names are kept (checkpoints have both)
        self.history = {key: [] for key in _history_keys(kind)}
        self.start_epoch = self.step = 0
        self.saved_epoch = self.saved_path = None
        if state is not None:
            self._restore(state, resume_path)
        self.runner = Runner(self.model, mode, self.loss_function,
                             self.x_train[:config["batch_size"]])

    def _restore(self, state, path):
        import graphm
        from graphm.checkpoint import CheckpointError
        try:
            graphm.load(path, architecture=self.model)      # the same network
        except CheckpointError:
            raise TrainingError(
                f"--resume {path}: the checkpoint's network is not the {self.kind} this run "
                f"builds for inputs of shape {tuple(self.x_train.shape[1:])} (its stored "
                "architecture differs; `graphm info` shows it); it cannot be resumed") from None
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise TrainingError(f"--resume {path}: the checkpoint's weights or optimizer state "
                                f"do not fit this run ({error})") from None
        self.scheduler.T_max = self.config["epochs"]
        self.scheduler._apply()
        self.history = {key: list(values) for key, values in state["history"].items()}
        self.start_epoch, self.step = state["epoch"], state["step"]
        if self.start_epoch >= self.config["epochs"]:
            raise TrainingError(f"--resume: {path} has already trained "
                                f"{_plural(self.start_epoch, 'epoch')}; pass --epochs N with "
                                f"N > {self.start_epoch} to train more")
        self.saved_epoch, self.saved_path = self.start_epoch, path

    def last_checkpoint(self):
        """A sentence on the last complete checkpoint, for messages after a failure."""
        if self.saved_epoch is None:
            return "no checkpoint was written"
        return f"the last complete checkpoint (epoch {self.saved_epoch}) is {self.saved_path}"

    def epochs(self, progress=None):
        """Train the remaining epochs, yielding one record per epoch after its checkpoint.

        Parameters
        ----------
        progress : callable, optional
            ``progress(batches, description)`` returns an iterable over ``batches`` with
            tqdm's ``set_postfix(dict)`` and ``close()`` (``tqdm.tqdm`` itself fits).

        Yields
        ------
        dict
            ``epoch`` (1-based), ``epochs``, ``train`` and ``test`` metrics (``loss``, and
            ``accuracy`` for the CNN, ``mse`` for the autoencoder), ``seconds`` (this epoch, its evaluation and checkpoint
            included) and ``checkpoint`` (its path).

        Raises
        ------
        TrainingError
            A loss that is not finite (the weights are not updated with it), or a checkpoint
            that could not be written (a full disk, say); the message names the last complete
            checkpoint, which :func:`graphm.save`'s atomic write leaves intact.
        """
        progress = progress or _NoProgress
        config, kind, epochs = self.config, self.kind, self.config["epochs"]
        for epoch in range(self.start_epoch, epochs):
            started = time.perf_counter()
            self.loader.epoch = epoch                    # the batch order depends on (seed, epoch)
            bar = progress(self.loader, f"epoch {epoch + 1}/{epochs}")
            total_loss = total_correct = seen = 0
            try:
                for batch_index, (inputs, targets) in enumerate(bar):
                    self.step += 1
                    self.optimizer.zero_grad()
                    loss, outputs = self.runner.train_step(inputs, targets)
                    if not math.isfinite(loss):
                        last = self.last_checkpoint()
                        raise TrainingError(
                            f"the loss became {loss} at step {self.step} (epoch {epoch + 1}, "
                            f"batch {batch_index + 1}); training stopped before updating the "
                            f"weights with it. {last[0].upper() + last[1:]}. Try a smaller --lr "
                            f"(now {config['lr']}).")
                    self.optimizer.step()
                    total_loss += loss * len(inputs)
                    seen += len(inputs)
                    postfix = {"loss": f"{total_loss / seen:.4f}"}
                    if kind == "cnn":
                        total_correct += int((outputs.argmax(axis=1) == targets).sum())
                        postfix["acc"] = f"{100 * total_correct / seen:.1f}%"
                    bar.set_postfix(postfix, refresh=False)
            finally:
                bar.close()
            self.scheduler.step()
            train_metrics = {"loss": total_loss / seen}
            if kind == "cnn":
                train_metrics["accuracy"] = total_correct / seen
            else:
                train_metrics["mse"] = train_metrics["loss"]
            test_metrics = _metrics(kind, self.runner.predict(self.x_test), self.test_targets,
                                    self.loss_function)
            for split, metrics in (("train", train_metrics), ("test", test_metrics)):
                for name, value in metrics.items():
                    self.history[f"{split}_{name}"].append(value)
            self._save(epoch + 1)
            yield {"epoch": epoch + 1, "epochs": epochs, "train": train_metrics,
                   "test": test_metrics, "seconds": time.perf_counter() - started,
                   "checkpoint": self.checkpoint_path}

    def _save(self, epoch):
        import graphm
        state = {"config": self.config, "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "history": self.history,
                 "epoch": epoch, "step": self.step, "normalization": self.normalization}
        try:
            graphm.save(state, self.checkpoint_path, architecture=self.model.architecture())
        except OSError as error:
            survivor = self.last_checkpoint()
            if self.saved_epoch is not None:    # graphm.save's atomic write left it intact
                survivor += (f", intact; make room, then continue with: graphm train --resume "
                             f"{self.saved_path}")
            raise TrainingError(f"could not write the checkpoint of epoch {epoch} to "
                                f"{self.checkpoint_path} ({_reason(error)}); {survivor}"
                                ) from None
        self.saved_epoch, self.saved_path = epoch, self.checkpoint_path

    def write_plots(self):
        """Write ``curves.png``, ``filters.png`` (and for the autoencoder
        ``reconstructions.png``) into the output folder; returns their paths."""
        from graphm import viz
        out = self.out
        try:
            written = [viz.plot_curves(self.history, os.path.join(out, "curves.png"),
                                       metric="accuracy" if self.kind == "cnn" else None)]
            first_conv = next(m for m in self.model.modules() if type(m).__name__ == "Conv2d")
            written.append(viz.plot_filters(first_conv.weight, os.path.join(out, "filters.png")))
            if self.kind == "autoencoder":
                reconstructions = self.runner.predict(self.x_test[:10])
                written.append(viz.plot_reconstructions(
                    self.x_test[:10], reconstructions, os.path.join(out, "reconstructions.png")))
        except OSError as error:
            raise TrainingError(f"training finished, but the plots could not be written into "
                                f"{out} ({_reason(error)}); {self.last_checkpoint()}") from None
        return written


def _reason(error):
    """The operating system's words for an OSError, with a hint for a full disk."""
    if error.errno == errno.ENOSPC:
        return "no space left on the device"
    return error.strerror or str(error)
