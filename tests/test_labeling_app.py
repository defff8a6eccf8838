"""The labeling app through its HTTP interface: the JSON API, refused requests (documented status,
JSON error, nothing written), labeler tokens in both modes, clip serving, escaping, the import rule,
20 concurrent labelers against a real server, and the ``zoo label`` commands."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from labeling.app import LOCAL_LABELER, create_app
from labeling.server import LabelServer, page_url, requires_token
from rewards.store import LabelStore, NewQuery
from rewards.video import write_mp4
from zoo.cli import main

LOOPBACK = "http://127.0.0.1"
REPO = Path(__file__).resolve().parents[1]


def new_clip() -> str:
    """A clip reference as the training side writes it (the video need not exist for the API)."""
    return f"clips/{uuid.uuid4().hex}.npz"


def write_clip_video(run_dir: Path, color: tuple[int, int, int]) -> str:
    """A real 16x16, 3-frame H.264 video next to its (absent) clip file; returns the clip reference."""
    reference = new_clip()
    frames = [np.full((16, 16, 3), color, dtype=np.uint8) for _ in range(3)]
    write_mp4(frames, run_dir / Path(reference).with_suffix(".mp4"), fps=10)
    return reference


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the store (to prove a refused request wrote nothing)."""
    with sqlite3.connect(path) as conn:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "clips").mkdir()
    return tmp_path


@pytest.fixture
def store(run_dir: Path) -> Iterator[LabelStore]:
    with LabelStore.for_run(run_dir) as label_store:
        yield label_store


def local_client(run_dir: Path, store: LabelStore, **options: Any) -> TestClient:
    return TestClient(create_app(run_dir, store, require_token=False, **options), base_url=LOOPBACK)


def token_client(run_dir: Path, store: LabelStore) -> TestClient:
    return TestClient(create_app(run_dir, store, require_token=True), base_url="http://labels.example")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --------------------------------------------------------------------------------------------------
# The API's happy path


def test_next_answer_undo_progress_stats(run_dir: Path, store: LabelStore) -> None:
    first = store.add_query(new_clip(), new_clip(), strategy="random", metadata={"fps": 15, "env_id": "X"})
    second = store.add_query(new_clip(), new_clip(), strategy="random")
    client = local_client(run_dir, store, budget=700)

    reply = client.get("/api/next")
    assert reply.status_code == 200
    query = reply.json()["query"]
    hex_left = store.get_query(first).left_clip[len("clips/") : -len(".npz")]
    assert query == {
        "id": first,
        "left_video": f"/clips/{hex_left}.mp4",
        "right_video": query["right_video"],
        "fps": 15.0,
        "kind": "normal",
    }
    assert reply.json()["progress"] == {"answered": 0, "pending": 2, "leased": 1, "total": 2, "budget": 700}
    assert client.get("/api/next").json()["query"]["id"] == first  # a reload shows the same query

    reply = client.post("/api/answer", json={"query_id": first, "choice": "left", "seconds": 2.5})
    assert reply.status_code == 200
    assert reply.json()["progress"]["answered"] == 1
    (pair,) = store.answered_since(0)
    assert (pair.answer_id, pair.query_id, pair.choice, pair.labeler) == (
        reply.json()["answer_id"],
        first,
        "left",
        LOCAL_LABELER,
    )

    query = client.get("/api/next").json()["query"]
    assert query["id"] == second and query["fps"] == 30.0  # no fps in the metadata: the default
    assert client.post("/api/answer", json={"query_id": second, "choice": "cant_tell"}).status_code == 200
    assert client.get("/api/next").json()["query"] is None
    assert client.get("/api/progress").json() == {
        "answered": 2,
        "pending": 0,
        "leased": 0,
        "total": 2,
        "budget": 700,
    }

    assert client.post("/api/undo", json={}).json()["query_id"] == second
    assert store.progress().answered == 1
    assert client.get("/api/next").json()["query"]["id"] == second  # the undone query comes back

    stats = client.get("/api/stats").json()
    assert stats["answers"] == 1 and stats["mean_seconds"] == 2.5
    assert stats["per_labeler"] == {
        LOCAL_LABELER: {"answers": 1, "mean_seconds": 2.5, "gold_answered": 0, "gold_correct": 0}
    }


