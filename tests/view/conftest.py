"""A small result on a synthetic slide, and a viewer server of it running in a thread."""

from __future__ import annotations

import threading

import pytest

from wsiseg.inference.pipeline import PredictConfig, predict_slide


@pytest.fixture(scope="session")
def view_result(svs_x40, pixel_model, tmp_path_factory):
    """The per-pixel model's result on the x40 synthetic slide (read-only)."""
    out = tmp_path_factory.mktemp("view") / "x40.wsiseg.zarr"
    return predict_slide(svs_x40.path, PredictConfig(model=str(pixel_model[0]), out=str(out),
                                                     progress=False,
                                                     trust_code=True)).path


@pytest.fixture(scope="session")
def view_server(view_result):
    """(base URL, Viewer) of a server of ``view_result`` on a free port."""
    from wsiseg.view import make_server, server_url

    server, viewer = make_server(view_result, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server_url(server), viewer
    server.shutdown()
    server.server_close()
    viewer.close()
