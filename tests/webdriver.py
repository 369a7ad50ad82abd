"""A small W3C WebDriver client (urllib only) for headless Chromium through Debian's chromedriver.

The browser tests drive the annotator's page with real pointer, wheel and key events (WebDriver actions);
nothing is downloaded: the browser and its driver are the system's (`apt-get install chromium
chromium-driver`), found at the paths below.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

CHROMIUM = os.environ.get('GSD_CHROMIUM', '/usr/bin/chromium')
CHROMEDRIVER = os.environ.get('GSD_CHROMEDRIVER', '/usr/bin/chromedriver')
CTRL = '\ue009'  # WebDriver's key code for Control


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path, package in ((CHROMIUM, 'chromium'), (CHROMEDRIVER, 'chromium-driver')):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f'{path} not found: apt-get install chromium chromium-driver (Debian package {package})'
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class WebDriverError(RuntimeError):
    pass


class Browser:
    """One headless Chromium session; `with Browser() as b: b.get(url) ...`."""

    def __init__(self, width: int = 1280, height: int = 860):
        self._profile = tempfile.mkdtemp(prefix='gsd_chromium_')
        port = _free_port()
        self._driver = subprocess.Popen(
            [CHROMEDRIVER, f'--port={port}'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._base = f'http://127.0.0.1:{port}'
        deadline = time.time() + 20
        while True:
            try:
                if self._call('GET', '/status')['ready']:
                    break
            except (OSError, WebDriverError):
                pass
            if time.time() > deadline:
                self.quit()
                raise WebDriverError('chromedriver did not start')
            time.sleep(0.05)
        args = [
            '--headless=new',
            '--no-sandbox',  # CI runs as root
            '--disable-gpu',
            '--disable-dev-shm-usage',
            '--no-first-run',
            '--disable-extensions',
            '--force-device-scale-factor=1',
            f'--window-size={width},{height}',
            f'--user-data-dir={self._profile}',
        ]
        caps = {'browserName': 'chrome', 'goog:chromeOptions': {'binary': CHROMIUM, 'args': args}}
        try:
            self._session = self._call('POST', '/session', {'capabilities': {'alwaysMatch': caps}})['sessionId']
        except Exception:
            self.quit()
            raise

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.quit()

    def _call(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self._base + path, data=data, method=method, headers={'Content-Type': 'application/json'}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                payload = json.loads(r.read() or b'{}')
        except urllib.error.HTTPError as e:
            payload = json.loads(e.read() or b'{}')
            value = payload.get('value', {})
            raise WebDriverError(f'{method} {path}: {value.get("error")}: {value.get("message", "")[:500]}') from None
        return payload.get('value')

    def _session_call(self, method: str, path: str, body=None):
        return self._call(method, f'/session/{self._session}{path}', body)

    def quit(self) -> None:
        try:
            if getattr(self, '_session', None):
                self._session_call('DELETE', '')
        except (OSError, WebDriverError):
            pass
        self._session = None
        if self._driver.poll() is None:
            self._driver.terminate()
            try:
                self._driver.wait(10)
            except subprocess.TimeoutExpired:
                self._driver.kill()
        shutil.rmtree(self._profile, ignore_errors=True)

    # -- pages ------------------------------------------------------------------------------------------------

    def get(self, url: str) -> None:
        self._session_call('POST', '/url', {'url': url})

    def refresh(self) -> None:
        self._session_call('POST', '/refresh', {})

    def execute(self, script: str, *args):
        """Run `script` (a function body; `arguments` holds args) in the page and return its value."""
        return self._session_call('POST', '/execute/sync', {'script': script, 'args': list(args)})

    def wait_for(self, script: str, *args, timeout: float = 15.0):
        """Poll `script` until it returns something truthy; return it."""
        deadline = time.time() + timeout
        while True:
            value = self.execute(script, *args)
            if value:
                return value
            if time.time() > deadline:
                raise WebDriverError(f'timed out waiting for: {script}')
            time.sleep(0.05)

    def screenshot(self, path) -> pathlib.Path:
        path = pathlib.Path(path)
        path.write_bytes(base64.b64decode(self._session_call('GET', '/screenshot')))
        return path

    # -- input ------------------------------------------------------------------------------------------------

    def perform(self, *sources) -> None:
        """Perform WebDriver action sources at once, then release every key and button."""
        self._session_call('POST', '/actions', {'actions': list(sources)})
        self._session_call('DELETE', '/actions')

    def click(self, css: str) -> None:
        element = self._session_call('POST', '/element', {'using': 'css selector', 'value': css})
        self._session_call('POST', f'/element/{next(iter(element.values()))}/click', {})

    def drag(self, points, button: int = 0) -> None:
        """Press at the first point (viewport CSS pixels), move through the others, release."""
        (x, y), rest = points[0], points[1:]
        steps = [{'type': 'pointerMove', 'duration': 0, 'x': int(x), 'y': int(y), 'origin': 'viewport'}]
        steps.append({'type': 'pointerDown', 'button': button})
        for x, y in rest:
            steps.append({'type': 'pointerMove', 'duration': 0, 'x': int(x), 'y': int(y), 'origin': 'viewport'})
        steps.append({'type': 'pointerUp', 'button': button})
        self.perform({'type': 'pointer', 'id': 'mouse', 'parameters': {'pointerType': 'mouse'}, 'actions': steps})

    def tap(self, x, y) -> None:
        self.drag([(x, y)])

    def keys(self, *keys: str, modifier: str | None = None) -> None:
        """Press and release each key in turn (holding `modifier`, e.g. CTRL, around all of them)."""
        steps = [{'type': 'keyDown', 'value': modifier}] if modifier else []
        for k in keys:
            steps += [{'type': 'keyDown', 'value': k}, {'type': 'keyUp', 'value': k}]
        if modifier:
            steps.append({'type': 'keyUp', 'value': modifier})
        self.perform({'type': 'key', 'id': 'keyboard', 'actions': steps})

    def wheel(self, x, y, delta_y: int) -> None:
        scroll = {'type': 'scroll', 'x': int(x), 'y': int(y), 'deltaX': 0, 'deltaY': delta_y, 'origin': 'viewport'}
        self.perform({'type': 'wheel', 'id': 'wheel', 'actions': [scroll]})