def test_stats_page_shows_labelers_repeats_and_gold(run_dir: Path, store: LabelStore) -> None:
    left, right = new_clip(), new_clip()
    original = store.add_query(left, right, strategy="random")
    repeat = store.add_query(right, left, strategy="repeat", kind="repeat", repeat_of=original)
    gold = store.add_query(new_clip(), new_clip(), strategy="gold", kind="gold", gold_choice="left")
    store.answer(original, "<b>ann</b>", "left", seconds=3.0)
    store.answer(repeat, "<b>ann</b>", "right", seconds=5.0)  # mirrored: agrees
    store.answer(gold, "bob", "right", seconds=1.0)
    page = local_client(run_dir, store).get("/stats")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    assert "&lt;b&gt;ann&lt;/b&gt;" in text and "<b>ann</b>" not in text
    assert "<td>bob</td><td>1</td><td>1.0</td><td>0 of 1 (0%)</td>" in text
    assert "100% of 1 repeat pairs" in text and "0% of 1 gold answers" in text
    assert "<th>all</th><th>3</th><th>3.0</th>" in text


# --------------------------------------------------------------------------------------------------
# Refused requests: the documented status, a one-line JSON error, nothing written


@pytest.fixture
def leased(run_dir: Path, store: LabelStore) -> tuple[TestClient, dict[str, int]]:
    """A local client holding the lease on one query; another query answered, a third leased to bob."""
    ids = store.add_queries([NewQuery(new_clip(), new_clip(), "random") for _ in range(3)])
    store.answer(ids[0], "ann", "left")
    client = local_client(run_dir, store)
    assert client.get("/api/next").json()["query"]["id"] == ids[1]
    assert store.lease_next("bob") is not None
    return client, {"pending": ids[1], "answered": ids[0], "leased": ids[2]}


JSON = "application/json"
BAD_ANSWERS = [
    # (body, content type, status); "Q" in a body is replaced by the pending query's id
    ("{", JSON, 400),
    ("[1, 2]", JSON, 400),
    ('"left"', JSON, 400),
    ("", JSON, 400),
    ('{"query_id": NaN, "choice": "left"}', JSON, 400),
    ('{"choice": "left"}', JSON, 422),
    ('{"query_id": Q}', JSON, 422),
    ('{"query_id": "Q", "choice": "left"}', JSON, 422),
    ('{"query_id": true, "choice": "left"}', JSON, 422),
    ('{"query_id": Q.0, "choice": "left"}', JSON, 422),
    ('{"query_id": null, "choice": "left"}', JSON, 422),
    ('{"query_id": Q, "choice": 1}', JSON, 422),
    ('{"query_id": Q, "choice": "up"}', JSON, 422),
    ('{"query_id": Q, "choice": "LEFT"}', JSON, 422),
    ('{"query_id": Q, "choice": "left", "seconds": "3"}', JSON, 422),
    ('{"query_id": Q, "choice": "left", "seconds": -1}', JSON, 422),
    ('{"query_id": Q, "choice": "left", "seconds": true}', JSON, 422),
    ('{"query_id": Q, "choice": "left", "seconds": 1e999}', JSON, 422),
    ('{"query_id": 999, "choice": "left"}', JSON, 404),
    ('{"query_id": 0, "choice": "left"}', JSON, 404),
    ('{"query_id": 99999999999999999999999, "choice": "left"}', JSON, 404),
    ('{"query_id": Q, "choice": "left"}', "text/plain", 415),
    ('{"query_id": Q, "choice": "left"}', "application/x-www-form-urlencoded", 415),
    ("query_id=Q&choice=left", "multipart/form-data; boundary=x", 415),
    ('{"query_id": Q, "choice": "left"}', None, 415),
    ('{"query_id": Q, "choice": "left", "pad": "' + "x" * 20_000 + '"}', JSON, 413),
]


