"""How ``graphm.functional`` accepts Tensors and Vars without importing them.

``graphm.functional`` is the NumPy level of graphm: its functions take and return NumPy arrays.
Students also call them on :class:`graphm.Tensor` objects and expect a Tensor back, recorded on
the autograd tape, just as ``torch.nn.functional`` works on ``torch.Tensor``; and on a compiled
graph's Vars, where the call adds a node. Importing those classes here would make the bottom
layer depend on the top one, so the arguments say how to compute with them instead (NumPy's
``__array_function__`` protocol has the same shape):

* every public differentiable function is wrapped with :func:`tensor_aware`;
* a graphm value's type has a method ``__graphm_function__(name, numpy_function, args,
  kwargs)`` (:class:`graphm.surface.ArraySurface` defines it for Tensor and Var alike).

When some argument's type has that method, the call goes to it; otherwise the NumPy function runs
directly. Nothing is registered anywhere, so there is no import order to get right.
"""
import functools

__all__ = ["tensor_aware", "graphm_function_of"]


def graphm_function_of(args, kwargs):
    """The ``__graphm_function__`` of the first argument whose type has one, else None."""
    for value in args:
        handler = getattr(type(value), "__graphm_function__", None)
        if handler is not None:
            return handler
    for value in kwargs.values():
        handler = getattr(type(value), "__graphm_function__", None)
        if handler is not None:
            return handler
    return None


def tensor_aware(numpy_function):
    """Let a NumPy-level function also accept graphm values (see the module docstring)."""
    name = numpy_function.__name__

    @functools.wraps(numpy_function)
    def dispatching(*args, **kwargs):
        handler = graphm_function_of(args, kwargs)
        if handler is not None:
            return handler(name, numpy_function, args, kwargs)
        return numpy_function(*args, **kwargs)

    dispatching.numpy_function = numpy_function
    return dispatching
