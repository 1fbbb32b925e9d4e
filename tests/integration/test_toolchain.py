"""The toolchain tier against the real node, npm, pip and uvicorn: the demo project passes,
broken projects give problems on the right files, children never see the daemon's
environment, and the time budget kills a hanging step with everything it started."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon.answers import recover_files
from daemon.verify.toolchain import ToolchainReport, run_toolchain, toolchain_available

ROOT = Path(__file__).parents[2]
CASSETTE = ROOT / "examples" / "cassettes" / "car-management-app"
# The example with planted mistakes: its later answers (the fixes, VERIFY's repairs) win.
FLAWED_CASSETTE = ROOT / "examples" / "cassettes" / "task-tracker"
# Kept across runs on purpose (make test wipes it only with the venv): a warm npm and pip
# cache turns minutes of downloads into seconds.
CACHE_DIR = ROOT / ".venv" / "toolchain-cache"
MEMORY_MB = 2048
# The same pins as the demo, so every test's backend installs from the warm cache.
REQUIREMENTS = "fastapi==0.115.6\nuvicorn==0.32.1\n"
MISSING_REQUIREMENT = "codegend-no-such-package-7f3a9c==1.0"
SECRET = "sk-test-secret"

_unavailable = toolchain_available()
pytestmark = [
    pytest.mark.skipif(
        _unavailable is not None, reason=f"the toolchain tier cannot run here: {_unavailable}"
    ),
    pytest.mark.toolchain,
]


def demo_files(cassette: Path = CASSETTE) -> dict[str, str]:
    """The demo project: every file of the cassette's answers, later answers winning (a
    cut answer keeps its complete files, as the daemon does)."""
    files: dict[str, str] = {}
    for entry in sorted(cassette.glob("[A-Z]*.json")):
        if entry.name.startswith("ARCH."):  # the architecture and the file plan
            continue
        text = json.loads(entry.read_text())["response"]["text"]
        try:
            items = json.loads(text).get("files", [])
        except ValueError:
            items = [item.model_dump() for item in recover_files(text)]
        # an ARCH answer's files are the file plan's entries: no content
        files.update({item["path"]: item["content"] for item in items if "content" in item})
    return files


def run(files: dict[str, str], timeout_s: float = 300.0) -> ToolchainReport:
    return run_toolchain(
        files, cache_dir=CACHE_DIR, timeout_s=timeout_s, memory_mb=MEMORY_MB, backend_package="app"
    )


def backend(main_imports: str = "", **modules: str) -> dict[str, str]:
    """A small FastAPI backend: ``backend/app/main.py`` with ``main_imports`` first, and
    one module per keyword (``routers__boom`` is ``backend/app/routers/boom.py``)."""
    files = {
        "backend/requirements.txt": REQUIREMENTS,
        "backend/app/__init__.py": "",
        "backend/app/main.py": (
            f"{main_imports}from fastapi import FastAPI\n\napp = FastAPI()\n\n\n"
            '@app.get("/health")\ndef health() -> dict[str, bool]:\n    return {"ok": True}\n'
        ),
    }
    for name, content in modules.items():
        files[f"backend/app/{name.replace('__', '/')}.py"] = content
    return files


def messages(report: ToolchainReport, path: str) -> list[str]:
    return [problem.message for problem in report.problems if problem.path == path]


@pytest.mark.timeout(900)  # cold: the first run downloads every package
def test_the_demo_project_builds_boots_and_serves_its_routes() -> None:
    report = run(demo_files(), timeout_s=900.0)

    assert report.skipped is None
    assert report.problems == [], [problem.text for problem in report.problems]
    assert report.builds
    assert [step.name for step in report.steps if not step.ok] == []
    names = [step.name for step in report.steps]
    assert names[:3] == ["npm install", "tsc --noEmit", "npm run build"]
    assert "import app.main" in names and "boot" in names
    assert report.openapi is not None
    assert {"/api/health", "/api/cars", "/api/cars/{car_id}", "/api/dashboard/stats"} <= set(
        report.openapi["paths"]
    )


# --- one broken project, run once, read by several tests --------------------------------


@dataclass(frozen=True)
class BrokenRun:
    report: ToolchainReport
    environ_dump: Path


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokenRun]:
    """A TSX file importing a name its module lacks, a route that raises, and a module that
    writes its environment to a file; run with a secret in the test's own environment."""
    dump = tmp_path_factory.mktemp("environ") / "environ.json"
    files = backend(
        "from app import envdump  # noqa: F401\nfrom app.routers import boom\n",
        envdump=f"import json, os\n\nopen({str(dump)!r}, 'w').write(json.dumps(dict(os.environ)))\n",
        routers__boom=(
            "from fastapi import APIRouter\n\nrouter = APIRouter(tags=['boom'])\n\n\n"
            "@router.get('/boom')\ndef explode() -> dict[str, int]:\n    return {'value': 1 // 0}\n"
        ),
    )
    files["backend/app/main.py"] += "\n\napp.include_router(boom.router)\n"
    files.update(
        {
            ".env.example": (
                "DATABASE_URL=postgresql://app:app@db:5432/app\n"
                "JWT_SECRET_KEY=a-value-someone-pasted\nACCESS_TOKEN_EXPIRE_MINUTES=60\n"
            ),
            "frontend/package.json": json.dumps(
                {"name": "broken", "private": True, "devDependencies": {"typescript": "5.7.2"}}
            ),
            "frontend/tsconfig.json": json.dumps(
                {
                    "compilerOptions": {"strict": True, "noEmit": True, "jsx": "preserve"},
                    "include": ["src"],
                }
            ),
            "frontend/src/lib.ts": "export const present = 1;\n",
            "frontend/src/pages/Broken.tsx": (
                'import { missing } from "../lib";\n\nexport const value = missing;\n'
            ),
        }
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ANTHROPIC_API_KEY", SECRET)
        patch.setenv("CODEGEND_KAFKA__SASL_PASSWORD", SECRET)
        yield BrokenRun(run(files), dump)


def test_a_tsc_error_is_a_problem_of_the_importing_file(broken: BrokenRun) -> None:
    found = messages(broken.report, "frontend/src/pages/Broken.tsx")

    assert len(found) == 1 and found[0].startswith("line 1: TS2305: "), found
    assert not broken.report.builds
    assert {p.kind for p in broken.report.problems if p.path.startswith("frontend/")} == {"build"}


def test_a_route_answering_500_is_a_problem_of_its_router(broken: BrokenRun) -> None:
    found = messages(broken.report, "backend/app/routers/boom.py")

    assert len(found) == 1, [problem.text for problem in broken.report.problems]
    assert found[0].startswith("line 7: GET /boom answered 500: ZeroDivisionError")
    assert broken.report.openapi is not None and "/health" in broken.report.openapi["paths"]
    assert len(broken.report.problems) == 2  # the tsc error and the route, nothing else


def test_no_secret_of_the_daemon_reaches_the_generated_code(broken: BrokenRun) -> None:
    environ = json.loads(broken.environ_dump.read_text())

    assert SECRET not in json.dumps(environ)
    assert [key for key in environ if key.startswith(("ANTHROPIC_", "CODEGEND_"))] == []
    assert environ["DATABASE_URL"] == "sqlite:///./verify.db"
    # .env.example gives the keys; secrets get a dummy, numbers stay
    assert environ["JWT_SECRET_KEY"] != "a-value-someone-pasted"
    assert environ["ACCESS_TOKEN_EXPIRE_MINUTES"] == "60"
    assert environ["HOME"] != os.environ.get("HOME") and "codegend-toolchain-" in environ["HOME"]


# --- other broken backends ------------------------------------------------------------


def test_a_module_raising_at_import_is_a_problem_of_that_module() -> None:
    report = run(
        backend(
            "from app.services import broken  # noqa: F401\n",
            services__broken='"""Fails on import."""\n\nraise RuntimeError("broken at import")\n',
        )
    )

    assert messages(report, "backend/app/services/broken.py") == [
        "line 3: RuntimeError: broken at import"
    ]
    assert [problem.kind for problem in report.problems] == ["boot"]
    assert not report.builds and report.openapi is None


def test_a_requirement_missing_from_pypi_is_a_problem_of_the_requirements_file() -> None:
    files = backend()
    files["backend/requirements.txt"] += f"{MISSING_REQUIREMENT}\n"

    report = run(files)

    found = messages(report, "backend/requirements.txt")
    assert len(found) == 1 and found[0].startswith(f"line 3: {MISSING_REQUIREMENT}: "), found
    assert not report.builds
    assert [step.name for step in report.steps] == ["python -m venv", "pip install"]


# --- the time budget ----------------------------------------------------------------------


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent to reap it does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def group_exists(pgid: int) -> bool:
    """Whether any process (a zombie too) is left in the process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(60)
def test_the_time_budget_kills_a_hanging_import_and_everything_it_started(
    tmp_path: Path,
) -> None:
    pids = tmp_path / "pids"
    files = backend(
        "from app import slow  # noqa: F401\n",
        slow=(
            "import os, subprocess, time\n\n"
            "child = subprocess.Popen(['sleep', '600'])\n"
            f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
            "time.sleep(600)\n"
        ),
    )
    files["backend/requirements.txt"] = "# the import hangs before it needs a package\n"
    scratch_before = set(Path(tempfile.gettempdir()).glob("codegend-toolchain-*"))
    budget_s = 8.0

    started = time.monotonic()
    report = run(files, timeout_s=budget_s)
    elapsed_s = time.monotonic() - started

    assert elapsed_s < budget_s + 5
    found = messages(report, "backend/app/slow.py")
    assert len(found) == 1 and found[0].startswith("line 5: import app.main: timed out after"), (
        report.problems
    )
    importer, child = (int(pid) for pid in pids.read_text().split())
    deadline = time.monotonic() + 5  # init reaps the killed grandchild a moment later
    while group_exists(importer) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(importer) and not alive(child)
    assert not group_exists(importer)
    assert set(Path(tempfile.gettempdir()).glob("codegend-toolchain-*")) == scratch_before


@pytest.mark.timeout(60)
def test_the_time_budget_kills_a_hanging_build_script_with_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    hang = (
        "const { spawn } = require('node:child_process');\n"
        "const child = spawn('sleep', ['600']);\n"
        f"require('node:fs').writeFileSync({json.dumps(str(pids))}, `${{process.pid}} ${{child.pid}}`);\n"
        "setInterval(() => {}, 1000);\n"
    )
    files = {
        "frontend/package.json": json.dumps(
            {"name": "hang", "scripts": {"build": "node hang.cjs"}}
        ),
        "frontend/hang.cjs": hang,
    }

    report = run(files, timeout_s=6.0)

    assert [problem.path for problem in report.problems] == ["frontend/package.json"]
    assert report.problems[0].message.startswith("npm run build: timed out after")
    builder, child = (int(pid) for pid in pids.read_text().split())
    deadline = time.monotonic() + 5
    while (alive(builder) or alive(child)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(builder) and not alive(child)
