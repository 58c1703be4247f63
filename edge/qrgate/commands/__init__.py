"""One module per ``qrgate`` subcommand; each has ``add_parser(subparsers)`` and ``run(args) -> int``."""
