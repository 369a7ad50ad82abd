"""The annotator's server over HTTP: the token on every request, shots by index only (no path from a request
reaches the file system: `..`, absolute paths, encoded slashes, symbolic links), body limits, labels checked
as the fewshot stage reads them and written whole or not at all, shot states, assist and Done; and the
`annotate` stage itself (its line, its settings, Done / Ctrl-C / SIGTERM, the next stage after it)."""

import functools
import gzip
import http.client
import io
import json
import os
import pathlib
import re
import signal
import threading
import time
import urllib.error
import urllib.request
import zlib

import numpy as np
import pytest
import shots_folder
import test_fewshot_pipeline
from PIL import Image

from gsd import errors, toy
from gsd.annotate import server as server_lib
from gsd.annotate import store as store_lib
from gsd.io import annotation
from gsd.io import images as image_io

SIZE = 32
TOKEN = 'test-token-0123456789'


@pytest.fixture
def workdir(tmp_path):
    shots_folder.write(tmp_path, num=3, size=SIZE)
    return tmp_path


def start(workdir, **kwargs):
    store = store_lib.ShotStore(workdir / 'shots', toy.CLASSES, toy.PALETTE)
    kwargs.setdefault('max_body_bytes', 64 << 10)
    return server_lib.Annotator(store, port=0, token=TOKEN, **kwargs).start()


@pytest.fixture
def app(workdir):
    annotator = start(workdir)
    yield annotator
    annotator.close()


def request(app, method, path, body=None, headers=None, token=True):
    """(status, headers, body) of one raw HTTP request: the path is sent exactly as given."""
    conn = http.client.HTTPConnection('127.0.0.1', app.port, timeout=30)
    headers = dict(headers or {})
    if token:
        headers.setdefault(server_lib.TOKEN_HEADER, TOKEN)
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    out = r.status, dict(r.getheaders()), r.read()
    conn.close()
    return out


def error(body: bytes) -> str:
    return json.loads(body)['error']


def label_bytes(ids) -> bytes:
    return np.ascontiguousarray(ids, np.uint8).tobytes()


def save(app, index, ids, **headers):
    return request(
        app, 'POST', f'/api/shots/{index}/label', label_bytes(ids), {'Content-Type': store_lib.RAW, **headers}
    )


def png(array, mode=None, palette=None) -> bytes:
    img = Image.fromarray(np.asarray(array), mode) if mode else Image.fromarray(np.asarray(array))
    if palette is not None:
        img.putpalette(np.asarray(palette, np.uint8).reshape(-1).tolist())
    buf = io.BytesIO()
    img.save(buf, format='PNG')
    return buf.getvalue()


def read_label(workdir, index):
    return annotation.read_mask(
        workdir / 'shots' / 'labels' / f'{index:05d}.png', size=SIZE, num_classes=7, colours=toy.PALETTE
    )


def painted(seed=0):
    ids = np.zeros((SIZE, SIZE), np.uint8)
    ids[4:12, 6:20] = 2
    ids[20:24, 3:9] = 5 + seed % 2
    return ids


# -- the token ----------------------------------------------------------------------------------------------

PATHS = [
    '/',
    '/app.js',
    '/api/session',
    '/api/shots/0/image',
    '/api/shots/0/label',
    '/api/shots/9/image',
    '/no/such/page',
    '/../../etc/passwd',
    '/api/shots/0/../../shots.json',
]


