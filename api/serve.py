"""Run the app with uvicorn: the tables come from ``$NASBENCH_PTB_TABLES`` (set by ``nasbench_ptb serve``)."""
from __future__ import annotations

import uvicorn

from .protocols import protocol


def run(host: str, port: int, workers: int = 1) -> None:
    """Run uvicorn with the app and its JSON-error protocol on ``host:port``."""
    uvicorn.run(f"{__package__}.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level="warning", http=protocol())
