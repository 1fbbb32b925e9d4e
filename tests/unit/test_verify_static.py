"""The static tier of project verification over small in-memory projects and the demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.answers import interpret_files
from daemon.checks import Problem
from daemon.checks.pool import _ENTRY_POINTS
from daemon.llm import LLMAnswer
from daemon.verify.fastapi_routes import backend_routes
from daemon.verify.http_calls import http_calls
from daemon.verify.interfaces import signatures
from daemon.verify.resolve import cross_file_problems, cross_imports
from daemon.verify.routes import HttpCall, Route, match_calls, routes_from_openapi
from daemon.verify.static import static_problems

CASSETTE = Path(__file__).parents[2] / "examples" / "cassettes" / "car-management-app"
REQUIREMENTS = {"backend/requirements.txt": "fastapi\n"}


def kinds(problems: list[Problem]) -> list[tuple[str, str]]:
    return [(p.path, p.kind) for p in problems]


# --- Python --------------------------------------------------------------------------------


def py(**files: str) -> dict[str, str]:
    project = {"backend/app/__init__.py": ""}
    project.update(
        {"backend/app/" + name.replace("__", "/") + ".py": c for name, c in files.items()}
    )
    return project


def test_python_module_attribute_resolves() -> None:
    files = py(models="class Car:\n    pass\n", main="from app.models import Car\n")
    assert cross_file_problems(files) == []
    assert [r.target for r in cross_imports(files)] == ["backend/app/models.py"]


def test_python_missing_name_names_what_the_module_defines() -> None:
    files = py(models="class Car:\n    pass\n", main="from app.models import Cars\n")
    (problem,) = cross_file_problems(files)
    assert problem.kind == "name" and problem.path == "backend/app/main.py"
    assert problem.message.startswith("line 1: imports Cars from app.models")
    assert "defines only Car" in problem.message and problem.refs == ("backend/app/models.py",)


def test_python_reexport_in_init() -> None:
    files = {
        "backend/app/__init__.py": "",
        "backend/app/models/__init__.py": "from .car import Car as Car\n__all__ = ['Car']\n",
        "backend/app/models/car.py": "class Car: ...\n",
        "backend/app/main.py": "from app.models import Car\nfrom app.models import Boat\n",
    }
    problems = cross_file_problems(files)
    assert [(p.kind, p.message[:7]) for p in problems] == [("name", "line 2:")]


def test_python_from_package_import_submodule() -> None:
    files = {
        "backend/app/__init__.py": "",
        "backend/app/routers/__init__.py": "",
        "backend/app/routers/cars.py": "router = 1\n",
        "backend/app/main.py": "from app.routers import cars\nimport app.routers.cars\n",
    }
    assert cross_file_problems(files) == []
    refs = cross_imports(files)
    assert {(r.target, r.names) for r in refs} == {("backend/app/routers/cars.py", ("*",))}


def test_python_relative_import() -> None:
    files = py(deps="def get_db(): ...\n", main="from .deps import get_db\nfrom . import deps\n")
    assert cross_file_problems(files) == []
    bad = py(deps="def get_db(): ...\n", main="from .deps import get_session\n")
    assert kinds(cross_file_problems(bad)) == [("backend/app/main.py", "name")]


def test_python_missing_module_is_an_import_problem() -> None:
    files = py(main="from app.services.cars import list_cars\n")
    (problem,) = cross_file_problems(files)
    assert problem.kind == "import" and "backend/app/services/cars.py" in problem.message


def test_python_third_party_and_star_modules_are_not_reported() -> None:
    files = py(
        star="from os.path import *\n",
        main="import fastapi\nfrom app.star import anything\nfrom sqlalchemy import orm\n",
    )
    assert cross_file_problems(files) == []


# --- TS / JS -------------------------------------------------------------------------------


def fe(**files: str) -> dict[str, str]:
    return {"frontend/src/" + name: content for name, content in files.items()}


CARD = "export function CarTile() { return null; }\nexport default CarTile;\n"


def test_ts_named_and_default_exports() -> None:
    files = fe(
        **{
            "components/CarCard.tsx": CARD,
            "App.tsx": "import Card, { CarTile } from './components/CarCard';\n",
        }
    )
    assert cross_file_problems(files) == []
    (ref,) = cross_imports(files)
    assert ref.names == ("default", "CarTile") and ref.target.endswith("CarCard.tsx")


def test_ts_missing_export_message() -> None:
    files = fe(
        **{
            "components/CarCard.tsx": CARD,
            "App.tsx": "\n\nimport { CarCard } from './components/CarCard';\n",
        }
    )
    (problem,) = cross_file_problems(files)
    assert problem.kind == "name"
    assert problem.message.startswith(
        "line 3: imports CarCard from ./components/CarCard (frontend/src/components/CarCard.tsx),"
        " which exports only CarTile, default"
    )
    assert problem.refs == ("frontend/src/components/CarCard.tsx",)


def test_ts_default_import_needs_a_default_export() -> None:
    files = fe(**{"a.ts": "export const x = 1;\n", "b.ts": "import a from './a';\n"})
    assert kinds(cross_file_problems(files)) == [("frontend/src/b.ts", "name")]


def test_ts_index_file_and_alias() -> None:
    files = fe(
        **{
            "components/index.tsx": "export { default as CarCard } from './CarCard';\n",
            "components/CarCard.tsx": CARD,
            "App.tsx": "import { CarCard } from './components';\nimport { CarCard as C } from '@/components';\n",
        }
    )
    files["frontend/tsconfig.json"] = '{"compilerOptions": {"paths": {"@/*": ["./src/*"]}}}'
    assert cross_file_problems(files) == []
    assert {r.target for r in cross_imports(files) if r.importer.endswith("App.tsx")} == {
        "frontend/src/components/index.tsx"
    }


def test_ts_vite_alias() -> None:
    files = fe(
        **{"lib/util.ts": "export const u = 1;\n", "App.tsx": "import { u } from '@/lib/util';\n"}
    )
    files["frontend/vite.config.ts"] = (
        "import path from 'path';\nexport default { resolve: { alias: { '@': path.resolve(__dirname, './src') } } };\n"
    )
    assert cross_file_problems(files) == []


def test_ts_export_star_chain() -> None:
    files = fe(
        **{
            "api/index.ts": "export * from './cars';\n",
            "api/cars.ts": "export * from './types';\nexport const listCars = () => 1;\n",
            "api/types.ts": "export interface Car { id: number }\nexport type Id = number;\n",
            "App.tsx": "import { listCars, type Car, Id } from './api';\nimport { Boat } from './api';\n",
        }
    )
    problems = cross_file_problems(files)
    assert [p.message[:30] for p in problems] == ["line 2: imports Boat from ./ap"]


def test_ts_export_star_cycle_terminates() -> None:
    files = fe(
        **{
            "a.ts": "export * from './b';\nexport const a = 1;\n",
            "b.ts": "export * from './a';\nexport const b = 1;\n",
            "c.ts": "import { a, b } from './a';\nimport { b as bb, a as aa } from './b';\n",
        }
    )
    assert cross_file_problems(files) == []


def test_ts_reexport_with_rename_is_checked_at_its_source() -> None:
    files = fe(
        **{
            "a.ts": "export const inner = 1;\n",
            "b.ts": "export { inner as outer, missing } from './a';\n",
            "c.ts": "import { outer } from './b';\n",
        }
    )
    (problem,) = cross_file_problems(files)
    assert problem.path == "frontend/src/b.ts" and "imports missing from ./a" in problem.message


def test_ts_type_only_import_and_missing_file() -> None:
    files = fe(
        **{
            "types.ts": "export interface Car { id: number }\n",
            "App.tsx": "import type { Car } from './types';\nimport './missing.css';\nimport x from './nope';\n",
        }
    )
    problems = cross_file_problems(files)
    assert [(p.kind, p.message[:7]) for p in problems] == [
        ("import", "line 2:"),
        ("import", "line 3:"),
    ]


def test_ts_packages_and_js_to_ts_are_resolved_quietly() -> None:
    files = fe(
        **{
            "a.ts": "export const a = 1;\n",
            "b.ts": "import React from 'react';\nimport { a } from './a.js';\n",
        }
    )
    assert cross_file_problems(files) == []


def test_ts_dynamic_import_and_require_must_resolve() -> None:
    files = fe(
        **{"App.tsx": "const P = lazy(() => import('./pages/P'));\nconst q = require('./q');\n"}
    )
    assert [p.message[:7] for p in cross_file_problems(files)] == ["line 1:", "line 2:"]


# --- routes --------------------------------------------------------------------------------

BACKEND = {
    "backend/requirements.txt": "fastapi\n",
    "backend/app/__init__.py": "",
    "backend/app/routers/__init__.py": "",
    "backend/app/routers/cars.py": (
        "from fastapi import APIRouter\n"
        "router = APIRouter(prefix='/cars')\n"
        "@router.get('')\ndef list_cars(): ...\n"
        "@router.get('/{car_id}')\ndef get_car(car_id: int): ...\n"
        "@router.api_route('/{car_id}', methods=['PUT', 'PATCH'])\ndef put_car(car_id: int): ...\n"
    ),
    "backend/app/main.py": (
        "from fastapi import FastAPI\nfrom app.routers import cars\n"
        "app = FastAPI()\napp.include_router(cars.router, prefix='/api')\n"
        "@app.post('/api/login')\ndef login(): ...\n"
    ),
}


def test_backend_routes_join_router_and_include_prefixes() -> None:
    routes = {(r.method, r.path) for r in backend_routes(BACKEND)}
    assert routes == {
        ("GET", "/api/cars"),
        ("GET", "/api/cars/{car_id}"),
        ("PUT", "/api/cars/{car_id}"),
        ("PATCH", "/api/cars/{car_id}"),
        ("POST", "/api/login"),
    }


def test_included_router_imported_by_name_and_in_a_loop() -> None:
    files = dict(BACKEND)
    files["backend/app/main.py"] = (
        "from fastapi import FastAPI\nfrom app.routers.cars import router as cars_router\n"
        "from app.routers import cars\napp = FastAPI()\n"
        "app.include_router(cars_router, prefix='/v1')\n"
        "for module in (cars,):\n    app.include_router(module.router, prefix='/v2')\n"
    )
    paths = {r.path for r in backend_routes(files)}
    assert {"/v1/cars", "/v2/cars/{car_id}"} <= paths


def calls_of(script: str, **more: str) -> list[HttpCall]:
    files = {**BACKEND, **fe(**{"api.ts": script, **more})}
    return http_calls(files)


def problems_of(script: str, **more: str) -> list[Problem]:
    files = {**BACKEND, **fe(**{"api.ts": script, **more})}
    return match_calls(http_calls(files), backend_routes(files))


def test_fetch_calls() -> None:
    script = (
        "fetch('/api/cars');\nfetch(`/api/cars/${id}`, { method: 'PUT' });\n"
        "fetch('/api/cars?x=1');\nfetch('/api/cars/', {method: 'DELETE'});\n"
    )
    problems = problems_of(script)
    assert [p.message[:30] for p in problems] == ["line 4: DELETE /api/cars/ matc"]
    assert problems[0].kind == "route" and problems[0].refs == ("backend/app/routers/cars.py",)


def test_axios_calls_and_instance_with_base_url() -> None:
    script = (
        "import axios from 'axios';\n"
        "export const api = axios.create({ baseURL: import.meta.env.VITE_API ?? '/api' });\n"
        "api.get<Car[]>('/cars');\napi.patch(`/cars/${car.id}`, {});\n"
        "axios.post('/api/login', {});\naxios({ method: 'delete', url: '/api/cars/1' });\n"
        "api.get('/carz');\n"
    )
    problems = problems_of(script)
    assert [p.message.split(" matches")[0] for p in problems] == [
        "line 6: DELETE /api/cars/1",
        "line 7: GET /api/carz",
    ]
    assert "served for GET, PUT, PATCH only" in problems[0].message
    assert "closest: GET /api/cars" in problems[1].message


def test_axios_instance_imported_from_another_file() -> None:
    problems = problems_of(
        "import axios from 'axios';\nconst http = axios.create({ baseURL: '/api' });\nexport default http;\n",
        **{
            "pages/P.tsx": "import client from '../api';\nclient.get('/cars');\nclient.post('/cars');\n"
        },
    )
    assert [(p.path, p.message[:25]) for p in problems] == [
        ("frontend/src/pages/P.tsx", "line 3: POST /api/cars ma")
    ]


def test_client_wrappers() -> None:
    script = (
        "const BASE = '/api';\n"
        "export async function request<T>(method: string, path: string): Promise<T> {\n"
        "  const r = await fetch(`${BASE}${path}`, { method, headers: {} });\n  return r.json();\n}\n"
        "export function apiFetch(path: string, init: RequestInit = {}) {\n"
        "  return fetch(BASE + path, { ...init, credentials: 'include' });\n}\n"
        "request('GET', '/cars');\nrequest('DELETE', `/cars/${id}`);\n"
        "apiFetch('/login', { method: 'POST' });\napiFetch('/cars/7');\napiFetch('/nope');\n"
    )
    calls = [(c.method, c.path) for c in calls_of(script)]
    assert calls == [
        ("GET", "/api/cars"),
        ("DELETE", "/api/cars/{id}"),
        ("POST", "/api/login"),
        ("GET", "/api/cars/7"),
        ("GET", "/api/nope"),
    ]
    problems = problems_of(script)
    assert [p.message[:32] for p in problems] == [
        "line 10: DELETE /api/cars/{id} m",
        "line 13: GET /api/nope matches n",
    ]


def test_unknown_calls_are_skipped() -> None:
    assert (
        calls_of(
            "fetch(url);\nfetch('/x', opts);\napi.cars.list();\nfetch('https://example.com/x');\n"
        )
        == []
    )


def test_path_matching_rules() -> None:
    routes = [
        Route("GET", "/api/cars/{car_id}", "r.py", 1),
        Route("GET", "/files/{p:path}", "r.py", 2),
    ]
    ok = ["/api/cars/3", "/api/cars/:id", "/api/cars/${id}/", "/files/a/b/c"]
    calls = [HttpCall("GET", p, "a.ts", 1) for p in ok]
    assert match_calls(calls, routes) == []
    assert len(match_calls([HttpCall("GET", "/api/cars", "a.ts", 1)], routes)) == 1
    assert match_calls([HttpCall("GET", "/nothing", "a.ts", 1)], []) == []


def test_routes_from_openapi() -> None:
    document = {"paths": {"/api/cars": {"get": {}, "post": {}, "parameters": []}}}
    assert [(r.method, r.path) for r in routes_from_openapi(document)] == [
        ("GET", "/api/cars"),
        ("POST", "/api/cars"),
    ]
    assert routes_from_openapi("not a document") == []


# --- the whole tier ------------------------------------------------------------------------


def test_static_problems_reports_a_missing_import_once() -> None:
    files = {**REQUIREMENTS, **py(main="from app.services.cars import list_cars\n")}
    problems = static_problems(files)
    assert kinds(problems) == [("backend/app/main.py", "import")]
    assert "verify_static" in _ENTRY_POINTS


def demo_files() -> dict[str, str]:
    files: dict[str, str] = {}
    for answer_path in sorted(CASSETTE.glob("*.[0-9][0-9].json")):
        recorded = json.loads(answer_path.read_text())
        if recorded["phase"] == "ARCH":
            continue
        answer = LLMAnswer(recorded["response"]["text"], recorded["response"]["stop_reason"])
        files.update((f.path, f.content) for f in interpret_files(answer).files)
    return files


def test_the_demo_project_has_no_static_problems() -> None:
    files = demo_files()
    assert len(files) > 50
    assert static_problems(files) == []
    assert len(http_calls(files)) > 10 and len(backend_routes(files)) > 10


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["a.ts", "b.tsx", "c.py", "d.js", "package.json", "tsconfig.json"]),
    st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))),
)
def test_any_content_never_raises(name: str, content: str) -> None:
    files = {**BACKEND, "frontend/src/" + name: content, "frontend/src/x.ts": content}
    static_problems(files)
    cross_imports(files)
    for path, text in files.items():
        signatures(path, text)


@pytest.mark.parametrize(
    "content",
    [
        "import { from './a",
        "export * from",
        "fetch(`${",
        "\x00\ud800",
        "(" * 5000,
        "export default",
    ],
)
def test_broken_scripts_never_raise(content: str) -> None:
    static_problems({"frontend/src/a.ts": content, "frontend/src/b.tsx": content})