@pytest.mark.parametrize(("body", "content_type", "status"), BAD_ANSWERS)
def test_bad_answers_are_refused_and_write_nothing(
    leased: tuple[TestClient, dict[str, int]],
    store: LabelStore,
    run_dir: Path,
    body: str,
    content_type: str | None,
    status: int,
) -> None:
    client, ids = leased
    before = (dump(run_dir / "labels.sqlite"), store.progress(), store.stats())
    headers = {} if content_type is None else {"Content-Type": content_type}
    reply = client.post("/api/answer", content=body.replace("Q", str(ids["pending"])), headers=headers)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert isinstance(error, str) and error and "\n" not in error
    assert (dump(run_dir / "labels.sqlite"), store.progress(), store.stats()) == before


@pytest.mark.parametrize(("which", "message"), [("answered", "already answered"), ("leased", "leased")])
def test_conflicting_answers_are_409(
    leased: tuple[TestClient, dict[str, int]], store: LabelStore, run_dir: Path, which: str, message: str
) -> None:
    client, ids = leased
    before = (dump(run_dir / "labels.sqlite"), store.progress(), store.stats())
    reply = client.post("/api/answer", json={"query_id": ids[which], "choice": "right"})
    assert reply.status_code == 409 and message in reply.json()["error"]
    assert (dump(run_dir / "labels.sqlite"), store.progress(), store.stats()) == before


@pytest.mark.parametrize(
    ("body", "content_type", "status"), [("{}", "text/plain", 415), ("{", JSON, 400), ("[]", JSON, 400)]
)
def test_bad_undo_is_refused(
    leased: tuple[TestClient, dict[str, int]], run_dir: Path, body: str, content_type: str, status: int
) -> None:
    client, ids = leased
    client.post("/api/answer", json={"query_id": ids["pending"], "choice": "left"})
    before = dump(run_dir / "labels.sqlite")
    reply = client.post("/api/undo", content=body, headers={"Content-Type": content_type})
    assert reply.status_code == status and reply.json()["error"]
    assert dump(run_dir / "labels.sqlite") == before


def test_wrong_methods_and_paths_are_json_errors(run_dir: Path, store: LabelStore) -> None:
    client = local_client(run_dir, store)
    assert client.get("/api/answer").status_code == 405
    assert client.get("/api/answer").json()["error"]
    assert client.get("/nothing-here").json() == {"error": "not found"}


# --------------------------------------------------------------------------------------------------
# Labeler tokens


PROTECTED = ["/", "/stats", "/static/app.js", "/static/app.css", "/api/next", "/api/progress", "/api/stats"]


def test_require_token_refuses_every_request_without_one(run_dir: Path, store: LabelStore) -> None:
    clip = write_clip_video(run_dir, (200, 0, 0))
    store.add_query(clip, new_clip(), strategy="random")
    client = token_client(run_dir, store)
    for path in [*PROTECTED, "/" + clip.replace(".npz", ".mp4"), "/?token="]:
        reply = client.get(path, follow_redirects=False)
        assert reply.status_code == 401, path
        if path.startswith("/api/"):
            assert reply.json()["error"]
        else:
            assert reply.headers["content-type"].startswith("text/html") and "token" in reply.text
    reply = client.post("/api/answer", json={"query_id": 1, "choice": "left"})
    assert reply.status_code == 401 and reply.json()["error"]
    assert store.progress().leased == 0 and store.progress().answered == 0


@pytest.mark.parametrize("require_token", [True, False])
def test_invalid_tokens_are_401_in_both_modes(run_dir: Path, store: LabelStore, require_token: bool) -> None:
    store.add_labeler("ann")
    base = "http://labels.example" if require_token else LOOPBACK
    client = TestClient(create_app(run_dir, store, require_token=require_token), base_url=base)
    for headers in (bearer("wrong"), {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}):
        assert client.get("/api/next", headers=headers).status_code == 401
    assert client.get("/?token=wrong", follow_redirects=False).status_code == 401
    client.cookies.set("zoo_label_token_80", "stale")
    reply = client.get("/", follow_redirects=False)
    assert reply.status_code == 401
    assert "zoo_label_token_80=" in reply.headers["set-cookie"]  # the stale cookie is cleared
    assert store.progress().leased == 0


