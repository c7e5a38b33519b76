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


# ---------------------------------------------------------------- reliability: JSONL never aborts, validate_jsonl raises only when it cannot run
import qoqmed.data as qdata
import qoqmed.media as qmedia, qoqmed.records as qrecords   # monkeypatch where a name is looked up: its defining module

_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)
_KEYS = ["problem", "prompt", "answer", "images", "videos", "time-series", "time_series", "segmentation_path", "bbox", "choices",
         "domain", "dataset", "id"]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(_KEYS), _JSON)
def test_any_json_value_in_any_field_is_a_problem_or_accepted(tmp_path_factory, key, value):
    "Whatever value a known key holds, validation goes on: a problem names line 2 (and a field), line 3 is still checked."
    d = tmp_path_factory.mktemp("j")
    base = {"problem": "q?", "answer": "a", "domain": "ehr"}
    lines = [json.dumps(base), json.dumps({**base, key: value}), json.dumps({**base, "answer": ""})]
    (d / "f.jsonl").write_text("\n".join(lines) + "\n")
    probs = validate_jsonl(d / "f.jsonl")
    assert any(p.line == 3 and p.field == "answer" for p in probs)
    assert not any(p.line == 1 for p in probs)
    assert all(str(d / "f.jsonl") in str(p) for p in probs)
    structural = [p for it in qdata.iter_jsonl(d / "f.jsonl") if it.line == 2 for p in it.problems]
    assert all(p.field for p in structural), structural


def test_bad_bytes_and_types_do_not_stop_the_file(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_bytes(b'{"problem": 42, "answer": "a"}\n{"problem": ["a"], "answer": "b"}\n{"problem": "q\xff", "answer": "a"}\n'
                  b'\xff\xfe{\x00}\x00\n' + b"[" * 5000 + b"]" * 5000 + b'\n{"problem": "ok", "answer": "a", "domain": "ehr"}\n')
    probs = validate_jsonl(f)
    assert [(p.line, p.field) for p in probs if p.field in ("problem", None)] == [(1, "problem"), (2, "problem"), (3, None), (4, None), (5, None)]
    assert "line is not valid UTF-8 (byte 0xff at column 15)" in probs[[p.line for p in probs].index(3)].message
    assert "the file looks like UTF-16" in next(p.message for p in probs if p.line == 4)
    assert "nested too deeply" in next(p.message for p in probs if p.line == 5)
    assert not any(p.line == 6 for p in probs)
    with pytest.raises(DataError, match=r"d.jsonl:1: problem: must be a string, got 42"):
        read_jsonl(f)


def test_validate_jsonl_raises_when_the_file_cannot_be_read(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"nope.jsonl: file not found"): validate_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match=r": not a file"): validate_jsonl(tmp_path)
    f = tmp_path / "locked.jsonl"; f.write_text('{"problem": "q", "answer": "a", "domain": "ehr"}\n')
    def denied(*a, **k): raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(qrecords, "open", denied, raising=False)  # tests run as root, where chmod 000 does not deny
    with pytest.raises(DataError, match=r"locked.jsonl: cannot open the file \(Permission denied\)"): validate_jsonl(f)


def test_problem_severity_prints_warnings():
    p = Problem(3, "time-series[0]", "lead V1 flat", "d.jsonl", severity="warning")
    assert str(p) == "d.jsonl:3: time-series[0]: warning: lead V1 flat"
    assert str(Problem(3, "images[0]", "file not found", "d.jsonl")) == "d.jsonl:3: images[0]: file not found"
    assert Problem(1, None, "x").severity == "error"


def test_flat_ecg_loads_and_warns(tmp_path):
    x = np.load(DEMO_DIR / "ecg/pydicom/waveform_ecg_8x2500.npy")
    flat = x.copy(); flat[5] = 0.2  # V4 stuck at 0.2 mV
    np.save(tmp_path / "flat.npy", flat); np.save(tmp_path / "zero.npy", np.zeros_like(x))
    assert np.array_equal(load_ecg(tmp_path / "flat.npy"), flat) and not load_ecg(tmp_path / "zero.npy").any()
    (tmp_path / "e.jsonl").write_text("".join(json.dumps({"problem": "<ecg> q", "answer": "a", "domain": "ecg", "time-series": [f]}) + "\n"
                                              for f in ("flat.npy", "zero.npy")))
    probs = validate_jsonl(tmp_path / "e.jsonl")
    assert [(p.line, p.severity) for p in probs] == [(1, "warning"), (2, "warning")]
    assert "warning: lead V4 flat" in str(probs[0]) and "every lead is flat" in probs[1].message


