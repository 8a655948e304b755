"""The one exception type the tools print as a one-line error (no traceback).

Framework-free so that every module (models, hooks, tools) can raise it. It subclasses
``ValueError`` so that code catching bad values keeps working, and mmengine's registry
re-raises it with its class intact when a constructor raises it.
"""


class UserInputError(ValueError):
    """Bad input from the user (config, data, checkpoint, command line); the message names the
    problem and the fix."""


class UserTypeError(UserInputError, TypeError):
    """A :class:`UserInputError` about the wrong kind of component (e.g. a backbone without
    ``forward_aligned``)."""


class DownstreamCheckError(UserInputError):
    """A downstream run cannot work as configured; the message says why and what to do."""
