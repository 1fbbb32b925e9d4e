"""One import as resolved against the project: the file it reaches and the names it lacks."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from daemon.checks import Problem

MAX_LISTED_NAMES = 20  # names a message lists of what a file does offer
MAX_SUGGESTION_CANDIDATES = 500  # names compared for a "did you mean"


@dataclass(frozen=True)
class ImportRef:
    """An import that reaches a project file: ``names`` are those it takes from there
    (``default`` for a default import, ``*`` for a namespace, side-effect or module import)."""

    importer: str
    line: int
    target: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class Link:
    """One import's outcome. ``target`` is the project file it reaches (None: no such file,
    or a directory without one); ``unresolved`` says why the file is missing; ``missing``
    are the asked-for names the target lacks, ``offered`` what it has instead."""

    importer: str
    line: int
    label: str
    target: str | None
    names: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    offered: tuple[str, ...] = ()
    unresolved: str | None = None
    verb: str = "exports"  # "defines" for Python modules

    def ref(self) -> ImportRef | None:
        if self.target is None:
            return None
        return ImportRef(self.importer, self.line, self.target, self.names)

    def problem(self) -> Problem | None:
        if self.unresolved is not None:
            return Problem(self.importer, f"line {self.line}: {self.unresolved}", "import")
        if not self.missing or self.target is None:
            return None
        asked = ", ".join(self.missing)
        message = f"line {self.line}: imports {asked} from {self.label}"
        if self.label != self.target:
            message += f" ({self.target})"
        message += (
            f", which {self.verb} {_offered(self.offered)}{_suggestion(self.missing, self.offered)}"
        )
        return Problem(self.importer, message, "name", (self.target,))


def _offered(names: tuple[str, ...]) -> str:
    if not names:
        return "nothing"
    ordered = sorted(names, key=lambda name: (name == "default", name.lower()))
    shown = ", ".join(ordered[:MAX_LISTED_NAMES])
    more = len(ordered) - MAX_LISTED_NAMES
    return f"only {shown}" + (f" and {more} more" if more > 0 else "")


def _suggestion(missing: tuple[str, ...], offered: tuple[str, ...]) -> str:
    candidates = list(offered[:MAX_SUGGESTION_CANDIDATES])
    close = [m for name in missing for m in difflib.get_close_matches(name, candidates, 1, 0.6)]
    return f" (did you mean {', '.join(dict.fromkeys(close))}?)" if close else ""
