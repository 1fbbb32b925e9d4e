"""The ``codegend`` subcommands, one module per kind of work; ``daemon.cli`` registers them."""
