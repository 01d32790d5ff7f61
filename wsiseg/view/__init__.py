"""``wsiseg view``: the class map over its slide, in the browser (:mod:`.server`)."""

from .server import ResultView, Viewer, make_server, server_url

__all__ = ["ResultView", "Viewer", "make_server", "server_url"]
