"""How ``graphm.functional`` accepts Tensors without importing them.

``graphm.functional`` is the NumPy level of graphm: its functions take and return NumPy arrays.
Students also call them on :class:`graphm.Tensor` objects and expect a Tensor back, recorded on
the autograd tape, just as ``torch.nn.functional`` works on ``torch.Tensor``.  Importing the
Tensor class here would make the bottom layer depend on the top one, so the dependency is
inverted instead (the same idea as NumPy's ``__array_function__`` protocol):

* every public differentiable function is wrapped with :func:`tensor_aware`;
* a Tensor class marks its instances with the attribute ``__graphm_tensor__ = True``;
* the autograd layer registers one handler with :func:`set_tensor_handler` when it is imported.

When any argument is marked, the call goes to the handler as
``handler(name, numpy_function, args, kwargs)``; otherwise the NumPy function runs directly.
"""
import functools

_tensor_handler = None


def set_tensor_handler(handler):
    """Register ``handler(name, numpy_function, args, kwargs)`` for calls that involve Tensors.

    Parameters
    ----------
    handler : callable or None
        ``None`` removes the handler (calls with Tensors then raise a TypeError).
    """
    global _tensor_handler
    if handler is not None and not callable(handler):
        raise TypeError(f"handler must be callable or None, got {type(handler).__name__}")
    _tensor_handler = handler


def _is_tensor(value):
    return getattr(value, "__graphm_tensor__", False) is True


def tensor_aware(numpy_function):
    """Let a NumPy-level function also accept Tensors (see the module docstring)."""

    @functools.wraps(numpy_function)
    def dispatching(*args, **kwargs):
        if any(_is_tensor(a) for a in args) or any(_is_tensor(v) for v in kwargs.values()):
            if _tensor_handler is None:
                raise TypeError(f"{numpy_function.__name__}() got a Tensor but no Tensor handler is "
                                "registered; import graphm (which imports graphm.tensor) first")
            return _tensor_handler(numpy_function.__name__, numpy_function, args, kwargs)
        return numpy_function(*args, **kwargs)

    dispatching.numpy_function = numpy_function
    return dispatching
