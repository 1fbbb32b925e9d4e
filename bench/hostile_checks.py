"""``python -m bench.hostile_checks``: the code checks on hostile files, at n and 2n.

For each input that made the former regular expressions quadratic (or worse), the time of
the former pattern and of today's check at n and 2n characters, and the ratio 2n/n: about
2 is linear, about 4 quadratic. The former patterns are copied here as they were; their n
is kept small, since they take seconds where the checks take milliseconds.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from daemon import checks

_FORMER_JSONC_COMMENTS = re.compile(r'("(?:\\.|[^"\\])*")|//[^\n]*|/\*.*?\*/', re.DOTALL)
_FORMER_SCRIPT_TOKENS = re.compile(
    r"""//[^\n]*|/\*.*?\*/
    |(?:^|;)[ \t]*(?:import|export)(?![\w$])[\w$*{},\s]*?\bfrom\s*(['"])(?P<from>[^'"\n]+)\1
    |(?:^|;)[ \t]*import\s*(['"])(?P<bare>[^'"\n]+)\3
    |(?:import|require)(?<![\w$.]import)(?<![\w$.]require)\s*\(\s*(['"`])(?P<call>[^'"`\n$]+)\5\s*\)
    |'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"|`(?:\\.|[^`\\])*`""",
    re.VERBOSE | re.DOTALL | re.MULTILINE,
)


def _former_jsonc(text: str) -> object:
    return _FORMER_JSONC_COMMENTS.sub("", text)


def _former_scripts(text: str) -> object:
    return list(_FORMER_SCRIPT_TOKENS.finditer(text))


def _jsonc(text: str) -> object:
    return checks.check_files({"tsconfig.json": text}, {})


def _scripts(text: str) -> object:
    return checks.check_files({"src/a.ts": text}, {})


# name, what one unit of the input is, the former check, today's check
CASES: list[tuple[str, str, Callable[[str], object], Callable[[str], object]]] = [
    ("unterminated block comments (tsconfig)", "/* ", _former_jsonc, _jsonc),
    ("escaped quotes in one string (tsconfig)", '\\"', _former_jsonc, _jsonc),
    ("imports without from (.ts)", "import x\n", _former_scripts, _scripts),
    ("escaped backticks in a template (.ts)", "\\`", _former_scripts, _scripts),
]
FORMER_CHARS = 8_000
TODAY_CHARS = 400_000  # 2n stays under jobs.check_max_file_bytes


def seconds(check: Callable[[str], object], text: str) -> float:
    started = time.perf_counter()
    check(text)
    return time.perf_counter() - started


def row(name: str, unit: str, check: Callable[[str], object], chars: int) -> str:
    prefix = '"' if unit == '\\"' else "`" if unit == "\\`" else ""
    small = prefix + unit * (chars // len(unit))
    large = prefix + unit * (2 * chars // len(unit))
    first, second = seconds(check, small), seconds(check, large)
    return f"| {name} | {chars:,} | {first:.3f} s | {second:.3f} s | {second / first:.1f} |"


def main() -> None:
    print("| input | n (chars) | n | 2n | ratio |")
    print("|---|---|---|---|---|")
    for name, unit, former, today in CASES:
        print(row(f"{name}, former pattern", unit, former, FORMER_CHARS))
        print(row(f"{name}, today", unit, today, TODAY_CHARS))


if __name__ == "__main__":
    main()
