"""The labeling web app: people answer a run's preference queries in the browser.

The app only serves a run's clip videos (``RUN/clips/<hex>.mp4``, drawn by the training side) and
records answers in the label store; it imports nothing of the project but :mod:`rewards.store`.

Routes:

* ``GET /``: the labeling page (both clips side by side, synchronized looping playback, answer
  buttons and keyboard shortcuts; the behavior is ``static/app.js``). ``GET /stats``: answers per
  labeler, seconds per answer, repeat agreement and gold accuracy.
* ``GET /api/next``: leases the next query to the labeler, ``{"query": {"id", "left_video",
  "right_video", "fps", "kind"} | null, "progress": {...}}``; a labeler who asks again (reloads)
  gets the same query back.
* ``POST /api/answer`` ``{"query_id": int, "choice": str, "seconds": number | null}``:
  ``{"answer_id", "progress"}``, committed before the response is sent.
  ``POST /api/undo`` ``{}``: takes back the labeler's last answer, ``{"query_id": int | null,
  "progress"}``; the query is leased to them again, so ``/api/next`` shows it.
* ``GET /api/progress``, ``GET /api/stats``: the store's counts and statistics as JSON.
* ``GET /clips/<32 lowercase hex>.mp4``: a clip video (HTTP Range requests for seeking). Any other
  name is 404; paths are never built from unchecked input.

Refused requests get ``{"error": "one line"}`` (a short HTML page outside ``/api`` for 401 and
403) and write nothing: 400 malformed JSON or a body that is not a JSON object; 401 no valid token;
403 a non-loopback ``Host`` while the app runs without tokens (DNS rebinding); 404 unknown query or
path; 409 query already answered, or leased to another labeler; 413 body over 16 KiB; 415 a POST
whose Content-Type is not ``application/json`` (so a cross-site HTML form cannot post answers);
422 a missing or wrongly typed field (``query_id`` must be an integer, and a bool is not one;
``seconds`` a finite number >= 0 or null) or an unknown choice. Unknown fields are ignored.

Labelers: a request names its labeler with ``Authorization: Bearer TOKEN``, or with a cookie that
a ``GET`` with ``?token=TOKEN`` sets (HttpOnly, SameSite=Strict; the response redirects to the same
URL without the token). An invalid token is always 401. With ``require_token`` (a server bound
beyond loopback) every request, static files and clips included, needs a valid token; without it a
request with no token is the labeler ``local``.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from labeling import pages
from rewards.store import (
    AlreadyAnsweredError,
    LabelStats,
    LabelStore,
    LabelStoreError,
    LeaseHeldError,
    Progress,
    Query,
    UnknownChoiceError,
    UnknownQueryError,
)

LOCAL_LABELER = "local"
STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_FPS = 30.0
MAX_BODY_BYTES = 16_384
_MAX_QUERY_ID = 2**63 - 1  # larger ids cannot exist in a SQL BIGINT column
_CLIP_NAME = re.compile(r"([0-9a-f]{32})\.mp4")
_CLIP_REFERENCE = re.compile(r"clips/([0-9a-f]{32})\.(?:npz|mp4)")
_COOKIE = "zoo_label_token"
_COOKIE_MAX_AGE = 30 * 24 * 3600
_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": _CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
_STORE_ERROR_STATUS: dict[type[LabelStoreError], int] = {
    UnknownQueryError: 404,
    AlreadyAnsweredError: 409,
    LeaseHeldError: 409,
    UnknownChoiceError: 422,
}

T = TypeVar("T")


class ApiError(Exception):
    """A refused API request: its status code and one-line message become the JSON error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class LabelingContext:
    """What the routes need, kept in ``app.state.labeling``; the fields are :func:`create_app`'s."""

    clips_dir: Path
    store: LabelStore
    require_token: bool
    budget: int | None
    instructions: str
    lease_seconds: float
    title: str


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a name or an IP literal, IPv6 with or without brackets) is this machine only.

    :param host: ``localhost``, ``127.0.0.1``, ``::1``, ``[::1]``, or anything else (False).
    """
    if not host:
        return False
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def create_app(
    run_dir: Path,
    store: LabelStore,
    *,
    require_token: bool,
    budget: int | None = None,
    instructions: str = "",
    lease_seconds: float = 600,
    title: str = "",
) -> FastAPI:
    """The labeling app of one run (see the module docstring for its routes and rules).

    :param run_dir: the run folder; clips are served from ``run_dir/clips`` only.
    :param store: the label store the queries come from and the answers go to.
    :param require_token: every request needs a valid labeler token (set it when the server is bound
        beyond loopback); otherwise a request without one is the labeler ``local``.
    :param budget: the run's label budget, shown with the progress (None: not shown).
    :param instructions: the task instructions as markdown (raw HTML in it is escaped).
    :param lease_seconds: how long a query shown to one labeler is kept from the others.
    :param title: the page's heading (empty: a default question).
    """
    app = FastAPI(title=title or pages.DEFAULT_TITLE, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.labeling = LabelingContext(
        Path(run_dir) / "clips", store, require_token, budget, instructions, lease_seconds, title
    )
    app.include_router(_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_exception_handler(ApiError, _api_error_response)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error_response)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error_response)  # type: ignore[arg-type]
    app.middleware("http")(_guard)
    return app


# --------------------------------------------------------------------------------------------------
# Authentication and response headers


def _context(request: Request) -> LabelingContext:
    context: LabelingContext = request.app.state.labeling
    return context


def _labeler(request: Request) -> str:
    name: str = request.state.labeler
    return name


def _cookie_name(request: Request) -> str:
    """The token cookie's name; cookies ignore ports, so servers on two ports get two names."""
    return f"{_COOKIE}_{request.url.port or 80}"


