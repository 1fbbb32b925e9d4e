import json
import logging
import time

import pytest

from daemon.logs import JsonFormatter, TextFormatter, setup_logging


def logged(fmt, *records):
    """What ``setup_logging(fmt)`` writes for ``records``: (level, message, extra) each."""
    setup_logging(fmt)
    try:
        for level, message, extra in records:
            logging.getLogger("daemon.jobs").log(level, message, extra=extra)
    finally:
        logging.getLogger().handlers.clear()


def test_json_lines_carry_the_job(capsys):
    setup_logging("json")
    try:
        logging.getLogger("daemon.jobs").info(
            "✓ Generated %d model files", 8, extra={"job_id": "j-1", "phase": "BE_MODELS"}
        )
        logging.getLogger("daemon.service").warning("no job here")
    finally:
        logging.getLogger().handlers.clear()
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert first["message"] == "✓ Generated 8 model files"
    assert first["job_id"] == "j-1" and first["phase"] == "BE_MODELS" and first["level"] == "info"
    assert second["job_id"] == "-"


def test_text_lines_lead_with_time_level_and_job(capsys):
    setup_logging("text")
    try:
        logging.getLogger("daemon.jobs").info(
            "STEP 3: BACKEND API GENERATION (Multi-phase)", extra={"job_id": "j-2"}
        )
    finally:
        logging.getLogger().handlers.clear()
    line = capsys.readouterr().err.strip()
    assert line.endswith("INFO    [j-2] STEP 3: BACKEND API GENERATION (Multi-phase)")


def test_the_http_clients_request_lines_stay_out(capsys):
    setup_logging("text")
    try:
        logging.getLogger("httpx2").info('HTTP Request: POST https://api "HTTP/1.1 200 OK"')
        logging.getLogger("httpx2").warning("a warning still shows")
    finally:
        logging.getLogger().handlers.clear()
    err = capsys.readouterr().err
    assert "HTTP Request" not in err and "a warning still shows" in err


def test_text_lines_cannot_be_forged_from_outside(capsys):
    setup_logging("text")
    try:
        logging.getLogger("daemon.intake").warning(
            "rejected: unknown key %r",
            "x\n12:00:00 INFO    [-] all is well\x1b[2J\u202e",
            extra={"job_id": "j\r\n3"},
        )
        try:
            raise ValueError("first line\n12:00:00 INFO    [-] forged")
        except ValueError:
            logging.getLogger("daemon.intake").exception("it failed:\x1b[31m red")
    finally:
        logging.getLogger().handlers.clear()
    lines = capsys.readouterr().err.splitlines()
    records = [line for line in lines if not line.startswith(" ")]
    assert len(records) == 2  # every other line is an indented traceback line
    assert records[0].endswith(
        r"[j\r\n3] rejected: unknown key 'x\n12:00:00 INFO    [-] all is well\x1b[2J\u202e'"
    )
    assert records[1].endswith(r"it failed:\x1b[31m red")
    assert "\x1b" not in "".join(lines) and "  12:00:00 INFO    [-] forged" in lines


STEP = (logging.INFO, "STEP 1: ARCHITECTURE", {"job_id": "j-4", "layout": "banner"})
DETAIL = (logging.WARNING, "a.py: line 1: invalid syntax", {"job_id": "j-4", "layout": "indented"})


def test_the_text_format_draws_the_layout(capsys):
    logged("text", STEP, DETAIL)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "INFO    [j-4] " + "=" * 60,
        "INFO    [j-4] STEP 1: ARCHITECTURE",
        "INFO    [j-4] " + "=" * 60,
        "WARNING [j-4]   a.py: line 1: invalid syntax",
    ]


def test_json_messages_carry_no_layout(capsys):
    logged("json", STEP, DETAIL)
    step, detail = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert step["message"] == "STEP 1: ARCHITECTURE" and detail["message"] == DETAIL[1]
    assert "layout" not in step and "layout" not in detail and step["job_id"] == "j-4"


def test_a_banner_cannot_hide_a_forged_line(capsys):
    logged("text", (logging.INFO, "STEP\n12:00:00 INFO    [-] forged", {"layout": "banner"}))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and lines[1].endswith(r"STEP\n12:00:00 INFO    [-] forged")


@pytest.mark.parametrize(("fmt", "formatter"), [("text", TextFormatter), ("json", JsonFormatter)])
def test_times_are_utc_without_changing_other_formatters(fmt, formatter):
    setup_logging(fmt)
    logging.getLogger().handlers.clear()
    record = logging.makeLogRecord({"created": 0.0, "msecs": 0.0, "msg": "x"})
    assert formatter().formatTime(record, "%Y-%m-%d %H:%M") == "1970-01-01 00:00"
    assert logging.Formatter.converter is time.localtime
