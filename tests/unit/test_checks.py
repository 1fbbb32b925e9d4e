"""The quality gate over generated files: each rule on small projects, then the example job."""

import json
import time
from pathlib import Path

import pytest

from daemon.answers import recover_files
from daemon.checks import Problem, check_files, check_project

EXAMPLE = Path(__file__).parents[2] / "examples" / "cassettes" / "car-management-app"
VITE_PACKAGE = json.dumps(
    {
        "name": "web",
        "scripts": {"dev": "vite"},
        "dependencies": {"react": "^18", "@tanstack/react-query": "^5", "lucide-react": "^0.4"},
        "devDependencies": {"vite": "^5", "@types/node": "^20"},
    }
)


def problems(files, new=None):
    """Problems of ``new`` (default: every file) within the job ``files``."""
    return check_files(new if new is not None else files, files)


def messages(files, new=None):
    return [(p.path, p.message) for p in problems(files, new)]


def example_files():
    files = {}
    for cassette in sorted(EXAMPLE.glob("[A-Z]*.json")):
        if cassette.name.startswith("ARCH."):  # the architecture and the file plan
            continue
        text = json.loads(cassette.read_text())["response"]["text"]
        try:
            items = json.loads(text).get("files", [])
        except ValueError:
            items = [item.model_dump() for item in recover_files(text)]
        files.update({item["path"]: item["content"] for item in items})
    return files


# --- Python syntax and relative imports ----------------------------------------------------


def test_python_syntax_error_has_line_and_is_a_content_problem():
    found = problems({"backend/app/main.py": "import os\n\ndef f(:\n    pass\n"})
    assert len(found) == 1
    assert found[0].path == "backend/app/main.py"
    assert found[0].message.startswith("line 3: ")
    assert found[0].kind == "content"


def test_relative_import_of_a_package_and_of_a_module():
    files = {
        "backend/app/__init__.py": "",
        "backend/app/main.py": "from . import routers\nfrom .models import User\n",
        "backend/app/routers/__init__.py": "",
        "backend/app/models.py": "class User: ...\n",
    }
    assert problems(files) == []


def test_relative_import_of_a_missing_sibling():
    files = {
        "backend/app/__init__.py": "",
        "backend/app/main.py": "from . import routers\nfrom .models import User\n",
    }
    assert problems(files) == [
        Problem(
            "backend/app/main.py",
            "line 1: cannot import 'routers' from '.': no module backend/app/routers.py "
            "and backend/app/__init__.py does not define it",
            kind="import",
        ),
        Problem(
            "backend/app/main.py",
            "line 2: import '.models' does not resolve "
            "(no backend/app/models.py or backend/app/models/__init__.py)",
            kind="import",
        ),
    ]


def test_from_dot_import_a_name_the_package_init_defines():
    files = {
        "pkg/__init__.py": "from .core import engine\nVERSION = '1'\n",
        "pkg/core.py": "engine = object()\n",
        "pkg/cli.py": "from . import engine, VERSION\n",
    }
    assert problems(files) == []


def test_import_a_name_from_a_package_that_does_not_export_it():
    files = {
        "backend/app/__init__.py": "",
        "backend/app/schemas/__init__.py": "from .car import CarOut\n",
        "backend/app/schemas/car.py": "class CarOut: ...\nclass CarIn: ...\n",
        "backend/app/routers/__init__.py": "",
        "backend/app/routers/cars.py": "from app.schemas import CarOut, CarIn\n",
    }
    [found] = problems(files)
    assert found.message == (
        "line 1: cannot import 'CarIn' from 'app.schemas': no module backend/app/schemas/CarIn.py"
        " and backend/app/schemas/__init__.py does not define it"
    )
    assert found.kind == "import"


def test_star_import_in_init_accepts_any_name():
    files = {
        "app/__init__.py": "",
        "app/schemas/__init__.py": "from .car import *\n",
        "app/schemas/car.py": "class CarIn: ...\n",
        "app/main.py": "from app.schemas import CarIn\n",
    }
    assert problems(files) == []


@pytest.mark.parametrize(
    ("importer", "statement"),
    [
        ("backend/app/routers/cars.py", "from ..core.config import settings"),
        ("backend/app/routers/v1/cars.py", "from ...core.config import settings"),
        ("backend/app/routers/cars.py", "from .. import core"),
        ("backend/app/routers/v1/cars.py", "from ... import core"),
        ("backend/app/routers/v1/cars.py", "from .. import cars_common"),
    ],
)
def test_parent_relative_imports_at_different_depths(importer, statement):
    files = {
        "backend/app/__init__.py": "",
        "backend/app/core/__init__.py": "",
        "backend/app/core/config.py": "settings = {}\n",
        "backend/app/routers/__init__.py": "",
        "backend/app/routers/cars_common.py": "X = 1\n",
        "backend/app/routers/v1/__init__.py": "",
        importer: statement + "\n",
    }
    assert problems(files, {importer: files[importer]}) == []


