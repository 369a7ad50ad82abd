"""The annotator's HTTP server: the page in `static/` and a small JSON API over a `ShotStore`.

Standard library only (`http.server.ThreadingHTTPServer`): the annotator runs wherever gsd runs, with
nothing to install, and the page has no build step and fetches nothing from outside.

Every request needs the session's token (`Annotator.token`, random per run): the page is opened as
`/?token=T`, which also sets a cookie for this port, so the page's own images, script and style load; the
page's API calls send the token in the `X-Gsd-Token` header, and a request that changes anything (POST) is
accepted with the header only, so another page in the same browser cannot make one (a cross-site form or
`fetch` cannot set that header without a CORS pre-flight, which this server never answers). A request
without the token gets the same 403 response whatever its path or method, so nothing tells which paths
exist. Tokens are compared with `hmac.compare_digest`.

    GET  /                         the page (index.html with the token), /app.js, /app.css
    GET  /api/session              classes (names, colours), shots (size, state), settings
    GET  /api/shots/<i>/image      the shot's PNG
    GET  /api/shots/<i>/label      its label: one class id (uint8) per pixel, row by row
    POST /api/shots/<i>/label      save a label: the same bytes (X-Gsd-Encoding: deflate when compressed) or
                                   a label PNG; refused (422, nothing written) unless the fewshot stage reads it
    POST /api/shots/<i>/state      {"state": "done" | "in_progress"}
    POST /api/assist               train the head on the labelled shots, pre-fill the empty ones
    POST /api/done                 finish: every shot must be done; `Annotator.finished` is then set

Shots are addressed by index only (checked against the shot list by the store). Request bodies larger than
`max_body_bytes` are refused with 413 before they are read.
"""

from __future__ import annotations

import gzip
import hmac
import http.cookies
import http.server
import json
import pathlib
import re
import secrets
import socket
import socketserver
import sys
import threading
import time
import traceback
from typing import Callable, Optional
from urllib.parse import parse_qs, urlsplit

import numpy as np

from gsd import errors
from gsd.annotate import store as store_lib

