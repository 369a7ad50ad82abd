"""The annotator's page in headless Chromium, driven with real pointer, wheel and key events (WebDriver
actions through Debian's chromedriver, `webdriver.py`): strokes, polygon, flood fill, wand, undo / redo,
classes by key, zoom and pan, save, reload and resume, autosave, shot states, assist and Done. Every saved
label is compared pixel for pixel with the mask this file paints by the page's documented rules."""

import json
import time

import numpy as np
import pytest
import shots_folder
import webdriver

from gsd import toy
from gsd.annotate import server as server_lib
from gsd.annotate import store as store_lib
from gsd.io import annotation

pytestmark = pytest.mark.skipif(webdriver.missing() is not None, reason=str(webdriver.missing()))

SIZE = 32
TOLERANCE = 24  # the page's default wand tolerance
FAKE = 3  # the class the fake assist predicts everywhere in the middle of a shot


# -- the page's rules, written out: what a stroke, a polygon, a fill and the wand make ----------------------


def line(x0, y0, x1, y1):
    """Bresenham's line, both ends included."""
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    err, points = dx + dy, []
    while True:
        points.append((x0, y0))
        if (x0, y0) == (x1, y1):
            return points
        e2 = 2 * err
        if e2 >= dy:
            err, x0 = err + dy, x0 + sx
        if e2 <= dx:
            err, y0 = err + dx, y0 + sy


def stroke(mask, points, size, value):
    """A round brush of diameter `size` (pixel offsets with 4 (dx^2 + dy^2) <= size^2) along the points."""
    r = size // 2 + 1
    offsets = [(dx, dy) for dx in range(-r, r + 1) for dy in range(-r, r + 1) if 4 * (dx * dx + dy * dy) <= size * size]
    centres = [points[0]] + [p for a, b in zip(points, points[1:]) for p in line(*a, *b)[1:]]
    for cx, cy in centres:
        for dx, dy in offsets:
            if 0 <= cx + dx < mask.shape[1] and 0 <= cy + dy < mask.shape[0]:
                mask[cy + dy, cx + dx] = value


def grow(mask, seed, inside, value):
    """The 4-connected region from seed (x, y) of the pixels `inside(y, x)` accepts, set to value."""
    h, w = mask.shape
    seen, todo = {seed}, [seed]
    while todo:
        x, y = todo.pop()
        mask[y, x] = value
        for q in ((x - 1, y), (x + 1, y), (x, y - 1), (x, y + 1)):
            if 0 <= q[0] < w and 0 <= q[1] < h and q not in seen and inside(q[1], q[0]):
                seen.add(q)
                todo.append(q)


# -- driving the page ---------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def shots(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('annotate')
    images, _ = shots_folder.write(workdir, num=3, size=SIZE)

    def fake_assist(labels, train, targets):
        out = np.zeros((SIZE, SIZE), np.uint8)
        out[8:24, 8:24] = FAKE
        return {i: out for i in targets}

    store = store_lib.ShotStore(workdir / 'shots', toy.CLASSES, toy.PALETTE)
    app = server_lib.Annotator(store, port=0, assist=fake_assist, assist_epochs=7, autosave_seconds=0.3)
    app.start()
    yield app, images
    app.close()


@pytest.fixture(scope='module')
def browser():
    with webdriver.Browser(1280, 900) as b:
        yield b


def open_page(b, app):
    b.get(app.url)
    b.wait_for('return document.body.dataset.ready === "1"')


def geometry(b):
    return b.execute(
        'const a = window.gsdAnnotator; const r = document.getElementById("view").getBoundingClientRect();'
        'return [a.view.zoom, a.view.panX, a.view.panY, r.left, r.top];'
    )


def at(g, x, y):
    """The viewport point over the middle of image pixel (x, y)."""
    zoom, pan_x, pan_y, left, top = g
    return left + pan_x + (x + 0.5) * zoom, top + pan_y + (y + 0.5) * zoom


def text(b, element_id):
    return b.execute(f'return document.getElementById("{element_id}").textContent')


