"""LabelStore: persistence, tokens, leases, answers and their errors, undo, stats, JSONL, concurrency."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import UsageError
from rewards.store import (
    CHOICES,
    SCHEMA_VERSION,
    AlreadyAnsweredError,
    ImportResult,
    InvalidQueryError,
    LabelerExistsError,
    LabelerStats,
    LabelStore,
    LabelStoreError,
    LeaseHeldError,
    NewQuery,
    Progress,
    UnknownChoiceError,
    UnknownQueryError,
    choice_target,
)


class FakeClock:
    """A clock the test moves by hand, so lease expiry needs no sleeping."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, read with plain sqlite3 (to prove a failing call wrote nothing)."""
    with sqlite3.connect(path) as conn:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr) for table in tables
        }


def live_answer_counts(path: Path) -> list[tuple[int, int]]:
    with sqlite3.connect(path) as conn:
        sql = "SELECT query_id, COUNT(*) FROM answers WHERE undone_at IS NULL GROUP BY query_id"
        return conn.execute(sql).fetchall()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "labels.sqlite"


@pytest.fixture
def store(db: Path, clock: FakeClock) -> LabelStore:
    return LabelStore(db, clock=clock)


def add_normal(store: LabelStore, n: int) -> list[int]:
    return store.add_queries([NewQuery(f"clips/{i}a.mp4", f"clips/{i}b.mp4", "random") for i in range(n)])


def test_create_and_reopen_persists(tmp_path: Path, clock: FakeClock) -> None:
    store = LabelStore.for_run(tmp_path, clock=clock)
    qid = store.add_query(
        "a.mp4", "b.mp4", strategy="variance", score=0.25, policy_step=4096, metadata={"env": "Hopper-v5"}
    )
    token = store.add_labeler("ann")
    store.answer(qid, "ann", "left", seconds=3.5)
    store.close()

    reopened = LabelStore(f"sqlite:///{tmp_path / 'labels.sqlite'}", clock=clock)
    query = reopened.get_query(qid)
    assert (query.left_clip, query.right_clip, query.strategy, query.score) == (
        "a.mp4",
        "b.mp4",
        "variance",
        0.25,
    )
    assert (query.policy_step, query.metadata, query.kind, query.status) == (
        4096,
        {"env": "Hopper-v5"},
        "normal",
        "answered",
    )
    assert reopened.check_token(token) == "ann"
    assert [(p.query_id, p.choice, p.target) for p in reopened.answered_since(0)] == [(qid, "left", 1.0)]
    assert reopened.progress() == Progress(answered=1, pending=0, leased=0, total=1)
    assert dump(tmp_path / "labels.sqlite")["store_meta"] == [("schema", str(SCHEMA_VERSION))]


