"""``wsiseg view``: the class map over its slide, in the browser."""

from __future__ import annotations

from pathlib import Path

import click

from .common import handle_errors, on_interrupt


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 shares the viewer with the network, guarded by a "
                   "token in the URL printed.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--no-browser", is_flag=True, help="Do not open a browser; just print the URL.")
@handle_errors
def view(path: Path, host: str, port: int, no_browser: bool) -> None:
    """Show PATH (a result .zarr, or a folder of them) over its slide in the browser.

    Serves the slide and its class map as zoomable tiles, with a legend of the classes and
    their areas, until Ctrl-C.
    """
    from wsiseg.errors import WsisegError
    from wsiseg.view import make_server, server_url

    try:
        server, viewer = make_server(path, host, port)
    except WsisegError:
        raise
    except OSError as err:  # the address, not the result
        raise click.BadParameter(f"cannot listen on {host}:{port} ({err.strerror}); choose "
                                 "another --port, or 0 for any free one",
                                 param_hint="--port") from err
    url = server_url(server)
    on_interrupt("the viewer has stopped")
    click.echo(f"wsiseg view: {url} (Ctrl-C to stop)")
    if server.token is not None:
        click.echo("wsiseg view: on the network; whoever has this URL (its token) can see the "
                   "slides and maps, so share it only with those who may")
    if not no_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        viewer.close()
