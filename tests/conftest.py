import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def ptb_dir() -> Path:
    """The verified PTB copy tests use: $NASBENCH_PTB_DATA, else ../shared/data/ptb next to the checkout."""
    env = os.environ.get("NASBENCH_PTB_DATA")
    return Path(env) if env else (ROOT.parent / "shared" / "data" / "ptb")


@pytest.fixture(scope="session")
def ptb_path() -> Path:
    path = ptb_dir()
    if not (path / "ptb.train.txt").is_file():
        pytest.fail(f"PTB not found at {path}; set NASBENCH_PTB_DATA")
    return path


@pytest.fixture(scope="module")
def corpus():
    """A tiny synthetic corpus (``helpers.tiny_corpus``), built once per test module."""
    from helpers import tiny_corpus

    return tiny_corpus()


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead, and builds may run beside the tests


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI (``CI=true``) every optional dependency is installed: a test skipped for lack of one is a failure
    there, never a silent pass."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where every dependency must be installed: {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole module skipped at import (``pytest.importorskip`` at the top)."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"module skipped under CI=true, where every dependency must be installed: {report.longrepr}"


@pytest.fixture(scope="module")
def served_tables(tmp_path_factory):
    """The two tables the HTTP tests serve (``helpers.http_tables``), built once per test module."""
    from helpers import http_tables

    return http_tables(tmp_path_factory.mktemp("tables"))


@pytest.fixture(scope="module")
def http_client(served_tables):
    """A TestClient of the app over ``served_tables``; server errors come back as 500s, not exceptions."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from nasbench_ptb.server.app import create_app

    with TestClient(create_app(served_tables), raise_server_exceptions=False) as c:
        yield c
