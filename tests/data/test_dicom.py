"""DICOM: Hounsfield units, windows, MONOCHROME1, tags, patient grouping, missing decoders.

Uses pydicom's bundled CT_small.dcm and small DICOMs written here (16x16 int16, slope 1, intercept -1024)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from fortify.data import audit_dataset, load_dataset, load_split, make_split, parse_window
from fortify.data.decode import UnreadableImage
from fortify.data.dicom import _decoder_hint, apply_window, decode_dicom, hounsfield
from fortify.errors import ConfigError, DataError

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import FileDataset, FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402

# Known Hounsfield units and what the lung window (W1500 L-600: -1350 -> 0, 150 -> 255) makes of them,
# rounded half up: (hu + 1350) / 1500 * 255.
LUNG = {-2000: 0, -1350: 0, -1024: 55, -600: 128, 0: 230, 150: 255, 1000: 255}


def bundled(name: str) -> Path:
    try:
        path = pydicom.data.get_testdata_file(name)
    except Exception:  # newer pydicom may download some files; none of that in tests
        path = None
    if path is None or not Path(path).is_file():
        pytest.skip(f"{name} is not bundled with this pydicom")
    return Path(path)


def write_dicom(
    path: Path,
    hu: np.ndarray,
    *,
    patient: str | None = None,
    study: str | None = None,
    photometric: str = "MONOCHROME2",
    modality: str = "CT",
) -> Path:
    """A minimal uncompressed CT slice: stored = HU + 1024 (RescaleSlope 1, RescaleIntercept -1024)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    if patient is not None:
        ds.PatientID = patient
    if study is not None:
        ds.StudyInstanceUID = study
    ds.SliceThickness = "2.5"
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = (np.asarray(hu) + 1024).astype("<i2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)
    return path


def known_hu() -> np.ndarray:
    values = np.array(list(LUNG), dtype=np.int16)
    return np.resize(values, (16, 16))  # every known value, repeated


def noise_slice(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 400, size=(16, 16)).astype(np.int16)


def test_window_parsing() -> None:
    assert (parse_window("lung").width, parse_window("lung").level) == (1500, -600)
    assert (parse_window("Mediastinum").width, parse_window("mediastinum").level) == (350, 50)
    custom = parse_window(" 400, 40 ")
    assert (custom.width, custom.level, custom.name) == (400, 40, "400,40")
    assert parse_window(custom.name) == custom
    for bad in ("bone", "0,40", "-5,40", "400", "a,b"):
        with pytest.raises(ConfigError, match="unknown window"):
            parse_window(bad)


def test_ct_small_hu_and_window_match_pydicom(tmp_path: Path) -> None:
    src = bundled("CT_small.dcm")
    ds = pydicom.dcmread(src)
    try:
        from pydicom.pixels import apply_modality_lut
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut
    reference = apply_modality_lut(ds.pixel_array, ds)
    np.testing.assert_allclose(hounsfield(ds, ds.pixel_array), reference)
    assert reference.min() < -600 < reference.max()  # the lung window shows something of this slice

    decoded, tags = decode_dicom(src.read_bytes(), ds.Rows, parse_window("lung"))
    np.testing.assert_array_equal(decoded.pixels, apply_window(reference, parse_window("lung")))
    assert tags["Modality"] == "CT" and tags["SliceThickness"] == "5" and tags["PatientID"] == ds.PatientID
    assert decoded.mode == "DICOM MONOCHROME2 16-bit" and (decoded.width, decoded.height) == (128, 128)

    for folder in ("a", "b"):  # the same file through the whole loader
        (tmp_path / "ds" / folder).mkdir(parents=True)
        shutil.copy(src, tmp_path / "ds" / folder / "slice (1).dcm")
    loaded = load_dataset(tmp_path / "ds", image_size=128, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(loaded.images[0, 0].numpy(), decoded.pixels)
    assert loaded.window == "lung" and loaded.infos[0].tags["PatientID"] == ds.PatientID


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_known_hu_give_known_pixels(tmp_path: Path, photometric: str) -> None:
    hu = known_hu()
    root = tmp_path / "ds"
    write_dicom(root / "a" / "s (1).dcm", hu, patient="p1", photometric=photometric)
    write_dicom(root / "b" / "s (1).dcm", hu, photometric=photometric)  # no PatientID: loads all the same
    ds = load_dataset(root, image_size=16, cache_dir=tmp_path / "cache")
    expected = np.vectorize(LUNG.get)(hu).astype(np.uint8)
    if photometric == "MONOCHROME1":  # bright = low value: inverted after windowing, as a viewer shows it
        expected = 255 - expected
    for k in range(2):
        np.testing.assert_array_equal(ds.images[k, 0].numpy(), expected)
    assert ds.infos[0].tags == {"Modality": "CT", "PatientID": "p1", "SliceThickness": "2.5"}
    assert ds.infos[1].tags == {"Modality": "CT", "SliceThickness": "2.5"}
    assert ds.infos[0].mode == f"DICOM {photometric} 16-bit"
    # Another window: other pixels, another cache entry (the window keys the decode cache).
    med = load_dataset(root, image_size=16, cache_dir=tmp_path / "cache", window="mediastinum")
    w = parse_window("mediastinum")  # -125 -> 0, 225 -> 255
    expected_med = np.floor(np.clip((hu + 125.0) / 350.0, 0, 1) * 255 + 0.5).astype(np.uint8)
    if photometric == "MONOCHROME1":
        expected_med = 255 - expected_med
    np.testing.assert_array_equal(med.images[0, 0].numpy(), expected_med)
    assert med.window == "mediastinum"
    names = sorted(p.name.split("-", 1)[1] for p in (tmp_path / "cache" / "decoded").iterdir())
    assert names == sorted([f"s16-{w.tag}.safetensors", f"s16-{parse_window('lung').tag}.safetensors"])


def _patients_folder(root: Path, *, with_ids: bool) -> dict[str, str]:
    """6 patients (3 per class), 4 dissimilar slices each, numbered consecutively across patients so
    that only the tags can tell where one patient ends. Returns path -> patient."""
    owner = {}
    for c, folder in enumerate(("Benign cases", "Malignant cases")):
        n = 0
        for p in range(3):
            patient = f"P{c}{p}"
            for _ in range(4):
                n += 1
                rel = f"{folder}/IM {n}.dcm"
                write_dicom(root / rel, noise_slice(100 * c + n), patient=patient if with_ids else None)
                owner[rel] = patient
    return owner


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_keeps_each_patient_on_one_side(tmp_path: Path, seed: int) -> None:
    owner = _patients_folder(tmp_path / "ds", with_ids=True)
    m = make_split(
        tmp_path / "ds", seed=seed, fractions=(0.34, 0.33, 0.33), image_size=16, cache_dir=tmp_path / "c"
    )
    sides: dict[str, set[str]] = {}
    for name, entries in m.splits.items():
        for e in entries:
            sides.setdefault(owner[e["path"]], set()).add(name)
    assert len(sides) == 6 and all(len(s) == 1 for s in sides.values()), sides
    assert {n for s in sides.values() for n in s} == {"train", "val", "test"}
    assert m.grouping["applied"] == "dicom PatientID"
    assert m.grouping["dicom"]["keys"] == 6 and m.grouping["dicom"]["files_without_tags"] == 0
    assert m.preprocessing["window"] == "lung"


def test_without_tags_the_similarity_grouping_applies(tmp_path: Path) -> None:
    # The same slices without PatientID: nothing ties a patient's dissimilar slices together, so the
    # ordinary grouping cuts them (which is why the tags matter).
    owner = _patients_folder(tmp_path / "ds", with_ids=False)
    m = make_split(
        tmp_path / "ds", seed=0, fractions=(0.34, 0.33, 0.33), image_size=16, cache_dir=tmp_path / "c"
    )
    assert m.grouping["applied"] == "scan" and "dicom" not in m.grouping
    sides: dict[str, set[str]] = {}
    for name, entries in m.splits.items():
        for e in entries:
            sides.setdefault(owner[e["path"]], set()).add(name)
    assert any(len(s) > 1 for s in sides.values())


def test_study_uid_groups_when_patient_id_is_missing(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for c in ("a", "b"):
        for i in range(4):
            write_dicom(root / c / f"{i}.dcm", noise_slice(10 * ord(c) + i), study=f"1.2.3.{ord(c)}.{i // 2}")
    m = make_split(root, seed=0, fractions=(0.5, 0.25, 0.25), image_size=16, cache_dir=tmp_path / "c")
    assert m.grouping["applied"] == "dicom StudyInstanceUID"
    where = {e["path"]: n for n, es in m.splits.items() for e in es}
    for c in ("a", "b"):
        assert where[f"{c}/0.dcm"] == where[f"{c}/1.dcm"] and where[f"{c}/2.dcm"] == where[f"{c}/3.dcm"]


def test_audit_counts_tags_without_listing_ids(tmp_path: Path) -> None:
    _patients_folder(tmp_path / "ds", with_ids=True)
    write_dicom(tmp_path / "ds" / "Benign cases" / "IM 99.dcm", noise_slice(999), modality="MR")
    report = audit_dataset(tmp_path / "ds", image_size=16, cache_dir=tmp_path / "c")
    d = report["dicom"]
    assert (d["files"], d["patients"], d["files_without_PatientID"]) == (25, 6, 1)
    assert d["modalities"] == {"CT": 24, "MR": 1} and d["slice_thickness_mm"] == {"2.5": 25}
    assert d["patients_per_class"] == {"benign": 3, "malignant": 3}
    assert report["preprocessing"]["window"] == "lung"
    assert report["scans"]["applied"] == "dicom PatientID"
    assert any("MR DICOM windowed as CT Hounsfield units" in w for w in report["warnings"])
    assert "P00" not in str(report)  # identifiers are counted, never written
    assert report["dataset"]["identity"]["name"] is None


def test_manifest_window_is_used_by_load_split(tmp_path: Path) -> None:
    _patients_folder(tmp_path / "ds", with_ids=True)
    kw = {"image_size": 16, "cache_dir": tmp_path / "c"}
    m = make_split(tmp_path / "ds", fractions=(0.34, 0.33, 0.33), window="400,40", **kw)
    assert m.preprocessing["window"] == "400,40"
    parts = load_split(m, **kw)
    direct = load_dataset(tmp_path / "ds", window="400,40", **kw)
    lung = load_dataset(tmp_path / "ds", **kw)
    i = direct.paths.index(parts["test"].paths[0])
    assert np.array_equal(parts["test"].images[0], direct.images[i])
    assert not np.array_equal(parts["test"].images[0], lung.images[i])


def test_multi_frame_and_broken_files_are_unreadable_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImage, match=r"multi-frame DICOM \(15 frames\)"):
        decode_dicom(bundled("rtdose.dcm").read_bytes(), 16, parse_window("lung"))
    with pytest.raises(UnreadableImage, match="no PixelData|not a readable DICOM"):
        decode_dicom(b"definitely not dicom", 16, parse_window("lung"))


def test_decoder_hint_names_the_packages() -> None:
    message = (
        "Unable to decompress 'JPEG-LS Lossless Image Compression' pixel data because all plugins are "
        "missing dependencies:\n\tgdcm - requires gdcm>=3.0.10\n\tpylibjpeg - requires pylibjpeg>=2.0 and "
        "pylibjpeg-libjpeg>=2.1\n\tpyjpegls - requires numpy and pyjpegls>=1.2"
    )
    assert _decoder_hint(message) == "pylibjpeg pylibjpeg-libjpeg (or python-gdcm, or pyjpegls)"


def test_compressed_without_decoder_is_a_one_line_error(tmp_path: Path) -> None:
    src = bundled("MR_small_jpeg_ls_lossless.dcm")
    try:
        _ = pydicom.dcmread(src).pixel_array
        pytest.skip("a JPEG-LS decoder is installed here")
    except RuntimeError:
        pass
    for c in ("a", "b"):
        (tmp_path / "ds" / c).mkdir(parents=True)
        shutil.copy(src, tmp_path / "ds" / c / "x.dcm")
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path / "ds", image_size=16, cache_dir=tmp_path / "c")
    text = str(err.value)
    assert "\n" not in text and "JPEG-LS" in text and "pip install pylibjpeg" in text
    assert text.startswith("a/x.dcm: ")


def test_missing_pydicom_is_a_one_line_error(tmp_path: Path, monkeypatch) -> None:
    write_dicom(tmp_path / "ds" / "a" / "1.dcm", noise_slice(1))
    write_dicom(tmp_path / "ds" / "b" / "1.dcm", noise_slice(2))
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom now raises ImportError
    with pytest.raises(DataError, match=r"need pydicom: pip install 'fortify\[dicom\]'"):
        load_dataset(tmp_path / "ds", image_size=16, cache_dir=tmp_path / "c")


def test_a_patient_in_two_given_folders_is_a_leak(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for k, part in enumerate(("train", "test")):
        for c in ("a", "b"):
            for i in range(2):
                patient = "P-shared" if (c, i) == ("a", 0) else f"P{k}{c}{i}"
                write_dicom(
                    root / part / c / f"{i}.dcm", noise_slice(100 * k + 10 * ord(c) + i), patient=patient
                )
    report = audit_dataset(root, image_size=16, cache_dir=tmp_path / "c")
    leak = report["given_splits"]["leaks"]["patient"]
    assert leak["n_groups"] == 1 and leak["groups"][0]["example"] == ["train/a/0.dcm", "test/a/0.dcm"]
    assert report["given_splits"]["leaks"]["exact"]["n_groups"] == 0
    assert any("1 patient(s)" in w and "leak" in w for w in report["warnings"])
    assert "P-shared" not in str(report)
