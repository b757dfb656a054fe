"""Fixtures shared by every test module.

``llm_server`` (session scope): a real OpenAI-compatible LLM server; see tests/llm_server.py.
It is defined once here, not imported into each module, so the whole session shares one
server (a session fixture imported into two modules would be two fixtures, two servers).
"""

from llm_server import llm_server  # noqa: F401  (a fixture: pytest finds it by name)


def pytest_configure(config):
    config.addinivalue_line("markers", "llm: talks to a real LLM over HTTP (the llm_server fixture)")
