"""Render `robench report --format html` in a real browser, offline, and save a screenshot.

The unit tests parse the page with html.parser; only a browser shows whether the CSS lays it
out, the inline PNG decodes and the sorting script runs without an error. This script:

1. writes the report of --workspace (or takes --html FILE as it is);
2. loads it in headless Chromium with every host name unresolvable, so a resource fetched
   from the network would be missing rather than silently loaded;
3. dumps the DOM after the scripts ran and checks that the sorting script set its tooltips on
   every sortable header (it does so first, so an error before then shows as none set);
4. saves a screenshot (--window-size, default 1280x2000) to look at.

It installs nothing: Chromium comes from the system (Debian: `apt-get install chromium`).

    python benchmarks/html_report_check.py --workspace robench-workspace --screenshot report.png
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# No network and no sandbox (root in a container has none); a fresh profile each run so an old
# cache cannot hide a missing resource.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--no-first-run", "--disable-extensions", "--virtual-time-budget=3000"]


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def find_browser(name: str | None) -> str:
    for candidate in [name] if name else BROWSERS:
        path = shutil.which(candidate)
        if path:
            return path
    fail(f"no Chromium found ({name or ', '.join(BROWSERS)}); install it, e.g. `apt-get install -y chromium`, or pass --browser PATH")


def write_report(workspace: Path, path: Path) -> None:
    from robench.errors import RobenchError
    from robench.html_report import render_html
    from robench.report import Filters, load_results, write_output
    from robench.workspace import Workspace

    ws = Workspace(workspace)
    try:
        write_output(render_html(load_results(ws, Filters()), ws), path)
    except RobenchError as exc:
        fail(str(exc))


def chromium(browser: str, profile: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    command = [browser, *FLAGS, f"--user-data-dir={profile}", *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        fail(f"{browser} did not finish within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, default=Path(os.environ.get("ROBENCH_WORKSPACE", "robench-workspace")))
    parser.add_argument("--html", type=Path, help="an existing report to check instead of writing one from --workspace")
    parser.add_argument("--screenshot", type=Path, default=Path("report-screenshot.png"))
    parser.add_argument("--window-size", default="1280,2000", help="WIDTH,HEIGHT in CSS pixels")
    parser.add_argument("--browser", help=f"the Chromium binary (default: the first of {', '.join(BROWSERS)} on PATH)")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    if not re.fullmatch(r"\d+,\d+", args.window_size):
        fail(f"--window-size must be WIDTH,HEIGHT such as 1280,2000, got {args.window_size!r}")
    browser = find_browser(args.browser)

    with tempfile.TemporaryDirectory(prefix="robench-html-check-") as scratch:
        html = args.html or Path(scratch) / "report.html"
        if args.html is None:
            write_report(args.workspace, html)
        elif not html.is_file():
            fail(f"--html {html} is not a file")
        url = html.resolve().as_uri()
        text = html.read_text(encoding="utf-8")
        remote = re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//[^"'\s>]+""", text)
        if remote:
            fail(f"{html} references {len(remote)} network resource(s), e.g. {remote[0]}")

        dom = chromium(browser, str(Path(scratch) / "profile-dom"), "--dump-dom", url, timeout=args.timeout)
        if dom.returncode != 0 or "</html>" not in dom.stdout:
            fail(f"{browser} could not load {html}: {(dom.stderr.strip().splitlines() or ['no output'])[-1]}")
        headers = len(re.findall(r"<table[^>]*class=\"[^\"]*sortable", text))
        sortable = dom.stdout.count('title="click to sort"')
        if headers and not sortable:
            fail("the sorting script did not run (no header got its tooltip); open the page in a browser's console to see why")

        args.screenshot.parent.mkdir(parents=True, exist_ok=True)
        shot = chromium(browser, str(Path(scratch) / "profile-shot"), f"--screenshot={args.screenshot.resolve()}",
                        f"--window-size={args.window_size}", url, timeout=args.timeout)
        if shot.returncode != 0 or not args.screenshot.is_file():
            fail(f"{browser} wrote no screenshot: {(shot.stderr.strip().splitlines() or ['no output'])[-1]}")
    images = dom.stdout.count("data:image/png;base64,")
    print(f"{html if args.html else 'report of ' + str(args.workspace)}: loaded offline in {Path(browser).name}, "
          f"{headers} sortable tables ({sortable} headers wired), {images} inline images; screenshot {args.screenshot}")


if __name__ == "__main__":
    main()
