// The labeling page: leases a query from /api/next, plays its two clips in sync, posts the answer.
// No inline script is allowed (Content-Security-Policy); settings come from data- attributes.
"use strict";

(() => {
  const root = document.getElementById("labeling");
  if (!root) return; // the stats page loads this file too

  const POLL_MS = 4000;
  const left = document.getElementById("left-video");
  const right = document.getElementById("right-video");
  const videos = [left, right];
  const clipsBox = document.getElementById("clips");
  const statusLine = document.getElementById("status");
  const progressLine = document.getElementById("progress");
  const toggleLabel = document.querySelector('[data-action="toggle"] .label');
  const budget = root.dataset.budget === "" ? null : Number(root.dataset.budget);
  const CHOICE_NAMES = { left: "Left", right: "Right", equal: "Equal", cant_tell: "Can't tell" };

  let query = null; // the query shown: {id, left_video, right_video, fps, kind}
  let shownAt = 0; // performance.now() when its clips appeared
  let busy = false; // a request that changes the query is in flight
  let paused = false;
  let rate = 1;
  let pollTimer = null;

  function setStatus(text) {
    statusLine.textContent = text;
  }

  function showProgress(progress) {
    if (!progress) return;
    const parts = [
      `answered ${progress.answered}`,
      `pending ${progress.pending} (${progress.leased} being labeled)`,
    ];
    if (budget !== null) parts.push(`budget ${budget}`);
    progressLine.textContent = parts.join(" · ");
  }

  async function api(method, path, body) {
    const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let data = null;
    try {
      data = await response.json();
    } catch (_error) {
      data = null;
    }
    return { status: response.status, ok: response.ok, data };
  }

  function errorText(reply) {
    if (reply.status === 401) return "Your labeler token is not valid: open the link you were given again.";
    return (reply.data && reply.data.error) || `the server answered ${reply.status}`;
  }

  // ---------------------------------------------------------------------------------------------
  // Playback: both clips start together, the right one follows the left one's time, on loop too.

  function fps() {
    return query && query.fps > 0 ? query.fps : 30;
  }

  function playBoth() {
    paused = false;
    toggleLabel.textContent = "Pause";
    Promise.all(videos.map((video) => video.play())).catch(() => {
      setStatus("Press space or Play to start the clips.");
    });
  }

  function pauseBoth() {
    paused = true;
    toggleLabel.textContent = "Play";
    videos.forEach((video) => video.pause());
  }

  function togglePlay() {
    if (!query) return;
    if (paused) playBoth();
    else pauseBoth();
  }

  function setRate(value) {
    rate = value;
    videos.forEach((video) => {
      video.defaultPlaybackRate = value;
      video.playbackRate = value;
    });
    document.querySelectorAll("[data-speed]").forEach((button) => {
      button.classList.toggle("active", Number(button.dataset.speed) === value);
    });
  }

  function stepFrame(direction) {
    if (!query || left.readyState < 1) return;
    pauseBoth();
    const frames = Math.max(1, Math.floor((left.duration || 0) * fps()));
    const frame = Math.min(frames - 1, Math.max(0, Math.floor(left.currentTime * fps()) + direction));
    const time = (frame + 0.5) / fps(); // the middle of the frame, clear of rounding at its edges
    videos.forEach((video) => {
      video.currentTime = time;
    });
  }

  function keepInSync() {
    if (query && left.readyState >= 2 && right.readyState >= 2 && !right.seeking) {
      const target = Math.min(left.currentTime, Math.max(0, (right.duration || Infinity) - 0.001));
      if (Math.abs(right.currentTime - target) > 1.5 / fps()) right.currentTime = target;
      if (right.paused !== left.paused) {
        if (left.paused) right.pause();
        else right.play().catch(() => {});
      }
    }
    requestAnimationFrame(keepInSync);
  }

  function loaded(video) {
    return new Promise((resolve) => {
      if (video.readyState >= 2) resolve();
      else video.addEventListener("loadeddata", resolve, { once: true });
    });
  }

  function showQuery(next) {
    query = next;
    shownAt = performance.now();
    if (!next.left_video || !next.right_video) {
      setStatus(`Query ${next.id} has no videos; answer Can't tell or ask whoever runs the training.`);
    } else {
      setStatus("");
    }
    left.src = next.left_video || "";
    right.src = next.right_video || "";
    setRate(rate);
    clipsBox.hidden = false;
    Promise.all(videos.map(loaded)).then(() => {
      if (query !== next) return;
      shownAt = performance.now();
      videos.forEach((video) => {
        video.currentTime = 0;
      });
      if (paused) pauseBoth();
      else playBoth();
    });
  }

  function hideQuery() {
    query = null;
    clipsBox.hidden = true;
    videos.forEach((video) => {
      video.pause();
      video.removeAttribute("src");
      video.load();
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Queries and answers

  function schedulePoll() {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(loadNext, POLL_MS);
  }

  async function loadNext() {
    clearTimeout(pollTimer);
    let reply;
    try {
      reply = await api("GET", "/api/next");
    } catch (_error) {
      setStatus("Cannot reach the labeling server; trying again…");
      schedulePoll();
      return;
    }
    if (!reply.ok) {
      setStatus(errorText(reply));
      if (reply.status !== 401) schedulePoll();
      return;
    }
    showProgress(reply.data.progress);
    if (reply.data.query) {
      showQuery(reply.data.query);
    } else {
      hideQuery();
      setStatus("No clips to label right now. This page checks again every few seconds.");
      schedulePoll();
    }
  }

  async function change(action) {
    if (busy) return;
    busy = true;
    root.classList.add("busy");
    try {
      await action();
    } catch (_error) {
      setStatus("Cannot reach the labeling server; try again.");
    } finally {
      busy = false;
      root.classList.remove("busy");
    }
  }

  function answer(choice) {
    if (!query) return;
    const shown = query;
    const seconds = Math.round(performance.now() - shownAt) / 1000;
    return change(async () => {
      const reply = await api("POST", "/api/answer", { query_id: shown.id, choice, seconds });
      if (reply.ok) {
        showProgress(reply.data.progress);
        await loadNext();
        if (query) setStatus(`Saved: ${CHOICE_NAMES[choice]}.`);
      } else if (reply.status === 404 || reply.status === 409) {
        await loadNext();
        setStatus(`${errorText(reply)}; showing the next pair.`);
      } else {
        setStatus(errorText(reply));
      }
    });
  }

  function undo() {
    return change(async () => {
      const reply = await api("POST", "/api/undo", {});
      if (!reply.ok) {
        setStatus(errorText(reply));
        return;
      }
      showProgress(reply.data.progress);
      if (reply.data.query_id === null) {
        setStatus("Nothing to undo.");
        return;
      }
      await loadNext();
      setStatus("Your last answer was undone: answer this pair again.");
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Buttons and keys

  const ACTIONS = {
    toggle: togglePlay,
    "step-back": () => stepFrame(-1),
    "step-forward": () => stepFrame(1),
    undo,
  };
  const KEYS = {
    ArrowLeft: () => answer("left"),
    ArrowRight: () => answer("right"),
    ArrowUp: () => answer("equal"),
    "=": () => answer("equal"),
    ArrowDown: () => answer("cant_tell"),
    s: () => answer("cant_tell"),
    u: undo,
    " ": togglePlay,
    ",": () => stepFrame(-1),
    ".": () => stepFrame(1),
  };
  const REPEATABLE = new Set([",", "."]);

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    button.blur(); // so space toggles playback instead of pressing the button again
    if (button.dataset.choice) answer(button.dataset.choice);
    else if (button.dataset.speed) setRate(Number(button.dataset.speed));
    else if (ACTIONS[button.dataset.action]) ACTIONS[button.dataset.action]();
  });

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    const handler = KEYS[key];
    if (!handler) return;
    event.preventDefault();
    if (event.repeat && !REPEATABLE.has(key)) return; // a held arrow key answers one pair only
    handler();
  });

  setRate(1);
  requestAnimationFrame(keepInSync);
  loadNext();
})();
