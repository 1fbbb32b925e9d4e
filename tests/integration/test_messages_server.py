"""The fake Messages API server, exercised through the real ``anthropic`` SDK over HTTP."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest

from daemon.states.base import ArchAnswer, PhaseFiles
from tests.support.messages_server import CHARS_PER_TOKEN, MessagesServer, Reply

MODEL = "claude-sonnet-5-5"
FILES_FORMAT = {"format": {"type": "json_schema", "schema": PhaseFiles.model_json_schema()}}
ARCH_FORMAT = {"format": {"type": "json_schema", "schema": ArchAnswer.model_json_schema()}}


@pytest.fixture
def server() -> Iterator[MessagesServer]:
    with MessagesServer() as srv:
        yield srv


def make_client(server: MessagesServer, **kwargs: Any) -> anthropic.AsyncAnthropic:
    kwargs.setdefault("max_retries", 0)
    return anthropic.AsyncAnthropic(base_url=server.url, api_key="test-key", **kwargs)


def request(phase: str = "BE_MODELS", *, max_tokens: int = 4000, **extra: Any) -> dict[str, Any]:
    """Keyword arguments of a phase call like the daemon's."""
    return {
        "model": MODEL,
        "max_tokens": max_tokens,
        "system": f"You write code.\nPHASE: {phase}",
        "messages": [{"role": "user", "content": f"Do the phase.\nPHASE: {phase}"}],
        **extra,
    }


