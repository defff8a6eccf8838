"""Durable label store: the only contract between training and the labeling web app.

Training writes queries (pairs of clips) and polls answers; the web app leases queries to named
labelers and records their answers. Any SQLAlchemy URL works (PostgreSQL for teams); a plain path or
``sqlite:///path`` is SQLite in WAL mode, so several processes may read and write the same file.
This module never imports torch.

Schema (version :data:`SCHEMA_VERSION`, kept in ``store_meta``):

* ``queries``: ``id``, ``uuid`` (identity for JSONL export/import), ``created_at``, ``left_clip``,
  ``right_clip`` (clip references such as paths relative to the run folder), ``metadata`` (JSON),
  ``strategy``, ``score``, ``policy_step``, ``kind`` (``normal``; ``repeat`` of ``repeat_of``;
  ``gold`` with a known ``gold_choice``) and ``status`` (``pending`` or ``answered``).
* ``answers``: ``id``, ``query_id``, ``labeler``, ``choice``, ``answered_at``, ``seconds``,
  ``undone_at``; ``live_query_id`` equals ``query_id`` while the answer is live and is NULL once
  undone (a CHECK constraint ties the two). Its UNIQUE constraint makes "a query has at most one live
  answer" a database invariant on every dialect.
* ``labelers``: ``name`` (primary key), ``token_hash`` (sha256; raw tokens are never stored), ``created_at``.
* ``leases``: ``query_id`` (primary key: one labeler per query), ``labeler`` (unique: one lease per
  labeler), ``expires_at``.

Labeler names are free text: answering does not require a registered labeler (synthetic labelers
write straight to the store). Times are seconds since the epoch from the injected ``clock``.

Concurrency: every write is one transaction, committed before the method returns; a call that raises
writes nothing. On SQLite each write transaction is ``BEGIN IMMEDIATE``: it takes the database's single
write lock before it reads, so lease and answer decisions are serialized across threads and processes
(the others wait up to ``busy_timeout``), and a deferred read-then-write transaction can never fail
with a stale snapshot. On other databases the candidate query row is locked with
``SELECT ... FOR UPDATE SKIP LOCKED`` and the unique constraints above are the last line of defence: a
conflicting lease is retried, a conflicting answer raises :class:`AlreadyAnsweredError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from core.errors import UsageError

SCHEMA_VERSION = 1
CHOICES = ("left", "right", "equal", "cant_tell")
KINDS = ("normal", "repeat", "gold")
_TARGETS: dict[str, float | None] = {"left": 1.0, "right": 0.0, "equal": 0.5, "cant_tell": None}
_MIRRORED = {"left": "right", "right": "left", "equal": "equal", "cant_tell": "cant_tell"}
DEFAULT_LEASE_SECONDS = 600.0
BUSY_TIMEOUT_MS = 30_000

_schema = sa.MetaData()
_store_meta = sa.Table(
    "store_meta", _schema, sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.Text)
)
_queries = sa.Table(
    "queries",
    _schema,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("uuid", sa.String(32), nullable=False, unique=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("left_clip", sa.Text, nullable=False),
    sa.Column("right_clip", sa.Text, nullable=False),
    sa.Column("metadata", sa.JSON(none_as_null=True)),
    sa.Column("strategy", sa.String(64), nullable=False),
    sa.Column("score", sa.Double),
    sa.Column("policy_step", sa.BigInteger),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("repeat_of", sa.Integer, sa.ForeignKey("queries.id")),
    sa.Column("gold_choice", sa.String(16)),
    sa.Column("status", sa.String(16), nullable=False, index=True),
)
_answers = sa.Table(
    "answers",
    _schema,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("query_id", sa.Integer, sa.ForeignKey("queries.id"), nullable=False, index=True),
    sa.Column("labeler", sa.String(128), nullable=False, index=True),
    sa.Column("choice", sa.String(16), nullable=False),
    sa.Column("answered_at", sa.Double, nullable=False),
    sa.Column("seconds", sa.Double),
    sa.Column("undone_at", sa.Double),
    sa.Column("live_query_id", sa.Integer, unique=True),
    sa.CheckConstraint(
        "(undone_at IS NULL AND live_query_id = query_id) "
        "OR (undone_at IS NOT NULL AND live_query_id IS NULL)",
        name="ck_answers_live",
    ),
)
_labelers = sa.Table(
    "labelers",
    _schema,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)
_leases = sa.Table(
    "leases",
    _schema,
    sa.Column("query_id", sa.Integer, sa.ForeignKey("queries.id"), primary_key=True),
    sa.Column("labeler", sa.String(128), nullable=False, unique=True),
    sa.Column("expires_at", sa.Double, nullable=False),
)


class LabelStoreError(ValueError):
    """A request the store refuses, with a one-line message (the web app maps these to 4xx)."""


class UnknownQueryError(LabelStoreError):
    """No query has this id."""


class UnknownChoiceError(LabelStoreError):
    """The choice is not one of :data:`CHOICES`."""


class AlreadyAnsweredError(LabelStoreError):
    """The query already has a live answer."""


class LeaseHeldError(LabelStoreError):
    """Another labeler holds a live lease on the query."""


class InvalidQueryError(LabelStoreError):
    """A query to add or import is malformed."""


class LabelerExistsError(LabelStoreError):
    """A labeler with this name is already registered."""


@dataclass(frozen=True, slots=True)
class NewQuery:
    """A query to add; the fields are those of :meth:`LabelStore.add_query`."""

    left_clip: str
    right_clip: str
    strategy: str
    score: float | None = None
    policy_step: int | None = None
    metadata: dict[str, Any] | None = None
    kind: str = "normal"
    repeat_of: int | None = None
    gold_choice: str | None = None


@dataclass(frozen=True, slots=True)
class Query:
    """A stored query; ``status`` is ``pending`` or ``answered``."""

    id: int
    uuid: str
    created_at: float
    left_clip: str
    right_clip: str
    metadata: dict[str, Any] | None
    strategy: str
    score: float | None
    policy_step: int | None
    kind: str
    repeat_of: int | None
    gold_choice: str | None
    status: str


@dataclass(frozen=True, slots=True)
class Answer:
    """A stored answer; ``undone_at`` is None while it is live."""

    id: int
    query_id: int
    labeler: str
    choice: str
    answered_at: float
    seconds: float | None
    undone_at: float | None


@dataclass(frozen=True, slots=True)
class LabeledPair:
    """A live answer with its clips, for training; ``target`` is None for ``cant_tell`` (drop it)."""

    answer_id: int
    query_id: int
    left_clip: str
    right_clip: str
    choice: str
    target: float | None
    labeler: str
    kind: str
    metadata: dict[str, Any] | None


class Progress(NamedTuple):
    """Query counts; ``pending`` includes the ``leased`` ones, so answered + pending == total."""

    answered: int
    pending: int
    leased: int
    total: int


class LabelerStats(NamedTuple):
    """Live answers of one labeler (or all), their mean seconds (None if none timed), gold record."""

    answers: int
    mean_seconds: float | None
    gold_answered: int
    gold_correct: int


class LabelStats(NamedTuple):
    """Statistics over live answers.

    ``repeat_pairs`` counts answered repeat queries whose original is answered too, and
    ``repeat_agreement`` is the fraction of them with the same choice (left and right exchanged when
    the repeat shows the clips mirrored). ``gold_accuracy`` is the fraction of answered gold queries
    whose choice is the gold one.
    """

    per_labeler: dict[str, LabelerStats]
    mean_seconds: float | None
    repeat_pairs: int
    repeat_agreement: float | None
    gold_answered: int
    gold_accuracy: float | None


class ImportResult(NamedTuple):
    """Queries and answers :meth:`LabelStore.import_jsonl` added, and live answers it ``skipped``
    because their query already had another live answer."""

    queries: int
    answers: int
    skipped: int


def choice_target(choice: str) -> float | None:
    """Bradley–Terry target of ``choice``: left 1.0, right 0.0, equal 0.5, cant_tell None (dropped).

    :param choice: one of :data:`CHOICES`.
    """
    _check_choice(choice)
    return _TARGETS[choice]


def _check_choice(choice: str) -> None:
    if choice not in CHOICES:
        raise UnknownChoiceError(f"choice must be one of {', '.join(CHOICES)}; got {choice!r}")


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _labeler_stats(rows: Sequence[Any]) -> LabelerStats:
    gold = [r.choice == r.gold_choice for r in rows if r.kind == "gold"]
    timed = [r.seconds for r in rows if r.seconds is not None]
    return LabelerStats(len(rows), _mean(timed), len(gold), sum(gold))


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _insert(conn: Connection, stmt: sa.Insert) -> int:
    key = conn.execute(stmt).inserted_primary_key
    assert key is not None
    return int(key[0])


def _open_error(shown: str, exc: BaseException, password: str | None) -> UsageError:
    if isinstance(exc, ImportError):
        reason = f"database driver {exc.name or exc} is not installed"
    else:
        lines = [line.strip() for line in str(getattr(exc, "orig", None) or exc).splitlines()]
        reason = next((line for line in lines if line), type(exc).__name__)
    if password:
        reason = reason.replace(password, "***")
    return UsageError(f"cannot open label store {shown}: {reason}")


class LabelStore:
    """Queries, answers, labelers and leases in one SQL database (see the module docstring).

    :param url: a SQLAlchemy URL, or a filesystem path meaning SQLite (its folder must exist).
    :param clock: returns the current time in seconds; inject a fake one in tests.
    :raises UsageError: when the database cannot be opened (one line, password masked).
    """

    def __init__(self, url: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        text, password = os.fspath(url), None
        if "://" not in text:
            sa_url, self.url = sa.URL.create("sqlite", database=text), text
        else:
            self.url = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", text)
            try:
                sa_url = sa.make_url(text)
            except sa.exc.ArgumentError as exc:
                raise _open_error(self.url, exc, None) from None
            password, self.url = sa_url.password, sa_url.render_as_string(hide_password=True)
        try:
            self._engine = sa.create_engine(sa_url)
            if self._engine.dialect.name == "sqlite":
                _setup_sqlite(self._engine)
            self._writer = self._engine.execution_options(label_store_begin="BEGIN IMMEDIATE")
            with self._writer.begin() as conn:
                _schema.create_all(conn)
                version = conn.scalar(sa.select(_store_meta.c.value).where(_store_meta.c.key == "schema"))
                if version is None:
                    conn.execute(sa.insert(_store_meta).values(key="schema", value=str(SCHEMA_VERSION)))
        except (sa.exc.SQLAlchemyError, ImportError, OSError) as exc:
            raise _open_error(self.url, exc, password) from None
        if version is not None and version != str(SCHEMA_VERSION):
            self._engine.dispose()
            raise UsageError(f"label store {self.url} has schema version {version}, not {SCHEMA_VERSION}")

    @classmethod
    def for_run(
        cls, run_dir: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
    ) -> LabelStore:
        """Open ``RUN_DIR/labels.sqlite``.

        :param run_dir: the run folder (it must exist).
        :param clock: see :class:`LabelStore`.
        """
        return cls(Path(run_dir) / "labels.sqlite", clock=clock)

    def close(self) -> None:
        """Close the pooled connections."""
        self._engine.dispose()

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_query(
        self,
        left: str,
        right: str,
        *,
        strategy: str,
        score: float | None = None,
        policy_step: int | None = None,
        metadata: dict[str, Any] | None = None,
        kind: str = "normal",
        repeat_of: int | None = None,
        gold_choice: str | None = None,
    ) -> int:
        """Add one pending query and return its id.

        :param left: reference of the left clip (e.g. a path relative to the run folder).
        :param right: reference of the right clip.
        :param strategy: how the pair was selected (``variance``, ``random``, ``mixed``, ...).
        :param score: the selection score (e.g. the ensemble's variance), if any.
        :param policy_step: the policy checkpoint step the clips come from, if known.
        :param metadata: JSON-serializable extras (clip step ranges, env id).
        :param kind: ``normal``, ``repeat`` (needs ``repeat_of``) or ``gold`` (needs ``gold_choice``).
        :param repeat_of: id of the query this one repeats (the clips may be mirrored).
        :param gold_choice: the known answer of a gold query, one of :data:`CHOICES`.
        :raises InvalidQueryError: for an inconsistent kind, repeat_of or gold_choice.
        """
        new = NewQuery(left, right, strategy, score, policy_step, metadata, kind, repeat_of, gold_choice)
        return self.add_queries([new])[0]

    def add_queries(self, queries: Iterable[NewQuery]) -> list[int]:
        """Add several queries in one transaction (all or none) and return their ids.

        :param queries: the queries to add.
        """
        with self._writer.begin() as conn:
            return [self._insert_query(conn, q, uuid.uuid4().hex, self._clock()) for q in queries]

    def _insert_query(self, conn: Connection, q: NewQuery, query_uuid: str, created_at: float) -> int:
        if q.kind not in KINDS:
            raise InvalidQueryError(f"kind must be one of {', '.join(KINDS)}; got {q.kind!r}")
        if (q.kind == "repeat") != (q.repeat_of is not None):
            raise InvalidQueryError("repeat_of is required for, and only for, kind='repeat'")
        if (q.kind == "gold") != (q.gold_choice is not None):
            raise InvalidQueryError("gold_choice is required for, and only for, kind='gold'")
        if q.gold_choice is not None and q.gold_choice not in CHOICES:
            raise InvalidQueryError(f"gold_choice must be one of {', '.join(CHOICES)}; got {q.gold_choice!r}")
        if q.repeat_of is not None and conn.execute(_query_by_id(q.repeat_of)).first() is None:
            raise InvalidQueryError(f"repeat_of refers to unknown query {q.repeat_of}")
        if not (q.left_clip and q.right_clip and q.strategy):
            raise InvalidQueryError("left, right and strategy must be non-empty")
        values = asdict(q) | {"uuid": query_uuid, "created_at": created_at, "status": "pending"}
        return _insert(conn, sa.insert(_queries).values(**values))

    def get_query(self, query_id: int) -> Query:
        """Return query ``query_id``.

        :param query_id: the query's id.
        :raises UnknownQueryError: if there is none.
        """
        with self._engine.connect() as conn:
            row = conn.execute(_query_by_id(query_id)).first()
        if row is None:
            raise UnknownQueryError(f"unknown query {query_id}")
        return Query(**row._mapping)

    def add_labeler(self, name: str, *, replace: bool = False) -> str:
        """Register ``name`` and return its fresh token (shown once: only its hash is stored).

        :param name: the labeler's unique name.
        :param replace: issue a new token if the labeler exists (the old one stops working).
        :raises LabelerExistsError: if the name is taken and ``replace`` is false.
        """
        if not name:
            raise LabelStoreError("labeler name must be non-empty")
        token = secrets.token_urlsafe(32)
        with self._writer.begin() as conn:
            if not replace and conn.scalar(sa.select(_labelers.c.name).where(_labelers.c.name == name)):
                raise LabelerExistsError(f"labeler {name!r} already exists")
            conn.execute(sa.delete(_labelers).where(_labelers.c.name == name))
            row = {"name": name, "token_hash": _hash_token(token), "created_at": self._clock()}
            conn.execute(sa.insert(_labelers).values(**row))
        return token

    def check_token(self, token: str) -> str | None:
        """Return the name of the labeler whose token this is, or None.

        :param token: a token returned by :meth:`add_labeler`.
        """
        digest = _hash_token(token)
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(_labelers.c.name, _labelers.c.token_hash)).all()
        return next((name for name, stored in rows if secrets.compare_digest(stored, digest)), None)

    def lease_next(self, labeler: str, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> Query | None:
        """Lease the oldest pending query without a live lease to ``labeler``; None if there is none.

        A labeler holding a live lease gets that query back, its lease renewed. Each query is leased to
        one labeler at a time, across threads and processes; expired leases are free to take.

        :param labeler: the labeler's name.
        :param lease_seconds: how long the lease lasts before another labeler may take the query.
        """
        for _attempt in range(5):
            try:
                with self._writer.begin() as conn:
                    return self._lease(conn, labeler, self._clock() + lease_seconds)
            except sa.exc.IntegrityError:  # another session took this query first (not on SQLite)
                continue
        return None

    def _lease(self, conn: Connection, labeler: str, expires_at: float) -> Query | None:
        now, leases = self._clock(), _leases
        own = sa.select(leases.c.query_id).where(leases.c.labeler == labeler, leases.c.expires_at > now)
        row = conn.execute(_query_by_id(own.scalar_subquery())).first()
        if row is None:
            live = sa.select(leases.c.query_id).where(
                leases.c.query_id == _queries.c.id, leases.c.expires_at > now
            )
            pick = sa.select(_queries).where(_queries.c.status == "pending", ~live.exists())
            pick = pick.order_by(_queries.c.id).limit(1).with_for_update(skip_locked=True, of=_queries)
            row = conn.execute(pick).first()
        conn.execute(sa.delete(leases).where(leases.c.labeler == labeler))
        if row is None:
            return None
        conn.execute(sa.delete(leases).where(leases.c.query_id == row.id))  # an expired lease
        conn.execute(sa.insert(leases).values(query_id=row.id, labeler=labeler, expires_at=expires_at))
        return Query(**row._mapping)

    def answer(self, query_id: int, labeler: str, choice: str, seconds: float | None = None) -> Answer:
        """Record ``labeler``'s answer to a query, free its lease, and commit before returning.

        :param query_id: the query's id.
        :param labeler: the labeler's name.
        :param choice: one of :data:`CHOICES`.
        :param seconds: the time the labeler spent, if measured.
        :raises UnknownChoiceError, UnknownQueryError, AlreadyAnsweredError, LeaseHeldError: and then
            nothing is written.
        """
        _check_choice(choice)
        try:
            with self._writer.begin() as conn:
                now = self._clock()
                row = conn.execute(_query_by_id(query_id).with_for_update()).first()
                if row is None:
                    raise UnknownQueryError(f"unknown query {query_id}")
                if row.status != "pending":
                    raise AlreadyAnsweredError(f"query {query_id} is already answered")
                live = (_leases.c.query_id == query_id, _leases.c.expires_at > now)
                holder = conn.scalar(sa.select(_leases.c.labeler).where(*live))
                if holder is not None and holder != labeler:
                    raise LeaseHeldError(f"query {query_id} is leased to another labeler")
                values = {"labeler": labeler, "choice": choice, "answered_at": now, "seconds": seconds}
                insert = sa.insert(_answers).values(query_id=query_id, live_query_id=query_id, **values)
                answer_id = _insert(conn, insert)
                conn.execute(sa.update(_queries).where(_queries.c.id == query_id).values(status="answered"))
                conn.execute(sa.delete(_leases).where(_leases.c.query_id == query_id))
        except sa.exc.IntegrityError:  # a concurrent session answered first (the unique live answer)
            raise AlreadyAnsweredError(f"query {query_id} is already answered") from None
        return Answer(answer_id, query_id, labeler, choice, now, seconds, None)

    def undo_last(self, labeler: str, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> int | None:
        """Take back ``labeler``'s most recent live answer; return its query id (None if it has none).

        The query is pending again and leased to ``labeler`` (replacing its current lease), so its next
        :meth:`lease_next` shows that query again.

        :param labeler: the labeler's name.
        :param lease_seconds: the length of that lease.
        """
        a = _answers
        with self._writer.begin() as conn:
            now = self._clock()
            mine = sa.select(a.c.id, a.c.query_id).where(a.c.labeler == labeler, a.c.undone_at.is_(None))
            last = conn.execute(mine.order_by(a.c.id.desc()).limit(1)).first()
            if last is None:
                return None
            conn.execute(sa.update(a).where(a.c.id == last.id).values(undone_at=now, live_query_id=None))
            conn.execute(sa.update(_queries).where(_queries.c.id == last.query_id).values(status="pending"))
            conn.execute(
                sa.delete(_leases).where(
                    (_leases.c.labeler == labeler) | (_leases.c.query_id == last.query_id)
                )
            )
            lease = {"query_id": last.query_id, "labeler": labeler, "expires_at": now + lease_seconds}
            conn.execute(sa.insert(_leases).values(**lease))
            return int(last.query_id)

    def answered_since(self, last_answer_id: int = 0) -> list[LabeledPair]:
        """Live answers with an id above ``last_answer_id``, oldest first (training polls with this).

        An answer undone after it was read is not retracted here; read again from 0 to resynchronize.

        :param last_answer_id: the largest ``answer_id`` seen so far (0 for all).
        """
        a, q = _answers, _queries
        cols = (a.c.id.label("answer_id"), a.c.query_id, q.c.left_clip, q.c.right_clip, a.c.choice)
        stmt = sa.select(*cols, a.c.labeler, q.c.kind, q.c.metadata).join(q, q.c.id == a.c.query_id)
        stmt = stmt.where(a.c.id > last_answer_id, a.c.undone_at.is_(None)).order_by(a.c.id)
        with self._engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [LabeledPair(**r._mapping, target=_TARGETS[r.choice]) for r in rows]

    def progress(self) -> Progress:
        """Counts of answered, pending (leased or not), leased and all queries."""
        now = self._clock()
        with self._engine.connect() as conn:
            counts = sa.select(_queries.c.status, sa.func.count()).group_by(_queries.c.status)
            by_status: dict[str, int] = {status: n for status, n in conn.execute(counts)}
            leased = sa.select(sa.func.count()).select_from(_leases).where(_leases.c.expires_at > now)
            n_leased = int(conn.scalar(leased) or 0)
        answered, pending = by_status.get("answered", 0), by_status.get("pending", 0)
        return Progress(answered, pending, n_leased, answered + pending)

    def pending_count(self) -> int:
        """Number of queries waiting for an answer, leased or not."""
        return self.progress().pending

    def stats(self) -> LabelStats:
        """Per-labeler and overall counts and timing, agreement on repeats, accuracy on gold queries."""
        a, q = _answers, _queries
        cols = (q.c.id, q.c.left_clip, q.c.right_clip, q.c.kind, q.c.repeat_of, q.c.gold_choice)
        stmt = sa.select(a.c.labeler, a.c.choice, a.c.seconds, *cols).join(q, q.c.id == a.c.query_id)
        with self._engine.connect() as conn:
            rows = conn.execute(stmt.where(a.c.undone_at.is_(None))).all()
        by_query = {r.id: r for r in rows}
        by_labeler: dict[str, list[Any]] = {}
        agree: list[float] = []
        for r in rows:
            by_labeler.setdefault(r.labeler, []).append(r)
            if r.kind == "repeat" and (orig := by_query.get(r.repeat_of)) is not None:
                clips = (r.left_clip, r.right_clip)
                mirrored = orig.left_clip != orig.right_clip and clips == (orig.right_clip, orig.left_clip)
                agree.append(float((_MIRRORED[r.choice] if mirrored else r.choice) == orig.choice))
        overall = _labeler_stats(rows)
        return LabelStats(
            per_labeler={name: _labeler_stats(group) for name, group in by_labeler.items()},
            mean_seconds=overall.mean_seconds,
            repeat_pairs=len(agree),
            repeat_agreement=_mean(agree),
            gold_answered=overall.gold_answered,
            gold_accuracy=overall.gold_correct / overall.gold_answered if overall.gold_answered else None,
        )

    def export_jsonl(self, path: str | os.PathLike[str]) -> int:
        """Write each query with all its answers (undone ones too) as a JSON line; return the count.

        :param path: the file to write (replaced).
        """
        with self._engine.connect() as conn:
            queries = [Query(**r._mapping) for r in conn.execute(sa.select(_queries).order_by(_queries.c.id))]
            answers: dict[int, list[dict[str, Any]]] = {}
            for r in conn.execute(sa.select(_answers).order_by(_answers.c.id)):
                answers.setdefault(r.query_id, []).append({k: r._mapping[k] for k in _ANSWER_KEYS})
        uuids = {query.id: query.uuid for query in queries}
        with open(path, "w", encoding="utf-8") as f:
            for query in queries:
                record = {f.name: getattr(query, f.name) for f in fields(NewQuery)}
                record |= {"uuid": query.uuid, "created_at": query.created_at}
                record |= {
                    "repeat_of": uuids.get(query.repeat_of or -1),
                    "answers": answers.get(query.id, []),
                }
                f.write(json.dumps(record) + "\n")
        return len(queries)

    def import_jsonl(self, path: str | os.PathLike[str]) -> ImportResult:
        """Merge a file written by :meth:`export_jsonl` in one transaction; importing twice adds nothing.

        Queries are identified by ``uuid`` and answers by (query, labeler, answered_at). A live answer
        to a query that already has another live answer is skipped and counted.

        :param path: the JSONL file.
        :raises InvalidQueryError: for a malformed line (then nothing is imported).
        """
        added = [0, 0, 0]
        with open(path, encoding="utf-8") as f, self._writer.begin() as conn:
            for line_no, line in enumerate(f, 1):
                try:
                    if line.strip():
                        self._import_record(conn, json.loads(line), added)
                except (KeyError, TypeError, ValueError) as exc:
                    raise InvalidQueryError(
                        f"{os.fspath(path)} line {line_no}: {type(exc).__name__}: {exc}"
                    ) from None
        return ImportResult(*added)

    def _import_record(self, conn: Connection, rec: dict[str, Any], added: list[int]) -> None:
        a, q = _answers, _queries
        query_id = conn.scalar(sa.select(q.c.id).where(q.c.uuid == rec["uuid"]))
        if query_id is None:
            repeat_of = rec["repeat_of"] and conn.scalar(
                sa.select(q.c.id).where(q.c.uuid == rec["repeat_of"])
            )
            if rec["repeat_of"] and repeat_of is None:
                raise InvalidQueryError(f"repeat_of refers to unknown query uuid {rec['repeat_of']}")
            new = NewQuery(**{f.name: rec[f.name] for f in fields(NewQuery)} | {"repeat_of": repeat_of})
            query_id = self._insert_query(conn, new, rec["uuid"], rec["created_at"])
            added[0] += 1
        for answer in rec["answers"]:
            values = {k: answer[k] for k in _ANSWER_KEYS}
            _check_choice(values["choice"])
            same = (
                a.c.query_id == query_id,
                a.c.labeler == values["labeler"],
                a.c.answered_at == values["answered_at"],
            )
            if conn.scalar(sa.select(a.c.id).where(*same)) is not None:
                continue
            live = values["undone_at"] is None
            if live and conn.scalar(sa.select(a.c.id).where(a.c.live_query_id == query_id)) is not None:
                added[2] += 1
                continue
            conn.execute(
                sa.insert(a).values(query_id=query_id, live_query_id=query_id if live else None, **values)
            )
            if live:
                conn.execute(sa.update(q).where(q.c.id == query_id).values(status="answered"))
                conn.execute(sa.delete(_leases).where(_leases.c.query_id == query_id))
            added[1] += 1


_ANSWER_KEYS = ("labeler", "choice", "answered_at", "seconds", "undone_at")


def _query_by_id(query_id: Any) -> sa.Select[Any]:
    return sa.select(_queries).where(_queries.c.id == query_id)


def _setup_sqlite(engine: Engine) -> None:
    """Set the pragmas on every connection and emit our own BEGIN (SQLAlchemy's pysqlite recipe)."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # stop pysqlite's implicit BEGIN; _on_begin emits it
        cursor = dbapi_conn.cursor()
        for pragma in (f"busy_timeout={BUSY_TIMEOUT_MS}", "journal_mode=WAL", "synchronous=NORMAL"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("label_store_begin", "BEGIN"))
