"""Deprecated alias of :mod:`mmtlalign.engine.downstream_checks` (kept one release for
downstream configs whose ``custom_imports`` name it)."""
import warnings

from ..engine.downstream_checks import *  # noqa: F401,F403
from ..engine.downstream_checks import DownstreamChecksHook  # noqa: F401

warnings.warn('mmtlalign.utils.downstream_checks moved to mmtlalign.engine.downstream_checks; '
              'update custom_imports in your config.', DeprecationWarning, stacklevel=2)