@pytest.mark.parametrize('method', ['GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'OPTIONS'])
def test_every_request_without_the_token_gets_the_same_403(app, method):
    answers = set()
    for path in PATHS:
        for headers in ({}, {server_lib.TOKEN_HEADER: 'wrong'}, {'Cookie': f'{app.cookie}=wrong'}):
            status, _, body = request(app, method, path, b'x' if method == 'POST' else None, headers, token=False)
            answers.add((status, body))
    wrong_query = request(app, method, '/?token=wrong', token=False)
    answers.add((wrong_query[0], wrong_query[2]))
    expected = b'' if method == 'HEAD' else server_lib.FORBIDDEN
    assert answers == {(403, expected)}


def test_the_token_opens_the_page_and_sets_a_cookie_for_this_port(app):
    status, headers, body = request(app, 'GET', f'/?token={TOKEN}', token=False)
    assert status == 200 and TOKEN.encode() in body
    cookie = headers['Set-Cookie']
    assert cookie.startswith(f'{app.cookie}={TOKEN};') and 'HttpOnly' in cookie and 'SameSite=Strict' in cookie
    assert "default-src 'none'" in headers['Content-Security-Policy']
    assert headers['Referrer-Policy'] == 'no-referrer'
    # The page's own files and API reads work with the cookie alone ...
    for path in ('/app.js', '/app.css', '/api/session', '/api/shots/0/image'):
        assert request(app, 'GET', path, headers={'Cookie': f'{app.cookie}={TOKEN}'}, token=False)[0] == 200, path
    # ... a change does not: another page in the same browser could send the cookie, not the header.
    status, _, body = request(
        app,
        'POST',
        '/api/shots/0/label',
        label_bytes(painted()),
        {'Cookie': f'{app.cookie}={TOKEN}', 'Content-Type': store_lib.RAW},
        token=False,
    )
    assert (status, body) == (403, server_lib.FORBIDDEN)
    assert not read_label(app.store.root.parent, 0).any()


def test_urllib_sees_the_page_only_with_the_token(app):
    url = f'http://127.0.0.1:{app.port}/'
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url, timeout=10)
    assert e.value.code == 403
    with urllib.request.urlopen(app.url, timeout=10) as r:
        assert b'gsd annotate' in r.read()
    assert app.url == f'http://127.0.0.1:{app.port}/?token={TOKEN}'


# -- paths --------------------------------------------------------------------------------------------------

TRAVERSALS = [
    '/api/shots/../shots.json',
    '/api/shots/0/../../latents.npz',
    '/api/shots/%2e%2e/image',
    '/api/shots/0%2Fimage',
    '/api/shots/0%2fimage',
    '/api/shots/00000.png/image',
    '/api/shots/images%2F00000.png/image',
    '/api/shots/-1/image',
    '/api/shots/1e0/image',
    '/api/shots/%30/image',
    '/api/shots/3/image',
    '/api/shots/999999/label',
    '/api/shots/0/image/',
    '/api/shots/0/images',
    '//etc/passwd',
    '/etc/passwd',
    '/app.js/../../server.py',
    '/static/app.js',
    '/server.py',
    '/index.html',
    '/shots.json',
    '/%2e%2e/%2e%2e/etc/passwd',
    'http://127.0.0.1/../etc/passwd',
]


@pytest.mark.parametrize('path', TRAVERSALS)
def test_no_path_from_a_request_reaches_the_file_system(app, path):
    status, headers, body = request(app, 'GET', path)
    assert status == 404, (status, body[:200])
    assert headers['Content-Type'] == 'application/json'
    assert b'root:' not in body and b'ws' not in body and b'\x89PNG' not in body


@pytest.mark.parametrize('path', ['/api/shots/3/label', '/api/shots/%30/label', '/api/shots/0/../1/label'])
def test_no_label_is_written_through_a_bad_path(app, path):
    before = sorted(p.name for p in (app.store.root / 'labels').iterdir())
    status, _, _ = request(app, 'POST', path, label_bytes(painted()), {'Content-Type': store_lib.RAW})
    assert status == 404
    assert sorted(p.name for p in (app.store.root / 'labels').iterdir()) == before


def outside_png(tmp_path_factory) -> pathlib.Path:
    secret = tmp_path_factory.mktemp('outside') / 'secret.png'
    image_io.write_png(secret, np.full((SIZE, SIZE, 3), 7, np.uint8))
    return secret


def test_symlinks_planted_in_the_shots_folder_are_not_followed(app, tmp_path_factory):
    secret = outside_png(tmp_path_factory)
    secret_bytes = secret.read_bytes()
    shots = app.store.root
    (shots / 'images' / '00001.png').unlink()
    (shots / 'images' / '00001.png').symlink_to(secret)
    status, _, body = request(app, 'GET', '/api/shots/1/image')
    assert status == 422 and 'symbolic link' in error(body) and secret_bytes not in body

    (shots / 'labels' / '00002.png').unlink()
    (shots / 'labels' / '00002.png').symlink_to(secret)
    assert request(app, 'GET', '/api/shots/2/label')[0] == 422
    status, _, body = save(app, 2, painted())
    assert status == 422 and 'symbolic link' in error(body)
    assert secret.read_bytes() == secret_bytes and (shots / 'labels' / '00002.png').is_symlink()

    # The whole labels folder swapped for a link to another folder: nothing is written there.
    elsewhere = tmp_path_factory.mktemp('elsewhere')
    (shots / 'labels').rename(shots / 'labels_moved')
    (shots / 'labels').symlink_to(elsewhere, target_is_directory=True)
    status, _, body = save(app, 0, painted())
    assert status == 422 and 'symbolic link' in error(body)
    assert list(elsewhere.iterdir()) == []


def test_a_shots_folder_with_a_linked_image_is_refused_at_start(workdir, tmp_path_factory):
    secret = outside_png(tmp_path_factory)
    (workdir / 'shots' / 'images' / '00000.png').unlink()
    (workdir / 'shots' / 'images' / '00000.png').symlink_to(secret)
    with pytest.raises(errors.GsdError, match=r'00000\.png: is \(or lies under\) a symbolic link'):
        store_lib.ShotStore(workdir / 'shots', toy.CLASSES, toy.PALETTE)


def test_no_shots_is_one_line_naming_the_folder(tmp_path):
    with pytest.raises(errors.MissingInputError, match='no shots here; run the shots stage first'):
        store_lib.ShotStore(tmp_path / 'shots', toy.CLASSES, toy.PALETTE)


# -- reading and saving labels ------------------------------------------------------------------------------


def test_a_saved_label_is_the_palette_png_fewshot_reads(app):
    workdir = app.store.root.parent
    ids = painted()
    status, _, body = save(app, 0, ids)
    assert status == 200, body
    shot = json.loads(body)['shot']
    assert (shot['name'], shot['state'], shot['by']) == ('00000', 'in_progress', 'person')
    path = workdir / 'shots' / 'labels' / '00000.png'
    with Image.open(path) as img:
        assert img.mode == 'P' and img.size == (SIZE, SIZE)
    np.testing.assert_array_equal(read_label(workdir, 0), ids)
    # What the fewshot stage reads: every shot at once, strictly (the other two are still templates).
    with pytest.raises(annotation.AnnotationError) as e:
        annotation.read_shots(workdir / 'shots', toy.CLASSES, shots_folder.PALETTE)
    assert '00000' not in str(e.value) and '00001.png' in str(e.value)
    # And back to the page, compressed or not.
    status, headers, body = request(app, 'GET', '/api/shots/0/label')
    assert status == 200 and body == label_bytes(ids)
    assert (headers['X-Gsd-Width'], headers['X-Gsd-Height']) == (str(SIZE), str(SIZE))
    status, headers, body = request(app, 'GET', '/api/shots/0/label', headers={'Accept-Encoding': 'gzip'})
    assert headers['Content-Encoding'] == 'gzip' and gzip.decompress(body) == label_bytes(ids)
    assert not [p for p in path.parent.iterdir() if p.name.startswith('.')]  # no temporary file left


def test_a_compressed_label_and_a_png_label_are_saved_too(app):
    ids = painted(1)
    status, _, body = request(
        app,
        'POST',
        '/api/shots/1/label',
        zlib.compress(label_bytes(ids)),
        {'Content-Type': store_lib.RAW, 'X-Gsd-Encoding': 'deflate'},
    )
    assert status == 200, body
    np.testing.assert_array_equal(read_label(app.store.root.parent, 1), ids)
    # A colour-coded PNG in the class colours (an editor's export) is stored as the palette PNG.
    ids[0, 0] = 6
    status, _, body = request(
        app, 'POST', '/api/shots/2/label', png(toy.PALETTE[ids].astype(np.uint8)), {'Content-Type': 'image/png'}
    )
    assert status == 200, body
    np.testing.assert_array_equal(read_label(app.store.root.parent, 2), ids)
    with Image.open(app.store.root / 'labels' / '00002.png') as img:
        assert img.mode == 'P'


@functools.cache
def refusals():
    ids = painted()
    wrong_class = ids.copy()
    wrong_class[0, :3] = 7
    colours = toy.PALETTE[ids].astype(np.uint8)
    colours[5, 5] = (1, 2, 3)
    return {
        'not a png': (b'\x89PNG\r\n\x1a\nthis is no png', 'image/png', {}, 'cannot read as an image'),
        'truncated png': (png(toy.PALETTE[ids].astype(np.uint8))[:60], 'image/png', {}, 'cannot read as an image'),
        'png of the wrong size': (
            png(np.zeros((16, 24), np.uint8), 'L'),
            'image/png',
            {},
            'is 24x16 pixels, expected 32x32',
        ),
        'png with a colour no class has': (png(colours), 'image/png', {}, 'no class colour'),
        'jpeg': (b'\xff\xd8\xff\xe0' + b'0' * 100, 'image/png', {}, 'cannot read as an image'),
        'raw of the wrong size': (label_bytes(ids)[:-1], store_lib.RAW, {}, 'the label is 1023 bytes, not 32x32'),
        'raw too long': (label_bytes(ids) + b'\0', store_lib.RAW, {}, 'more than 32x32'),
        'raw id of no class': (label_bytes(wrong_class), store_lib.RAW, {}, '3 pixels hold ids 7 outside the 7'),
        'damaged deflate': (b'not deflate', store_lib.RAW, {'X-Gsd-Encoding': 'deflate'}, 'damaged'),
        'deflate bomb': (
            zlib.compress(bytes(50 << 20), 9),  # 50 MB of zeros in ~50 kB
            store_lib.RAW,
            {'X-Gsd-Encoding': 'deflate'},
            'more than 32x32',
        ),
        'unknown encoding': (label_bytes(ids), store_lib.RAW, {'X-Gsd-Encoding': 'br'}, 'unknown label encoding'),
        'unknown type': (label_bytes(ids), 'text/plain', {}, 'not text/plain'),
    }


@pytest.mark.parametrize('case', list(refusals()))
def test_a_bad_label_is_refused_with_a_message_and_nothing_written(app, case):
    body, content_type, headers, message = refusals()[case]
    path = app.store.root / 'labels' / '00000.png'
    before = path.read_bytes()
    status, _, answer = request(
        app,
        'POST',
        '/api/shots/0/label',
        body,
        {'Content-Type': content_type, **headers},
    )
    assert status == 422, answer
    text = error(answer)
    assert message in text and text.startswith(str(path)), text
    assert path.read_bytes() == before
    assert not (app.store.root / store_lib.STATE_FILE).exists()
    assert sorted(p.name for p in path.parent.iterdir()) == ['00000.png', '00001.png', '00002.png']


def test_bodies_over_the_limit_are_refused_unread(app):
    path = app.store.root / 'labels' / '00000.png'
    before = path.read_bytes()
    status, headers, body = request(
        app,
        'POST',
        '/api/shots/0/label',
        b'\0' * ((64 << 10) + 1),
        {'Content-Type': store_lib.RAW},
    )
    assert status == 413 and 'annotate.max_body_mb' in error(body) and headers['Connection'] == 'close'
    # A length announced but never sent is refused before any of it is read.
    conn = http.client.HTTPConnection('127.0.0.1', app.port, timeout=10)
    conn.putrequest('POST', '/api/shots/0/label')
    conn.putheader(server_lib.TOKEN_HEADER, TOKEN)
    conn.putheader('Content-Length', str(10 << 30))
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()
    # No length at all (chunked) is refused too.
    conn = http.client.HTTPConnection('127.0.0.1', app.port, timeout=10)
    conn.request(
        'POST',
        '/api/shots/0/label',
        body=iter([b'\0' * 16]),
        headers={server_lib.TOKEN_HEADER: TOKEN, 'Transfer-Encoding': 'chunked'},
    )
    assert conn.getresponse().status == 411
    conn.close()
    assert path.read_bytes() == before


# -- states, Done and the assist ----------------------------------------------------------------------------


def test_shot_states_and_done(app):
    def state(index, value):
        return request(app, 'POST', f'/api/shots/{index}/state', json.dumps({'state': value}).encode())

    status, _, body = state(0, 'done')
    assert status == 422 and 'nothing is labelled yet' in error(body)
    assert state(0, 'finished')[0] == 422
    assert request(app, 'POST', '/api/shots/0/state', b'not json')[0] == 400
    assert save(app, 0, painted())[0] == 200
    status, _, body = request(app, 'POST', '/api/done', b'{}')
    assert status == 409
    assert error(body).startswith('not finished: 00000 (in progress), 00001 (empty), 00002 (empty)')
    assert not app.finished.is_set()
    assert json.loads(state(0, 'done')[2])['shot']['state'] == 'done'
    # A done shot stays done when the person corrects it; erased to nothing, it is empty again.
    assert json.loads(save(app, 0, painted(1))[2])['shot']['state'] == 'done'
    assert json.loads(save(app, 1, np.zeros((SIZE, SIZE)))[2])['shot']['state'] == 'empty'
    for i in (1, 2):
        save(app, i, painted(i))
        state(i, 'done')
    session = json.loads(request(app, 'GET', '/api/session')[2])
    assert [s['state'] for s in session['shots']] == ['done'] * 3
    status, _, body = request(app, 'POST', '/api/done', b'{}')
    assert status == 200 and json.loads(body) == {'finished': True}
    assert app.finished.wait(10)  # set just after the answer is sent
    record = json.loads((app.store.root / store_lib.STATE_FILE).read_text())
    assert record['shots']['00002'] == {'state': 'done', 'by': 'person'}


def test_labels_already_on_disk_count_as_done(tmp_path):
    shots_folder.write(tmp_path, num=2, size=SIZE, labelled=(0,))
    app = start(tmp_path)
    try:
        shots = json.loads(request(app, 'GET', '/api/session')[2])['shots']
        assert [(s['state'], s['by']) for s in shots] == [('done', 'file'), ('empty', None)]
    finally:
        app.close()


def test_a_damaged_state_file_is_one_line_naming_it(workdir):
    (workdir / 'shots' / store_lib.STATE_FILE).write_text('{"shots": ')
    with pytest.raises(errors.BadFileError, match=r'annotate_state\.json: damaged .*delete it'):
        store_lib.ShotStore(workdir / 'shots', toy.CLASSES, toy.PALETTE)


def test_an_unreadable_label_is_shown_as_a_problem_and_never_overwritten_by_the_assist(workdir):
    path = workdir / 'shots' / 'labels' / '00001.png'
    path.write_bytes(b'no png')
    calls = []

    def fake(labels, train, targets):
        calls.append((train, targets))
        return {i: np.full((SIZE, SIZE), 2, np.uint8) for i in targets}

    app = start(workdir, assist=fake, assist_epochs=3)
    try:
        shot = json.loads(request(app, 'GET', '/api/session')[2])['shots'][1]
        assert shot['state'] == 'empty' and 'cannot read as an image' in shot['problem']
        assert request(app, 'GET', '/api/shots/1/label')[2] == bytes(SIZE * SIZE)
        save(app, 0, painted())
        result = json.loads(request(app, 'POST', '/api/assist', b'{}')[2])
        assert calls == [([0], [2])] and result['prefilled'] == ['00002']
        assert path.read_bytes() == b'no png'
    finally:
        app.close()


def test_assist_prefills_only_empty_shots_and_learns_only_from_the_persons(workdir):
    calls = []

    def fake(labels, train, targets):
        calls.append((train, targets, labels.copy()))
        return {i: np.full((SIZE, SIZE), 1 + i, np.uint8) for i in targets}

    app = start(workdir, assist=fake, assist_epochs=5)
    try:
        status, _, body = request(app, 'POST', '/api/assist', b'{}')
        assert status == 409 and 'label a shot first' in error(body) and not calls
        save(app, 1, painted())
        status, _, body = request(app, 'POST', '/api/assist', b'{}')
        assert status == 200, body
        result = json.loads(body)
        assert (result['trained_on'], result['prefilled'], result['epochs']) == (['00001'], ['00000', '00002'], 5)
        assert isinstance(result['seconds'], float)
        train, targets, labels = calls[0]
        assert (train, targets) == ([1], [0, 2])
        np.testing.assert_array_equal(labels[1], painted())
        shots = {s['name']: s for s in result['shots']}
        assert (shots['00000']['state'], shots['00000']['by']) == ('in_progress', 'assist')
        np.testing.assert_array_equal(read_label(workdir, 0), np.full((SIZE, SIZE), 1))
        np.testing.assert_array_equal(read_label(workdir, 1), painted())  # the person's: untouched
        # Nothing empty left: refused; the prediction is not learnt from until the person corrects it.
        status, _, body = request(app, 'POST', '/api/assist', b'{}')
        assert status == 409 and 'no empty shot' in error(body)
        save(app, 2, np.zeros((SIZE, SIZE)))  # the person erases a prediction: empty again
        request(app, 'POST', '/api/assist', b'{}')
        assert calls[1][:2] == ([1], [2])
        # A prediction is never written over a shot that a person labelled meanwhile.
        assert not app.store.prefill(1, np.full((SIZE, SIZE), 3, np.uint8))
        np.testing.assert_array_equal(read_label(workdir, 1), painted())
    finally:
        app.close()


def test_assist_errors_reach_the_page_and_done_waits_for_it(workdir):
    started, release = threading.Event(), threading.Event()

    def slow(labels, train, targets):
        started.set()
        release.wait(10)
        raise FloatingPointError('fewshot.lr: the assist head diverged')

    app = start(workdir, assist=slow, assist_epochs=1)
    try:
        save(app, 0, painted())
        answers = []
        thread = threading.Thread(target=lambda: answers.append(request(app, 'POST', '/api/assist', b'{}')))
        thread.start()
        assert started.wait(10)
        assert request(app, 'POST', '/api/assist', b'{}')[0] == 409  # one at a time
        status, _, body = request(app, 'POST', '/api/done', b'{}')
        assert status == 409 and 'assist is still running' in error(body)
        release.set()
        thread.join(10)
        assert answers[0][0] == 422 and 'diverged' in error(answers[0][2])
    finally:
        release.set()
        app.close()


def test_no_assist_without_it(app):
    status, _, body = request(app, 'POST', '/api/assist', b'{}')
    assert status == 409 and 'not available' in error(body)


# -- the stage ----------------------------------------------------------------------------------------------


generator_dir = test_fewshot_pipeline.generator_dir  # the same tiny random generator (a module-scoped fixture)


def stage_config(generator_dir, **annotate):
    from configs import toy_1shot

    c = toy_1shot.get_config('smoke')
    with c.unlocked():
        c.generator.checkpoint = str(generator_dir)
        c.shots.annotator = 'none'
        c.shots.num = 2
        for k, v in annotate.items():
            setattr(c.annotate, k, v)
    return c


def serve_stage(monkeypatch, config, workdir, drive):
    """Run the annotate stage in this (the main) thread while `drive(annotator)` runs in another."""
    from gsd.pipeline import annotate

    made = []
    original = server_lib.Annotator.start

    def recording_start(self):
        made.append(self)
        return original(self)

    monkeypatch.setattr(server_lib.Annotator, 'start', recording_start)
    failures = []

    def driver():
        try:
            deadline = time.time() + 60
            while not made and time.time() < deadline:
                time.sleep(0.02)
            drive(made[0])
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            failures.append(e)

    thread = threading.Thread(target=driver, daemon=True)
    thread.start()
    try:
        return annotate.run(config, workdir)
    finally:
        thread.join(120)
        if failures:
            raise failures[0]


def test_the_stage_serves_until_done_and_the_next_stage_trains_on_its_labels(
    tmp_path, generator_dir, monkeypatch, capsys
):
    from gsd.pipeline import fewshot, shots

    config = stage_config(generator_dir, assist_epochs=20)
    shots.run(config, tmp_path)

    def drive(app):
        url = app.url
        token = re.search(r'token=([\w-]+)', url).group(1)

        def call(method, path, body=None, headers=None):
            conn = http.client.HTTPConnection('127.0.0.1', app.port, timeout=120)
            conn.request(method, path, body=body, headers={server_lib.TOKEN_HEADER: token, **(headers or {})})
            r = conn.getresponse()
            return r.status, r.read()

        ids = np.ones((16, 16), np.uint8)  # mostly one class: a few epochs already predict it
        ids[:2] = 0
        ids[10:14, 5:8] = 2
        assert call('POST', '/api/shots/0/label', ids.tobytes(), {'Content-Type': store_lib.RAW})[0] == 200
        status, body = call('POST', '/api/assist', b'{}')  # the real head, on the real generator's features
        assert status == 200, body
        assert json.loads(body)['prefilled'] == ['00001']
        for i in (0, 1):
            assert call('POST', f'/api/shots/{i}/state', b'{"state": "done"}')[0] == 200
        assert call('POST', '/api/done', b'{}')[0] == 200

    result = serve_stage(monkeypatch, config, tmp_path, drive)
    assert result['by'] == {'00000': 'person', '00001': 'person'}
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith('annotate: open ')]
    assert len(lines) == 1 and re.fullmatch(r'annotate: open http://127\.0\.0\.1:\d+/\?token=[\w-]{20,}', lines[0])
    assert 'annotate: all 2 shots done' in out
    meta = fewshot.run(config, tmp_path)  # the next stage reads what the page saved
    assert meta['shots'] == 2


