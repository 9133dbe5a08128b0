"""Why does the raw-pixel 1-NN sentinel score high on a fold? Leak, or shortcut?

The sentinel (fortify.data.sentinel) is a 1-nearest-neighbour classifier on 32x32 raw-pixel thumbnails,
train -> test. A high score has two readings:
- a leak: a test image's nearest training image is the same patient (a scan the grouping cut in two);
- a shortcut: a class looks alike across patients (one scanner, protocol or field of view), so the
  nearest image of ANOTHER patient still carries the right label. That is no leak; it says the class is
  easy to recognise from acquisition, and a model scoring no better has learned little beyond that.

For each fold manifest this script rebuilds the scan runs the split used (same grouping, same kept
files) and, per test image, finds its nearest training image and that image's run. It reports:
- the sentinel per class, and how many of its hits come from a run ADJACENT to the test image's run in
  file order (same class folder, the two runs touching in file numbers: the signature of a scan cut at a
  large slice-to-slice jump, which the ±3 file-number `neighbour_share` misses when the nearest slice is
  far from the cut);
- the sentinel again with every training run adjacent to a test run removed (what a coarser grouping
  that merged those runs would have measured);
- distances: the test image's nearest-training distance against the within-scan consecutive-slice
  distance (a same-patient copy) and against each training image's nearest image in another run of the
  same class (another patient, or a cut scan).

    .venv/bin/python benchmarks/sentinel_pairs.py --data ../shared/datasets/iqothnccd \\
        --split /tmp/recipes/folds/fold-{0,1,2,3,4}.json --out /tmp/sentinel_pairs.json

Fast (seconds per fold after the dataset is decoded); touches no model and no test label beyond what
the sentinel already reads.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from fortify.data import load_dataset
from fortify.data.groups import (
    SCAN_LINK_THRESHOLD,
    dataset_fingerprints,
    file_number,
    leakage_groups,
)
from fortify.data.sentinel import nearest_neighbours, thumbnails
from fortify.data.split import load_manifest
from fortify.errors import FortifyError
from fortify.fileio import write_json

DEFAULT_DATA = str(Path(__file__).resolve().parents[2] / "shared/datasets/iqothnccd")


def run_spans(paths: list[str], groups: list[list[int]]) -> list[tuple[str, int, int]]:
    """(class folder, lowest file number, highest file number) per group."""
    out = []
    for g in groups:
        nums = [file_number(paths[i]) or 0 for i in g]
        out.append((str(PurePosixPath(paths[g[0]]).parent), min(nums), max(nums)))
    return out


def adjacent(a: tuple[str, int, int], b: tuple[str, int, int], gap: int) -> bool:
    """Two runs of one class folder whose file-number spans touch (at most `gap` numbers apart)."""
    if a[0] != b[0]:
        return False
    return 0 < b[1] - a[2] <= gap or 0 < a[1] - b[2] <= gap


def quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {"n": len(values), "q25": q[0], "median": q[1], "q75": q[2]}


def analyse_fold(ds, manifest_path: str, gap: int) -> dict[str, Any]:
    m = load_manifest(manifest_path)
    index = {p: i for i, p in enumerate(ds.paths)}
    parts = {name: [index[e["path"]] for e in entries] for name, entries in m.splits.items()}
    kept = sorted(i for ids in parts.values() for i in ids)
    paths = [ds.paths[i] for i in kept]
    labels = ds.labels[kept]
    threshold = float(m.grouping.get("scan", {}).get("threshold", SCAN_LINK_THRESHOLD))
    grouping = leakage_groups(
        dataset_fingerprints(ds)[kept],
        labels.tolist(),
        paths,
        list(ds.classes),
        grouping=m.grouping.get("applied", "scan"),
        scan_threshold=threshold,
    )
    run_of: dict[int, int] = {}  # dataset index -> its run (group) index
    for r, g in enumerate(grouping.groups):
        for k in g:
            run_of[kept[k]] = r
    spans = run_spans(paths, grouping.groups)
    thumbs = thumbnails(ds)
    train = torch.tensor(parts["train"])
    test = torch.tensor(parts["test"])
    y_train, y_test = ds.labels[train], ds.labels[test]
    nn_idx, nn_dist = nearest_neighbours(thumbs[test], thumbs[train])
    hit = y_train[nn_idx] == y_test
    test_run = [run_of[i] for i in test.tolist()]
    train_run = [run_of[i] for i in train.tolist()]
    test_runs = set(test_run)
    adj_all = torch.tensor(
        [adjacent(spans[r], spans[train_run[j]], gap) for r, j in zip(test_run, nn_idx.tolist(), strict=True)]
    )
    # the sentinel once every training run adjacent to some test run is dropped (a coarser grouping)
    adjacent_train_runs = {
        r for r in set(train_run) if any(adjacent(spans[r], spans[t], gap) for t in test_runs)
    }
    keep_train = torch.tensor([r not in adjacent_train_runs for r in train_run])
    c_idx, _ = nearest_neighbours(thumbs[test], thumbs[train][keep_train])
    coarse_hit = y_train[keep_train][c_idx] == y_test
    # reference distances: consecutive slices of one run; nearest training image in another same-class run
    consecutive = []
    for g in grouping.groups:
        ordered = sorted(g, key=lambda k: file_number(paths[k]) or 0)
        for a, b in zip(ordered[:-1], ordered[1:], strict=True):
            consecutive.append(float((thumbs[kept[a]] - thumbs[kept[b]]).abs().mean()))
    t_thumbs = thumbs[train]
    d_all = torch.cdist(t_thumbs, t_thumbs, p=1) / t_thumbs.shape[1]
    runs_t = torch.tensor(train_run)
    same_run = runs_t[:, None] == runs_t[None, :]
    same_class = y_train[:, None] == y_train[None, :]
    d_all[same_run | ~same_class] = float("inf")
    other_run = d_all.min(1).values
    other_run = other_run[torch.isfinite(other_run)].tolist()

    per_class: dict[str, Any] = {}
    for k, cls in enumerate(ds.classes):
        mask = y_test == k
        n = int(mask.sum())
        if not n:
            continue
        adj = adj_all[mask]
        per_class[cls] = {
            "n": n,
            "test_runs": len({r for r, m in zip(test_run, mask.tolist(), strict=True) if m}),
            "sentinel_hits": int(hit[mask].sum()),
            "hits_from_adjacent_run": int((hit[mask] & adj).sum()),
            "nearest_from_adjacent_run": int(adj.sum()),
            "sentinel_without_adjacent_runs": int(coarse_hit[mask].sum()),
            "nearest_distance_hits": quantiles(nn_dist[mask & hit].tolist()),
            "nearest_distance_misses": quantiles(nn_dist[mask & ~hit].tolist()),
        }
    return {
        "split": str(manifest_path),
        "fold": m.fold.get("index") if isinstance(m.fold, dict) else None,
        "n_test": len(test),
        "n_train": len(train),
        "scan_threshold": threshold,
        "adjacent_gap": gap,
        "sentinel": int(hit.sum()) / len(test),
        "nearest_from_adjacent_run": int(adj_all.sum()),
        "hits_from_adjacent_run": int((hit & adj_all).sum()),
        "train_runs_adjacent_to_test": len(adjacent_train_runs),
        "train_images_adjacent_to_test": int((~keep_train).sum()),
        "sentinel_without_adjacent_runs": int(coarse_hit.sum()) / len(test),
        "per_class": per_class,
        "distance": {
            "test_to_nearest_train": quantiles(nn_dist.tolist()),
            "consecutive_slices_in_a_run": quantiles(consecutive),
            "train_to_nearest_other_run_same_class": quantiles(other_run),
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--split", nargs="+", required=True, help="fold manifests (fortify-split/1 JSON)")
    p.add_argument("--gap", type=int, default=3, help="file numbers apart for two runs to count as adjacent")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    first = load_manifest(args.split[0])
    ds = load_dataset(args.data, image_size=int(first.preprocessing.get("image_size", 128)))
    folds = []
    for path in args.split:
        r = analyse_fold(ds, path, args.gap)
        folds.append(r)
        d = r["distance"]
        print(
            f"{path}: sentinel {100 * r['sentinel']:.1f}% of {r['n_test']}; nearest image from an adjacent "
            f"run {r['nearest_from_adjacent_run']} (hits {r['hits_from_adjacent_run']}); without the "
            f"{r['train_runs_adjacent_to_test']} adjacent training runs "
            f"({r['train_images_adjacent_to_test']} images) {100 * r['sentinel_without_adjacent_runs']:.1f}%"
        )
        for cls, c in r["per_class"].items():
            print(
                f"  {cls:10s} n {c['n']:3d} in {c['test_runs']:2d} runs: 1-NN {c['sentinel_hits']:3d} "
                f"({c['hits_from_adjacent_run']} from an adjacent run), without adjacent runs "
                f"{c['sentinel_without_adjacent_runs']:3d}; nearest distance hits "
                f"{c['nearest_distance_hits'].get('median', float('nan')):.1f}, misses "
                f"{c['nearest_distance_misses'].get('median', float('nan')):.1f}"
            )
        print(
            "  median distance: test->nearest train "
            f"{d['test_to_nearest_train']['median']:.1f}, consecutive slices "
            f"{d['consecutive_slices_in_a_run']['median']:.1f}, train->nearest other run of its class "
            f"{d['train_to_nearest_other_run_same_class']['median']:.1f} (grey levels, 32x32 thumbnails)"
        )
    if args.out:
        write_json(args.out, {"format": "fortify-sentinel-pairs/1", "folds": folds})


if __name__ == "__main__":
    try:
        main()
    except FortifyError as err:
        raise SystemExit(f"error: {err}") from None