TOKEN_HEADER = 'X-Gsd-Token'
STATIC = pathlib.Path(__file__).parent / 'static'
_PAGES = {
    '/': ('index.html', 'text/html; charset=utf-8'),
    '/app.js': ('app.js', 'text/javascript; charset=utf-8'),
    '/app.css': ('app.css', 'text/css; charset=utf-8'),
}
# Matched against the raw path: a percent-encoded slash or dot never reaches a route.
_SHOT = re.compile(r'/api/shots/([0-9]{1,6})/(image|label|state)')
FORBIDDEN = b'403 forbidden: open the address that the annotate stage printed, with its ?token=\n'
_HEADERS = {
    # Nothing but this server's own files, no framing by other pages, the token never sent on as a referrer.
    'Content-Security-Policy': (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    'X-Content-Type-Options': 'nosniff',
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'no-referrer',
    'Cache-Control': 'no-store',
}

# labels (K, H, W) int32, shots to train on, shots to predict -> {shot: (H, W) uint8 ids}
AssistFn = Callable[[np.ndarray, list, list], dict]


class _NotFound(Exception):
    """No such page or shot: answered 404 (only ever to a request that has the token)."""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # a browser's idle keep-alive connection must not hold the stage open

    def server_bind(self):
        # HTTPServer.server_bind asks DNS for the host's full name, which only a log line would use.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class _Server6(_Server):
    address_family = socket.AF_INET6


class Annotator:
    """The annotator's server for one `ShotStore`: `start()`, give the person `url`, wait for `finished`
    (the page's Done, once every shot is done), `close()`.

    assist: trains on labelled shots and predicts others (`AssistFn`), or None for no assist button.
    autosave_seconds: how long the page waits after the last stroke before it saves.
    """

    def __init__(
        self,
        store: store_lib.ShotStore,
        *,
        host: str = '127.0.0.1',
        port: int = 0,
        max_body_bytes: int = 64 << 20,
        token: Optional[str] = None,
        assist: Optional[AssistFn] = None,
        assist_epochs: int = 0,
        autosave_seconds: float = 1.0,
    ):
        self.store = store
        self.token = token or secrets.token_urlsafe(24)
        self.max_body_bytes = int(max_body_bytes)
        self.autosave_seconds = float(autosave_seconds)
        self.assist, self.assist_epochs = assist, int(assist_epochs)
        self.finished = threading.Event()
        self._assist_lock = threading.Lock()
        server = _Server6 if ':' in host else _Server
        try:
            self._httpd = server((host, port), _Handler)
        except OSError as e:
            raise errors.SettingError(
                f'annotate.port: cannot listen on {host} port {port} ({e.strerror or e})'
            ) from None
        self._httpd.annotator = self
        self.host, self.port = host, self._httpd.server_address[1]
        # Cookies do not tell ports apart: one name per port keeps two annotators on one machine apart.
        self.cookie = f'gsd_annotate_{self.port}'
        self._thread = None

    @property
    def url(self) -> str:
        """The address to open: loopback for a server listening on every interface (the person is on this
        machine, or forwards a port to it)."""
        host = self.host
        if host in ('0.0.0.0', ''):
            host = '127.0.0.1'
        elif host == '::':
            host = '::1'
        if ':' in host:
            host = f'[{host}]'
        return f'http://{host}:{self.port}/?token={self.token}'

    def start(self) -> Annotator:
        # A short poll: close() waits up to one interval for the serving loop to notice.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name='gsd-annotate', daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread = None
        self._httpd.server_close()

    def authorised(self, token: str) -> bool:
        return bool(token) and hmac.compare_digest(token.encode('utf-8', 'replace'), self.token.encode())


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'  # keep-alive: the page makes many small requests

    def version_string(self) -> str:
        return 'gsd-annotate'  # not Python's version: nothing for a scanner to match

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # request lines carry the token: keep them out of the terminal and its scrollback

    def do_GET(self):
        self._serve('GET')

    def do_POST(self):
        self._serve('POST')

    def do_HEAD(self):
        self._serve('HEAD')

    def do_PUT(self):
        self._serve('PUT')

    def do_DELETE(self):
        self._serve('DELETE')

    def do_PATCH(self):
        self._serve('PATCH')

    def do_OPTIONS(self):
        self._serve('OPTIONS')

    # -- responses ----------------------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, headers: Optional[dict] = None) -> None:
        self.send_response(status)
        for k, v in {
            **_HEADERS,
            'Content-Type': content_type,
            'Content-Length': str(len(body)),
            **(headers or {}),
        }.items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header('Connection', 'close')
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    def _json(self, status: int, value) -> None:
        self._send(status, json.dumps(value).encode(), 'application/json')

    def _error(self, status: int, message: str) -> None:
        self._json(status, {'error': ' '.join(str(message).split())})

    def _forbidden(self) -> None:
        self.close_connection = True  # an unread body must not be taken for the next request
        self._send(403, FORBIDDEN, 'text/plain; charset=utf-8')

    # -- requests -----------------------------------------------------------------------------------------------

    def _token_sent(self, app: Annotator, method: str, query: str) -> bool:
        if app.authorised(self.headers.get(TOKEN_HEADER, '')):
            return True
        if method != 'GET':
            return False  # a change needs the header: a cookie alone would let other pages post here
        if app.authorised((parse_qs(query).get('token') or [''])[0]):
            return True
        try:
            morsel = http.cookies.SimpleCookie(self.headers.get('Cookie', '')).get(app.cookie)
        except http.cookies.CookieError:
            return False
        return morsel is not None and app.authorised(morsel.value)

    def _body(self, app: Annotator) -> Optional[bytes]:
        """The request's body, or None after answering 411 / 413 (the body left unread, the connection closed)."""
        length = self.headers.get('Content-Length', '')
        if self.headers.get('Transfer-Encoding') or not length.isdigit():
            self.close_connection = True
            self._error(411, 'send the body with a Content-Length')
            return None
        if int(length) > app.max_body_bytes:
            self.close_connection = True
            self._error(
                413,
                f'the request is {int(length) / 2**20:.1f} MB, more than annotate.max_body_mb '
                f'({app.max_body_bytes / 2**20:g} MB)',
            )
            return None
        return self.rfile.read(int(length))

    def _serve(self, method: str) -> None:
        app: Annotator = self.server.annotator
        split = urlsplit(self.path)
        if not self._token_sent(app, method, split.query):
            self._forbidden()
            return
        try:
            if method == 'GET':
                self._get(app, split.path, set_cookie=bool(parse_qs(split.query).get('token')))
            elif method == 'POST' and app.finished.is_set():
                # Done was pressed: the next stages may be reading the labels now.
                self.close_connection = True
                self._error(409, 'the annotator has finished; run the annotate stage again to change labels')
            elif method == 'POST':
                body = self._body(app)
                if body is not None:
                    self._post(app, split.path, body)
            else:
                self._error(405, f'{method} is not used here')
        except _NotFound as e:
            self._error(404, str(e))
        except (errors.GsdError, ValueError, FloatingPointError) as e:  # a refused label or state, a bad setting
            self._error(422, str(e))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page went away (reload, closed tab)
        except Exception as e:  # noqa: BLE001 - a bug: keep the server up, tell the page, print the traceback
            traceback.print_exc(file=sys.stderr)
            self._error(500, f'annotate: internal error ({type(e).__name__}: {e}); see the terminal')

    def _shot(self, app: Annotator, path: str, allowed: tuple) -> tuple[int, str]:
        """(index, what) for /api/shots/<i>/<what> with `what` in `allowed`; _NotFound otherwise."""
        m = _SHOT.fullmatch(path)
        if m is None or m.group(2) not in allowed:
            raise _NotFound('no such page')
        try:
            return app.store.index(m.group(1)), m.group(2)
        except store_lib.LabelRefused as e:
            raise _NotFound(str(e)) from None

    def _get(self, app: Annotator, path: str, set_cookie: bool) -> None:
        if path in _PAGES:
            name, content_type = _PAGES[path]
            body = (STATIC / name).read_bytes()
            headers = {}
            if name == 'index.html':
                # The page reads its token here: its API calls send it as a header.
                body = body.replace(b'{{token}}', app.token.encode())
                if set_cookie:
                    headers['Set-Cookie'] = f'{app.cookie}={app.token}; Path=/; HttpOnly; SameSite=Strict'
            self._send(200, body, content_type, headers)
            return
        if path == '/api/session':
            self._json(200, self._session(app))
            return
        index, what = self._shot(app, path, ('image', 'label'))
        if what == 'image':
            self._send(200, app.store.image_bytes(index), 'image/png')
            return
        ids = np.ascontiguousarray(app.store.label_ids(index)).tobytes()
        h, w = app.store.sizes[index]
        headers = {'X-Gsd-Width': str(w), 'X-Gsd-Height': str(h)}
        if 'gzip' in self.headers.get('Accept-Encoding', ''):
            ids, headers['Content-Encoding'] = gzip.compress(ids, compresslevel=1), 'gzip'
        self._send(200, ids, store_lib.RAW, headers)

    def _session(self, app: Annotator) -> dict:
        s = app.store
        return {
            'classes': [
                {'id': i, 'name': n, 'hex': '#{:02x}{:02x}{:02x}'.format(*map(int, c))}
                for i, (n, c) in enumerate(zip(s.class_names, s.colours))
            ],
            'shots': s.summary(),
            'shots_dir': str(s.root),
            'autosave_ms': int(app.autosave_seconds * 1000),
            'max_body_bytes': app.max_body_bytes,
            'assist': {'available': app.assist is not None, 'epochs': app.assist_epochs},
        }

    def _post(self, app: Annotator, path: str, body: bytes) -> None:
        if path == '/api/assist':
            self._assist(app)
            return
        if path == '/api/done':
            self._done(app)
            return
        index, what = self._shot(app, path, ('label', 'state'))
        if what == 'label':
            content_type = self.headers.get('Content-Type', '').split(';')[0].strip().lower()
            ids = app.store.decode(index, body, content_type, self.headers.get('X-Gsd-Encoding', '').strip().lower())
            self._json(200, {'shot': app.store.save(index, ids)})
            return
        try:
            state = json.loads(body)['state']
        except (ValueError, KeyError, TypeError):
            self._error(400, 'send {"state": "done"} or {"state": "in_progress"}')
            return
        self._json(200, {'shot': app.store.set_state(index, state)})

    def _assist(self, app: Annotator) -> None:
        if app.assist is None:
            self._error(409, 'assist: not available in this run')
            return
        if not app._assist_lock.acquire(blocking=False):
            self._error(409, 'assist: already running')
            return
        try:
            train, labels, targets = app.store.assist_plan()
            names = app.store.names
            if not train:
                self._error(409, 'assist: label a shot first (the assist learns from the labelled shots)')
                return
            if not targets:
                self._error(409, 'assist: no empty shot left to pre-fill')
                return
            t0 = time.perf_counter()
            predictions = app.assist(labels, train, targets)
            seconds = time.perf_counter() - t0
            filled = [i for i in targets if i in predictions and app.store.prefill(i, predictions[i])]
            self._json(
                200,
                {
                    'seconds': round(seconds, 1),
                    'epochs': app.assist_epochs,
                    'trained_on': [names[i] for i in train],
                    'prefilled': [names[i] for i in filled],
                    'shots': app.store.summary(),
                },
            )
        finally:
            app._assist_lock.release()

    def _done(self, app: Annotator) -> None:
        if app._assist_lock.locked():
            self._error(409, 'the assist is still running; wait for it, then press Done again')
            return
        left = app.store.unfinished()
        if left:
            self._error(
                409,
                f'not finished: {", ".join(left)}; label each shot and mark it done (the fewshot stage trains on all '
                f'{len(app.store.names)})',
            )
            return
        self._json(200, {'finished': True})
        self.wfile.flush()
        app.finished.set()
