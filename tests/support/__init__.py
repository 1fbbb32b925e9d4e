"""Helpers the test tiers and the benchmark share: the local Messages API server, the
``codegend`` command in subprocesses, the daemon in-process, topics, requests and records.

Test modules and conftest files import from here, never from one another.
"""