def test_parent_relative_import_of_a_missing_module():
    files = {
        "backend/app/__init__.py": "",
        "backend/app/routers/__init__.py": "",
        "backend/app/routers/cars.py": "from ..core.config import settings\n",
    }
    assert problems(files) == [
        Problem(
            "backend/app/routers/cars.py",
            "line 1: import '..core.config' does not resolve "
            "(no backend/app/core/config.py or backend/app/core/config/__init__.py)",
            kind="import",
        )
    ]


def test_relative_import_above_the_project():
    [found] = problems({"app/main.py": "from ... import x\n"})
    assert found.message == "line 1: import '...' goes above the project"


# --- Python absolute imports and dependencies ----------------------------------------------


def test_absolute_project_import_with_a_regular_package():
    files = {
        "backend/app/__init__.py": "",
        "backend/app/main.py": "import app.routers.cars\nfrom app.core.config import settings\n",
        "backend/app/routers/__init__.py": "",
        "backend/app/routers/cars.py": "X = 1\n",
        "backend/app/core/__init__.py": "",
        "backend/app/core/config.py": "settings = 1\n",
        "backend/tests/test_main.py": "from app.main import app\n",
    }
    assert problems(files) == []


def test_absolute_project_import_in_a_namespace_package_rooted_by_main_py():
    files = {
        "backend/app/main.py": "from app.database import engine\nfrom app.models import car\n",
        "backend/app/database.py": "engine = None\n",
        "backend/app/models/car.py": "X = 1\n",
    }
    assert problems(files) == []


def test_absolute_project_import_that_does_not_resolve():
    files = {
        "backend/app/__init__.py": "",
        "backend/app/main.py": "from app.core.config import settings\n",
        "backend/requirements.txt": "fastapi\n",
    }
    assert problems(files) == [
        Problem(
            "backend/app/main.py",
            "line 1: import 'app.core.config' does not resolve "
            "(no backend/app/core/config.py or backend/app/core/config/__init__.py)",
            kind="import",
        )
    ]


def test_absolute_import_of_a_missing_sibling():
    files = {"backend/app/__init__.py": "", "backend/app/main.py": "from app.config import x\n"}
    [found] = problems(files)
    assert found.kind == "import"


def test_script_directory_imports_its_siblings():
    files = {
        "backend/main.py": "from database import engine\nimport models\n",
        "backend/database.py": "engine = None\n",
        "backend/models.py": "X = 1\n",
        "backend/requirements.txt": "fastapi\n",
    }
    assert problems(files) == []


def test_third_party_imports_against_requirements_with_aliases_and_normalisation():
    source = "\n".join(
        [
            "import os, sys, json",
            "import typing",
            "import fastapi, starlette.requests, pydantic",
            "from jose import jwt",
            "import jwt",
            "from dotenv import load_dotenv",
            "import multipart",
            "import yaml",
            "import psycopg2",
            "from sqlalchemy.orm import Session",
            "from pydantic_settings import BaseSettings",
            "import email_validator",
            "from passlib.context import CryptContext",
            "import bcrypt",
            "import uvicorn",
            "import alembic, pytest, httpx, slowapi, redis, celery",
            "from dateutil import parser",
            "from PIL import Image",
            "import ruamel_thing",
        ]
    )
    requirements = (
        "# runtime\n"
        "fastapi==0.115.0  # web\n"
        "uvicorn[standard]>=0.30\n"
        "python-jose[cryptography]==3.3\n"
        "PyJWT\n"
        "python_dotenv\n"
        "python-multipart\n"
        "PyYAML ; python_version >= '3.8'\n"
        "psycopg2-binary==2.9\n"
        "SQLAlchemy>=2\n"
        "Pydantic.Settings\n"
        "pydantic[email]\n"
        "passlib[bcrypt]\n"
        "alembic\npytest\nhttpx\nslowapi\nredis\ncelery\n"
        "python-dateutil\nPillow\n"
        "-r requirements-dev.txt\n"
        "Ruamel.Thing\n"
    )
    files = {"backend/app/main.py": source, "backend/requirements.txt": requirements}
    assert problems(files) == []


