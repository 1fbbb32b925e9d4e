"""The benchmark of issue 5: real daemon subprocesses, a real broker (tansu), the real SDK
against the local Messages API server in a process of its own, the client library to submit
and follow. ``python -m bench`` runs every scenario and writes ``bench/RESULTS.md``;
``python -m bench --quick`` is a smaller smoke run.
"""
