"""The ``codegend`` command line: its subcommands behind one error boundary.

An error codegend raises on purpose ends as one line on stderr and an exit code, never a
traceback: 2 when the command, its arguments or its configuration are wrong (nothing ran),
1 when it ran and failed, 130 on Ctrl-C. A command that follows a job exits with how the
job ended (see ``codegend watch --help``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from typer.core import TyperGroup

from daemon.commands import follow, info, serve, store
from daemon.commands.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, show_error
from daemon.errors import CodegendError, UsageError

if TYPE_CHECKING:
    from typer._click import Context  # the click that typer carries and passes its commands


class Commands(TyperGroup):
    """The subcommands, each run inside the error boundary."""

    def invoke(self, ctx: Context) -> object:
        try:
            return super().invoke(ctx)
        except CodegendError as exc:
            show_error(exc)
            raise typer.Exit(EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED) from None
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None


app = typer.Typer(
    name="codegend",
    cls=Commands,
    help="Turn a UI mockup into a full-stack code base through a durable chain of Claude calls.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(serve.run)
app.command()(follow.submit)
app.command()(follow.watch)
app.command()(store.status)
app.command()(store.resume)
app.command()(store.cancel)
app.command()(store.export)
app.command()(store.prune)
app.command("config")(info.show_config)
app.command()(serve.demo)
app.command()(info.schemas)
app.command()(info.version)


def main() -> None:
    app()