def test_token_in_url_becomes_a_cookie(run_dir: Path, store: LabelStore) -> None:
    store.add_query(new_clip(), new_clip(), strategy="random")
    token = store.add_labeler("ann")
    client = token_client(run_dir, store)
    reply = client.get(f"/?token={token}&x=1", follow_redirects=False)
    assert reply.status_code == 303 and reply.headers["location"] == "/?x=1"
    cookie = reply.headers["set-cookie"]
    assert cookie.startswith(f"zoo_label_token_80={token};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    page = client.get("/")  # the client keeps the cookie
    assert page.status_code == 200 and "<b>ann</b>" in page.text
    assert client.get("/api/next").json()["query"] is not None
    assert client.post("/api/answer", json={"query_id": 1, "choice": "equal"}).status_code == 200
    assert store.stats().per_labeler["ann"].answers == 1
    reply = client.get(f"http://labels.example//evil.example/?token={token}", follow_redirects=False)
    assert reply.headers["location"] == "/evil.example/"  # never "//evil.example/": it stays on the site


def test_bearer_tokens_name_labelers_in_both_modes(run_dir: Path, store: LabelStore) -> None:
    store.add_queries([NewQuery(new_clip(), new_clip(), "random") for _ in range(3)])
    ann, bob = store.add_labeler("ann"), store.add_labeler("bob")
    remote = token_client(run_dir, store)
    local = local_client(run_dir, store)
    for client, token in ((remote, ann), (local, bob), (local, None)):
        headers = {} if token is None else bearer(token)
        query_id = client.get("/api/next", headers=headers).json()["query"]["id"]
        reply = client.post("/api/answer", json={"query_id": query_id, "choice": "left"}, headers=headers)
        assert reply.status_code == 200
    assert {name: s.answers for name, s in store.stats().per_labeler.items()} == {
        "ann": 1,
        "bob": 1,
        LOCAL_LABELER: 1,
    }


def test_without_tokens_only_loopback_host_names_are_served(run_dir: Path, store: LabelStore) -> None:
    app = create_app(run_dir, store, require_token=False)
    for base in ("http://localhost:8765", "http://[::1]:8765", "http://127.0.0.1:8765"):
        assert TestClient(app, base_url=base).get("/api/progress").status_code == 200
    rebound = TestClient(app, base_url="http://attacker.example")  # DNS rebinding
    assert rebound.get("/api/next").status_code == 403
    assert rebound.get("/").status_code == 403
    assert store.progress().leased == 0


def test_requires_token_and_urls() -> None:
    assert not requires_token("127.0.0.1") and not requires_token("::1") and not requires_token("localhost")
    assert requires_token("0.0.0.0") and requires_token("192.168.1.5") and requires_token("::")
    assert page_url("127.0.0.1", 8765) == "http://127.0.0.1:8765/"
    assert page_url("::1", 80, "a-b_c") == "http://[::1]:80/?token=a-b_c"


# --------------------------------------------------------------------------------------------------
# Pages, headers, clips


def test_page_escapes_instructions_and_sets_security_headers(run_dir: Path, store: LabelStore) -> None:
    instructions = "Prefer the **hopper** that moves right.\n\n<script>alert('x')</script> [a](javascript:x)"
    page = local_client(run_dir, store, instructions=instructions, title="<i>Hop</i>", budget=7).get("/")
    assert page.status_code == 200
    text = page.text
    assert "<strong>hopper</strong>" in text and "&lt;script&gt;" in text
    assert "<script>alert" not in text and 'href="javascript:' not in text and "<i>Hop</i>" not in text
    assert re.findall(r"<script[^>]*>", text) == ['<script src="/static/app.js" defer>']  # nothing inline
    assert "style=" not in text and 'data-budget="7"' in text and "budget 7" in text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    for control in ('data-choice="left"', 'data-choice="right"', 'data-choice="equal"', 'data-action="undo"'):
        assert control in text
    assert (
        'data-choice="cant_tell"' in text and 'data-speed="0.5"' in text and "muted loop playsinline" in text
    )


def test_static_files_are_served(run_dir: Path, store: LabelStore) -> None:
    client = local_client(run_dir, store)
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "/api/next" in script.text and script.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/app.css").headers["content-type"].startswith("text/css")
    assert client.get("/static/../app.py").status_code == 404


def test_clips_are_served_with_range_support(run_dir: Path, store: LabelStore) -> None:
    reference = write_clip_video(run_dir, (0, 200, 0))
    store.add_query(reference, new_clip(), strategy="random")
    client = local_client(run_dir, store)
    url = client.get("/api/next").json()["query"]["left_video"]
    data = (run_dir / reference).with_suffix(".mp4").read_bytes()
    whole = client.get(url)
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
    assert whole.content == data and whole.headers["accept-ranges"] == "bytes"
    part = client.get(url, headers={"Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == data[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{len(data)}"
    assert client.head(url).status_code == 200


def test_only_clip_videos_are_served(run_dir: Path, store: LabelStore) -> None:
    reference = write_clip_video(run_dir, (0, 0, 200))
    name = Path(reference).stem
    (run_dir / reference).write_bytes(b"clip arrays")  # the .npz next to the video
    (run_dir / "secret.mp4").write_bytes(b"secret")
    client = local_client(run_dir, store)
    assert client.get(f"/clips/{name}.mp4").status_code == 200
    refused = [
        "/clips/..%2Flabels.sqlite",
        "/clips/../labels.sqlite",
        "/clips/%2e%2e%2flabels.sqlite",
        "/clips/..%5Clabels.sqlite",
        "/clips/labels.sqlite",
        f"/clips/{name}.npz",
        f"/clips/{name.upper()}.mp4",
        f"/clips/{name}.mp4.",
        f"/clips/{name}.mp4%00",
        f"/clips/{name[:-1]}.mp4",
        f"/clips/{'0' * 32}.mp4",  # the right shape, but no such file
        "/clips/secret.mp4",
        "/clips/..%2Fsecret.mp4",
        "/labels.sqlite",
        "/clips/",
    ]
    for path in refused:
        reply = client.get(path)
        assert reply.status_code == 404, path
        assert reply.json() == {"error": "not found"}, path


def test_labeling_imports_no_torch() -> None:
    code = "import labeling.app, labeling.server, sys; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    code = "import labeling.server, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in "
    code += "('rewards', 'core', 'agents', 'envs', 'zoo', 'numpy')))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.replace("'", '"')) == ["core", "core.errors", "rewards", "rewards.store"]


# --------------------------------------------------------------------------------------------------
# A real server and 20 labelers at once


def label_until_done(
    base_url: str, token: str, barrier: threading.Barrier, results: list[tuple[int, str]], statuses: list[int]
) -> None:
    """One labeler: next -> answer until no query is left; records each answer that got 200."""
    chooser = random.Random(token)
    with httpx.Client(base_url=base_url, headers=bearer(token), timeout=60) as client:
        barrier.wait()
        while True:
            reply = client.get("/api/next")
            statuses.append(reply.status_code)
            query = reply.json()["query"] if reply.status_code == 200 else None
            if query is None:
                return
            choice = chooser.choice(["left", "right", "equal", "cant_tell"])
            answer = client.post(
                "/api/answer", json={"query_id": query["id"], "choice": choice, "seconds": 0.1}
            )
            statuses.append(answer.status_code)
            if answer.status_code == 200:
                results.append((query["id"], choice))


def test_twenty_labelers_answer_500_queries_exactly_once(run_dir: Path, store: LabelStore) -> None:
    ids = store.add_queries([NewQuery(new_clip(), new_clip(), "random") for _ in range(500)])
    names = [f"labeler-{i:02d}" for i in range(20)]
    tokens = {name: store.add_labeler(name) for name in names}
    results: dict[str, list[tuple[int, str]]] = {name: [] for name in names}
    statuses: dict[str, list[int]] = {name: [] for name in names}
    barrier = threading.Barrier(len(names))
    with LabelServer(run_dir, store, port=0) as server:
        assert server.port > 0 and not server.require_token
        threads = [
            threading.Thread(
                target=label_until_done, args=(server.url(), tokens[n], barrier, results[n], statuses[n])
            )
            for n in names
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads)
    assert all(status < 500 for s in statuses.values() for status in s)
    assert store.progress() == (500, 0, 0, 500)
    with sqlite3.connect(run_dir / "labels.sqlite") as conn:
        live = conn.execute(
            "SELECT query_id, labeler, choice FROM answers WHERE undone_at IS NULL"
        ).fetchall()
    assert sorted(q for q, _, _ in live) == ids  # one live answer per query
    answered = {(q, name, choice) for name, pairs in results.items() for q, choice in pairs}
    assert set(live) == answered and len(answered) == sum(len(pairs) for pairs in results.values())
    assert sum(1 for pairs in results.values() if pairs) > 1  # the work was shared


def test_server_stops_and_reports_a_busy_port(run_dir: Path, store: LabelStore) -> None:
    with LabelServer(run_dir, store, port=0) as server:
        assert httpx.get(server.url() + "api/progress").status_code == 200
        busy = LabelServer(run_dir, store, port=server.port)
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{server.port}"):
            busy.start()
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url() + "api/progress")


# --------------------------------------------------------------------------------------------------
# zoo label serve | add-labeler


def make_run(run_dir: Path, preference: dict[str, Any] | None) -> None:
    config: dict[str, Any] = {"agent": "ppo", "env": "Hopper-v5"}
    if preference is not None:
        config["preference"] = preference
    (run_dir / "config.yaml").write_text(json.dumps(config))  # JSON is YAML


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_add_labeler_prints_a_working_token(capsys: pytest.CaptureFixture[str], run_dir: Path) -> None:
    make_run(run_dir, {"labels": 10, "store": None})
    code, out, _ = run_cli(capsys, "label", "add-labeler", str(run_dir), "ann")
    assert code == 0
    token = re.search(r"token for ann \(shown once\): (\S+)", out)
    assert token is not None and f"http://127.0.0.1:8765/?token={token.group(1)}" in out
    with LabelStore.for_run(run_dir) as store:
        assert store.check_token(token.group(1)) == "ann"
    code, _, err = run_cli(capsys, "label", "add-labeler", str(run_dir), "ann")
    assert code == 2 and "already exists" in err and "--replace" in err
    code, out, _ = run_cli(capsys, "label", "add-labeler", str(run_dir), "ann", "--replace")
    new_token = re.search(r"\(shown once\): (\S+)", out)
    assert code == 0 and new_token is not None
    with LabelStore.for_run(run_dir) as store:
        assert store.check_token(token.group(1)) is None and store.check_token(new_token.group(1)) == "ann"


def test_add_labeler_uses_db_option(capsys: pytest.CaptureFixture[str], run_dir: Path) -> None:
    make_run(run_dir, {"labels": 10})
    other = run_dir / "other.sqlite"
    code, out, _ = run_cli(capsys, "label", "add-labeler", str(run_dir), "ann", "--db", f"sqlite:///{other}")
    token = re.search(r"\(shown once\): (\S+)", out)
    assert code == 0 and token is not None and not (run_dir / "labels.sqlite").exists()
    with LabelStore(other) as store:
        assert store.check_token(token.group(1)) == "ann"


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("missing", [], "no such run folder"),
        ("empty", [], "no config.yaml"),
        ("no-preference", [], "not a preference run"),
        ("run", ["--db", "nosuchdialect://x"], "cannot open label store"),
        ("run", ["--port", "70000"], "--port"),
    ],
)
def test_serve_bad_input_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, setup: str, args: list[str], message: str
) -> None:
    run_dir = tmp_path / "run"
    if setup != "missing":
        run_dir.mkdir()
    if setup in ("run", "no-preference"):
        make_run(run_dir, {"labels": 10} if setup == "run" else None)
    code, out, err = run_cli(capsys, "label", "serve", str(run_dir), *args)
    assert code == 2 and message in err and out == ""
    assert len(err.strip().splitlines()) == 1 or "Usage" in err


