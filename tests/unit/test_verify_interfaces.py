"""Export signatures for prompts."""

from __future__ import annotations

from daemon.verify.interfaces import MAX_LINE_CHARS, signatures


def test_python_functions_classes_and_constants() -> None:
    content = (
        "from pydantic import BaseModel\n"
        "API_PREFIX = '/api'\n"
        "def get_current_user(token: str = Depends(oauth2_scheme), db: Session = Depends(get_db)) -> User:\n"
        "    ...\n"
        "class CarOut(BaseModel):\n    id: int\n    make: str\n    def label(self) -> str: ...\n"
        "def _private(): ...\n"
    )
    assert signatures("backend/app/x.py", content) == [
        "API_PREFIX = '/api'",
        "def get_current_user(token: str = Depends(oauth2_scheme), db: Session = Depends(get_db)) -> User",
        "class CarOut(BaseModel): id: int, make: str; methods label",
    ]


def test_typescript_exports() -> None:
    content = (
        "export interface CarCardProps { car: Car; onSelect?: (id: number) => void }\n"
        "export function CarCard({ car, onSelect }: CarCardProps): JSX.Element { return <div/>; }\n"
        "export const api = { list: (q: Query = {}) => http.get('/cars'), async get(id: number): Promise<Car> { return x; } };\n"
        "export default function Page() { return null; }\n"
        f"export type Big = {{ {'a: string; ' * 100} }};\n"
    )
    lines = signatures("frontend/src/CarCard.tsx", content)
    assert lines[:4] == [
        "export interface CarCardProps { car: Car; onSelect?: (id: number) => void }",
        "export function CarCard({ car, onSelect }: CarCardProps): JSX.Element",
        "export const api = { list(q: Query = {}), async get(id: number): Promise<Car> }",
        "export default function Page()",
    ]
    assert len(lines[4]) == MAX_LINE_CHARS and lines[4].endswith("…")


def test_unparseable_files_give_what_can_be_read() -> None:
    assert signatures("a.py", "def (:\n") == []
    assert signatures("a.ts", "export const x = 1;\nexport function (")[0] == "export const x = 1"
    assert signatures("a.css", "body {}") == []
