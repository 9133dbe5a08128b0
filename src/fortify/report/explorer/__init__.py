"""fortify.report.explorer: a per-image explorer of an evaluation, opened from disk in any browser.

`build_explorer(DIR)` writes DIR/explorer/: index.html, explorer.js, explorer.css, data.js and
thumbs/*.png, read from the evaluation's results.json and adversarial.safetensors (and the run's
certify.json and explain.json when those stages ran). No server, no network request.
"""

from fortify.report.explorer.build import build_explorer, explorer_size

__all__ = ["build_explorer", "explorer_size"]