def test_sqlite_is_wal_with_busy_timeout(store: LabelStore, db: Path) -> None:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with store._engine.connect() as conn:  # the pragmas of a connection the store itself opened
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_other_schema_version_is_refused(store: LabelStore, db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE store_meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(UsageError, match="schema version 99"):
        LabelStore(db)


def test_tokens_are_hashed_and_checked(store: LabelStore, db: Path) -> None:
    token = store.add_labeler("ann")
    assert store.check_token(token) == "ann"
    assert store.check_token(token + "x") is None
    assert store.check_token("") is None
    assert token not in repr(dump(db))
    with pytest.raises(LabelerExistsError):
        store.add_labeler("ann")
    new_token = store.add_labeler("ann", replace=True)
    assert store.check_token(new_token) == "ann"
    assert store.check_token(token) is None


def test_choice_targets() -> None:
    assert CHOICES == ("left", "right", "equal", "cant_tell")
    assert [choice_target(c) for c in CHOICES] == [1.0, 0.0, 0.5, None]
    with pytest.raises(UnknownChoiceError):
        choice_target("up")


def test_lease_is_exclusive_and_expires(store: LabelStore, clock: FakeClock) -> None:
    q1, q2, _q3 = add_normal(store, 3)
    ann = store.lease_next("ann", lease_seconds=60)
    bob = store.lease_next("bob", lease_seconds=60)
    carol = store.lease_next("carol", lease_seconds=120)
    assert ann is not None and bob is not None and carol is not None
    assert len({ann.id, bob.id, carol.id}) == 3
    assert store.lease_next("dave") is None  # every pending query is leased to someone
    assert store.progress() == Progress(answered=0, pending=3, leased=3, total=3)

    clock.now += 30
    again = store.lease_next("ann", lease_seconds=60)  # a live lease gives the same query, renewed to 90
    assert again is not None and again.id == ann.id

    clock.now += 45  # bob's lease (until 60) expired; ann's (until 90) and carol's (until 120) are live
    dave = store.lease_next("dave")
    assert dave is not None and dave.id == bob.id == q2
    with pytest.raises(LeaseHeldError):
        store.answer(q2, "bob", "left")
    assert store.lease_next("bob") is None
    assert store.answer(q1, "ann", "right").labeler == "ann"
    assert store.progress() == Progress(answered=1, pending=2, leased=2, total=3)


def test_answer_errors_write_nothing(store: LabelStore, db: Path) -> None:
    q1, q2 = add_normal(store, 2)
    store.answer(q1, "ann", "left")
    leased = store.lease_next("bob")
    assert leased is not None and leased.id == q2
    before = dump(db)
    cases: list[tuple[type[LabelStoreError], Any]] = [
        (UnknownQueryError, lambda: store.answer(999, "ann", "left")),
        (UnknownChoiceError, lambda: store.answer(q2, "bob", "maybe")),
        (AlreadyAnsweredError, lambda: store.answer(q1, "ann", "left")),
        (AlreadyAnsweredError, lambda: store.answer(q1, "bob", "right")),
        (LeaseHeldError, lambda: store.answer(q2, "carol", "left")),
        (InvalidQueryError, lambda: store.add_query("a", "b", strategy="random", kind="weird")),
        (InvalidQueryError, lambda: store.add_query("a", "b", strategy="random", kind="repeat")),
        (
            InvalidQueryError,
            lambda: store.add_query("a", "b", strategy="random", kind="repeat", repeat_of=99),
        ),
        (
            InvalidQueryError,
            lambda: store.add_query("a", "b", strategy="random", kind="gold", gold_choice="up"),
        ),
        (InvalidQueryError, lambda: store.add_query("a", "b", strategy="random", gold_choice="left")),
        (
            InvalidQueryError,
            lambda: store.add_queries([NewQuery("a", "b", "random"), NewQuery("a", "", "random")]),
        ),
    ]
    for error, call in cases:
        with pytest.raises(error) as info:
            call()
        assert isinstance(info.value, ValueError)
        assert "\n" not in str(info.value)
        assert dump(db) == before, error


def test_database_enforces_one_live_answer(store: LabelStore, db: Path) -> None:
    (qid,) = add_normal(store, 1)
    store.answer(qid, "ann", "left")
    with sqlite3.connect(db) as conn, pytest.raises(sqlite3.IntegrityError):
        columns = "query_id, labeler, choice, answered_at, live_query_id"
        conn.execute(f"INSERT INTO answers ({columns}) VALUES (?, 'bob', 'left', 0, ?)", (qid, qid))


def test_undo_last(store: LabelStore) -> None:
    q1, q2, q3 = add_normal(store, 3)
    store.answer(q1, "ann", "left")
    store.answer(q2, "ann", "right")
    leased = store.lease_next("ann")
    assert leased is not None and leased.id == q3
    assert store.undo_last("bob") is None
    assert store.undo_last("ann") == q2
    assert store.get_query(q2).status == "pending"
    again = store.lease_next("ann")  # the undone query comes back first
    assert again is not None and again.id == q2
    with pytest.raises(LeaseHeldError):
        store.answer(q2, "bob", "left")
    store.answer(q2, "ann", "equal")
    assert [(p.query_id, p.choice) for p in store.answered_since(0)] == [(q1, "left"), (q2, "equal")]
    assert store.undo_last("ann") == q2
    assert store.undo_last("ann") == q1
    assert store.undo_last("ann") is None
    assert store.progress() == Progress(answered=0, pending=3, leased=1, total=3)
    assert store.stats().per_labeler == {}


def test_answered_since_is_incremental(store: LabelStore) -> None:
    qids = add_normal(store, 4)
    assert store.answered_since(0) == []
    store.answer(qids[0], "ann", "left")
    store.answer(qids[1], "ann", "cant_tell")
    first = store.answered_since(0)
    assert [(p.query_id, p.target) for p in first] == [(qids[0], 1.0), (qids[1], None)]
    assert store.answered_since(first[-1].answer_id) == []
    store.answer(qids[2], "bob", "equal")
    store.answer(qids[3], "bob", "right")
    new = store.answered_since(first[-1].answer_id)
    assert [(p.query_id, p.target, p.labeler) for p in new] == [(qids[2], 0.5, "bob"), (qids[3], 0.0, "bob")]
    assert new[0].left_clip == "clips/2a.mp4" and new[0].right_clip == "clips/2b.mp4"
    assert store.pending_count() == 0


def test_stats_on_repeat_and_gold_queries(store: LabelStore) -> None:
    n1 = store.add_query("a", "b", strategy="random")
    n2 = store.add_query("c", "d", strategy="random")
    n3 = store.add_query("e", "f", strategy="random")
    r1 = store.add_query("a", "b", strategy="random", kind="repeat", repeat_of=n1)
    r2 = store.add_query("d", "c", strategy="random", kind="repeat", repeat_of=n2)  # mirrored
    r3 = store.add_query("a", "b", strategy="random", kind="repeat", repeat_of=n1)
    r4 = store.add_query("e", "f", strategy="random", kind="repeat", repeat_of=n3)  # original unanswered
    g1 = store.add_query("g", "h", strategy="random", kind="gold", gold_choice="left")
    g2 = store.add_query("i", "j", strategy="random", kind="gold", gold_choice="equal")
    g3 = store.add_query("k", "l", strategy="random", kind="gold", gold_choice="right")
    store.answer(n1, "ann", "left", seconds=2.0)
    store.answer(n2, "ann", "right", seconds=4.0)
    store.answer(g1, "ann", "left", seconds=6.0)  # gold correct
    store.answer(r1, "bob", "left", seconds=1.0)  # agrees with n1
    store.answer(r2, "bob", "left")  # mirrored: left here is right in n2, agrees
    store.answer(r3, "bob", "right")  # disagrees with n1
    store.answer(r4, "bob", "equal")  # not a pair: n3 has no answer
    store.answer(g2, "bob", "equal")  # gold correct
    store.answer(g3, "bob", "left")  # gold wrong
    store.answer(n3, "carol", "left", seconds=100.0)
    assert store.undo_last("carol") == n3  # undone answers count nowhere

    stats = store.stats()
    assert stats.per_labeler == {
        "ann": LabelerStats(answers=3, mean_seconds=4.0, gold_answered=1, gold_correct=1),
        "bob": LabelerStats(answers=6, mean_seconds=1.0, gold_answered=2, gold_correct=1),
    }
    assert stats.mean_seconds == pytest.approx((2 + 4 + 6 + 1) / 4)
    assert stats.repeat_pairs == 3
    assert stats.repeat_agreement == pytest.approx(2 / 3)
    assert stats.gold_answered == 3
    assert stats.gold_accuracy == pytest.approx(2 / 3)


def test_jsonl_round_trip_and_idempotent_import(tmp_path: Path, clock: FakeClock) -> None:
    source = LabelStore(tmp_path / "a.sqlite", clock=clock)
    n1 = source.add_query(
        "a", "b", strategy="variance", score=0.5, policy_step=10, metadata={"steps": [0, 25]}
    )
    r = source.add_query("b", "a", strategy="random", kind="repeat", repeat_of=n1)
    g = source.add_query("c", "d", strategy="random", kind="gold", gold_choice="right")
    n2 = source.add_query("e", "f", strategy="mixed")
    source.answer(n1, "ann", "left", seconds=2.0)
    clock.now += 1
    source.answer(g, "bob", "left")
    assert source.undo_last("bob") == g
    clock.now += 1
    source.answer(g, "bob", "right")
    exported = tmp_path / "a.jsonl"
    assert source.export_jsonl(exported) == 4

    target = LabelStore(tmp_path / "b.sqlite", clock=clock)
    assert target.import_jsonl(exported) == ImportResult(queries=4, answers=3, skipped=0)
    assert target.import_jsonl(exported) == ImportResult(0, 0, 0)
    again = tmp_path / "b.jsonl"
    target.export_jsonl(again)
    assert again.read_text() == exported.read_text()
    assert target.progress() == source.progress() == Progress(answered=2, pending=2, leased=0, total=4)
    assert target.stats() == source.stats()

    # New answers merge in; a conflicting live answer is skipped, not duplicated.
    assert target.get_query(n2).uuid == source.get_query(n2).uuid  # imported in order: same ids
    source.answer(r, "carol", "right")
    source.answer(n2, "carol", "equal")
    target.answer(n2, "dave", "left")
    source.export_jsonl(exported)
    assert target.import_jsonl(exported) == ImportResult(queries=0, answers=1, skipped=1)
    assert live_answer_counts(tmp_path / "b.sqlite") == [(n1, 1), (r, 1), (g, 1), (n2, 1)]
    assert target.get_query(n2).status == "answered" and target.stats().per_labeler["dave"].answers == 1


def test_import_of_a_bad_file_writes_nothing(tmp_path: Path, store: LabelStore, db: Path) -> None:
    add_normal(store, 1)
    source = LabelStore(tmp_path / "other.sqlite")
    add_normal(source, 2)
    good = tmp_path / "good.jsonl"
    source.export_jsonl(good)
    lines = good.read_text().splitlines()
    broken = json.loads(lines[1])
    broken["answers"] = [
        {"labeler": "x", "choice": "up", "answered_at": 0.0, "seconds": None, "undone_at": None}
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n" + json.dumps(broken) + "\n")
    before = dump(db)
    with pytest.raises(InvalidQueryError, match="line 2"):
        store.import_jsonl(bad)
    bad.write_text(lines[0] + "\n{not json\n")
    with pytest.raises(InvalidQueryError, match="line 2"):
        store.import_jsonl(bad)
    assert dump(db) == before


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql://u:secret@127.0.0.1:1/db", ""),  # no driver, or nothing listening on port 1
        ("postgresql+psycopg2://u:secret@127.0.0.1:1/db", ""),
        ("nosuchdialect://u:secret@host/db", ""),
        ("{missing}/labels.sqlite", "unable to open database file"),
        ("sqlite:///{missing}/labels.sqlite", "unable to open database file"),
    ],
)
def test_unopenable_urls_are_one_line_usage_errors(tmp_path: Path, url: str, reason: str) -> None:
    url = url.format(missing=tmp_path / "no" / "such" / "folder")
    with pytest.raises(UsageError) as info:
        LabelStore(url)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert "secret" not in message
    assert message.startswith(f"cannot open label store {url.replace('secret', '***')}: ")
    assert reason in message


