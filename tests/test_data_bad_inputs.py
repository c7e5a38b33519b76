"""Checks of qoqmed.data that are awkward in a notebook: relocating the demo, DICOM edge cases, property tests.

Uses only files shipped inside installed packages (pydicom, pydicom-data, nibabel) and temporary copies.
"""
import copy, json, shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings, strategies as st
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from qoqmed.data import (DEMO_DATA, DEMO_DIR, DOMAINS, DataError, Problem, Record, build_messages, load_ecg, load_image,
                         load_inputs, load_mask, load_volume, read_jsonl, validate_box, validate_jsonl, write_jsonl)


def test_demo_is_relocatable(tmp_path):
    "The demo's paths are relative: a copy elsewhere reads, validates and loads the same."
    shutil.copytree(DEMO_DIR, tmp_path / "demo")
    copy = tmp_path / "demo" / DEMO_DATA.name
    assert validate_jsonl(copy) == []
    recs = read_jsonl(copy)
    assert len(recs) >= 12 and len({r.domain for r in recs}) >= 6
    assert all(str(tmp_path) in p for r in recs for p in r.images + r.videos + r.time_series)
    for r in recs:
        got = load_inputs(r, max_frames=4)
        assert len(got["images"]) == len(r.images) and len(got["videos"]) == len(r.videos)
        assert all(x.shape == (8, 2500) and x.dtype == np.float32 for x in got["time_series"])


def test_demo_records_are_honest():
    "Every demo answer says where it comes from; the vignette is marked illustrative."
    for r in read_jsonl(DEMO_DATA):
        assert r.extra.get("label_source"), r.id
        if r.domain == "ehr": assert r.extra.get("label_note") == "illustrative"
    assert "licence" in (DEMO_DIR / "README.md").read_text().lower()


def test_validate_reports_every_bad_line(tmp_path):
    lines = ['{"problem": "q", "answer": "a", "images": ["gone%d.png"], "domain": "ct"}' % i for i in range(5)]
    lines.insert(2, "not json at all")
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    probs = validate_jsonl(tmp_path / "d.jsonl")
    assert [p.line for p in probs] == [1, 2, 3, 4, 5, 6]
    assert str(probs[0]).startswith(f"{tmp_path / 'd.jsonl'}:1: images[0]: file not found: ")
    with pytest.raises(DataError, match=r"d.jsonl:3: not valid JSON"):
        read_jsonl(tmp_path / "d.jsonl")


def test_jsonl_with_bom_and_root(tmp_path):
    (tmp_path / "media").mkdir()
    shutil.copyfile(get_testdata_file("CT_small.dcm"), tmp_path / "media" / "a.dcm")
    (tmp_path / "d.jsonl").write_text('\ufeff{"problem": "<image> q", "answer": "a", "images": ["a.dcm"], "domain": "ct"}\n',
                                      encoding="utf-8")
    assert validate_jsonl(tmp_path / "d.jsonl", root=tmp_path / "media") == []
    assert read_jsonl(tmp_path / "d.jsonl", root=tmp_path / "media")[0].images == [str(tmp_path / "media" / "a.dcm")]


def test_monochrome1_is_inverted(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    normal = np.asarray(load_image(get_testdata_file("CT_small.dcm")))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "m1.dcm")
    inverted = np.asarray(load_image(tmp_path / "m1.dcm"))
    assert np.abs(inverted.astype(int) - (255 - normal.astype(int))).max() <= 1


def test_voi_window_matches_pydicom():
    "MR_small's own window (600/1600): our 8-bit values follow pydicom's windowing."
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ours = np.asarray(load_image(get_testdata_file("MR_small.dcm")))[..., 0].astype(float)
    y = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(float)
    assert np.corrcoef(ours.ravel(), y.ravel())[0, 1] > 0.999


@pytest.mark.parametrize("name", ["vlut_04.dcm", "mlut_18.dcm", "examples_palette.dcm", "J2K_pixelrep_mismatch.dcm"])
def test_lut_and_palette_dicom(name):
    "VOI LUT sequence, modality LUT sequence, palette colour and JPEG 2000 files all give full-range 8-bit RGB."
    a = np.asarray(load_image(get_testdata_file(name)))
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[-1] == 3 and a.max() - a.min() > 200
    if name == "examples_palette.dcm": assert (a[..., 0] != a[..., 2]).any()


def test_truncated_dicom_header(tmp_path):
    raw = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    (tmp_path / "t.dcm").write_bytes(raw[:1000])
    with pytest.raises(DataError, match=r"t.dcm: DICOM file has no pixel data \(truncated"):
        load_image(tmp_path / "t.dcm")


