"""Screenshot of the labeling page during a real human-labeled run (the README's docs/labeling.png).

Starts ``zoo train pref --env Hopper-v5 --labeler human`` (a few thousand steps, 8 labels, training
waiting for each answer), opens the printed URL in Debian's chromium through Playwright, takes the
screenshot once both clips play, then answers every query by key press until the run finishes, so
the run also checks the whole path: clips drawn off-screen, the page, the answers, the training.

    .venv/bin/python scripts/labeling_screenshot.py --out docs/labeling.png
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BOTH_PLAYING = (
    "(() => { const v = [...document.querySelectorAll('video')];"
    " return v.length == 2 && v.every(x => x.readyState >= 2 && x.currentTime > 0.05); })()"
)
LEFT_SOURCE = "(() => { const v = document.querySelector('video'); return v ? v.src : ''; })()"


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--out", type=Path, default=Path("docs/labeling.png"))
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    options = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as work:
        command = [
            str(Path(sys.executable).with_name("zoo")), "train", "pref", "--env", options.env,
            "--labeler", "human", "--labels", "8", "--steps", "4096", "--run-dir", f"{work}/run", "--quiet",
            "--set", "preference.port=0", "--set", "preference.run_ahead=0",
            "--set", "preference.query_every=2048", "--set", "preference.poll_seconds=0.2",
            "--set", "eval_episodes=1",
        ]  # fmt: skip
        run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert run.stdout is not None
        url = None
        for line in run.stdout:
            print(line.rstrip(), flush=True)
            if found := re.search(r"label clips at (\S+)", line):
                url = found.group(1)
                break
        if url is None:
            sys.exit(f"the run printed no labeling URL (exit code {run.wait()})")
        answered, shot = 0, False
        args = ["--autoplay-policy=no-user-gesture-required"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.append("--no-sandbox")  # chromium refuses to start as root otherwise
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=options.chromium, args=args)
            page = browser.new_page(viewport={"width": 1200, "height": 880})
            page.goto(url)
            deadline = time.monotonic() + 600
            while run.poll() is None and time.monotonic() < deadline:
                if not page.evaluate(BOTH_PLAYING):
                    time.sleep(0.3)
                    continue
                if not shot:
                    time.sleep(0.3)
                    options.out.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(options.out))
                    shot = True
                before = page.evaluate(LEFT_SOURCE)
                page.keyboard.press("ArrowLeft" if answered % 2 == 0 else "ArrowRight")
                answered += 1
                for _ in range(50):  # the next query's clips replace these
                    time.sleep(0.1)
                    if page.evaluate(LEFT_SOURCE) != before:
                        break
            browser.close()
        print(run.stdout.read(), end="")
        code = run.wait()
    where = options.out if shot else "none"
    print(f"run exit code {code}; {answered} answers given in the browser; screenshot: {where}")
    sys.exit(code if shot else 1)


if __name__ == "__main__":
    main()