async def test_create_answers_files_schema(server: MessagesServer) -> None:
    async with make_client(server) as client:
        message = await client.messages.create(**request(output_config=FILES_FORMAT))
    assert message.stop_reason == "end_turn"
    answer = PhaseFiles.model_validate_json(message.content[0].text)
    assert [f.path for f in answer.files] == [
        f"generated/be_models/file_{n}.txt" for n in (1, 2, 3)
    ]
    assert answer.complete and all(len(f.content) >= 250 for f in answer.files)
    assert message.model == MODEL and message.id.startswith("msg_")
    assert message.usage.output_tokens == -(-len(message.content[0].text) // CHARS_PER_TOKEN)


def with_existing(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A continuation call: the daemon lists the phase's files written so far (and names
    other files elsewhere in the prompt, as the file plan does: those are still answered)."""
    existing = (
        "File plan: generated/be_models/file_1.txt\n\n"
        "Files of this phase already produced (do not repeat them):\n"
        "- generated/be_models/file_2.txt\n- db/seed.sql\n"
    )
    kwargs["messages"].append({"role": "user", "content": existing})
    return kwargs


async def test_continuation_leaves_out_existing_files_and_phase_files_override(
    server: MessagesServer,
) -> None:
    server.phase_files["DB"] = [("db/schema.sql", "CREATE TABLE t (id int);"), ("db/seed.sql", "")]
    async with make_client(server) as client:
        calls = [with_existing(request(p, output_config=FILES_FORMAT)) for p in ("BE_MODELS", "DB")]
        files, db = [await client.messages.create(**kwargs) for kwargs in calls]
    paths = [f["path"] for f in json.loads(files.content[0].text)["files"]]
    assert paths == ["generated/be_models/file_1.txt", "generated/be_models/file_3.txt"]
    assert json.loads(db.content[0].text)["files"] == [
        {"path": "db/schema.sql", "content": "CREATE TABLE t (id int);"}
    ]


async def test_arch_schema_gets_a_valid_instance(server: MessagesServer) -> None:
    async with make_client(server) as client:
        message = await client.messages.create(**request("ARCH", output_config=ARCH_FORMAT))
    plan = ArchAnswer.model_validate_json(message.content[0].text)
    assert plan.pages and plan.tables[0].columns and plan.complete
    # the file plan agrees with the files the fake answers each phase with
    assert {f.path for f in plan.files if f.phase == "DB"} == {
        "generated/db/file_1.txt",
        "generated/db/file_2.txt",
        "generated/db/file_3.txt",
    }
    assert server.calls_for("ARCH")[0].body["output_config"] == ARCH_FORMAT


async def test_small_max_tokens_cuts_the_answer(server: MessagesServer) -> None:
    async with make_client(server) as client:
        full = await client.messages.create(**request(output_config=FILES_FORMAT))
        cut = await client.messages.create(**request(max_tokens=20, output_config=FILES_FORMAT))
    assert cut.stop_reason == "max_tokens"
    assert cut.usage.output_tokens == 20
    assert cut.content[0].text == full.content[0].text[: 20 * CHARS_PER_TOKEN]


async def test_stream_accumulates_like_create(server: MessagesServer) -> None:
    async with make_client(server) as client:
        created = await client.messages.create(**request(output_config=FILES_FORMAT))
        async with client.messages.stream(**request(output_config=FILES_FORMAT)) as stream:
            pieces = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
    assert len(pieces) > 10 and "".join(pieces) == created.content[0].text
    assert final.content[0].text == created.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == created.usage.input_tokens
    assert final.usage.output_tokens == created.usage.output_tokens


async def test_create_stream_true_yields_the_real_event_sequence(server: MessagesServer) -> None:
    server.enqueue("BE_MODELS", Reply(text="x" * 100, stop_reason="max_tokens"))
    async with make_client(server) as client:
        stream = await client.messages.create(**request(), stream=True)
        events = [event async for event in stream]
    kinds = [e.type for e in events]
    assert kinds == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == "x" * 100
    assert events[-2].delta.stop_reason == "max_tokens" and events[-2].usage.output_tokens == 25


async def test_scripted_replies_by_phase_then_any_then_auto(server: MessagesServer) -> None:
    server.enqueue("DB", Reply(text="db one"))
    server.enqueue(None, Reply(text="anyone"))
    async with make_client(server) as client:
        texts = [(await client.messages.create(**request("DB"))).content[0].text for _ in range(3)]
    assert texts == ["db one", "anyone", "Fake answer for phase DB."]


async def test_custom_responder_and_its_failures(server: MessagesServer) -> None:
    server.responder = lambda body: Reply(text=f"echo {len(body['messages'])}")
    async with make_client(server) as client:
        assert (await client.messages.create(**request())).content[0].text == "echo 1"
        server.responder = lambda body: 1 / 0  # type: ignore[return-value,arg-type]
        with pytest.raises(anthropic.InternalServerError, match="ZeroDivisionError"):
            await client.messages.create(**request())


async def test_rate_limit_without_retries(server: MessagesServer) -> None:
    server.enqueue(None, Reply(status=429, headers={"retry-after": "1"}))
    async with make_client(server) as client:
        with pytest.raises(anthropic.RateLimitError) as caught:
            await client.messages.create(**request())
    err = caught.value
    assert err.status_code == 429 and err.response.headers["retry-after"] == "1"
    assert err.body["error"]["type"] == "rate_limit_error"
    assert err.request_id and err.request_id.startswith("req_")


async def test_rate_limit_retried_by_the_sdk(server: MessagesServer) -> None:
    server.enqueue("BE_MODELS", Reply(status=429, headers={"retry-after": "0"}), Reply(text="ok"))
    async with make_client(server, max_retries=1) as client:
        message = await client.messages.create(**request())
    assert message.content[0].text == "ok"
    retries = [r.headers["x-stainless-retry-count"] for r in server.calls_for("BE_MODELS")]
    assert retries == ["0", "1"]


@pytest.mark.parametrize(
    ("status", "error_class", "error_type"),
    [
        (529, anthropic.OverloadedError, "overloaded_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
    ],
)
async def test_error_statuses(
    server: MessagesServer, status: int, error_class: type[Exception], error_type: str
) -> None:
    server.enqueue(None, Reply(status=status))
    async with make_client(server) as client:
        with pytest.raises(error_class) as caught:
            await client.messages.create(**request())
    assert caught.value.body["error"]["type"] == error_type  # type: ignore[attr-defined]


async def test_drop_mid_stream_raises_remote_protocol_error(server: MessagesServer) -> None:
    server.enqueue(None, Reply(drop_after_chars=100))
    received: list[str] = []
    async with make_client(server) as client:
        with pytest.raises(httpx2.RemoteProtocolError):
            async with client.messages.stream(**request(output_config=FILES_FORMAT)) as stream:
                async for text in stream.text_stream:
                    received.append(text)
    assert len("".join(received)) == 100


async def test_drop_of_a_plain_response_is_a_connection_error(server: MessagesServer) -> None:
    server.enqueue(None, Reply(drop_after_chars=50))
    async with make_client(server) as client:
        with pytest.raises(anthropic.APIConnectionError):
            await client.messages.create(**request(output_config=FILES_FORMAT))


async def test_sse_error_raises_api_status_error(server: MessagesServer) -> None:
    server.enqueue(None, Reply(sse_error="overloaded_error"))
    async with make_client(server) as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            async with client.messages.stream(**request(output_config=FILES_FORMAT)) as stream:
                await stream.get_final_message()
    err = caught.value
    # Mid-stream errors arrive on a 200 response: the SDK cannot map them to OverloadedError.
    assert type(err) is anthropic.APIStatusError and err.status_code == 200
    assert err.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


async def test_hang_times_out_and_stop_is_prompt(server: MessagesServer) -> None:
    server.enqueue(None, Reply(hang=True))
    async with make_client(server, timeout=0.5) as client:
        with pytest.raises(anthropic.APITimeoutError):
            await client.messages.create(**request())
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 0.5


async def test_stop_releases_a_hang_while_the_client_waits(server: MessagesServer) -> None:
    server.enqueue(None, Reply(hang=True), Reply(delay_s=30))
    async with make_client(server, timeout=10) as client:
        calls = [asyncio.create_task(client.messages.create(**request())) for _ in range(2)]
        await asyncio.to_thread(server.wait_for_requests, 2)
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 0.5
        results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, anthropic.APIConnectionError) for r in results), results


SUBPROCESS_CLIENT = """
import sys, anthropic
with anthropic.Anthropic(base_url=sys.argv[1], api_key="sub-key", max_retries=0) as client:
    message = client.messages.create(
        model="claude-sonnet-5-5", max_tokens=100,
        messages=[{"role": "user", "content": "PHASE: CONFIG"}],
    )
print(message.content[0].text)
"""


async def test_serves_a_client_in_a_subprocess(server: MessagesServer) -> None:
    server.enqueue("CONFIG", Reply(text="from the fake"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SUBPROCESS_CLIENT,
        server.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "from the fake"
    assert [r.phase for r in server.requests] == ["CONFIG"]


async def test_prompt_cache_tokens(server: MessagesServer) -> None:
    system = [
        {"type": "text", "text": "Rules. " * 400, "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "PHASE: BE_CORE"},
    ]
    kwargs = request("BE_CORE") | {"system": system}
    async with make_client(server) as client:
        first = await client.messages.create(**kwargs)
        second = await client.messages.create(**kwargs)
        plain = await client.messages.create(**request("BE_CORE"))
    cached = -(-len("Rules. " * 400) // CHARS_PER_TOKEN)
    assert (first.usage.cache_creation_input_tokens, first.usage.cache_read_input_tokens) == (
        cached,
        0,
    )
    assert (second.usage.cache_creation_input_tokens, second.usage.cache_read_input_tokens) == (
        0,
        cached,
    )
    assert second.usage.input_tokens == first.usage.input_tokens < 50
    assert plain.usage.cache_read_input_tokens == 0


async def test_requests_recorded_without_api_key_and_phase_from_user(
    server: MessagesServer,
) -> None:
    source = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    image = {"type": "image", "source": source}
    user = [image, {"type": "text", "text": "PHASE: FE_CORE\nthen PHASE: FE_PAGES"}]
    kwargs = request("ARCH") | {"messages": [{"role": "user", "content": user}]}
    async with make_client(server) as client:
        await client.messages.create(**kwargs)
        plain_user = {"messages": [{"role": "user", "content": "hi"}]}
        await client.messages.create(**request("CONFIG") | plain_user)
    first, second = server.requests
    assert (first.phase, second.phase) == ("FE_PAGES", "CONFIG")  # user marker wins, else system
    assert first.body["messages"][0]["content"][0] == image
    for recorded in server.requests:
        assert "x-api-key" not in recorded.headers and "authorization" not in recorded.headers
        assert "test-key" not in json.dumps(recorded.headers)
        assert recorded.headers["anthropic-version"]
    server.reset()
    assert server.requests == []
