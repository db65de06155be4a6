"""How every `esi-*` command reads its options: dataclasses parsed by `transformers.HfArgumentParser`.

    esi-COMMAND --option value ...     # options accept dashes or underscores (`--output-dir` = `--output_dir`)
    esi-COMMAND options.json           # or one JSON file of the same options, as transformers' example scripts

A dataclass's `__post_init__` refusal (`ValueError`) is reported as argparse reports a bad option: the usage line
and the message, exit status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def parse_command_line(
    dataclass_types: Sequence[type],
    argv: Sequence[str] | None = None,
    description: str | None = None,
    epilog: str | None = None,
) -> tuple:
    """One instance of each of `dataclass_types`, from `argv` (default: `sys.argv[1:]`); `--help` shows
    `description` above the options and `epilog` below them."""
    from transformers import HfArgumentParser  # here, so that importing a command's options stays light

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(list(dataclass_types), description=description, epilog=epilog)
    try:
        if len(argv) == 1 and argv[0].endswith(".json"):
            return parser.parse_json_file(json_file=argv[0])
        return parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:
        parser.error(str(error))
