"""The labeling page end to end in Debian's chromium (Playwright): both clips play in sync, a click
and a key press answer, undo brings a query back, and every answer lands in the label store.
The README's screenshot (docs/labeling.png, real Hopper clips) comes from
``scripts/labeling_screenshot.py``, which drives a real ``zoo train pref --labeler human`` run.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from labeling.server import LabelServer
from rewards.store import LabelStore
from rewards.video import write_mp4

CHROMIUM = Path("/usr/bin/chromium")
FPS = 30

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")


def moving_square(
    size: tuple[int, int], color: tuple[int, int, int], speed: float, frames: int = 60
) -> list[np.ndarray]:
    """A colored square sliding over a sky-to-ground gradient, with a ground line."""
    width, height = size
    rows = np.linspace(0.0, 1.0, height)[:, None, None]
    sky, ground = np.array([90, 140, 210]), np.array([235, 225, 200])
    background = np.broadcast_to((1 - rows) * sky + rows * ground, (height, width, 3)).astype(np.uint8)
    background = background.copy()
    floor = int(height * 0.8)
    background[floor : floor + 2] = (60, 60, 60)
    side = height // 5
    result = []
    for t in range(frames):
        frame = background.copy()
        x = int((0.1 + speed * t / frames) * (width - side)) % (width - side)
        y = floor - side - int(abs(np.sin(2 * np.pi * t / frames)) * height * 0.25)
        frame[y : y + side, x : x + side] = color
        result.append(frame)
    return result


def add_video(run_dir: Path, frames: list[np.ndarray]) -> str:
    """Write ``clips/<hex>.mp4`` as the training side does and return the clip reference."""
    name = uuid.uuid4().hex
    write_mp4(frames, run_dir / "clips" / f"{name}.mp4", fps=FPS)
    return f"clips/{name}.npz"


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LabelServer, LabelStore, list[int]]]:
    (tmp_path / "clips").mkdir()
    with LabelStore.for_run(tmp_path) as store:
        size = (192, 144)
        pairs = [
            ((230, 70, 50), 0.6, (40, 170, 80), 0.2),
            ((240, 180, 30), 0.3, (150, 60, 200), 0.8),
        ]
        ids = []
        for left_color, left_speed, right_color, right_speed in pairs:
            left = add_video(tmp_path, moving_square(size, left_color, left_speed))
            right = add_video(tmp_path, moving_square(size, right_color, right_speed))
            metadata = {"fps": FPS, "env_id": "Square-v0"}
            ids.append(store.add_query(left, right, strategy="variance", metadata=metadata))
        instructions = "Which square moves **more like a hopper**? Prefer the one that gets further right."
        server = LabelServer(tmp_path, store, port=0, budget=20, instructions=instructions, title="Square-v0")
        with server:
            yield server, store, ids


def video_state(page: sync_api.Page) -> list[dict[str, float | bool]]:
    return page.evaluate(
        "() => [...document.querySelectorAll('video')].map(v => ({time: v.currentTime, "
        "ready: v.readyState, paused: v.paused, src: v.currentSrc}))"
    )


def test_label_two_queries_and_undo_in_chromium(served: tuple[LabelServer, LabelStore, list[int]]) -> None:
    server, store, (first, second) = served
    args = ["--autoplay-policy=no-user-gesture-required"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # chromium refuses to run as root otherwise (containers)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 820})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(server.url())
            page.wait_for_function(
                "() => [...document.querySelectorAll('video')].every(v => v.readyState >= 2 && !v.paused)"
            )
            before = video_state(page)
            page.wait_for_timeout(700)
            after = video_state(page)
            for old, new in zip(before, after, strict=True):
                assert new["ready"] >= 2 and not new["paused"]
                assert new["time"] != old["time"], "a video does not play"
            assert abs(after[0]["time"] - after[1]["time"]) < 0.2, "the clips are out of sync"

            page.click("[data-speed='2']")
            assert page.evaluate(
                "() => [...document.querySelectorAll('video')].map(v => v.playbackRate)"
            ) == [2, 2]
            page.click("[data-speed='1']")

            page.keyboard.press(".")  # one frame forward: both pause on the same frame
            page.wait_for_function("() => [...document.querySelectorAll('video')].every(v => !v.seeking)")
            stepped = video_state(page)
            assert all(v["paused"] for v in stepped) and stepped[0]["time"] == stepped[1]["time"]
            page.keyboard.press(",")
            page.wait_for_function("() => [...document.querySelectorAll('video')].every(v => !v.seeking)")
            back = video_state(page)[0]["time"]
            assert abs(stepped[0]["time"] - back - 1 / FPS) < 1e-3 or back < 1 / FPS
            page.keyboard.press(" ")
            page.wait_for_function("() => [...document.querySelectorAll('video')].every(v => !v.paused)")

            page.click("[data-choice='left']")
            wait_until(lambda: store.progress().answered == 1)
            page.wait_for_function(
                f"() => document.getElementById('left-video').src.endsWith('{clip(store, second)}')"
            )
            page.wait_for_function("() => document.getElementById('left-video').readyState >= 2")
            page.keyboard.press("ArrowRight")
            wait_until(lambda: store.progress().answered == 2)
            page.wait_for_selector("text=No clips to label right now")
            answers = {(pair.query_id, pair.choice, pair.labeler) for pair in store.answered_since(0)}
            assert answers == {(first, "left", "local"), (second, "right", "local")}
            assert all(s.mean_seconds and s.mean_seconds > 0 for s in store.stats().per_labeler.values())

            page.click("[data-action='undo']")
            wait_until(lambda: store.progress().answered == 1)
            assert store.get_query(second).status == "pending"
            assert [pair.query_id for pair in store.answered_since(0)] == [first]
            page.wait_for_selector("text=Your last answer was undone")
            assert page.evaluate("() => document.getElementById('left-video').src").endswith(
                clip(store, second)
            )
            assert errors == []
        finally:
            browser.close()


def clip(store: LabelStore, query_id: int) -> str:
    """The URL tail of a query's left video."""
    return Path(store.get_query(query_id).left_clip).with_suffix(".mp4").name