def test_undeclared_dependency_names_the_distribution():
    files = {
        "backend/app/main.py": "import fastapi\nfrom jose import jwt\n",
        "backend/requirements.txt": "fastapi\n",
    }
    assert problems(files) == [
        Problem(
            "backend/app/main.py",
            "line 2: module 'jose' is neither part of the project nor declared in "
            "backend/requirements.txt (add python-jose)",
            kind="dependency",
        )
    ]


def test_fastapi_brings_starlette_and_pydantic_but_not_jose():
    files = {
        "backend/app/main.py": "import starlette\nimport pydantic\nimport jose\n",
        "backend/requirements.txt": "fastapi\n",
    }
    assert [p.message[:24] for p in problems(files)] == ["line 3: module 'jose' is"]


def test_no_requirements_yet_means_no_dependency_problems():
    files = {"backend/app/main.py": "import fastapi\nimport anything_at_all\n"}
    assert problems(files) == []


def test_pyproject_dependencies_count_as_declared():
    pyproject = (
        '[project]\nname = "api"\ndependencies = ["fastapi>=0.110", "SQLAlchemy"]\n'
        '[project.optional-dependencies]\ndev = ["pytest"]\n'
    )
    files = {
        "backend/pyproject.toml": pyproject,
        "backend/app/main.py": "import fastapi, sqlalchemy, pytest\nimport requests\n",
    }
    assert [p.message for p in problems(files)] == [
        "line 2: module 'requests' is neither part of the project nor declared in "
        "backend/pyproject.toml (add requests)"
    ]


def test_optional_imports_and_imports_inside_functions():
    source = (
        "try:\n    import orjson\nexcept ImportError:\n    orjson = None\n\n"
        "def handler():\n    import missing_lib\n"
    )
    files = {"backend/app/main.py": source, "backend/requirements.txt": "fastapi\n"}
    [found] = problems(files)
    assert found.message.startswith("line 7: module 'missing_lib'")


def test_alembic_directory_does_not_shadow_the_alembic_package():
    files = {
        "backend/app/__init__.py": "",
        "backend/alembic/env.py": "from alembic import context\nfrom app import models\n",
        "backend/app/models.py": "X = 1\n",
        "backend/requirements.txt": "alembic\n",
    }
    assert problems(files) == []


# --- TypeScript and JavaScript -------------------------------------------------------------


def web(files):
    return {"web/package.json": VITE_PACKAGE, **files}


def test_relative_imports_resolve_with_extensions_and_index_files():
    source = (
        "import App from './App'\n"
        'import { api } from "./api"\n'
        "import './index.css'\n"
        "import data from './data.json'\n"
        "import type { Car } from './types'\n"
        "import helper from './lib/helper.js'\n"
        "export * from './hooks'\n"
        "export { Button as Btn } from './ui/Button'\n"
        "const Page = lazy(() => import('./pages/Page'))\n"
        "const legacy = require('./legacy')\n"
    )
    files = web(
        {
            "web/src/main.tsx": source,
            "web/src/App.tsx": "export default 1",
            "web/src/api/index.ts": "export const api = 1",
            "web/src/index.css": "body {}",
            "web/src/data.json": "{}",
            "web/src/types.d.ts": "export type Car = {}",
            "web/src/lib/helper.ts": "export default 1",
            "web/src/hooks/index.tsx": "export {}",
            "web/src/ui/Button.jsx": "export const Button = 1",
            "web/src/pages/Page.tsx": "export default 1",
            "web/src/legacy.js": "module.exports = 1",
        }
    )
    assert problems(files) == []


def test_multiline_import_clause_and_parent_directory():
    source = 'import {\n  a,\n  b,\n} from "../api/client";\n'
    files = web({"web/src/pages/Home.tsx": source, "web/src/api/client.ts": "export {}"})
    assert problems(files) == []


def test_unresolved_relative_imports():
    source = "import Button from './Button'\nimport { get } from '../api/client'\n"
    files = web({"web/src/components/Card.tsx": source})
    assert problems(files, {"web/src/components/Card.tsx": source}) == [
        Problem(
            "web/src/components/Card.tsx",
            "line 1: import './Button' does not resolve "
            "(no web/src/components/Button.* or web/src/components/Button/index.*)",
            kind="import",
        ),
        Problem(
            "web/src/components/Card.tsx",
            "line 2: import '../api/client' does not resolve "
            "(no web/src/api/client.* or web/src/api/client/index.*)",
            kind="import",
        ),
    ]


def test_bare_imports_scoped_packages_subpaths_and_node_builtins():
    source = (
        "import React from 'react'\n"
        "import { useQuery } from '@tanstack/react-query'\n"
        "import { Devtools } from '@tanstack/react-query/devtools'\n"
        "import Car from 'lucide-react/dist/esm/icons/car'\n"
        "import fs from 'node:fs'\n"
        "import path from 'path'\n"
        "import { readFile } from 'fs/promises'\n"
        "import x from 'virtual:pwa-register'\n"
    )
    assert problems(web({"web/src/main.tsx": source})) == []


