import contextlib

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install -e '.[server]'")

from smoa.config import load_config  # noqa: E402
from smoa.server import create_app  # noqa: E402
from smoa.server.settings import ServerOptions  # noqa: E402
from smoa.server.testing import ThreadServer  # noqa: E402
from smoa.testing import ScriptedBackend, free_port, mixture_responder  # noqa: E402
from smoa.tracestore import TraceStore  # noqa: E402


def numbered(req):
    return f"Proposal from sample {req.settings.seed}: the answer is 84."


@pytest.fixture
def make_server(tmp_path):
    """make_server(backend=None, config_text=None, **options) -> a running ThreadServer."""
    stack = contextlib.ExitStack()

    def make(backend=None, config_text=None, store=None, **options):
        be = backend or ScriptedBackend(responder=mixture_responder(propose=numbered))
        cfg = None
        if config_text is not None:
            p = tmp_path / f"cfg{free_port()}.toml"
            p.write_text(config_text)
            cfg = load_config(p)
        app = create_app(
            cfg, ServerOptions(**options), instances={"local": be},
            store=store or TraceStore(tmp_path / "traces.sqlite"), warm_up=False,
        )
        srv = stack.enter_context(ThreadServer(app))
        srv.backend = be
        return srv

    yield make
    stack.close()
