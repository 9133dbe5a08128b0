import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fortify.data import DataWarning, ImageDataset, load_dataset
from fortify.data import loader as loader_module
from fortify.errors import DataError


def _jpeg_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_shapes_labels_paths_hashes(make_folder, tmp_path: Path) -> None:
    root = make_folder({"Bengin cases": 3, "Malignant cases": 4, "Normal cases": 2}, size=(30, 20))
    ds = load_dataset(root, image_size=16, cache_dir=tmp_path / "cache")
    assert isinstance(ds, ImageDataset)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (9, 1, 16, 16)
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert ds.classes == ["benign", "malignant", "normal"]
    assert ds.paths[0] == "Bengin cases/img (1).png" and ds.root == str(root.resolve())
    assert ds.file_hashes[0] == hashlib.sha256((root / ds.paths[0]).read_bytes()).hexdigest()
    assert not ds.synthetic and ds.image_size == 16 and len(ds) == 9
    assert ds.infos[0].width == 30 and ds.infos[0].height == 20
    x, y = ds.tensors()
    assert x.dtype == torch.float32 and 0.0 <= x.min() and x.max() <= 1.0 and torch.equal(y, ds.labels)
    sub = ds.subset([8, 0])
    assert sub.paths == [ds.paths[8], ds.paths[0]] and torch.equal(sub.images[1], ds.images[0])


def test_center_crop_not_stretch(tmp_path: Path, img) -> None:
    # 60x20 image: white 20-px bars left and right, black square in the middle. A center crop
    # keeps only black; a stretch would bring the white bars in.
    wide = np.zeros((20, 60), dtype=np.uint8)
    wide[:, :20] = 255
    wide[:, 40:] = 255
    img.write_image(tmp_path / "ds" / "a" / "wide.png", wide)
    img.write_image(tmp_path / "ds" / "b" / "plain.png", np.full((20, 20), 128, np.uint8))
    ds = load_dataset(tmp_path / "ds", image_size=10, cache_dir=tmp_path / "c")
    assert ds.images[0].max() == 0


def test_deterministic_preprocessing(make_folder, tmp_path: Path) -> None:
    root = make_folder({"a": 2, "b": 2})
    a = load_dataset(root, image_size=12, cache_dir=tmp_path / "c1")
    b = load_dataset(root, image_size=12, cache_dir=tmp_path / "c2")
    assert torch.equal(a.images, b.images)


def test_rgb_colour_converted_with_warning(make_folder, tmp_path: Path, img) -> None:
    root = make_folder({"a": 3, "b": 3})
    colour = np.random.default_rng(1).integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
    img.write_image(root / "a" / "colour.png", colour, mode="RGB")
    with pytest.warns(DataWarning, match=r"colour RGB image converted to grayscale \(1 file"):
        ds = load_dataset(root, image_size=8, cache_dir=tmp_path / "c")
    assert len(ds) == 7 and ds.infos[ds.paths.index("a/colour.png")].mode == "RGB"


def test_gray_stored_as_rgb_is_silent_and_lossless(tmp_path: Path, img) -> None:
    gray = img.random_gray(np.random.default_rng(3))
    img.write_image(tmp_path / "ds" / "a" / "gray.png", gray)
    img.write_image(tmp_path / "ds" / "b" / "rgb.png", np.stack([gray] * 3, -1), mode="RGB")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        ds = load_dataset(tmp_path / "ds", image_size=24, cache_dir=tmp_path / "c")
    assert torch.equal(ds.images[0], ds.images[1])
    assert ds.infos[0].pixel_sha256 == ds.infos[1].pixel_sha256  # same decoded pixels


def test_16bit_rescaled_with_warning(make_folder, tmp_path: Path, img) -> None:
    root = make_folder({"a": 2, "b": 2})
    deep = np.linspace(1000, 4000, 24 * 24).reshape(24, 24).astype(np.uint16)
    Image.fromarray(deep).save(root / "a" / "deep.png")  # PIL writes mode I;16
    with pytest.warns(DataWarning, match="rescaled to 8-bit"):
        ds = load_dataset(root, image_size=24, cache_dir=tmp_path / "c")
    img = ds.images[ds.paths.index("a/deep.png")]
    assert img.min() == 0 and img.max() == 255  # full 8-bit range used, not clipped to white