def test_undeclared_packages_are_reported_against_the_nearest_package_json():
    source = "import axios from 'axios'\nimport { z } from '@acme/schemas/v2'\n"
    files = web(
        {
            "web/src/api.ts": source,
            "package.json": '{"name": "root", "scripts": {"x": "y"}, "dependencies": {"axios": "1"}}',
        }
    )
    assert problems(files, {"web/src/api.ts": source}) == [
        Problem(
            "web/src/api.ts",
            "line 1: package 'axios' is not declared in web/package.json",
            kind="dependency",
        ),
        Problem(
            "web/src/api.ts",
            "line 2: package '@acme/schemas' is not declared in web/package.json",
            kind="dependency",
        ),
    ]


def test_no_package_json_yet_means_no_package_problems():
    assert problems({"web/src/api.ts": "import axios from 'axios'\n"}) == []


def test_types_package_and_ambient_module_declarations_count():
    files = web(
        {
            "web/src/env.d.ts": "declare module 'untyped-lib';\ndeclare module '*.svg';\n",
            "web/src/a.ts": "import lib from 'untyped-lib'\nimport type { X } from 'node'\n",
        }
    )
    assert problems(files) == []


def test_imports_inside_comments_and_strings_are_ignored():
    source = (
        "// import Gone from './gone'\n"
        "/* import { a } from 'nope'\n   export * from './nothing' */\n"
        "const sample = \"import x from './missing'\";\n"
        "const code = `\n  import y from 'not-a-dep'\n`;\n"
        "const url = 'http://localhost:8000'; // import z from 'z'\n"
        "export const reimport = 1\n"
    )
    assert problems(web({"web/src/a.ts": source})) == []


def test_vite_alias_at_resolves_to_src():
    vite = (
        "import path from 'path'\nimport { defineConfig } from 'vite'\n"
        "export default defineConfig({ resolve: { alias: { '@': path.resolve(__dirname, './src') } } })\n"
    )
    files = web(
        {
            "web/vite.config.ts": vite,
            "web/src/lib/utils.ts": "export const cn = 1",
            "web/src/pages/Home.tsx": "import { cn } from '@/lib/utils'\nimport X from '@/missing'\n",
        }
    )
    assert messages(files) == [
        (
            "web/src/pages/Home.tsx",
            "line 2: import '@/missing' does not resolve (no web/src/missing.* or web/src/missing/index.*)",
        )
    ]


def test_tsconfig_paths_alias_in_jsonc():
    tsconfig = """{
  // Vite's template writes comments here
  "compilerOptions": {
    "baseUrl": ".",
    /* aliases */
    "paths": { "@/*": ["./src/*"], },
  },
}"""
    files = web(
        {
            "web/tsconfig.json": tsconfig,
            "web/src/lib/utils.ts": "export const cn = 1",
            "web/src/pages/Home.tsx": "import { cn } from '@/lib/utils'\n",
        }
    )
    assert problems(files) == []


def test_alias_without_a_declaration_is_reported():
    files = web({"web/src/pages/Home.tsx": "import { cn } from '@/lib/utils'\n"})
    assert problems(files) == [
        Problem(
            "web/src/pages/Home.tsx",
            "line 1: import '@/lib/utils' uses the '@/' alias, which no vite.config or tsconfig declares",
            kind="import",
        )
    ]


# --- JSON and other content ----------------------------------------------------------------


def test_invalid_json_has_line():
    [found] = problems({"web/data.json": '{\n  "a": 1,\n  "b" 2\n}\n'})
    assert found == Problem(
        "web/data.json", "line 3: invalid JSON: Expecting ':' delimiter (column 7)"
    )


def test_package_json_needs_name_and_scripts():
    found = messages({"web/package.json": '{"name": "", "scripts": {}}'})
    assert found == [
        ("web/package.json", 'package.json needs a non-empty "name"'),
        ("web/package.json", 'package.json needs a "scripts" object with at least one script'),
    ]
    assert messages({"web/package.json": '{"name": "web"}'}) == [
        ("web/package.json", 'package.json needs a "scripts" object with at least one script')
    ]


def test_comments_are_allowed_in_tsconfig_but_not_in_plain_json():
    jsonc = '{\n  // strict mode\n  "compilerOptions": {"strict": true,},\n}\n'
    assert problems({"web/tsconfig.node.json": jsonc}) == []
    [found] = problems({"web/settings.json": jsonc})
    assert found.message.startswith("line 2: invalid JSON")