def message(b, kind):
    """The page's message line once it shows a message of `kind` ('ok' or 'error')."""
    return b.wait_for(f'const m = document.getElementById("message"); return m.className === "{kind}" && m.textContent')


def page_ids(b, index):
    return np.array(b.execute(f'return Array.from(window.gsdAnnotator.docs.get({index}).ids)'), np.uint8).reshape(
        SIZE, SIZE
    )


def saved(app, index):
    return annotation.read_mask(
        app.store.root / 'labels' / f'{index:05d}.png', size=SIZE, num_classes=len(toy.CLASSES), colours=toy.PALETTE
    )


def wait_saved(app, index, expected, timeout=10.0):
    deadline = time.time() + timeout
    while not np.array_equal(saved(app, index), expected):
        if time.time() > deadline:
            diff = np.argwhere(saved(app, index) != expected)
            raise AssertionError(f'label {index} on disk differs from the expected mask at {diff[:10].tolist()}')
        time.sleep(0.05)


def test_paint_fill_undo_save_reload_resume(shots, browser):
    app, images = shots
    b = browser
    open_page(b, app)
    assert b.execute('return window.gsdAnnotator.current') == 0
    assert b.execute('return [...document.querySelectorAll("#shots button")].map(x => x.className)') == [
        'empty current',
        'empty',
        'empty',
    ]
    g = geometry(b)
    expected = np.zeros((SIZE, SIZE), np.uint8)

    # Class by key, a smaller brush by key, a stroke with a corner.
    b.keys('2', '[')
    assert text(b, 'size-value') == '3'
    b.drag([at(g, 3, 3), at(g, 20, 3), at(g, 20, 10), at(g, 13, 17)])
    stroke(expected, [(3, 3), (20, 3), (20, 10), (13, 17)], 3, 2)

    # A polygon through four clicked pixels, closed with Enter: inside and outline.
    b.keys('5', 'p')
    for x, y in ((4, 19), (12, 19), (12, 27), (4, 27)):
        b.tap(*at(g, x, y))
    b.keys('\ue007')  # Enter
    expected[19:28, 4:13] = 5

    # Flood fill of the label, undone, redone, undone again.
    b.keys('f', '6')
    b.tap(*at(g, 8, 23))
    np.testing.assert_array_equal(page_ids(b, 0)[19:28, 4:13], 6)
    b.keys('z', modifier=webdriver.CTRL)
    np.testing.assert_array_equal(page_ids(b, 0), expected)
    b.keys('y', modifier=webdriver.CTRL)
    np.testing.assert_array_equal(page_ids(b, 0)[19:28, 4:13], 6)
    b.click('#undo')
    np.testing.assert_array_equal(page_ids(b, 0), expected)

    # The eraser over part of the stroke.
    b.keys('e')
    b.drag([at(g, 2, 3), at(g, 9, 3)])
    stroke(expected, [(2, 3), (9, 3)], 3, 0)

    # The wand on the image: the connected pixels within the tolerance of the clicked one's colour.
    page_rgba = np.array(b.execute('return Array.from(window.gsdAnnotator.docs.get(0).rgba)'), np.uint8)
    np.testing.assert_array_equal(page_rgba.reshape(SIZE, SIZE, 4)[..., :3], images[0])  # no colour management
    b.keys('w', '1')
    b.tap(*at(g, 26, 14))
    image = images[0].astype(int)
    seed = image[14, 26]
    grow(expected, (26, 14), lambda y, x: np.abs(image[y, x] - seed).max() <= TOLERANCE, 1)
    assert 4 < (expected == 1).sum() < SIZE * SIZE // 2  # a region, not a pixel or everything

    np.testing.assert_array_equal(page_ids(b, 0), expected)
    b.keys('s', modifier=webdriver.CTRL)
    wait_saved(app, 0, expected)
    b.wait_for('return document.getElementById("save-state").textContent.startsWith("saved")')
    state = json.loads((app.store.root / store_lib.STATE_FILE).read_text())
    assert state['shots']['00000'] == {'state': 'in_progress', 'by': 'person'}

    # Reload: the page comes back on the shot in progress, with its label.
    b.refresh()
    b.wait_for('return document.body.dataset.ready === "1"')
    assert b.execute('return window.gsdAnnotator.current') == 0
    np.testing.assert_array_equal(page_ids(b, 0), expected)
    assert b.execute('return document.querySelector("#shots button").className') == 'in_progress current'

    # Zoom in with the wheel and pan with the right button: clicks still land on their pixels. Autosave.
    zoom, pan_x, pan_y, left, top = geometry(b)
    b.wheel(left + 300, top + 300, -120)
    g = geometry(b)
    assert g[0] > zoom
    b.drag([(left + 400, top + 300), (left + 370, top + 280)], button=2)
    moved = geometry(b)
    assert (moved[1] - g[1], moved[2] - g[2]) == (-30, -20)
    b.keys('b', '3', ']')  # after the reload the brush is back to its 4 px
    assert text(b, 'size-value') == '5'
    target = [(14, 12), (16, 12)]
    assert all(0 <= v for p in target for v in at(moved, *p))
    b.drag([at(moved, *p) for p in target])
    stroke(expected, target, 5, 3)
    wait_saved(app, 0, expected)  # no Ctrl+S: the page saves on its own

    # Done is refused, on the page, until every shot is done; a shot is marked done with its box.
    b.click('#finish')
    said = message(b, 'error')
    assert said.startswith('not finished: 00000 (in progress), 00001 (empty), 00002 (empty)')
    assert not app.finished.is_set()
    b.click('#shot-done')
    b.wait_for('return document.querySelector("#shots button").className === "done current"')
    assert json.loads((app.store.root / store_lib.STATE_FILE).read_text())['shots']['00000']['state'] == 'done'
    wait_saved(app, 0, expected)