def test_corrupt_and_truncated_files_skipped_and_listed(make_folder, tmp_path: Path, img) -> None:
    root = make_folder({"a": 10, "b": 10})
    (root / "a" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    good = _jpeg_bytes(img.random_gray(np.random.default_rng(9), 64, 64))
    (root / "b" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    with pytest.warns(DataWarning, match="skipped 2 unreadable file") as rec:
        ds = load_dataset(root, image_size=8, cache_dir=tmp_path / "c")
    assert len(rec) == 1  # one summary line, not one per file
    assert len(ds) == 20
    assert {s["path"] for s in ds.skipped} == {"a/corrupt.jpg", "b/truncated.jpg"}
    assert all(s["reason"] for s in ds.skipped)
    # The skip list survives a cache hit.
    with pytest.warns(DataWarning, match="skipped 2 unreadable"):
        again = load_dataset(root, image_size=8, cache_dir=tmp_path / "c")
    assert again.skipped == ds.skipped


def test_class_with_only_unreadable_files_is_fatal(make_folder, tmp_path: Path) -> None:
    root = make_folder({"a": 10, "b": 10})
    (root / "c").mkdir()
    (root / "c" / "bad.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match="class 'c'.*no readable images"):
        load_dataset(root, image_size=8, cache_dir=tmp_path / "c")


def test_many_unreadable_files_is_fatal(make_folder, tmp_path: Path) -> None:
    root = make_folder({"a": 4, "b": 4})
    for i in range(3):
        (root / "a" / f"bad{i}.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match="3 of 11 images are unreadable"):
        load_dataset(root, image_size=8, cache_dir=tmp_path / "c")


@pytest.mark.parametrize("size", [0, 4, 5000, 12.5])
def test_bad_image_size(make_folder, size) -> None:
    with pytest.raises(DataError, match="image size"):
        load_dataset(make_folder({"a": 1, "b": 1}), image_size=size)


def test_cache_hit_skips_decoding(make_folder, tmp_path: Path, monkeypatch, img) -> None:
    root = make_folder({"a": 3, "b": 3})
    cache = tmp_path / "cache"
    first = load_dataset(root, image_size=8, cache_dir=cache)
    files = list((cache / "decoded").glob("*.safetensors"))
    assert len(files) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache should have hit")

    monkeypatch.setattr(loader_module, "decode_image", no_decoding)
    second = load_dataset(root, image_size=8, cache_dir=cache)
    assert torch.equal(first.images, second.images) and first.infos == second.infos
    # Another image size or changed contents are different keys: they must decode again.
    with pytest.raises(AssertionError, match="decoded although"):
        load_dataset(root, image_size=10, cache_dir=cache)
    img.write_image(root / "a" / "img (1).png", img.random_gray(np.random.default_rng(99)))
    with pytest.raises(AssertionError, match="decoded although"):
        load_dataset(root, image_size=8, cache_dir=cache)


def test_corrupt_cache_file_is_rebuilt(make_folder, tmp_path: Path) -> None:
    root = make_folder({"a": 2, "b": 2})
    cache = tmp_path / "cache"
    first = load_dataset(root, image_size=8, cache_dir=cache)
    (cache_file,) = (cache / "decoded").glob("*.safetensors")
    cache_file.write_bytes(b"not safetensors")
    second = load_dataset(root, image_size=8, cache_dir=cache)
    assert torch.equal(first.images, second.images)
    assert cache_file.stat().st_size > 100  # rewritten


def test_default_cache_dir_from_env(make_folder, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FORTIFY_CACHE", str(tmp_path / "envcache"))
    load_dataset(make_folder({"a": 1, "b": 1}), image_size=8)
    assert list((tmp_path / "envcache" / "decoded").glob("*.safetensors"))


def test_file_that_cannot_be_read_is_skipped(make_folder, tmp_path: Path, monkeypatch) -> None:
    # chmod does not stop root, so simulate the permission error at the read itself.
    root = make_folder({"a": 10, "b": 10})
    real_read = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == "img (3).png" and self.parent.name == "a":
            raise PermissionError(13, "Permission denied")
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.warns(DataWarning, match="cannot read file: Permission denied"):
        ds = load_dataset(root, image_size=8, cache_dir=tmp_path / "c")
    assert [s["path"] for s in ds.skipped] == ["a/img (3).png"] and len(ds) == 19


def test_small_change_decodes_only_the_new_file(make_folder, tmp_path: Path, monkeypatch, img) -> None:
    root = make_folder({"a": 4, "b": 4})
    cache = tmp_path / "cache"
    load_dataset(root, image_size=8, cache_dir=cache)
    img.write_image(root / "b" / "new.png", img.random_gray(np.random.default_rng(42)))
    calls = []
    real_decode = loader_module.decode_image

    def counting_decode(data, image_size):
        calls.append(image_size)
        return real_decode(data, image_size)

    monkeypatch.setattr(loader_module, "decode_image", counting_decode)
    changed = load_dataset(root, image_size=8, cache_dir=cache)
    assert len(calls) == 1 and len(changed) == 9
    fresh = load_dataset(root, image_size=8, cache_dir=tmp_path / "fresh-cache")
    assert torch.equal(changed.images, fresh.images) and changed.infos == fresh.infos
    assert torch.equal(changed.fingerprints, fresh.fingerprints)


def test_unreadable_reason_names_no_python_object() -> None:
    from fortify.data.decode import UnreadableImage, decode_image

    with pytest.raises(UnreadableImage) as info:
        decode_image(b"garbage", 32)
    assert "object at 0x" not in str(info.value) and "not an image format" in str(info.value)
