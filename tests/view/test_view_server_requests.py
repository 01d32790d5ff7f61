"""The viewer's server against hostile requests: foreign Host names, missing tokens, malformed
queries and paths, awkward result names, and connections that hold on or pile up."""

from __future__ import annotations

import contextlib
import html.parser
import http.client
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

import wsiseg.view.server as server_module
from wsiseg.view import make_server, server_url


def ask(port, path, host="default", headers=()):
    """(status, headers, body) of GET ``path`` with the Host header ``host`` (None: none)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", f"127.0.0.1:{port}" if host == "default" else host)
        for key, value in headers:
            conn.putheader(key, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def _port(view_server):
    return int(view_server[0].rsplit(":", 1)[1].strip("/"))


# -- Host names ------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example.com", "evil.example.com:{port}",
                                  "127.0.0.1.evil.example.com:{port}", "localhost:{other}",
                                  "[::1]x", "", "localhost:{port}@evil.example.com"])
def test_requests_naming_another_host_get_403_and_no_data(view_server, host):
    port = _port(view_server)
    host = host.format(port=port, other=port + 1)
    top = view_server[1].single.max_level
    slide = str(view_server[1].single.info.slide.path)
    for path in ("/info.json", f"/slide_files/{top}/0_0.jpeg", "/map.dzi", "/"):
        status, headers, body = ask(port, path, host)
        assert status == 403, (host, path)
        assert headers["Content-Type"].startswith("text/plain")
        assert len(body.splitlines()) == 1 and len(body) < 200
        assert slide.encode() not in body and b"Width" not in body


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "127.0.0.1", "localhost:{port}",
                                  "LocalHost", "[::1]:{port}", "[::1]"])
def test_requests_naming_this_machine_are_answered(view_server, host):
    port = _port(view_server)
    status, _, body = ask(port, "/info.json", host.format(port=port))
    assert status == 200 and json.loads(body)["name"] == "x40"


def test_a_request_without_one_host_header_is_refused(view_server):
    port = _port(view_server)
    assert ask(port, "/info.json", host=None)[0] == 400
    status, _, body = ask(port, "/info.json", headers=[("Host", "evil.example.com")])
    assert status == 400 and b"Width" not in body and b"classes" not in body


# -- the token of a network address ----------------------------------------------------------


def test_a_network_address_wants_its_token_then_a_cookie(view_result, monkeypatch, serving):
    compared = []

    def compare_digest(a, b):
        compared.append((a, b))
        return a == b

    monkeypatch.setattr(server_module.hmac, "compare_digest", compare_digest)
    with serving(view_result, host="0.0.0.0") as (server, viewer):
        port, token = server.port, server.token
        assert token and len(token) >= 32
        assert server_url(server) == f"http://0.0.0.0:{port}/?token={token}"
        lan = f"192.168.1.20:{port}"  # a LAN client names the machine as it knows it
        for path in ("/", "/info.json", f"/slide_files/{viewer.single.max_level}/0_0.jpeg"):
            assert ask(port, path, lan)[0] == 403
            assert ask(port, path + "?token=" + token[:-1] + "x", lan)[0] == 403
            assert ask(port, path, lan, [("Cookie", f"wsiseg-view-{port}={token}x")])[0] == 403
        assert ask(port, "/info.json?token=%FF%FE", lan)[0] == 403
        status, headers, body = ask(port, f"/?token={token}", lan)
        assert status == 200 and b"openseadragon" in body
        cookie = headers["Set-Cookie"]
        assert cookie.startswith(f"wsiseg-view-{port}={token};")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        # The page's later requests carry the cookie, not the token.
        status, _, body = ask(port, "/info.json", lan, [("Cookie", cookie.split(";")[0])])
        assert status == 200 and json.loads(body)["name"] == "x40"
        status, _, _ = ask(port, "/info.json", "evil.example.com",
                           [("Cookie", "a=b; " + cookie.split(";")[0])])
        assert status == 200  # the token, not the name, guards a network address
    assert compared and all(isinstance(a, bytes) for a, _ in compared)


def test_a_loopback_address_has_no_token(view_server):
    url, _ = view_server
    assert "token" not in url
    status, headers, _ = ask(_port(view_server), "/")
    assert status == 200 and "Set-Cookie" not in headers


def test_the_command_prints_the_url_with_its_token_on_a_network(view_result, monkeypatch):
    from click.testing import CliRunner

    from cli.main import main

    monkeypatch.setattr(server_module.ViewServer, "serve_forever", lambda self: None)
    result = CliRunner().invoke(main, ["view", str(view_result), "--no-browser", "--port", "0",
                                       "--host", "0.0.0.0"])
    assert result.exit_code == 0, result.output
    assert "/?token=" in result.output and "whoever has this URL" in result.output
    result = CliRunner().invoke(main, ["view", str(view_result), "--no-browser", "--port", "0"])
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:" in result.output and "token" not in result.output


# -- malformed requests ----------------------------------------------------------------------


@pytest.mark.parametrize("query", ["x=inf&y=1", "x=1e999&y=1", "x=nan&y=1", "x=1&y=-inf",
                                   "y=1", "x=1", "", "x=&y=1", "x=one&y=1"])
def test_a_malformed_class_query_is_400_in_one_line(view_server, query, capfd):
    status, headers, body = ask(_port(view_server), "/class?" + query)
    assert status == 400
    assert headers["Content-Type"].startswith("text/plain")
    assert len(body.decode().strip().splitlines()) == 1
    assert "Traceback" not in capfd.readouterr().err


def test_a_class_query_far_outside_the_map_names_none(view_server):
    status, _, body = ask(_port(view_server), "/class?x=1e300&y=-1e300")
    assert status == 200 and json.loads(body) == {"index": None, "name": None,
                                                "confidence": None, "artefact": None}


@pytest.mark.parametrize("path", [
    "/%ff", "/static/%2e%2e/server.py", "/static/..%2fserver.py", "/static/%2e/view.css",
    "/static//view.css", "/info.json//", "/./info.json", "/info.json/", "*",
    "http://127.0.0.1/info.json", "/slide_files/0/" + "9" * 5000 + "_0.jpeg", "/%00",
    "/static/view.css%00", "/r/x40/info.json",
])
def test_odd_paths_are_404_without_a_traceback(view_server, path, capfd):
    assert ask(_port(view_server), path)[0] == 404
    assert "Traceback" not in capfd.readouterr().err


def test_broken_requests_get_an_answer_without_a_traceback(view_server, capfd):
    port = _port(view_server)
    for request in (b"GARBAGE\r\n\r\n", b"BREW / HTTP/1.1\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                    b"POST /info.json HTTP/1.1\r\nHost: localhost\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost: localhost\r\n" + b"X: y\r\n" * 200 + b"\r\n",
                    b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request)
            answer = sock.recv(300)
        # An error status, or for a request line of HTTP/0.9 (no version), an error page alone.
        assert (answer.split(b" ")[1][:1] in (b"4", b"5") if answer.startswith(b"HTTP/")
                else b"Error response" in answer), (request[:30], answer)
    # The client goes away mid-answer.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # RST
        sock.sendall(b"GET /map_files/12/3_3.png HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert ask(port, "/slide.dzi")[0] == 200
    assert "Traceback" not in capfd.readouterr().err


# -- names in a folder's index ---------------------------------------------------------------

ODD_NAMES = ["a b", "ü", "#1", 'q"q', "a..b", "50%", "x?y", "<i>"]


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        self.links += [value for key, value in attrs if key in ("href", "src")]


def test_the_index_links_results_whatever_their_names(view_result, tmp_path, serving):
    for name in ODD_NAMES:
        shutil.copytree(view_result, tmp_path / f"{name}.wsiseg.zarr")
    with serving(tmp_path) as (server, viewer):
        assert sorted(viewer.results) == sorted(ODD_NAMES)
        status, _, body = ask(server.port, "/")
        assert status == 200
        parser = _Links()
        parser.feed(body.decode())
        pages = [link for link in parser.links if link.startswith("/r/")]
        thumbs = [link for link in parser.links if link.startswith("/thumb/")]
        assert len(pages) == 2 * len(ODD_NAMES) and len(thumbs) == len(ODD_NAMES)
        names = set()
        for link in pages[::2]:
            assert ask(server.port, link)[0] == 200, link
            status, _, info = ask(server.port, link + "info.json")
            assert status == 200, link
            names.add(json.loads(info)["name"])
        assert names == set(ODD_NAMES)
        for link in thumbs:
            status, headers, _ = ask(server.port, link)
            assert (status, headers["Content-Type"]) == (200, "image/png"), link
        for path in ("/r/a..b/../../server.py", "/r/%2e%2e/info.json", "/static/../server.py",
                     "/r/a%2Fb/info.json", "/thumb/..png", "/r/a..b//info.json"):
            assert ask(server.port, path)[0] == 404, path


# -- connections -----------------------------------------------------------------------------


def test_connections_wait_in_a_real_backlog(view_result):
    """Connections made while the server is busy are queued by the kernel, not dropped (a
    backlog of 5 made the sixth wait for a SYN retry, seconds later)."""
    server, viewer = make_server(view_result, port=0)  # not serving: nothing is accepted
    try:
        assert server.request_queue_size >= 128
        socks = [socket.create_connection(("127.0.0.1", server.port), timeout=0.5)
                 for _ in range(100)]
        for sock in socks:
            sock.close()
    finally:
        server.server_close()
        viewer.close()


def _answer(sock):
    """The status of the answer on ``sock``, or None when it closed without one."""
    head = sock.recv(64)
    return int(head.split(b" ")[1]) if head else None


def _request(sock):
    sock.sendall(b"GET /slide.dzi HTTP/1.1\r\nHost: localhost\r\n\r\n")
    response = http.client.HTTPResponse(sock)
    response.begin()
    response.read()
    return response.status


def test_connections_beyond_the_cap_are_turned_away_quickly(view_result, monkeypatch, serving):
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 3)
    with serving(view_result) as (server, _):
        held = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
                for _ in range(3)]
        assert [_request(s) for s in held] == [200] * 3  # each has its thread now
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as extra:
            extra.sendall(b"GET /slide.dzi HTTP/1.1\r\nHost: localhost\r\n\r\n")
            with contextlib.suppress(ConnectionResetError):
                assert _answer(extra) in (503, None)
        assert time.monotonic() - start < 2
        held.pop().close()  # frees its place once its thread sees the end
        deadline = time.monotonic() + 5
        while True:
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                try:
                    if _request(sock) == 200:
                        break
                except (ConnectionResetError, http.client.RemoteDisconnected):
                    pass
            assert time.monotonic() < deadline, "the place of a closed connection stayed taken"
        for sock in held:
            sock.close()


def _closed_within(sock, seconds, drip=None):
    """Whether the server closes ``sock`` within ``seconds``, sending ``drip`` every 0.1 s."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.1)
        if readable:
            try:
                return sock.recv(1024) == b""
            except ConnectionResetError:
                return True
        if drip is not None:
            try:
                sock.sendall(drip)
            except (BrokenPipeError, ConnectionResetError):
                return True
    return False


