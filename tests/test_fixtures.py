"""The fake Hub is one server for the session, registered once (conftest's pytest_plugins). A test
module that imports the `hub` / `hub_trio` fixtures by name gets a second definition, hence a second
server that re-points huggingface_hub's endpoint and token for the rest of the session: later modules
then see their session repos vanish (404). Import helpers from hub_server, never its fixtures."""
from __future__ import annotations

import ast
from pathlib import Path

import hub_server

TESTS = Path(__file__).resolve().parent


def test_no_module_imports_the_hub_fixtures():
    fixtures = {n for n, v in vars(hub_server).items() if hasattr(v, "_fixture_function_marker")
                or type(v).__name__ == "FixtureFunctionDefinition"}
    assert {"hub", "hub_trio"} <= fixtures
    bad = []
    for path in TESTS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "hub_server":
                bad += [f"{path.name}:{node.lineno} imports {a.name}" for a in node.names if a.name in fixtures]
    assert not bad, bad
