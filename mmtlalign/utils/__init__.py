"""Deprecated: ``mmtlalign.utils`` was dissolved into :mod:`mmtlalign.checkpoint`,
:mod:`mmtlalign.cli`, :mod:`mmtlalign.engine` and :mod:`mmtlalign.registry`. Only the module that
downstream configs import (``custom_imports``) is kept, for one release."""
