"""What a phase is, and the two shapes of answer the model gives: a plan or a set of files."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator


@dataclass(frozen=True)
class StepGroup:
    """One of the five numbered steps the log reports (a step may hold several phases)."""

    number: int
    title: str
    done: str


@dataclass(frozen=True)
class Phase:
    """One focused model call (or a few) with its own output budget."""

    name: str  # the job state the phase is, and its name in events
    step: str
    title: str
    group: StepGroup
    progress: str
    noun: str
    instructions: str
    max_tokens: int
    needs: tuple[str, ...]
    output_model: type[BaseModel]
    critical: bool = False
    area: str = ""  # the folder its files go under ("" for project-wide files)
    verifies: bool = False  # checks the whole project and repairs other phases' files

    @property
    def writes_planned_files(self) -> bool:
        """A phase whose files the project's file plan lists."""
        return self.produces_files and not self.verifies

    @property
    def produces_files(self) -> bool:
        return self.output_model is PhaseFiles


_SURROGATE = re.compile(r"[\ud800-\udfff]")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GeneratedFile(_Strict):
    path: str = Field(
        description="Relative POSIX path inside the project, e.g. backend/app/main.py"
    )
    content: str = Field(description="The complete file content")

    @field_validator("path", "content")
    @classmethod
    def _valid_unicode(cls, value: str) -> str:
        """JSON may spell a lone UTF-16 surrogate (``\\ud800``); no file can hold one."""
        if (found := _SURROGATE.search(value)) is not None:
            raise ValueError(
                f"holds a lone surrogate U+{ord(found[0]):04X} at character {found.start()}, "
                "which is not valid Unicode; write the character itself (or its surrogate pair)"
            )
        return value


class PhaseFiles(_Strict):
    """A phase's files. ``complete`` comes last, so a cut answer never claims completion."""

    files: list[GeneratedFile] = Field(description="The files of this phase, each complete")
    complete: bool = Field(
        description="true when this answer finishes the phase's file set, false if more files follow"
    )


class Column(_Strict):
    name: str
    type: str
    constraints: str = Field(default="", description="e.g. primary key, not null, unique, FK")


class Table(_Strict):
    name: str
    purpose: str
    columns: list[Column]


class Endpoint(_Strict):
    method: str = Field(description="GET, POST, PUT, PATCH or DELETE")
    path: str = Field(description="e.g. /api/cars/{car_id}")
    purpose: str
    auth: bool = Field(description="true if the endpoint requires a logged-in user")
    request: str = Field(default="", description="the request body's schema name; '' if none")
    response: str = Field(default="", description="the response's schema name, e.g. list[CarOut]")


class Page(_Strict):
    name: str
    route: str = Field(description="e.g. /cars/:id")
    purpose: str
    components: list[str]
    endpoints: list[str] = Field(description="the endpoints this page calls, as 'METHOD /path'")


class Component(_Strict):
    name: str
    purpose: str


class PlannedExport(_Strict):
    """One name a planned file offers to the files that import it."""

    name: str = Field(description="the name other files import; 'default' for a default export")
    kind: str = Field(
        description="function, class, model, schema, component, hook, type, constant or router"
    )
    signature: str = Field(
        description="the exact interface: parameters and return type, a component's props, "
        "a model's or schema's fields, a router's routes (METHOD /path)"
    )


class PlannedFile(_Strict):
    """A file of the project plan: fixed before any file phase runs, so every phase can
    import what the others will write (phases that run side by side agree through it)."""

    path: str = Field(description="relative POSIX path inside the project")
    phase: str = Field(description="the phase that writes it: DB, BE_CORE, ..., CONFIG")
    purpose: str
    exports: list[PlannedExport] = Field(
        description="every name other files import from it, with its exact signature"
    )
    imports: list[str] = Field(description="the paths of the project files it imports")


class ArchPlan(_Strict):
    """The architecture plan every later phase builds on, and the project's file plan."""

    summary: str
    backend_package: str = Field(description="Python package of the backend, e.g. app")
    pages: list[Page]
    components: list[Component]
    endpoints: list[Endpoint]
    tables: list[Table]
    dependencies_backend: list[str] = Field(description="pip requirement names")
    dependencies_frontend: list[str] = Field(description="npm package names")
    # The file plan; a plan stored before it existed has none, and its phases run unplanned.
    files: list[PlannedFile] = Field(default_factory=list)

    def planned_for(self, phase: str) -> list[PlannedFile]:
        return [entry for entry in self.files if entry.phase == phase]


class ArchAnswer(ArchPlan):
    """ARCH's first answer: the architecture, then as much of the file plan as fits."""

    files: list[PlannedFile] = Field(
        description="every file of the project, in phase order, each with its public interface"
    )
    complete: bool = Field(
        description="true when the file plan lists every file of the project, false if more follow"
    )


class FilePlanMore(_Strict):
    """ARCH's later answers: the rest of a file plan that did not fit in one answer."""

    files: list[PlannedFile] = Field(description="the planned files not listed yet")
    complete: bool = Field(
        description="true when the file plan lists every file of the project, false if more follow"
    )
