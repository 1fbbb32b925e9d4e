"""Python distributions: those a requirements file or pyproject.toml declares, and those
that install a given top-level module (``jwt`` comes with ``pyjwt``, ``yaml`` with ``pyyaml``
or ``uvicorn[standard]``). Names are normalised as PEP 503 says, extras kept apart."""

from __future__ import annotations

import posixpath
import re
import tomllib
from collections.abc import Iterable
from typing import Any

from daemon.checks.problem import _parent


def _is_requirements(path: str) -> bool:
    name = posixpath.basename(path)
    if name == "pyproject.toml":
        return True
    return name.endswith(".txt") and (
        name.startswith("requirements") or posixpath.basename(_parent(path)) == "requirements"
    )


_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def _requirements(path: str, content: str) -> frozenset[str] | None:
    if path.endswith(".toml"):
        return _pyproject_requirements(content)
    lines = (line.split(" #")[0].strip() for line in content.splitlines())
    return _distributions(line for line in lines if line and not line.startswith(("#", "-")))


def _pyproject_requirements(content: str) -> frozenset[str] | None:
    """PEP 621 and Poetry dependency tables; None when the file declares no project."""
    try:
        document = tomllib.loads(content)
    except (tomllib.TOMLDecodeError, RecursionError):
        return None
    project = _table(document, "project")
    poetry = _table(_table(document, "tool"), "poetry")
    if not project and not poetry:
        return None
    lists = [project.get("dependencies"), *_table(project, "optional-dependencies").values()]
    lists.extend(_table(document, "dependency-groups").values())
    tables = [_table(poetry, "dependencies"), _table(poetry, "dev-dependencies")]
    tables.extend(_table(group, "dependencies") for group in _table(poetry, "group").values())
    specs = [spec for specs in lists if isinstance(specs, list) for spec in specs]
    specs.extend(name for table in tables for name in table)
    return _distributions(spec for spec in specs if isinstance(spec, str))


def _table(document: Any, key: str) -> dict[str, Any]:
    value = document.get(key) if isinstance(document, dict) else None
    return value if isinstance(value, dict) else {}


def _distributions(specs: Iterable[str]) -> frozenset[str]:
    """Normalised names, each also with its extras (``uvicorn[standard]``)."""
    names: set[str] = set()
    for spec in specs:
        if match := _REQUIREMENT.match(spec):
            name = _normalise(match[1])
            names.add(name)
            for extra in (match[2] or "").split(","):
                if extra.strip():
                    names.add(f"{name}[{_normalise(extra.strip())}]")
    return frozenset(names)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _providers(module: str) -> tuple[str, ...]:
    """Distributions that install a top-level module: known ones first, then the usual names."""
    own = _normalise(module)
    return (*_PROVIDERS.get(module, ()), own, f"python-{own}", f"py{own}", f"{own}-python")


_STANDARD = ("fastapi[standard]", "fastapi[all]")
_PROVIDERS: dict[str, tuple[str, ...]] = {
    "jose": ("python-jose",),
    "jwt": ("pyjwt",),
    "dotenv": ("python-dotenv", "pydantic-settings", "uvicorn[standard]"),
    "multipart": ("python-multipart", *_STANDARD),
    "python_multipart": ("python-multipart", *_STANDARD),
    "yaml": ("pyyaml", "uvicorn[standard]"),
    "psycopg2": ("psycopg2-binary", "psycopg2"),
    "sqlalchemy": ("sqlalchemy", "sqlmodel", "alembic", "flask-sqlalchemy"),
    "pydantic_settings": ("pydantic-settings",),
    "email_validator": ("email-validator", "pydantic[email]", *_STANDARD),
    "passlib": ("passlib",),
    "bcrypt": ("bcrypt", "passlib[bcrypt]"),
    "argon2": ("argon2-cffi", "passlib[argon2]"),
    "uvicorn": ("uvicorn", *_STANDARD),
    "fastapi": ("fastapi",),
    "starlette": ("starlette", "fastapi", "sse-starlette"),
    "pydantic": ("pydantic", "fastapi", "pydantic-settings", "sqlmodel"),
    "pydantic_core": ("pydantic", "fastapi", "pydantic-settings", "sqlmodel"),
    "typing_extensions": ("typing-extensions", "pydantic", "fastapi", "sqlalchemy"),
    "anyio": ("anyio", "starlette", "fastapi", "httpx"),
    "httpx": ("httpx", *_STANDARD),
    "jinja2": ("jinja2", "flask", *_STANDARD),
    "markupsafe": ("markupsafe", "jinja2", "flask"),
    "werkzeug": ("werkzeug", "flask"),
    "click": ("click", "uvicorn", "flask", "celery", "typer"),
    "h11": ("h11", "uvicorn", "httpx"),
    "websockets": ("websockets", "uvicorn[standard]"),
    "alembic": ("alembic",),
    "mako": ("mako", "alembic"),
    "greenlet": ("greenlet", "sqlalchemy"),
    "pytest": ("pytest",),
    "_pytest": ("pytest",),
    "slowapi": ("slowapi",),
    "limits": ("limits", "slowapi"),
    "redis": ("redis",),
    "celery": ("celery",),
    "kombu": ("kombu", "celery"),
    "dateutil": ("python-dateutil",),
    "PIL": ("pillow",),
    "cryptography": ("cryptography", "python-jose[cryptography]", "pyjwt[crypto]"),
    "Crypto": ("pycryptodome",),
    "bs4": ("beautifulsoup4",),
    "sklearn": ("scikit-learn",),
    "cv2": ("opencv-python", "opencv-python-headless"),
    "magic": ("python-magic",),
    "socketio": ("python-socketio",),
    "MySQLdb": ("mysqlclient",),
    "attr": ("attrs",),
    "dns": ("dnspython", "email-validator"),
    "certifi": ("certifi", "requests", "httpx"),
    "pkg_resources": ("setuptools",),
}