def test_the_stage_warns_when_the_page_is_reachable_beyond_this_machine(tmp_path, monkeypatch):
    shots_folder.write(tmp_path, num=1, size=SIZE, labelled=(0,))
    config = stage_config('gsd:toy', host='0.0.0.0', assist_epochs=0)

    def drive(app):
        assert app.url.startswith('http://127.0.0.1:')
        conn = http.client.HTTPConnection('127.0.0.1', app.port, timeout=10)
        conn.request('POST', '/api/done', b'{}', {server_lib.TOKEN_HEADER: app.token})
        assert conn.getresponse().status == 200

    with pytest.warns(errors.GsdWarning, match=r'annotate\.host=0\.0\.0\.0: the page is reachable beyond'):
        serve_stage(monkeypatch, config, tmp_path, drive)


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_stop_the_server(tmp_path, monkeypatch, signum):
    from gsd.training import stop

    shots_folder.write(tmp_path, num=1, size=SIZE)
    config = stage_config('gsd:toy', assist_epochs=0)
    previous = signal.getsignal(signal.SIGTERM)
    previous_int = signal.getsignal(signal.SIGINT)
    stop.handle_sigterm()  # as the command line does
    # Python's own Ctrl-C handler: a process started in the background by a shell (a CI job, `cmd &`)
    # inherits SIGINT ignored, and the signal would then never reach the stage.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ports = []

    def drive(app):
        ports.append(app.port)
        os.kill(os.getpid(), signum)

    try:
        with pytest.raises(SystemExit) as e:
            serve_stage(monkeypatch, config, tmp_path, drive)
        assert e.value.code == 128 + signum  # 130 for Ctrl-C, as a shell reports it; 143 for SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    with pytest.raises(OSError):
        http.client.HTTPConnection('127.0.0.1', ports[0], timeout=2).request('GET', '/')


@pytest.mark.parametrize(
    'field, value',
    [
        ('port', -1),
        ('port', 70000),
        ('host', ''),
        ('max_body_mb', 0.0),
        ('max_body_mb', float('nan')),
        ('assist_epochs', -1),
        ('autosave_seconds', 0.0),
    ],
)
def test_annotate_settings_are_checked(field, value):
    from gsd.pipeline import annotate

    config = stage_config('gsd:toy')
    with config.unlocked():
        config.annotate[field] = value
    with pytest.raises(errors.SettingError, match=rf'^annotate\.{field}: must be'):
        annotate.check(config)


def test_a_port_in_use_is_one_line_naming_the_setting(workdir, app):
    store = store_lib.ShotStore(workdir / 'shots', toy.CLASSES, toy.PALETTE)
    with pytest.raises(errors.SettingError, match=rf'^annotate\.port: cannot listen on 127\.0\.0\.1 port {app.port}'):
        server_lib.Annotator(store, port=app.port)