def test_folder_falls_back_to_instance_number(tmp_path):
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for k, name in zip([3, 1, 2], ["a", "b", "c"]):
        ds = copy.deepcopy(base)
        del ds.ImagePositionPatient
        px = ds.pixel_array.copy(); px[:8, :8] = 1000 + 50 * k
        ds.PixelData = px.tobytes(); ds.InstanceNumber = k
        ds.save_as(tmp_path / f"{name}.dcm")
    (tmp_path / "README.txt").write_text("not a slice")
    corner = [int(np.asarray(f)[2, 2, 0]) for f in load_volume(tmp_path)]
    assert corner == sorted(corner) and len(set(corner)) == 3


def test_folder_with_mixed_sizes_is_refused(tmp_path):
    shutil.copyfile(get_testdata_file("CT_small.dcm"), tmp_path / "1.dcm")
    shutil.copyfile(get_testdata_file("MR_small.dcm"), tmp_path / "2.dcm")
    with pytest.raises(DataError, match="slices have different sizes"):
        load_volume(tmp_path)


def test_nifti_slices_along_thickest_axis(tmp_path):
    import nibabel as nib
    data = np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8)
    nib.save(nib.Nifti1Image(data, np.diag([5.0, 1.0, 1.0, 1.0])), tmp_path / "thick_x.nii.gz")
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.0, 1.0])), tmp_path / "iso.nii")
    thick = load_volume(tmp_path / "thick_x.nii.gz")
    assert len(thick) == 6 and thick[0].size == (7, 8)   # sagittal frames: columns = y, rows = z
    iso = load_volume(tmp_path / "iso.nii")
    assert len(iso) == 8 and iso[0].size == (6, 7)       # ties: last axis (axial)
    mask = np.zeros((6, 7, 1), np.uint8); mask[1:3, 2:4, 0] = 1
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "mask.nii.gz")
    assert load_mask(tmp_path / "mask.nii.gz").shape == (7, 6) and load_mask(tmp_path / "mask.nii.gz").sum() == 4


def test_dicom_ecg_missing_v_leads(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))
    for ch in ds.WaveformSequence[0].ChannelDefinitionSequence[6:]:
        ch.ChannelSourceSequence[0].CodeMeaning = "Lead X"
    ds.save_as(tmp_path / "limb_only.dcm")
    with pytest.raises(DataError, match=r"limb_only.dcm: missing ECG leads V1, V2, V3, V4, V5, V6"):
        load_ecg(tmp_path / "limb_only.dcm")


def test_truncated_wfdb_signal(tmp_path):
    import wfdb
    wfdb.wrsamp("r", fs=500, units=["mV"] * 8, sig_name=["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"],
                p_signal=np.zeros((5000, 8)), fmt=["16"] * 8, write_dir=str(tmp_path))
    raw = (tmp_path / "r.dat").read_bytes()
    (tmp_path / "r.dat").write_bytes(raw[:1001])
    with pytest.raises(DataError, match="r.hea"):
        load_ecg(tmp_path / "r")


def test_climb_pt_at_500hz(tmp_path):
    "A CLIMB tensor in the official 500 Hz / 5 s form, read at 250 Hz / 10 s: 5 s of signal, then zeros."
    import torch
    t = np.sin(np.linspace(0, 20 * np.pi, 2500, dtype=np.float32))[None].repeat(8, 0)
    torch.save(torch.from_numpy(t), tmp_path / "x.pt")
    x = load_ecg(tmp_path / "x.pt", source_fs=500)
    assert x.shape == (8, 2500) and np.abs(x[:, 1250:]).max() == 0 and np.abs(x[:, 100:1200]).max() > 0.9
    assert np.allclose(load_ecg(tmp_path / "x.pt", fs=500, seconds=5), t)


def test_messages_keep_marker_order():
    r = Record("<ecg> then <image> and <video>", "a", images=["i.png"], videos=["v.nii"], time_series=["e"], domain="ct")
    kinds = [c["type"] for c in build_messages(r, format_prompt=None)[0]["content"]]
    assert kinds == ["time_series", "text", "image", "text", "video"]


def test_write_jsonl_round_trip(tmp_path):
    recs = read_jsonl(DEMO_DATA)
    out = write_jsonl(recs, tmp_path / "sub" / "demo.jsonl")
    back = read_jsonl(out)
    assert back == recs
    assert not any(Path(p).is_absolute() for l in out.read_text().splitlines() for p in json.loads(l)["images"])


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 100), st.floats(0, 100), st.floats(0, 100), st.floats(0, 100))
def test_validate_box_property(a, b, c, d):
    x1, x2, y1, y2 = min(a, b), max(a, b), min(c, d), max(c, d)
    if x1 < x2 and y1 < y2: assert validate_box([x1, y1, x2, y2], (100, 100)) == [x1, y1, x2, y2]
    else:
        with pytest.raises(DataError): validate_box([x1, y1, x2, y2], (100, 100))
    with pytest.raises(DataError): validate_box([x1, y1, x2 + 101, y2], (100, 100))
