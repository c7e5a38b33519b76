"""Issue 14: a sample's memory is bounded by what the loader returns, and the bounded loaders give the same pixels.

The reference is `qoqmed/media.py` at revision 6ee5111 (whole-volume decoding), loaded from git into a temporary module:
every pydicom test file, a DICOM series, 16-bit PNG/TIFF and multi-page TIFF must give identical frames, and with
`max_frames` a VOI-windowed DICOM gives exactly the reference's sampled frames. Then the pixel budget `MAX_PIXELS`:
a real 13000 x 13000 16-bit PNG bomb (320 KiB), each loader kind, and the environment variable."""
import os, subprocess, sys, warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import media_memory as bench  # noqa: E402  (the file generators and the reference loader)
import qoqmed.media as media  # noqa: E402
from qoqmed.media import DataError, load_image, load_mask, load_volume  # noqa: E402


@pytest.fixture(scope="module")
def before(tmp_path_factory):
    try: path = bench.before_module(tmp_path_factory.mktemp("before"))
    except (subprocess.CalledProcessError, FileNotFoundError): pytest.skip("git revision 6ee5111 is not available")
    return bench.import_file(path, "qoqmed_media_before")


def arrays(frames): return [np.asarray(f) for f in frames]


def same(a, b):
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "examples_ybr_color.dcm", "examples_palette.dcm",
                                  "emri_small_jpeg_2k_lossless.dcm", "SC_rgb_small_odd.dcm", "RG1_UNCR.dcm"])
def test_dicom_same_pixels_as_before(before, name):
    from pydicom.data import get_testdata_file
    f = get_testdata_file(name)
    assert np.array_equal(np.asarray(load_image(f)), np.asarray(before.load_image(f)))
    same(arrays(load_volume(f)), arrays(before.load_volume(f)))


def test_multiframe_voi_window_per_frame(before, tmp_path):
    "With a VOI window in the header, sampled frames are exactly the reference's frames at those indices."
    import pydicom
    bench.dicom_multiframe(tmp_path / "cine.dcm", 30, 64)
    ds = pydicom.dcmread(tmp_path / "cine.dcm"); ds.WindowCenter, ds.WindowWidth = "2000", "3000"; ds.save_as(tmp_path / "voi.dcm")
    whole = arrays(before.load_volume(tmp_path / "voi.dcm"))
    same(arrays(load_volume(tmp_path / "voi.dcm", max_frames=5)), [whole[i] for i in media._sample_indices(30, 5)])
    same(arrays(load_volume(tmp_path / "cine.dcm")), arrays(before.load_volume(tmp_path / "cine.dcm")))   # percentile window, all frames
    assert np.array_equal(np.asarray(load_image(tmp_path / "voi.dcm")), whole[15])


