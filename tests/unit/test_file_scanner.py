import json
import random

import pytest

from daemon.streaming import FileScanner

TRICKY = [
    {"path": "a/one.py", "content": 'x = "}{][" \\ "\\"" \n'},
    {"path": "b/two.json", "content": '{"k": [1, {"n": "\\u00e9"}]}'},
    {"path": "c/three.txt", "content": "plain \\\\ text\\n" * 20},
]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 40, 10_000])
def test_files_come_out_whole_whatever_the_chunking(chunk):
    text = json.dumps({"files": TRICKY, "complete": True})
    scanner = FileScanner()
    found = []
    for start in range(0, len(text), chunk):
        found += scanner.feed(text[start : start + chunk])
    assert [f.model_dump() for f in found] == TRICKY


def test_a_file_is_handed_out_when_its_object_closes():
    text = json.dumps({"files": TRICKY, "complete": True})
    end_of_first = text.index(TRICKY[1]["path"]) - len('{"path": "')
    scanner = FileScanner()
    assert [f.path for f in scanner.feed(text[:end_of_first])] == ["a/one.py"]
    assert [f.path for f in scanner.feed(text[end_of_first:])] == ["b/two.json", "c/three.txt"]


def test_random_chunks_of_random_content():
    rng = random.Random(7)
    alphabet = 'ab"\\{}[]\n\t é'
    files = [
        {"path": f"f{i}.txt", "content": "".join(rng.choice(alphabet) for _ in range(300))}
        for i in range(8)
    ]
    text = json.dumps({"files": files, "complete": False})
    scanner, found, pos = FileScanner(), [], 0
    while pos < len(text):
        step = rng.randint(1, 50)
        found += scanner.feed(text[pos : pos + step])
        pos += step
    assert [f.model_dump() for f in found] == files


def test_an_object_that_is_not_a_file_is_skipped():
    text = '{"files": [{"path": "a"}, {"path": "b", "content": "x"}], "complete": true}'
    assert [f.path for f in FileScanner().feed(text)] == ["b"]