def _presented_token(request: Request) -> tuple[str, str] | None:
    """The token a request presents and where: the Authorization header, then ``?token=`` (GET and
    HEAD only), then the cookie; None if it presents none."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        return "header", token.strip() if scheme.lower() == "bearer" else ""
    if request.method in ("GET", "HEAD") and "token" in request.query_params:
        return "query", request.query_params["token"]
    cookie = request.cookies.get(_cookie_name(request))
    return None if cookie is None else ("cookie", cookie)


def _refusal(request: Request, status: int, message: str, *, clear_cookie: bool = False) -> Response:
    """A 401/403: JSON under ``/api``, a short HTML page elsewhere."""
    response: Response
    if request.url.path.startswith("/api/"):
        response = JSONResponse({"error": message}, status_code=status)
    else:
        response = HTMLResponse(pages.error_page(status, message), status_code=status)
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    if clear_cookie:
        response.delete_cookie(_cookie_name(request), httponly=True, samesite="strict")
    return response


def _without_token(request: Request) -> str:
    """The request's path and query without ``token``, as a same-site relative URL."""
    path = "/" + request.url.path.lstrip("/")  # never "//host": that would leave the site
    rest = [(key, value) for key, value in request.query_params.multi_items() if key != "token"]
    return quote(path) + (f"?{urlencode(rest)}" if rest else "")


