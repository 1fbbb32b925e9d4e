"""The embedded broker's child process gets an allowlist of the environment: no secret."""

from __future__ import annotations

from pathlib import Path

from daemon.broker import EmbeddedBroker

# Secrets set only to prove they never reach the broker's environment (not settings in use).
SECRETS = {
    "ANTHROPIC_API_KEY": "sk-ant-never-in-the-broker",
    "ANTHROPIC_AUTH_TOKEN": "token-never-in-the-broker",
    "CODEGEND_KAFKA__SASL_PASSWORD": "sasl-never-in-the-broker",
    "LISTENER_URL": "tcp://0.0.0.0:1",  # tansu would read this as its own configuration
}


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = [item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item]
    return {key.decode(): value.decode(errors="replace") for key, value in pairs}


async def test_secrets_do_not_reach_the_broker_process(monkeypatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    async with EmbeddedBroker() as broker:
        assert broker.pid is not None
        seen = _environ(broker.pid)
        raw = Path(f"/proc/{broker.pid}/environ").read_bytes()
    assert seen["PATH"]  # the file was read: what it lacks, the child lacks
    assert seen["LC_ALL"] == "C.UTF-8"
    assert not set(SECRETS) & set(seen)
    for value in SECRETS.values():
        assert value.encode() not in raw
