"""``--cfg-options`` on a command line: config values spelled so that mmengine's parser
(``DictAction``) reads them back unchanged. The benchmark builds its commands with them, and an
evaluation's settings record the options the same way (so both compare equal)."""


def format_value(value) -> str:
    """A config value as mmengine's ``--cfg-options`` parser (DictAction) reads it back."""
    if isinstance(value, (list, tuple)):
        inner = ','.join(format_value(v) for v in value)
        return f'[{inner}]' if isinstance(value, list) else f'({inner})'
    return str(value)  # True/False/None/numbers/strings round-trip through DictAction


def option_args(options: dict) -> list:
    """``['key=value', ...]``: what follows ``--cfg-options``."""
    return [f'{k}={format_value(v)}' for k, v in options.items()]