def test_loader_bugs_and_memory_errors_are_problems_not_crashes(tmp_path, monkeypatch):
    "A loader raising something other than DataError is one problem naming the exception type; the next record is still checked."
    shutil.copyfile(get_testdata_file("CT_small.dcm"), tmp_path / "a.dcm")
    shutil.copyfile(get_testdata_file("MR_small.dcm"), tmp_path / "b.dcm")
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"problem": "<image> q", "answer": "a", "domain": "ct", "images": [f]}) + "\n"
                                              for f in ("a.dcm", "b.dcm", "c.missing")))
    real = qdata.load_image
    def buggy(path):
        if str(path).endswith("a.dcm"): raise ZeroDivisionError("division by zero")
        if str(path).endswith("b.dcm"): raise MemoryError()
        return real(path)
    monkeypatch.setattr(qrecords, "load_image", buggy)
    probs = validate_jsonl(tmp_path / "d.jsonl")
    assert [(p.line, p.field) for p in probs] == [(1, "images[0]"), (2, "images[0]"), (3, "images[0]")]
    assert probs[0].message.startswith("unexpected ZeroDivisionError while loading (division by zero); this is a bug in the qoqmed loader")
    assert probs[1].message.startswith("too large to decode (MemoryError") and "b.dcm" in probs[1].message
    assert "file not found" in probs[2].message


def test_memory_error_while_decoding_is_a_data_error(monkeypatch):
    import nibabel
    nii = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    def oom(*a, **k): raise MemoryError()
    monkeypatch.setattr(qmedia, "_percentile_unit", oom)
    with pytest.raises(DataError, match=r"anatomical.nii: too large to decode \(MemoryError"): load_volume(nii)
    monkeypatch.setattr(qmedia, "_dicom_gray_unit", oom)
    with pytest.raises(DataError, match=r"CT_small.dcm: too large to decode \(MemoryError"): load_image(get_testdata_file("CT_small.dcm"))


def test_window_width_zero_in_a_slice_folder(tmp_path):
    "The folder path windows the stacked volume once: a bad window there names the folder."
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for k in range(3):
        ds = copy.deepcopy(base); ds.ImagePositionPatient = [0, 0, 5.0 * k]
        ds.WindowCenter, ds.WindowWidth = "40", "0" if k == 0 else "400"
        ds.save_as(tmp_path / f"s{k}.dcm")
    with pytest.raises(DataError, match=r"VOI window centre 40, width 0 is invalid"):
        load_volume(tmp_path)


def test_resampling_ratio_is_exact():
    "250 Hz from 300 Hz is 5/6, from 257.3 Hz 2500/2573 (limit_denominator(1000) gave 137/141), from 333.333333 Hz 3/4."
    assert qmedia._resample_ratio(250, 300, "x") == (5, 6) and qmedia._resample_ratio(250, 257.3, "x") == (2500, 2573)
    assert qmedia._resample_ratio(250, 333.333333, "x") == (3, 4)


def test_ecg_rate_limits(tmp_path):
    x = np.load(DEMO_DIR / "ecg/pydicom/waveform_ecg_8x2500.npy")
    np.save(tmp_path / "e.npy", x)
    lo, hi = qdata.ECG_FS_RANGE_HZ
    assert load_ecg(tmp_path / "e.npy", source_fs=lo).shape == (8, 2500)
    for bad in (lo - 0.1, hi + 1, float("nan"), float("inf"), -250, 0, "fast"):
        with pytest.raises(DataError, match=r"e.npy: source_fs"): load_ecg(tmp_path / "e.npy", source_fs=bad)
    np.save(tmp_path / "short.npy", x[:, :2])
    with pytest.raises(DataError, match=r"short.npy: the ECG lasts 0.004 s \(2 samples at 500 Hz\); at least 1 s is needed"):
        load_ecg(tmp_path / "short.npy", source_fs=500)