def test_next_shot_assist_and_a_refused_save_on_the_page(shots, browser):
    app, _ = shots
    b = browser
    open_page(b, app)
    assert b.execute('return window.gsdAnnotator.current') == 1  # the first shot not done
    b.keys('\ue00e')  # PageUp
    b.wait_for('return window.gsdAnnotator.current === 0')
    b.click('#next')
    b.wait_for('return window.gsdAnnotator.current === 1')
    assert b.execute('return document.getElementById("shot-done").disabled') is True  # nothing labelled yet

    # Assist: learns from shot 0 (done), pre-fills the empty shots, says how long it took.
    b.click('#assist')
    said = message(b, 'ok')
    assert said.startswith('assist: trained on 00000 in ') and 'pre-filled 00001, 00002' in said
    expected = np.zeros((SIZE, SIZE), np.uint8)
    expected[8:24, 8:24] = FAKE
    np.testing.assert_array_equal(page_ids(b, 1), expected)  # the shot on screen now shows the prediction
    classes = b.execute('return [...document.querySelectorAll("#shots button")].map(x => x.className)')
    assert classes == ['done', 'in_progress current', 'in_progress']

    # The person corrects the prediction: the shot becomes theirs.
    g = geometry(b)
    b.keys('4')
    b.drag([at(g, 10, 10), at(g, 10, 14)])
    stroke(expected, [(10, 10), (10, 14)], 4, 4)
    wait_saved(app, 1, expected)
    assert app.store.shot(1)['by'] == 'person'

    # A save the server refuses (the label file swapped for a link) is shown on the page; nothing written.
    b.keys('\ue00f')
    b.wait_for('return window.gsdAnnotator.current === 2')
    outside = app.store.root.parent / 'outside.png'
    label = app.store.root / 'labels' / '00002.png'
    label.rename(outside)
    label.symlink_to(outside)
    before = outside.read_bytes()
    g = geometry(b)
    b.drag([at(g, 2, 2), at(g, 5, 2)])
    said = message(b, 'error')
    assert 'symbolic link' in said
    assert text(b, 'save-state') == 'not saved'
    assert outside.read_bytes() == before and label.is_symlink()