def test_empty_files():
    files = {"a/__init__.py": "", "a/.gitkeep": "", "a/mod.py": "\n  \n", "README.md": ""}
    assert messages(files) == [
        ("README.md", "the file is empty"),
        ("a/mod.py", "the file is empty"),
    ]


@pytest.mark.parametrize(
    "content",
    [
        "def f():\n    pass\n\n# ... rest of the code\n",
        "export function A() {\n  // ... existing code\n}\n",
        "def g():\n    # TODO: implement\n    return None\n",
    ],
)
def test_placeholders_are_content_problems(content):
    [found] = problems({"src/x.py" if "def" in content else "src/x.ts": content})
    assert found.kind == "content"
    assert "placeholder" in found.message


def test_ordinary_spread_and_ellipsis_are_not_placeholders():
    files = {
        "src/x.ts": "const b = { ...a, other: 1 };\nconst rest = [...items]; // other code here\n",
        "src/y.py": "def f(*args: int) -> None: ...\n",
    }
    assert problems(files) == []


# --- new versus existing, and the final pass -----------------------------------------------


def test_only_new_files_are_reported_and_new_wins_over_existing():
    existing = {"app/__init__.py": "", "app/old.py": "import missing_sibling_module\n"}
    new = {"app/main.py": "from app.config import x\n", "app/config.py": "x = 1\n"}
    assert check_files(new, existing) == []
    assert check_files(new, {**existing, **new}) == []
    assert check_files({"app/config.py": "x = (\n"}, {**existing, **new})[0].message.startswith(
        "line 1"
    )


def test_check_project_reports_cross_file_problems_only():
    files = {
        "app/__init__.py": "",
        "app/main.py": "from app import config\n",
        "app/broken.py": "def (:\n",
        "web/package.json": '{"name": "web"}',
        "web/src/a.ts": "import b from './b'\n",
    }
    assert [(p.path, p.message) for p in check_project(files)] == [
        (
            "app/main.py",
            "line 1: cannot import 'config' from 'app': no module app/config.py "
            "and app/__init__.py does not define it",
        ),
        (
            "web/src/a.ts",
            "line 1: import './b' does not resolve (no web/src/b.* or web/src/b/index.*)",
        ),
    ]


# --- the example job -----------------------------------------------------------------------


def test_example_project_has_no_problems_and_checks_fast():
    files = example_files()
    assert len(files) == 89
    assert check_files(files, {}) == []
    assert check_project(files) == []
    best_s = min(_timed(lambda: check_files(files, files)) for _ in range(5))
    assert best_s < 0.05


def _timed(action):
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def test_mutated_example_reports_exactly_the_expected_problems():
    files = example_files()
    del files["backend/app/utils/rate_limit.py"]
    del files["frontend/src/hooks/useDebounce.ts"]
    files["backend/app/config.py"] = files["backend/app/config.py"].replace("):", ")", 1)
    package = json.loads(files["frontend/package.json"])
    del package["dependencies"]["axios"]
    files["frontend/package.json"] = json.dumps(package, indent=2)

    found = check_files(files, {})

    syntax = [p for p in found if p.path == "backend/app/config.py"]
    assert len(syntax) == 1 and syntax[0].kind == "content"
    assert [p for p in found if p.path != "backend/app/config.py"] == [
        Problem(
            "backend/app/utils/middleware.py",
            "line 8: import 'app.utils.rate_limit' does not resolve "
            "(no backend/app/utils/rate_limit.py or backend/app/utils/rate_limit/__init__.py)",
            kind="import",
        ),
        Problem(
            "frontend/src/api/client.ts",
            "line 1: package 'axios' is not declared in frontend/package.json",
            kind="dependency",
        ),
        Problem(
            "frontend/src/pages/CarListPage.tsx",
            "line 12: import '../hooks/useDebounce' does not resolve "
            "(no frontend/src/hooks/useDebounce.* or frontend/src/hooks/useDebounce/index.*)",
            kind="import",
        ),
    ]
    assert check_project(files) == [p for p in found if p.path != "backend/app/config.py"]


def test_prose_in_jsx_text_is_not_an_import_but_a_second_statement_on_a_line_is():
    source = (
        "import a from 'react'; import b from './b'\n"
        "export const A = () => <p>You can import data from 'CSV' files</p>;\n"
    )
    assert messages(web({"web/src/a.tsx": source})) == [
        (
            "web/src/a.tsx",
            "line 1: import './b' does not resolve (no web/src/b.* or web/src/b/index.*)",
        )
    ]
