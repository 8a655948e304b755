"""One-line messages of the tools besides ``error: ...`` (a
:class:`mmtlalign.errors.UserInputError`)."""
import os
import sys


def warn(message: str) -> None:
    """Print ``warning: <message>`` on stderr, once per run (rank 0 of a distributed run)."""
    if os.environ.get('RANK', '0') == '0':
        print(f'warning: {message}', file=sys.stderr, flush=True)
