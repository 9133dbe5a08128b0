import pytest
import torch

from fortify.data import load_dataset
from fortify.data.phantom import DEFAULT_PER_CLASS, parse_phantom_spec
from fortify.errors import DataError


def test_phantom_shape_and_honesty() -> None:
    ds = load_dataset("phantom:n=6", image_size=32)
    assert ds.synthetic and ds.root is None
    assert ds.classes == ["benign", "malignant", "normal"]
    assert ds.images.shape == (18, 1, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.class_counts() == {"benign": 6, "malignant": 6, "normal": 6}
    assert ds.paths[0] == "phantom/benign/0" and ds.paths[-1] == "phantom/normal/5"
    assert len(set(ds.file_hashes)) == 18  # every slice differs


def test_phantom_deterministic_and_size_independent_hashes() -> None:
    a = load_dataset("phantom:n=4", image_size=32)
    b = load_dataset("phantom:n=4", image_size=32)
    c = load_dataset("phantom:n=4", image_size=64)
    assert torch.equal(a.images, b.images)
    assert a.file_hashes == c.file_hashes  # hashes are of the master pixels, so manifests work at any size
    assert load_dataset("phantom:n=2", image_size=32).file_hashes == [
        a.file_hashes[i] for i in (0, 1, 4, 5, 8, 9)
    ]


def test_phantom_classes_differ_where_expected() -> None:
    # Lesions are bright blobs inside the dark lungs: malignant > benign > normal in bright area.
    ds = load_dataset("phantom:n=20", image_size=64)
    bright = (ds.images.float() > 0.7 * 255).flatten(1).float().sum(1)
    mean_bright = [bright[ds.labels == k].mean().item() for k in range(3)]
    benign, malignant, normal = mean_bright
    assert malignant > benign > normal


def test_phantom_specs() -> None:
    assert parse_phantom_spec("phantom") == DEFAULT_PER_CLASS
    assert parse_phantom_spec("phantom:n=40") == 40
    assert parse_phantom_spec("/data/phantom") is None
    for bad in ("phantom:40", "phantom:n=0", "phantom:n=x", "phantom:n=999999"):
        with pytest.raises(DataError):
            load_dataset(bad)
