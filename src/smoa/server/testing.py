"""Test helper: the app under uvicorn in a thread on 127.0.0.1 (real sockets, any backends)."""

from __future__ import annotations

import threading
import time
from typing import Any

from ..testing import free_port


class ThreadServer:
    """    with ThreadServer(create_app(...)) as srv:
            openai.OpenAI(base_url=srv.base_url, api_key="x")
    """

    def __init__(self, app: Any, start_timeout_s: float = 20.0) -> None:
        import uvicorn

        self.app = app
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.root = f"http://127.0.0.1:{self.port}"
        self.base_url = self.root + "/v1"
        self.start_timeout_s = start_timeout_s

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)