def test_serve_refuses_a_busy_port(
    capsys: pytest.CaptureFixture[str], run_dir: Path, store: LabelStore
) -> None:
    make_run(run_dir, {"labels": 10})
    with LabelServer(run_dir, store, port=0) as server:
        code, _, err = run_cli(capsys, "label", "serve", str(run_dir), "--port", str(server.port))
    assert code == 2 and "Address already in use" in err and len(err.strip().splitlines()) == 1


def ignore_sigint() -> None:
    """In the child before exec: SIGINT ignored, as in ``zoo label serve ... &`` from a script."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def serve_in_subprocess(run_dir: Path, *options: str) -> tuple[subprocess.Popen[str], str]:
    """``zoo label serve RUN --port 0 OPTIONS`` in a subprocess and the first line it printed."""
    command = [sys.executable, "-m", "zoo.cli", "label", "serve", str(run_dir), "--port", "0", *options]
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=ignore_sigint,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_prints_the_url_serves_and_stops_on_ctrl_c_or_sigterm(run_dir: Path, signum: int) -> None:
    """Also when started with SIGINT ignored, as a background job of a non-interactive shell is."""
    make_run(run_dir, {"labels": 10, "instructions": "Pick the **faster** one."})
    proc, line = serve_in_subprocess(run_dir, "--host", "0.0.0.0")
    with proc:
        try:
            found = re.search(r"labeling page: http://\S+:(\d+)/\?token=(\S+)", line)
            assert found is not None, line + (proc.stderr.read() if proc.stderr else "")
            port, token = found.groups()
            base = f"http://127.0.0.1:{port}"
            assert httpx.get(f"{base}/").status_code == 401
            page = httpx.get(f"{base}/", headers=bearer(token))
            assert (
                page.status_code == 200
                and "<strong>faster</strong>" in page.text
                and "Hopper-v5" in page.text
            )
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped" in out
    with LabelStore.for_run(run_dir) as store:
        assert store.check_token(token) == LOCAL_LABELER


def test_killing_the_server_loses_no_answer(run_dir: Path) -> None:
    """An answer is committed before its response: SIGKILL right after the 200 keeps every answer."""
    make_run(run_dir, {"labels": 10})
    with LabelStore.for_run(run_dir) as label_store:
        ids = label_store.add_queries([NewQuery(new_clip(), new_clip(), "random") for _ in range(3)])
    proc, line = serve_in_subprocess(run_dir)
    with proc:
        try:
            found = re.search(r"labeling page: (http://127\.0\.0\.1:\d+)/", line)
            assert found is not None, line + (proc.stderr.read() if proc.stderr else "")
            with httpx.Client(base_url=found.group(1), timeout=30) as client:
                for choice in ("left", "right"):
                    query = client.get("/api/next").json()["query"]
                    answer = client.post("/api/answer", json={"query_id": query["id"], "choice": choice})
                    assert answer.status_code == 200, answer.text
            proc.send_signal(signal.SIGKILL)  # no shutdown, no flush
            proc.wait(timeout=30)
        finally:
            proc.kill()
    with LabelStore.for_run(run_dir) as label_store:
        assert label_store.progress() == (2, 1, 0, 3)
        answers = {p.query_id: p.choice for p in label_store.answered_since(0)}
    assert answers == {ids[0]: "left", ids[1]: "right"}
