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

    @property
    def multi_phase(self) -> bool:
        return self.title.endswith("(Multi-phase)")


@dataclass(frozen=True)
class Phase:
    """One focused model call (or a few) with its own output budget."""

    state: str
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


class Page(_Strict):
    name: str
    route: str = Field(description="e.g. /cars/:id")
    purpose: str
    components: list[str]
    endpoints: list[str] = Field(description="the endpoints this page calls, as 'METHOD /path'")


class Component(_Strict):
    name: str
    purpose: str


class ArchPlan(_Strict):
    """ARCH's structured answer: the plan every later phase builds on."""

    summary: str
    backend_package: str = Field(description="Python package of the backend, e.g. app")
    pages: list[Page]
    components: list[Component]
    endpoints: list[Endpoint]
    tables: list[Table]
    dependencies_backend: list[str] = Field(description="pip requirement names")
    dependencies_frontend: list[str] = Field(description="npm package names")
