"""Record what a refactor must not change, and compare two records.

    python tools/output_identity.py record ROOT DIGEST.json [--real PATH]
    python tools/output_identity.py compare BEFORE.json AFTER.json
    python tools/output_identity.py reports BEFORE_ROOT ROOT   (the report stage alone, over BEFORE's runs)

`record` runs, under ROOT (same ROOT before and after, so paths inside the outputs agree):
  1. `fortify reproduce --data phantom --profile smoke`        -> ROOT/phantom
  2. `fortify reproduce --data REAL --profile smoke`           -> ROOT/smoke
  3. `fortify evaluate` on a TorchScript trace of run 2's normal model, small explicit budgets -> ROOT/ts
and writes a digest: every JSON/JSONL/YAML file with times, dates and versions removed, Markdown and
HTML with durations blanked, and the sha256 of every other file (figures, safetensors). `compare`
lists every path whose digest differs. The `fortify` it runs is whichever `python -m fortify`
imports (set PYTHONPATH to record another checkout).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

# Keys whose values are measurements of the machine or the moment, not of the model.
VOLATILE = re.compile(
    r"(seconds|_s$|^s$|created|started|finished|wall|cpu|elapsed|duration|time|host|version|"
    r"images_per_s|throughput|estimate|threads|fingerprint|^inputs$)",
    re.IGNORECASE,
)
# In text: durations ("12 s", "3.4 min", "0:01:02"), dates and versions.
TEXT_VOLATILE = [
    re.compile(r"\d+(\.\d+)?\s?(s|sec|seconds|min|minutes|h|ms)\b"),
    re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d)?Z?"),
    re.compile(r"\b\d+:\d\d:\d\d\b"),
    re.compile(r"(fortify|torch|torchvision)\s+\d+\.\d+[\w.+]*"),
]
SKIP_SUFFIXES = {".pt", ".log"}  # pickled optimizer/RNG state and logs: not outputs a user reads
# Timings and machine measurements throughout (the report's are checked exactly by `reports` instead).
SKIP_NAMES = {"estimate.json", "report.md", "report.html"}


def _clean(value):
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if not VOLATILE.search(str(k))}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def digest_tree(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = str(path.relative_to(root))
        if path.suffix in SKIP_SUFFIXES or path.name in SKIP_NAMES or "/cache/" in f"/{rel}":
            continue
        if path.suffix == ".json":
            out[rel] = _sha(json.dumps(_clean(json.loads(path.read_text())), sort_keys=True).encode())
        elif path.suffix == ".jsonl":
            lines = [
                json.dumps(_clean(json.loads(x)), sort_keys=True) for x in path.read_text().splitlines() if x
            ]
            out[rel] = _sha("\n".join(lines).encode())
        elif path.suffix in (".md", ".html", ".yaml", ".txt", ".csv"):
            text = path.read_text()
            for pattern in TEXT_VOLATILE:
                text = pattern.sub("#", text)
            out[rel] = _sha(text.encode())
        elif path.suffix == ".safetensors":
            out[rel] = _tensors_sha(path)  # the tensors, not the header: a unit's header holds its seconds
        else:
            out[rel] = _sha(path.read_bytes())
    return out


def _tensors_sha(path: Path) -> str:
    import torch
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(path), framework="pt") as f:
        for name in sorted(f.keys()):
            t = f.get_tensor(name)
            h.update(name.encode() + str(t.dtype).encode() + str(tuple(t.shape)).encode())
            h.update(t.contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _fortify(*args: str) -> None:
    cmd = [sys.executable, "-m", "fortify", *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _torchscript(checkpoint: Path, dest: Path) -> None:
    import torch

    from fortify.training.checkpoints import load_model

    model, info = load_model(checkpoint)
    model.eval()
    size = int(info["image_size"])
    traced = torch.jit.trace(model, torch.zeros(1, int(info["in_channels"]), size, size))
    dest.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(dest))


def record(root: Path, digest: Path, real: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    runs = {"phantom": "phantom", "smoke": real}
    for name, data in runs.items():
        if not (root / name / "report" / "report.md").exists():
            _fortify("reproduce", "--data", data, "--profile", "smoke", "--out", str(root / name))
    ts = root / "ts"
    if not (ts / "eval" / "results.json").exists():
        if not (ts / "model.pt").exists():  # a TorchScript archive is not byte-stable: reuse one to compare
            _torchscript(root / "smoke" / "normal" / "best.safetensors", ts / "model.pt")
        _fortify(
            "evaluate",
            "--checkpoint",
            str(ts / "model.pt"),
            "--image-size",
            "32",
            "--data",
            real,
            "--split",
            str(root / "smoke" / "split.json"),
            "--limit",
            "24",
            "--out",
            str(ts / "eval"),
            "--attacks",
            "fgsm:eps=2/255",
            "--attacks",
            "pgd:eps=2/255,steps=5",
            "--attacks",
            "cw:steps=10,binary_steps=2,max_l2=0.25",
            "--attacks",
            "strong:eps=2/255,steps=5,square_queries=20",
            "--curve-attack",
            "pgd:steps=3",
            "--eps-curve",
            "0,2/255,8/255",
            "--force",
        )
    result = {name: digest_tree(root / name) for name in ("phantom", "smoke", "ts")}
    digest.write_text(json.dumps(result, indent=1, sort_keys=True))
    print(f"{sum(len(v) for v in result.values())} files digested -> {digest}")


def rebuild_reports(before_root: Path, root: Path) -> None:
    """The report stage alone, with this checkout's code, over a copy of `before_root`'s run directories
    placed at `root` (the path the runs were made at): its report must equal the one recorded there."""
    import shutil

    from fortify.report import build_report

    for name in ("phantom", "smoke"):
        shutil.rmtree(root / name, ignore_errors=True)
        shutil.copytree(before_root / name, root / name)
        shutil.rmtree(root / name / "report")
        build_report(root / name)
        for f in ("report.md", "report.html"):
            old, new = (r / name / "report" / f for r in (before_root, root))
            strip = [re.compile(r"report built \d{4}-\d\d-\d\d \d\d:\d\d UTC")]
            a, b = old.read_text(), new.read_text()
            for pattern in strip:
                a, b = pattern.sub("#", a), pattern.sub("#", b)
            print(f"{name}/report/{f}: {'identical' if a == b else 'DIFFERS'} (build date aside)")
        figs = sorted((before_root / name / "report" / "figures").glob("*.png"))
        same = [
            f.name
            for f in figs
            if f.read_bytes() == (root / name / "report" / "figures" / f.name).read_bytes()
        ]
        print(f"{name}/report/figures: {len(same)} of {len(figs)} PNGs byte-identical")


def compare(before: Path, after: Path) -> int:
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    differ = 0
    for run in sorted(set(a) | set(b)):
        fa, fb = a.get(run, {}), b.get(run, {})
        for rel in sorted(set(fa) | set(fb)):
            if fa.get(rel) != fb.get(rel):
                differ += 1
                state = "only before" if rel not in fb else "only after" if rel not in fa else "differs"
                print(f"{run}/{rel}: {state}")
    total = len(set().union(*[{f"{r}/{p}" for p in fa} for r, fa in a.items()]))
    print(f"{total - differ if differ <= total else 0} of {total} files identical; {differ} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    if sys.argv[1] == "reports":
        rebuild_reports(Path(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1] == "record":
        real = (
            sys.argv[sys.argv.index("--real") + 1] if "--real" in sys.argv else "../shared/datasets/iqothnccd"
        )
        record(Path(sys.argv[2]), Path(sys.argv[3]), real)
    else:
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