def lease_and_answer_until_done(args: tuple[str, str]) -> list[int]:
    """Worker of the concurrency tests: lease and answer until nothing is left; return what it answered."""
    path, labeler = args
    store = LabelStore(path)
    answered = []
    while (query := store.lease_next(labeler)) is not None:
        store.answer(query.id, labeler, CHOICES[query.id % len(CHOICES)])
        answered.append(query.id)
    store.close()
    return answered


def assert_each_answered_once(path: Path, qids: list[int], answered: list[list[int]]) -> None:
    assert sorted(q for part in answered for q in part) == sorted(qids)
    assert live_answer_counts(path) == [(q, 1) for q in sorted(qids)]
    assert dump(path)["leases"] == []
    assert LabelStore(path).progress() == Progress(answered=len(qids), pending=0, leased=0, total=len(qids))


def test_threads_lease_and_answer_each_query_once(store: LabelStore, db: Path) -> None:
    qids = add_normal(store, 200)
    results: list[list[int]] = [[] for _ in range(20)]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            while (query := store.lease_next(f"thread{i}")) is not None:
                store.answer(query.id, f"thread{i}", "left")
                results[i].append(query.id)
        except BaseException as exc:  # surfaced below; a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert_each_answered_once(db, qids, results)


def test_processes_lease_and_answer_each_query_once(store: LabelStore, db: Path) -> None:
    qids = add_normal(store, 200)
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(lease_and_answer_until_done, [(str(db), f"proc{i}") for i in range(4)])
    assert_each_answered_once(db, qids, results)