async def _authenticate(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    context = _context(request)
    if not context.require_token and not is_loopback(request.url.hostname):
        message = "this labeling page serves loopback addresses only; open it as http://127.0.0.1:PORT/"
        return _refusal(request, 403, message)
    presented = _presented_token(request)
    if presented is None:
        if context.require_token:
            return _refusal(request, 401, "a labeler token is required: open the link with ?token=")
        request.state.labeler = LOCAL_LABELER
        return await call_next(request)
    source, token = presented
    labeler = await run_in_threadpool(context.store.check_token, token) if token else None
    if labeler is None:
        message = "invalid labeler token: ask for a fresh link (zoo label add-labeler)"
        return _refusal(request, 401, message, clear_cookie=source == "cookie")
    if source == "query":
        response = RedirectResponse(_without_token(request), status_code=303)
        response.set_cookie(
            _cookie_name(request), token, max_age=_COOKIE_MAX_AGE, httponly=True, samesite="strict"
        )
        return response
    request.state.labeler = labeler
    return await call_next(request)


async def _guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Authenticate every request (pages, API, clips, static files) and add the security headers."""
    response = await _authenticate(request, call_next)
    response.headers.update(_SECURITY_HEADERS)
    if not request.url.path.startswith(("/clips/", "/static/")):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


# --------------------------------------------------------------------------------------------------
# Errors


def _api_error_response(_request: Request, error: ApiError) -> JSONResponse:
    return JSONResponse({"error": error.message}, status_code=error.status)


def _http_error_response(_request: Request, error: HTTPException) -> Response:
    message = "not found" if error.status_code == 404 else str(error.detail)
    return JSONResponse({"error": message}, status_code=error.status_code, headers=error.headers)


def _validation_error_response(_request: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0] if error.errors() else {}
    return JSONResponse({"error": str(first.get("msg", "invalid request"))}, status_code=422)


async def _store_call(method: Callable[..., T], *args: Any) -> T:
    """Run a store method in the thread pool; its refusals become API errors."""
    try:
        return await run_in_threadpool(method, *args)
    except LabelStoreError as error:
        status = next((s for kind, s in _STORE_ERROR_STATUS.items() if isinstance(error, kind)), 400)
        raise ApiError(status, str(error)) from None


# --------------------------------------------------------------------------------------------------
# Request bodies


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def _json_object(request: Request) -> dict[str, Any]:
    """The request's body as a JSON object, or an :class:`ApiError` (415, 413, 400)."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(415, "Content-Type must be application/json")
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    return data


def _answer_fields(data: dict[str, Any]) -> tuple[int, str, float | None]:
    """``query_id``, ``choice`` and ``seconds`` of an answer, checked (422; 404 for an id out of range)."""
    for name in ("query_id", "choice"):
        if name not in data:
            raise ApiError(422, f"missing field {name}")
    query_id, choice, seconds = data["query_id"], data["choice"], data.get("seconds")
    if type(query_id) is not int:  # bool is a subclass of int, and not an id
        raise ApiError(422, "query_id must be an integer")
    if not 1 <= query_id <= _MAX_QUERY_ID:
        raise ApiError(404, f"unknown query {query_id}")
    if not isinstance(choice, str):
        raise ApiError(422, "choice must be a string")
    if seconds is not None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise ApiError(422, "seconds must be a number or null")
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ApiError(422, "seconds must be finite and >= 0")
        seconds = float(seconds)
    return query_id, choice, seconds


# --------------------------------------------------------------------------------------------------
# JSON shapes


def _video_url(clip: str) -> str | None:
    """``/clips/<hex>.mp4`` for a clip reference ``clips/<hex>.npz`` (None for any other reference)."""
    match = _CLIP_REFERENCE.fullmatch(clip)
    return None if match is None else f"/clips/{match.group(1)}.mp4"


def _fps(metadata: dict[str, Any] | None) -> float:
    value = (metadata or {}).get("fps")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return DEFAULT_FPS
    return float(value) if math.isfinite(value) and value > 0 else DEFAULT_FPS


def _query_json(query: Query) -> dict[str, Any]:
    return {
        "id": query.id,
        "left_video": _video_url(query.left_clip),
        "right_video": _video_url(query.right_clip),
        "fps": _fps(query.metadata),
        "kind": query.kind,
    }


def _progress_json(progress: Progress, budget: int | None) -> dict[str, Any]:
    return progress._asdict() | {"budget": budget}


def _stats_json(stats: LabelStats) -> dict[str, Any]:
    per_labeler = {name: s._asdict() for name, s in stats.per_labeler.items()}
    overall = stats._asdict() | {"per_labeler": per_labeler}
    return overall | {"answers": sum(s.answers for s in stats.per_labeler.values())}


# --------------------------------------------------------------------------------------------------
# Routes

_router = APIRouter()


@_router.get("/", response_class=HTMLResponse)
def label_page(request: Request) -> HTMLResponse:
    """The labeling page."""
    context = _context(request)
    html = pages.label_page(
        title=context.title,
        labeler=_labeler(request),
        instructions=context.instructions,
        progress=context.store.progress(),
        budget=context.budget,
    )
    return HTMLResponse(html)


@_router.get("/stats", response_class=HTMLResponse)
def stats_page(request: Request) -> HTMLResponse:
    """Answers per labeler, timing, repeat agreement and gold accuracy."""
    context = _context(request)
    html = pages.stats_page(
        title=context.title,
        labeler=_labeler(request),
        stats=context.store.stats(),
        progress=context.store.progress(),
        budget=context.budget,
    )
    return HTMLResponse(html)


@_router.get("/api/next")
def next_query(request: Request) -> dict[str, Any]:
    """Lease the next query to this labeler (the same one again while its lease lives)."""
    context = _context(request)
    query = context.store.lease_next(_labeler(request), context.lease_seconds)
    return {
        "query": None if query is None else _query_json(query),
        "progress": _progress_json(context.store.progress(), context.budget),
    }


@_router.post("/api/answer")
async def post_answer(request: Request) -> dict[str, Any]:
    """Record this labeler's answer to a query."""
    context = _context(request)
    query_id, choice, seconds = _answer_fields(await _json_object(request))
    answer = await _store_call(context.store.answer, query_id, _labeler(request), choice, seconds)
    progress = await run_in_threadpool(context.store.progress)
    return {"answer_id": answer.id, "progress": _progress_json(progress, context.budget)}


@_router.post("/api/undo")
async def post_undo(request: Request) -> dict[str, Any]:
    """Take back this labeler's last answer; its query is leased to them again."""
    context = _context(request)
    await _json_object(request)
    query_id = await _store_call(context.store.undo_last, _labeler(request), context.lease_seconds)
    progress = await run_in_threadpool(context.store.progress)
    return {"query_id": query_id, "progress": _progress_json(progress, context.budget)}


@_router.get("/api/progress")
def get_progress(request: Request) -> dict[str, Any]:
    """The store's counts and the budget."""
    context = _context(request)
    return _progress_json(context.store.progress(), context.budget)


@_router.get("/api/stats")
def get_stats(request: Request) -> dict[str, Any]:
    """Per-labeler and overall statistics over live answers."""
    return _stats_json(_context(request).store.stats())


@_router.api_route("/clips/{name}", methods=["GET", "HEAD"])
def clip_video(request: Request, name: str) -> FileResponse:
    """A clip's MP4 from the run's clips folder; only ``<32 lowercase hex>.mp4`` names exist."""
    match = _CLIP_NAME.fullmatch(name)
    if match is None:
        raise HTTPException(404)
    path = _context(request).clips_dir / f"{match.group(1)}.mp4"
    if not path.is_file():
        raise HTTPException(404)
    # Clip files are named by a random id and never rewritten: browsers may keep them.
    return FileResponse(path, media_type="video/mp4", headers={"Cache-Control": "private, max-age=86400"})
