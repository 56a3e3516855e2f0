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


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead, and builds may run beside the tests