def test_slow_silent_and_idle_connections_are_closed(view_result, monkeypatch, serving):
    monkeypatch.setattr(server_module, "REQUEST_TIMEOUT", 0.5)
    monkeypatch.setattr(server_module, "KEEPALIVE_TIMEOUT", 0.5)
    with serving(view_result) as (server, _):
        address = ("127.0.0.1", server.port)
        with socket.create_connection(address, timeout=5) as silent:
            assert _closed_within(silent, 3)
        with socket.create_connection(address, timeout=5) as half:
            half.sendall(b"GET /info.json HTTP/1.1\r\nHo")
            assert _closed_within(half, 3)
        with socket.create_connection(address, timeout=5) as slow:  # a byte at a time
            slow.sendall(b"GET /info.json HTTP/1.1\r\n")
            assert _closed_within(slow, 3, drip=b"X")
        with socket.create_connection(address, timeout=5) as idle:
            assert _request(idle) == 200  # kept alive, then idle
            start = time.monotonic()
            assert _closed_within(idle, 3)
            assert time.monotonic() - start >= 0.3
        with socket.create_connection(address, timeout=5) as busy:  # requests keep it open
            for _ in range(3):
                assert _request(busy) == 200


# -- the slide file --------------------------------------------------------------------------


def test_a_slide_that_is_a_fifo_is_refused_at_start(view_result, tmp_path):
    result = shutil.copytree(view_result, tmp_path / "fifo.wsiseg.zarr")
    fifo = tmp_path / "slide.svs"
    os.mkfifo(fifo)
    meta = json.loads((result / "zarr.json").read_text())
    meta["attributes"]["wsiseg"]["slide"]["path"] = str(fifo)
    (result / "zarr.json").write_text(json.dumps(meta))
    command = "import sys; from wsiseg.cli.main import main; sys.argv[0] = 'wsiseg'; main()"
    run = subprocess.run(
        [sys.executable, "-c", command, "view", str(result), "--no-browser", "--port", "0"],
        check=False, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and str(fifo) in lines[0]
    assert "FIFO" in lines[0] or "not a regular file" in lines[0]


def test_the_viewer_opens_only_a_regular_slide_file(view_result, tmp_path, monkeypatch):
    """The viewer opens the slide file again after open_slide: a file swapped for a FIFO
    between the two is refused, not waited on."""
    fifo = tmp_path / "slide.svs"
    os.mkfifo(fifo)
    real = server_module.open_slide

    @contextlib.contextmanager
    def swapped(path):
        with real(path) as slide:
            slide.file = fifo
            yield slide

    monkeypatch.setattr(server_module, "open_slide", swapped)
    errors = []

    def start():
        try:
            server_module.ResultView(view_result).close()
        except server_module.SlideError as err:
            errors.append(str(err))

    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():  # blocked opening the FIFO: give it a writer so that it ends
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("the viewer waited on a FIFO")
    assert len(errors) == 1 and str(fifo) in errors[0] and "not a regular file" in errors[0]