LABELERS = ("ann", "bob", "carol")
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 3)),
        st.tuples(st.just("lease"), st.sampled_from(LABELERS)),
        st.tuples(st.just("answer"), st.sampled_from(LABELERS), st.integers(1, 8), st.sampled_from(CHOICES)),
        st.tuples(st.just("undo"), st.sampled_from(LABELERS)),
        st.tuples(st.just("tick"), st.sampled_from([1.0, 5.0, 11.0])),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(ops=operations)
def test_random_interleavings_keep_invariants(ops: list[tuple[Any, ...]]) -> None:
    """Against a plain-Python model of the store: same outcomes, and the invariants always hold."""
    clock = FakeClock()
    store = LabelStore("sqlite://", clock=clock)
    answers: dict[int, str] = {}  # query id -> labeler of its live answer
    history: list[tuple[str, int]] = []  # (labeler, query id) of live answers, oldest first
    leases: dict[int, tuple[str, float]] = {}  # query id -> (labeler, expires at)
    n_queries = 0
    for op in ops:
        now = clock.now
        live = {q: who for q, (who, until) in leases.items() if until > now}
        if op[0] == "add":
            n_queries += len(add_normal(store, op[1]))
        elif op[0] == "tick":
            clock.now += op[1]
        elif op[0] == "lease":
            mine = [q for q, who in live.items() if who == op[1]]
            free = [q for q in range(1, n_queries + 1) if q not in answers and q not in live]
            expected = (mine or free or [None])[0]
            leases = {q: v for q, v in leases.items() if v[0] != op[1] and q != expected}
            if expected is not None:
                leases[expected] = (op[1], now + 10.0)
            got = store.lease_next(op[1], lease_seconds=10.0)
            assert (got.id if got else None) == expected
        elif op[0] == "answer":
            _, who, qid, choice = op
            error: type[LabelStoreError] | None = None
            if qid > n_queries:
                error = UnknownQueryError
            elif qid in answers:
                error = AlreadyAnsweredError
            elif live.get(qid, who) != who:
                error = LeaseHeldError
            if error is None:
                assert store.answer(qid, who, choice).query_id == qid
                answers[qid] = who
                history.append((who, qid))
                leases.pop(qid, None)
            else:
                with pytest.raises(error):
                    store.answer(qid, who, choice)
        elif op[0] == "undo":
            mine = [q for who, q in history if who == op[1]]
            assert store.undo_last(op[1]) == (mine[-1] if mine else None)
            if mine:
                history.remove((op[1], mine[-1]))
                del answers[mine[-1]]
                leases = {q: v for q, v in leases.items() if v[0] != op[1] and q != mine[-1]}
                leases[mine[-1]] = (op[1], now + 600.0)
        progress = store.progress()
        assert progress.pending + progress.answered == progress.total == n_queries
        assert progress.answered == len(answers)
        assert progress.leased == sum(until > clock.now for _, until in leases.values())
        pairs = store.answered_since(0)
        assert sorted(p.query_id for p in pairs) == sorted(answers)  # at most one live answer per query
        assert {p.query_id: p.labeler for p in pairs} == answers
