"""``codegend submit`` in subprocesses: the forms a request can be given in, and the errors a
user gets for what cannot be sent (exit 2, one clear message, no traceback)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from daemon.topics import ensure_topics
from tests.support.processes import codegend

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@pytest.fixture
def env(tmp_path, kafka_bootstrap, topic_names):
    asyncio.run(ensure_topics(kafka_bootstrap, [topic_names.requests], 1))
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CODEGEND_")},
        "CODEGEND_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CODEGEND_KAFKA__REQUESTS_TOPIC": topic_names.requests,
        "CODEGEND_KAFKA__CHANGELOG_TOPIC": topic_names.changelog,  # the test's own
        "CODEGEND_KAFKA__COMMANDS_TOPIC": topic_names.commands,
        "CODEGEND_STORE__PATH": str(tmp_path / "codegend.db"),
        "COLUMNS": "200",
    }


def requests_on(bootstrap: str, topic: str) -> list[tuple[bytes | None, dict]]:
    """(key, value) of every message on the topic."""

    async def read() -> list[tuple[bytes | None, dict]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            partition = TopicPartition(topic, 0)
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)
            end = (await consumer.end_offsets([partition]))[partition]
            found = []
            async with asyncio.timeout(10):
                while await consumer.position(partition) < end:
                    for records in (await consumer.getmany(timeout_ms=200)).values():
                        found.extend((r.key, json.loads(r.value)) for r in records)
            return found
        finally:
            await consumer.stop()

    return asyncio.run(read())


def request_file(tmp_path, **fields):
    path = tmp_path / "request.json"
    path.write_text(
        json.dumps(
            {
                "request_id": "sub-1",
                "project_name": "shop",
                "mockup": {"kind": "text", "description": "A shop"},
                **fields,
            }
        )
    )
    return path


def test_a_request_from_a_file_stdin_flags_or_the_environment(
    env, tmp_path, kafka_bootstrap, topic_names
):
    path = request_file(tmp_path)
    assert codegend(env, "submit", str(path)).stdout.strip() == "sub-1"
    assert (
        codegend(env, "submit", "-", "--request-id", "sub-2", input_=path.read_text()).stdout
    ).strip() == "sub-2"
    flags = codegend(env, "submit", "--project", "todo", "--mockup-text", "A todo list")
    assert flags.stdout.strip() == f"{topic_names.requests}:0:2"  # no request_id: where it is
    image = tmp_path / "mockup.bin"  # the content tells the type, not the name
    image.write_bytes(PNG)
    assert (
        codegend(
            env, "submit", "--project", "pic", "--mockup-image", str(image), "--request-id", "img-1"
        )
    ).stdout.strip() == "img-1"
    from_env = {**env, "CODEGEND_PROJECT": "envy", "CODEGEND_MOCKUP_TEXT": "From the env"}
    assert codegend(from_env, "submit", "--request-id", "env-1").stdout.strip() == "env-1"

    sent = requests_on(kafka_bootstrap, topic_names.requests)
    assert [key for key, _ in sent] == [b"sub-1", b"sub-2", None, b"img-1", b"env-1"]
    values = [value for _, value in sent]
    assert values[0]["mockup"] == {"kind": "text", "description": "A shop"}
    assert values[2] == {
        "project_name": "todo",
        "mockup": {"kind": "text", "description": "A todo list"},
        "stack": {"backend": "fastapi", "frontend": "react-vite", "database": "postgresql"},
        "options": {"max_tokens": {}},
    }
    assert values[3]["mockup"] == {
        "kind": "image",
        "media_type": "image/png",
        "data": base64.b64encode(PNG).decode(),
    }
    assert values[4]["project_name"] == "envy"


def test_what_cannot_be_sent_is_a_clear_error(env, tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"project_name": ')
    invalid = request_file(tmp_path, project_name="Not A Slug", options={"phases": ["NOPE"]})
    gif_named_png = tmp_path / "mockup.png"
    gif_named_png.write_bytes(b"BM not an image we take")
    cases = {
        "no request file at /no/such.json": ["/no/such.json"],
        "bad.json is not valid JSON: Expecting value: line 1 column 18": [str(bad_json)],
        "give a request FILE or --project, not both": [str(invalid), "--project", "x"],
        "is not a PNG, JPEG, WebP or GIF image": ["--project", "p", "--mockup-image", str(gif_named_png)],
        "no image file at": ["--project", "p", "--mockup-image", str(tmp_path / "none.png")],
        "give --mockup-text or --mockup-image, not both": [
            "--mockup-text", "t", "--mockup-image", str(gif_named_png),
        ],
        "give a request FILE (or - for stdin), or --project with": [],
    }  # fmt: skip
    with ThreadPoolExecutor(len(cases) + 1) as pool:
        runs = [pool.submit(codegend, env, "submit", *args, check=False) for args in cases.values()]
        whole = pool.submit(codegend, env, "submit", str(invalid), check=False)
    for (message, args), run in zip(cases.items(), runs, strict=True):
        result = run.result()
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stdout == ""

    result = whole.result()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "invalid request:"
    assert lines[1].startswith("  project_name: String should match pattern '^[a-z0-9][a-z0-9-]")
    assert lines[2].startswith("  options.phases: Value error, unknown phase(s) ['NOPE']")


def test_every_option_names_its_environment_variable(env):
    help_text = codegend(env, "submit", "--help").stdout
    for variable in (
        "CODEGEND_PROJECT",
        "CODEGEND_MOCKUP_TEXT",
        "CODEGEND_MOCKUP_IMAGE",
        "CODEGEND_REQUEST_ID",
        "CODEGEND_WATCH",
        "CODEGEND_PLAIN",
        "CODEGEND_CONFIG",
    ):
        assert variable in help_text