def test_series_pngs_tiffs_same_as_before(before, tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    (tmp_path / "series").mkdir()
    for k, z in enumerate((10, 0, 20, 5, 15)):
        ds = base.copy(); px = ds.pixel_array.copy(); px[:8, :8] = 1000 + 10 * z
        ds.PixelData = px.tobytes(); ds.ImagePositionPatient = [-158.1, -179.0, float(z)]; ds.save_as(tmp_path / "series" / f"s{k}.dcm")
    same(arrays(load_volume(tmp_path / "series")), arrays(before.load_volume(tmp_path / "series")))
    ramp = (np.arange(300 * 200, dtype=np.uint16).reshape(300, 200) * 7 + 1000)
    for ext in ("png", "tif"):
        Image.fromarray(ramp).save(tmp_path / f"ramp.{ext}")
        assert np.array_equal(np.asarray(load_image(tmp_path / f"ramp.{ext}")), np.asarray(before.load_image(tmp_path / f"ramp.{ext}")))
    Image.fromarray(ramp.astype(np.float32) / 7).save(tmp_path / "float.tif")
    assert np.array_equal(np.asarray(load_image(tmp_path / "float.tif")), np.asarray(before.load_image(tmp_path / "float.tif")))
    pages = [Image.new("L", (8, 6), v) for v in (0, 60, 120, 180, 255)]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    same(arrays(load_volume(tmp_path / "pages.tif")), arrays(before.load_volume(tmp_path / "pages.tif")))
    same(arrays(load_volume(tmp_path / "pages.tif", max_frames=3)), arrays(before.load_volume(tmp_path / "pages.tif", max_frames=3)))


def test_nifti_same_as_before_with_all_frames(before, tmp_path):
    import nibabel
    nib_data = Path(nibabel.__file__).parent / "tests" / "data"
    for name in ("anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz", "standard.nii.gz"):
        if (nib_data / name).exists(): same(arrays(load_volume(nib_data / name)), arrays(before.load_volume(nib_data / name)))
    bench.nifti(tmp_path / "ct.nii.gz", (40, 30, 12))
    same(arrays(load_volume(tmp_path / "ct.nii.gz")), arrays(before.load_volume(tmp_path / "ct.nii.gz")))
    assert np.array_equal(load_mask(nib_data / "anatomical.nii"), before.load_mask(nib_data / "anatomical.nii"))


def test_png_bomb_refused_from_its_header(tmp_path):
    "A 13000 x 13000 16-bit PNG of zeros is about 320 KiB; it is refused before decoding, naming the file and the fix."
    bench.png16_zeros(tmp_path / "bomb.png", 13000, 13000)
    assert (tmp_path / "bomb.png").stat().st_size < 400 * 1024
    for load in (load_image, load_volume, load_mask):
        with pytest.raises(DataError, match=r"bomb.png: image of 13000x13000 pixels \(169,000,000\) exceeds the pixel budget "
                                            r"MAX_PIXELS = 67,108,864; raise it with the environment variable QOQMED_MAX_PIXELS"):
            load(tmp_path / "bomb.png")


def test_pixel_budget_every_kind(tmp_path, monkeypatch):
    "MAX_PIXELS is read at call time and checked from headers in every loader."
    import nibabel
    from pydicom.data import get_testdata_file
    Image.new("L", (64, 64)).save(tmp_path / "a.png")
    Image.new("L", (64, 64)).save(tmp_path / "p.tif", save_all=True, append_images=[Image.new("L", (64, 64))])
    (tmp_path / "frames").mkdir(); Image.new("L", (64, 64)).save(tmp_path / "frames" / "f0.png")
    nibabel.save(nibabel.Nifti1Image(np.zeros((64, 64, 3), np.int16), np.eye(4)), tmp_path / "v.nii.gz")
    np.save(tmp_path / "m.npy", np.zeros((64, 64), bool))
    cases = [(load_image, tmp_path / "a.png"), (load_volume, tmp_path / "p.tif"), (load_volume, tmp_path / "frames"),
             (load_volume, tmp_path / "v.nii.gz"), (load_mask, tmp_path / "v.nii.gz"), (load_mask, tmp_path / "m.npy"),
             (load_mask, tmp_path / "a.png"), (load_image, get_testdata_file("CT_small.dcm")),
             (load_volume, get_testdata_file("emri_small.dcm")), (load_image, get_testdata_file("emri_small.dcm"))]
    for load, path in cases: load(path)   # under the default budget
    monkeypatch.setattr(media, "MAX_PIXELS", 1000)
    for load, path in cases:
        with pytest.raises(DataError, match=r"pixels \(\d[\d,]*\) exceeds the pixel budget MAX_PIXELS = 1,000"):
            load(path)


def test_max_pixels_from_environment():
    code = "import qoqmed.media as m; print(m.MAX_PIXELS)"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QOQMED_MAX_PIXELS": "300000000"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip() == "300000000", out.stderr[-2000:]


def test_truncated_multiframe_refused_when_decoding_one_frame(tmp_path):
    "Decoding one frame would not notice missing frames; the length check does."
    import pydicom
    bench.dicom_multiframe(tmp_path / "cine.dcm", 10, 32)
    ds = pydicom.dcmread(tmp_path / "cine.dcm"); ds.PixelData = ds.PixelData[: len(ds.PixelData) * 19 // 20]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore"); ds.save_as(tmp_path / "short.dcm")
    for load in (load_image, load_volume):
        with pytest.raises(DataError, match="short.dcm: "): load(tmp_path / "short.dcm")
