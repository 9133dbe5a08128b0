"""Screenshot a fortify report in headless Chromium, to check that the HTML renders.

    python scripts/render_report.py RUN_DIR/report/report.html OUT.png [--height 4000]

Needs /usr/bin/chromium (Debian: `apt-get install -y chromium`). The page is self-contained, so the
browser is started with networking features off; a page that needed the network would show gaps."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("render_report: chromium not found; install it with `apt-get install -y chromium`")


def render(html: Path, png: Path, width: int = 1400, height: int = 4000, timeout: float = 120) -> Path:
    if not html.is_file():
        sys.exit(f"render_report: no such file: {html}")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fortify-chromium-") as profile:
        cmd = [
            find_chromium(),
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={png.resolve()}",
            f"--window-size={width},{height}",
            html.resolve().as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not png.is_file():
        sys.exit(f"render_report: chromium failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return png


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=4000)
    args = ap.parse_args()
    print(render(args.html, args.png, args.width, args.height))


if __name__ == "__main__":
    main()
