"""Server-rendered HTML of the labeling app: the labeling page, the stats page and short error pages.

Every value that reaches the HTML goes through :func:`html.escape` (text and attributes alike); the
task instructions are markdown rendered by markdown-it-py with raw HTML disabled, so whatever the
run's config says is shown as text. The pages hold no inline script or style (the app's
Content-Security-Policy forbids them): behavior lives in ``static/app.js``, which reads its settings
from ``data-`` attributes and talks to the JSON API.
"""

from __future__ import annotations

from html import escape

from markdown_it import MarkdownIt

from rewards.store import LabelerStats, LabelStats, Progress

DEFAULT_TITLE = "Which clip is better?"
_CURRENT = ' aria-current="page"'

# CommonMark with raw HTML off: "<script>" in the instructions comes out as "&lt;script&gt;".
# markdown-it's link validation also drops javascript:, vbscript: and data: (non-image) URLs.
_markdown = MarkdownIt("commonmark", {"html": False})


def render_markdown(text: str) -> str:
    """HTML of the markdown ``text``, with any raw HTML in it escaped.

    :param text: markdown written by whoever configured the run.
    """
    return _markdown.render(text)


def progress_text(progress: Progress, budget: int | None) -> str:
    """One line such as ``answered 3 · pending 5 (1 being labeled) · budget 700`` (as static/app.js
    writes it).

    :param progress: the store's counts.
    :param budget: the run's label budget, if known.
    """
    parts = [f"answered {progress.answered}", f"pending {progress.pending} ({progress.leased} being labeled)"]
    if budget is not None:
        parts.append(f"budget {budget}")
    return " · ".join(parts)


def _document(title: str, body: str) -> str:
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title>"
        '<link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="/static/app.css">'
        '<script src="/static/app.js" defer></script>'
        f"</head>\n<body>\n{body}\n</body></html>\n"
    )


def _header(title: str, labeler: str, current: str) -> str:
    links = {"/": "label", "/stats": "stats"}
    nav = " ".join(
        f'<a href="{href}"{_CURRENT if href == current else ""}>{name}</a>' for href, name in links.items()
    )
    return (
        f"<header><h1>{escape(title)}</h1>"
        f'<span class="who">labeler <b>{escape(labeler)}</b></span><nav>{nav}</nav></header>'
    )


def _clip(side: str, caption: str) -> str:
    video = f'<video id="{side}-video" muted loop playsinline preload="auto"></video>'
    return f"<figure>{video}<figcaption>{caption}</figcaption></figure>"


def _button(label: str, key_hint: str, **data: str) -> str:
    attributes = " ".join(f'data-{name.replace("_", "-")}="{escape(value)}"' for name, value in data.items())
    hint = f" <kbd>{escape(key_hint)}</kbd>" if key_hint else ""
    return f'<button type="button" {attributes}><span class="label">{escape(label)}</span>{hint}</button>'


def label_page(*, title: str, labeler: str, instructions: str, progress: Progress, budget: int | None) -> str:
    """The labeling page; static/app.js fills in the clips from ``/api/next``.

    :param title: the page's heading (empty: a default question).
    :param labeler: the name of the labeler viewing the page.
    :param instructions: the task instructions as markdown (empty: none shown).
    :param progress: the store's counts when the page is rendered.
    :param budget: the run's label budget, if known.
    """
    title = title or DEFAULT_TITLE
    shown_instructions = (
        f'<section class="instructions">{render_markdown(instructions)}</section>' if instructions else ""
    )
    player = " ".join(
        [
            _button("◀ Frame", ",", action="step-back"),
            _button("Pause", "space", action="toggle"),
            _button("Frame ▶", ".", action="step-forward"),
            '<span class="speeds">Speed',
            *(_button(f"{speed}x", "", speed=speed) for speed in ("0.5", "1", "2")),
            "</span>",
        ]
    )
    answers = " ".join(
        [
            _button("Left", "←", choice="left"),
            _button("Equal", "↑ or =", choice="equal"),
            _button("Can't tell", "↓ or s", choice="cant_tell"),
            _button("Right", "→", choice="right"),
        ]
    )
    budget_attribute = "" if budget is None else str(budget)
    body = f"""{_header(title, labeler, "/")}
<main id="labeling" data-budget="{escape(budget_attribute)}">
<p id="progress" class="progress">{escape(progress_text(progress, budget))}</p>
{shown_instructions}
<p id="status" class="status" role="status" aria-live="polite">Loading the next pair of clips…</p>
<div id="clips" class="clips" hidden>
{_clip("left", "Left")}
{_clip("right", "Right")}
</div>
<div id="player" class="player">{player}</div>
<div id="answers" class="answers">{answers}</div>
<div class="undo">{_button("Undo last answer", "u", action="undo")}</div>
<p class="help">Which clip shows the better behavior? Keys: ← left, → right, ↑ or = equal, ↓ or s can't
tell, u undo, space play/pause, , and . one frame back/forward.</p>
</main>"""
    return _document(title, body)


def _number(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _share(value: float | None, count: int, noun: str) -> str:
    return f"no {noun} yet" if value is None else f"{100 * value:.0f}% of {count} {noun}"


def _gold(stats: LabelerStats) -> str:
    if not stats.gold_answered:
        return "no gold answers yet"
    share = stats.gold_correct / stats.gold_answered
    return f"{stats.gold_correct} of {stats.gold_answered} ({100 * share:.0f}%)"


def stats_page(*, title: str, labeler: str, stats: LabelStats, progress: Progress, budget: int | None) -> str:
    """The stats page: answers per labeler, mean seconds per answer, repeat agreement and gold
    accuracy with their counts, and the totals.

    :param title: the labeling page's heading (empty: a default question).
    :param labeler: the name of the labeler viewing the page.
    :param stats: the store's statistics over live answers.
    :param progress: the store's counts.
    :param budget: the run's label budget, if known.
    """
    rows = "\n".join(
        f"<tr><td>{escape(name)}</td><td>{s.answers}</td><td>{_number(s.mean_seconds)}</td>"
        f"<td>{_gold(s)}</td></tr>"
        for name, s in sorted(stats.per_labeler.items())
    )
    total = sum(s.answers for s in stats.per_labeler.values())
    body = f"""{_header(title or DEFAULT_TITLE, labeler, "/stats")}
<main>
<p class="progress">{escape(progress_text(progress, budget))}</p>
<table id="labelers">
<thead><tr><th>labeler</th><th>answers</th><th>mean seconds</th><th>gold accuracy</th></tr></thead>
<tbody>
{rows or '<tr><td colspan="4">no answers yet</td></tr>'}
</tbody>
<tfoot><tr><th>all</th><th>{total}</th><th>{_number(stats.mean_seconds)}</th>
<th>{_share(stats.gold_accuracy, stats.gold_answered, "gold answers")}</th></tr></tfoot>
</table>
<dl id="totals">
<dt>repeat agreement</dt><dd>{_share(stats.repeat_agreement, stats.repeat_pairs, "repeat pairs")}</dd>
<dt>gold accuracy</dt><dd>{_share(stats.gold_accuracy, stats.gold_answered, "gold answers")}</dd>
</dl>
</main>"""
    return _document(f"Stats · {title or DEFAULT_TITLE}", body)


def error_page(status: int, message: str) -> str:
    """A short page for a refused request (401, 403, 404) outside the JSON API.

    :param status: the HTTP status code.
    :param message: one line saying what went wrong and what to do.
    """
    body = f"<main><h1>{status}</h1><p>{escape(message)}</p></main>"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{status}</title></head>\n<body>\n{body}\n</body></html>\n"
    )
