"""Shared fixtures: tiny real-architecture trios built once per test run (no network)."""
from __future__ import annotations

import os

import pytest

# The fake Hub's fixtures (`hub`, `hub_trio`) for every module; its helpers are imported by name.
pytest_plugins = ["hub_server"]

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy shared CPU the thread
    hand-offs cost ~40x the math (measured); restore the setting afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def trio(tmp_path_factory):
    """base/coder/vlm folders (untied embeddings, sharded checkpoints). Treat as read-only."""
    from viscodex.toy.models import TinyConfig, build_trio

    return build_trio(tmp_path_factory.mktemp("trio"), TinyConfig(seed=0))


@pytest.fixture(scope="session")
def tied_trio(tmp_path_factory):
    """Like `trio` but with tied embeddings (lm_head absent on disk), as Qwen2.5 0.5B-3B."""
    from viscodex.toy.models import TinyConfig, build_trio

    return build_trio(tmp_path_factory.mktemp("tied_trio"), TinyConfig(seed=1, tie_word_embeddings=True))


@pytest.fixture
def no_seccomp(monkeypatch):
    """The sandbox's capability probe forced off, as on a kernel without seccomp filters (issue 13):
    the status is probed again inside the test and again after it."""
    from viscodex import sandbox

    monkeypatch.delenv(sandbox.UNSAFE_ENV, raising=False)
    monkeypatch.setattr(sandbox, "_probe", lambda: {"rlimits": "on", "landlock": "ABI 7", "landlock_holds": True,
                                                    "seccomp": "off (OSError: seccomp filters are not supported)"})
    sandbox.status.cache_clear()
    yield
    sandbox.status.cache_clear()
    sandbox.allow_unsafe(False)


@pytest.fixture
def requires_sandbox():
    """Tests that run generated code need the sandbox's kernel layers (seccomp + Landlock). A
    machine without them skips such tests with the reason, except in CI, where they fail."""
    from viscodex import sandbox

    st = sandbox.status()
    if not st.ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the code sandbox: {st.line}")
        pytest.skip(st.line)
