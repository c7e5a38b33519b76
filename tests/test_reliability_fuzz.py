"""Reliability fuzz corpus for `qoqmed.data`: every damaged input either loads to a correct array or raises a `DataError` naming the file.

Sources are real files that ship inside installed packages (pydicom, pydicom-data, nibabel's tests/data, scikit-image's
data) and in qoqmed/demo_data (the PTB WFDB record, the 8x2500 ECG array, the DAB mask). Variants (seeded, written to
pytest's tmp_path, no network): truncations at several offsets, byte flips, header edits (DICOM tags via pydicom, WFDB
.hea text, NIfTI header fields via nibabel, PNG chunks), ECG arrays (.npy/.pt dtypes, shapes, values, rates), slice
and frame folders, masks, and adversarial JSONL lines.

An outcome is one of

- `good array`: ECGs (8, 2500) float32 and finite; images 8-bit RGB of nonzero size; volumes a non-empty list of
  such frames, all one size; masks boolean, 2-D or 3-D, nonzero size; JSONL lines accepted as records;
- `DataError`: a `DataError` whose message names the file (JSONL: a `Problem` with the file, its line and field,
  and every following line still checked);
- `bad: raw exception`, `bad: wrong array` (wrong shape/dtype/non-finite/0-pixel, or an array where the variant
  must fail: an all-zero ECG from ChannelSensitivity 0, a 250 Hz fallback for a rate of "-500", ...),
  `bad: DataError without the file`: failures.

    python -m pytest tests/test_reliability_fuzz.py -q -s -p no:cacheprovider                      # fast subset (CI)
    QOQMED_FUZZ_FULL=1 python -m pytest tests/test_reliability_fuzz.py -q -s -p no:cacheprovider   # full corpus
    python tests/test_reliability_fuzz.py [--full] [--module /tmp/data_orig.py] [--show-bad]       # the outcome table only
"""
from __future__ import annotations
import copy, gzip, importlib.util, io, json, logging, os, struct, sys, tempfile, time, warnings, zlib
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

FULL = os.environ.get("QOQMED_FUZZ_FULL", "") not in ("", "0")
SEED = 20250617
logging.getLogger("nibabel").setLevel(logging.ERROR)  # nibabel logs every header it repairs
GOOD, ERR, RAW, WRONG, UNNAMED = "good array", "DataError", "bad: raw exception", "bad: wrong array", "bad: DataError without the file"
OUTCOMES = (GOOD, ERR, RAW, WRONG, UNNAMED)


@dataclass
class Variant:
    id: str            # unique name, e.g. "dicom-tag/CT_small.dcm/RescaleSlope=nan"
    family: str        # row of the outcome table
    kind: str          # image / volume / ecg / mask / jsonl
    make: Callable     # make(folder) -> path to load (an empty folder of its own is given)
    must_fail: str = ""  # why a good-looking array would be silently wrong ("" when either outcome is fine)
    kwargs: dict = field(default_factory=dict)  # passed to the loader
    fast: bool = True  # part of the default (CI) subset
    fields: tuple = ()  # JSONL: the fields a problem on the mutated line may name


# ---------------------------------------------------------------- sources
def _pydicom_file(name):
    from pydicom.data import get_testdata_file
    p = get_testdata_file(name, download=False)
    return Path(p) if p else None

def _nibabel_file(name):
    import nibabel
    return Path(nibabel.__file__).parent / "tests" / "data" / name

def _skimage_file(name):
    import skimage
    return Path(skimage.__file__).parent / "data" / name

def _demo_file(rel):
    from qoqmed.data import DEMO_DIR
    return DEMO_DIR / rel

@lru_cache(maxsize=None)
def _bytes(path) -> bytes: return Path(path).read_bytes()

def _write(folder, name, data:bytes) -> Path:
    p = Path(folder) / name; p.write_bytes(data); return p

def _copy(src, name=None):
    return lambda d: _write(d, name or Path(src).name, _bytes(src))


# ---------------------------------------------------------------- generic byte-level variants
def _truncations(src, kind, family, fractions, name=None, extra_files=(), kwargs=None, fast_n=1):
    out = []
    raw_len = len(_bytes(src))
    cuts = sorted({min(raw_len - 1, max(0, int(round(f * raw_len)))) if isinstance(f, float) else f for f in fractions})
    for j, cut in enumerate(cuts):
        def make(d, cut=cut):
            for e in extra_files: _write(d, Path(e).name, _bytes(e))
            return _write(d, name or Path(src).name, _bytes(src)[:cut])
        out.append(Variant(f"truncate/{Path(src).name}/{cut}", family, kind, make, kwargs=kwargs or {}, fast=j < fast_n))
    return out

def _flips(src, kind, family, n_variants, name=None, extra_files=(), kwargs=None, fast_n=1, header_bytes=2048):
    "Seeded byte flips: half the variants hit the first `header_bytes` bytes, where headers live."
    out = []
    raw = _bytes(src)
    rng = np.random.default_rng([SEED, len(raw), sum(map(ord, Path(src).name))])
    for j in range(n_variants):
        n_flips = (1, 4, 32)[j % 3]
        span = min(len(raw), header_bytes) if j % 2 == 0 else len(raw)
        pos = rng.integers(0, span, n_flips)
        val = rng.integers(1, 256, n_flips)
        def make(d, pos=pos, val=val):
            b = bytearray(_bytes(src))
            for p, v in zip(pos, val): b[p] ^= int(v)
            for e in extra_files: _write(d, Path(e).name, _bytes(e))
            return _write(d, name or Path(src).name, bytes(b))
        out.append(Variant(f"flip/{Path(src).name}/{j}-{n_flips}x{'head' if span < len(raw) else 'any'}", family, kind, make,
                           kwargs=kwargs or {}, fast=j < fast_n))
    return out


# ---------------------------------------------------------------- DICOM tag edits (pydicom)
class _LooseWriting:
    "Let pydicom store invalid values (the point of the exercise)."
    def __enter__(self):
        import pydicom
        self.old = pydicom.config.settings.writing_validation_mode
        pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    def __exit__(self, *a):
        import pydicom
        pydicom.config.settings.writing_validation_mode = self.old

def _dcm(src):
    import pydicom
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(_bytes(src)))

def _save(ds, d, name) -> Path:
    p = Path(d) / name
    with _LooseWriting(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(p)
    return p

def _dicom_edit(src, label, edit, kind, family="dicom tags", must_fail="", kwargs=None):
    def make(d):
        ds = _dcm(src)
        with _LooseWriting(): edit(ds)
        return _save(ds, d, Path(src).name)
    return Variant(f"dicom-tag/{Path(src).name}/{label}", family, kind, make, must_fail=must_fail, kwargs=kwargs or {})

def _set(**kw):
    def edit(ds):
        for k, v in kw.items():
            if v is None:
                if k in ds: delattr(ds, k)
            else: setattr(ds, k, v)
    return edit

def _with_transfer_syntax(src, uid, kind, must_fail=""):
    "Rewrite only the file meta with another Transfer Syntax UID; the dataset bytes stay as they are."
    def make(d):
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_file_meta_info
        ds = _dcm(src)
        meta = copy.deepcopy(ds.file_meta)
        end = 132 + 12 + int(meta.FileMetaInformationGroupLength)
        meta.TransferSyntaxUID = uid
        buf = DicomBytesIO(); buf.is_little_endian, buf.is_implicit_VR = True, False
        with _LooseWriting(): write_file_meta_info(buf, meta, enforce_standard=True)
        return _write(d, Path(src).name, b"\0" * 128 + b"DICM" + buf.getvalue() + _bytes(src)[end:])
    return Variant(f"dicom-tag/{Path(src).name}/TransferSyntaxUID={uid}", "dicom tags", kind, make, must_fail=must_fail)

def _dicom_image_variants():
    ct, mr, emr = _pydicom_file("CT_small.dcm"), _pydicom_file("MR_small.dcm"), _pydicom_file("emri_small.dcm")
    ybr, pal, rgb = _pydicom_file("examples_ybr_color.dcm"), _pydicom_file("examples_palette.dcm"), _pydicom_file("SC_rgb_small_odd.dcm")
    V = []
    E = lambda src, label, edit, kind="image", must_fail="": V.append(_dicom_edit(src, label, edit, kind, must_fail=must_fail))
    for w in ("0", "-100", "nan", "inf", "1e-9"):
        E(mr, f"WindowWidth={w}", _set(WindowWidth=w), must_fail="a VOI window of width < 1 (or not finite) is invalid")
    E(ct, "WindowWidth=0 (added)", _set(WindowCenter="40", WindowWidth="0"), must_fail="a VOI window of width < 1 is invalid")
    E(mr, "WindowCenter=nan", _set(WindowCenter="nan"), must_fail="a NaN window centre")
    E(mr, "WindowCenter=[600,700] WindowWidth=[1600]", _set(WindowCenter=["600", "700"], WindowWidth=["1600"]))
    E(mr, "VOILUTFunction=SIGMOID", _set(VOILUTFunction="SIGMOID"))
    E(mr, "VOILUTFunction=BOGUS", _set(VOILUTFunction="BOGUS"))
    E(mr, "PresentationLUTShape=INVERSE", _set(PresentationLUTShape="INVERSE"))
    for s in ("nan", "inf", "-inf", "1e308"):
        E(ct, f"RescaleSlope={s}", _set(RescaleSlope=s), must_fail="non-finite values after the modality LUT")
    for s in ("0", "-1", "1e-308", "1e300"):
        E(ct, f"RescaleSlope={s}", _set(RescaleSlope=s))
    E(ct, "RescaleIntercept=nan", _set(RescaleIntercept="nan"), must_fail="non-finite values after the modality LUT")
    E(ct, "RescaleIntercept=1e308", _set(RescaleIntercept="1e308"))
    E(mr, "RescaleSlope=nan (windowed)", _set(RescaleSlope="nan", RescaleIntercept="0"), must_fail="non-finite values after the modality LUT")
    for r, c in ((1, 1), (0, 0), (65535, 65535), (64, 256), (128, 127), (2, 8192), (1, 16384)):
        E(ct, f"Rows={r} Columns={c}", _set(Rows=r, Columns=c), must_fail="Rows x Columns disagree with the pixel data" if r * c != 128 * 128 else "")
    E(ct, "Rows=None", _set(Rows=None))
    for k, v in (("BitsAllocated", 8), ("BitsAllocated", 32), ("BitsAllocated", 0), ("BitsAllocated", 1), ("BitsAllocated", 12),
                 ("BitsStored", 0), ("BitsStored", 33), ("BitsStored", 1), ("HighBit", 31), ("PixelRepresentation", 2),
                 ("PixelRepresentation", 0), ("SamplesPerPixel", 3), ("SamplesPerPixel", 0), ("SamplesPerPixel", 4),
                 ("PhotometricInterpretation", "RGB"), ("PhotometricInterpretation", "MONOCHROME1"),
                 ("PhotometricInterpretation", "PALETTE COLOR"), ("PhotometricInterpretation", "YBR_FULL_422"),
                 ("PhotometricInterpretation", "BOGUS"), ("PhotometricInterpretation", None), ("BitsAllocated", None)):
        E(ct, f"{k}={v}", _set(**{k: v}))
    E(rgb, "PlanarConfiguration=1", _set(PlanarConfiguration=1))
    E(rgb, "SamplesPerPixel=1", _set(SamplesPerPixel=1))
    E(ct, "NumberOfFrames=2", _set(NumberOfFrames=2))
    E(ct, "NumberOfFrames=0", _set(NumberOfFrames=0))
    for nf in (0, 1, 5):
        E(emr, f"NumberOfFrames={nf}", _set(NumberOfFrames=nf), "volume", must_fail="NumberOfFrames disagrees with the pixel data (10 frames)")
        E(emr, f"NumberOfFrames={nf} (image)", _set(NumberOfFrames=nf), "image", must_fail="NumberOfFrames disagrees with the pixel data (10 frames)")
    for nf in (11, 1000, -1, None):
        E(emr, f"NumberOfFrames={nf}", _set(NumberOfFrames=nf), "volume")
    for nf in (1, 29, 31, 0):
        E(ybr, f"NumberOfFrames={nf}", _set(NumberOfFrames=nf), "volume", must_fail="" if nf == 31 else "NumberOfFrames disagrees with the pixel data (30 frames)")
    E(ct, "PixelData=None", _set(PixelData=None))
    E(ct, "PixelData=b''", _set(PixelData=b""))
    E(ct, "PixelData=half", lambda ds: setattr(ds, "PixelData", ds.PixelData[: len(ds.PixelData) // 2]))
    E(ct, "PixelData=+2 bytes", lambda ds: setattr(ds, "PixelData", ds.PixelData + b"\0\0"))
    E(emr, "PixelData=9.5 frames", lambda ds: setattr(ds, "PixelData", ds.PixelData[: len(ds.PixelData) * 19 // 20]), "volume")
    def bad_modality_lut(ds):
        from pydicom.dataset import Dataset
        item = Dataset(); item.LUTDescriptor = [0, 0, 16]; item.ModalityLUTType = "HU"; item.LUTData = b""
        ds.ModalityLUTSequence = [item]
        for k in ("RescaleSlope", "RescaleIntercept"):
            if k in ds: delattr(ds, k)
    E(ct, "ModalityLUTSequence=empty LUT", bad_modality_lut)
    def bad_voi_lut(ds):
        from pydicom.dataset import Dataset
        item = Dataset(); item.LUTDescriptor = [4, 0, 16]; item.add_new(0x00283006, "OW", struct.pack("<2H", 0, 1))
        ds.VOILUTSequence = [item]
        for k in ("WindowCenter", "WindowWidth"):
            if k in ds: delattr(ds, k)
    E(mr, "VOILUTSequence=short LUT", bad_voi_lut)
    E(pal, "RedPaletteColorLookupTableData=None", _set(RedPaletteColorLookupTableData=None))
    E(pal, "RedPaletteColorLookupTableDescriptor=[0,0,16]", _set(RedPaletteColorLookupTableDescriptor=[0, 0, 16]))
    E(pal, "RedPaletteColorLookupTableData=half",
      lambda ds: setattr(ds, "RedPaletteColorLookupTableData", ds.RedPaletteColorLookupTableData[:64]))
    from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless, ExplicitVRLittleEndian
    for uid in (ImplicitVRLittleEndian, ExplicitVRBigEndian, JPEGBaseline8Bit, RLELossless, "1.2.3.4"):
        V.append(_with_transfer_syntax(ct, uid, "image"))
    V.append(_with_transfer_syntax(ybr, ExplicitVRLittleEndian, "volume"))
    return V

def _dicom_ecg_variants():
    src = _pydicom_file("waveform_ecg.dcm")
    V = []
    E = lambda label, edit, must_fail="": V.append(_dicom_edit(src, label, edit, "ecg", family="dicom waveform", must_fail=must_fail))
    def group(edit):
        def f(ds): edit(ds.WaveformSequence[0])
        return f
    def channels(edit, which=None):
        def f(ds):
            for i, ch in enumerate(ds.WaveformSequence[0].ChannelDefinitionSequence):
                if which is None or i in which: edit(ch)
        return f
    E("SamplingFrequency=None", group(lambda g: delattr(g, "SamplingFrequency")), must_fail="no sampling rate")
    for fs, why in (("0", "rate 0"), ("-1000", "negative rate"), ("nan", "NaN rate"), ("inf", "infinite rate"), ("1", "1 Hz is not an ECG"),
                    ("10", "10 Hz is not an ECG"), ("49.9", "below 50 Hz"), ("1e7", "10 MHz"), ("3e5", "300 kHz"), ("20001", "above 20 kHz"),
                    ("20000", "0.5 s of signal"), ("50", ""), ("999.9", ""), ("1000.0001", ""), ("2000", ""), ("500", "")):
        E(f"SamplingFrequency={fs}", group(lambda g, fs=fs: setattr(g, "SamplingFrequency", fs)), must_fail=why)
    for s, why in (("0", "all-zero ECG"), ("nan", "NaN sensitivity"), ("inf", "infinite sensitivity"), ("1e30", ""), ("-1.25", ""), ("1e-30", "")):
        E(f"ChannelSensitivity={s} (all)", channels(lambda ch, s=s: setattr(ch, "ChannelSensitivity", s)), must_fail=why)
    E("ChannelSensitivity=0 (lead I)", channels(lambda ch: setattr(ch, "ChannelSensitivity", "0"), {0}), must_fail="lead I all zero")
    E("ChannelSensitivity=None (all)", channels(lambda ch: delattr(ch, "ChannelSensitivity")))
    E("ChannelSensitivityCorrectionFactor=0", channels(lambda ch: setattr(ch, "ChannelSensitivityCorrectionFactor", "0")), must_fail="all-zero ECG")
    E("ChannelSensitivityCorrectionFactor=nan", channels(lambda ch: setattr(ch, "ChannelSensitivityCorrectionFactor", "nan")), must_fail="NaN")
    E("ChannelBaseline=nan", channels(lambda ch: setattr(ch, "ChannelBaseline", "nan")), must_fail="NaN baseline")
    E("ChannelBaseline=1e30", channels(lambda ch: setattr(ch, "ChannelBaseline", "1e30")))
    for n, why in ((0, "no samples"), (1, "1 sample"), (5, "5 samples"), (999, "under 1 s"), (10001, ""), (100000, "")):
        E(f"NumberOfWaveformSamples={n}", group(lambda g, n=n: setattr(g, "NumberOfWaveformSamples", n)), must_fail=why)
    for n in (0, 1, 11, 13, 1000):
        E(f"NumberOfWaveformChannels={n}", group(lambda g, n=n: setattr(g, "NumberOfWaveformChannels", n)))
    for b in (8, 32, 0, 12):
        E(f"WaveformBitsAllocated={b}", group(lambda g, b=b: setattr(g, "WaveformBitsAllocated", b)))
    for s in ("UB", "XX", "SL"):
        E(f"WaveformSampleInterpretation={s}", group(lambda g, s=s: setattr(g, "WaveformSampleInterpretation", s)))
    E("WaveformData=b''", group(lambda g: setattr(g, "WaveformData", b"")))
    E("WaveformData=half", group(lambda g: setattr(g, "WaveformData", g.WaveformData[: len(g.WaveformData) // 2])))
    E("WaveformData=+2 bytes", group(lambda g: setattr(g, "WaveformData", g.WaveformData + b"\0\0")))
    E("WaveformSequence=[]", lambda ds: setattr(ds, "WaveformSequence", []), must_fail="no waveform")
    E("WaveformSequence=None", lambda ds: delattr(ds, "WaveformSequence"))
    E("WaveformSequence=median only", lambda ds: setattr(ds, "WaveformSequence", [ds.WaveformSequence[1]]))
    E("MultiplexGroupLabel=MEDIAN (rhythm)", group(lambda g: setattr(g, "MultiplexGroupLabel", "MEDIAN BEAT")))
    for u in ("furlong", "uV", "V", "mV"):
        E(f"units={u}", channels(lambda ch, u=u: setattr(ch.ChannelSensitivityUnitsSequence[0], "CodeValue", u)))
    E("ChannelSensitivityUnitsSequence=None", channels(lambda ch: delattr(ch, "ChannelSensitivityUnitsSequence")))
    E("lead I named 'Lead X'", channels(lambda ch: setattr(ch.ChannelSourceSequence[0], "CodeMeaning", "Lead X"), {0}))
    E("all leads unnamed", channels(lambda ch: setattr(ch.ChannelSourceSequence[0], "CodeMeaning", "")))
    E("ChannelDefinitionSequence=[]", group(lambda g: setattr(g, "ChannelDefinitionSequence", [])))
    E("ChannelDefinitionSequence=None", group(lambda g: delattr(g, "ChannelDefinitionSequence")))
    return V


# ---------------------------------------------------------------- WFDB header edits (.hea text)
def _wfdb_variants():
    hea, dat = _demo_file("ecg/ptb/s0010_re.hea"), _demo_file("ecg/ptb/s0010_re.dat")
    text = _bytes(hea).decode()
    V = []
    def edit_text(label, fn, must_fail="", dat_bytes=None):
        def make(d):
            _write(d, "s0010_re.dat", _bytes(dat) if dat_bytes is None else dat_bytes())
            _write(d, "s0010_re.hea", fn(text).encode("latin-1", "replace") if isinstance(fn(text), str) else fn(text))
            return Path(d) / "s0010_re"
        V.append(Variant(f"wfdb-header/{label}", "wfdb header", "ecg", make, must_fail=must_fail))
    def record_field(i, value):
        def fn(t):
            lines = t.splitlines(); f = lines[0].split()
            if value is None: f = f[:i]
            else: f[i] = value
            lines[0] = " ".join(f); return "\n".join(lines) + "\n"
        return fn
    for rate, why in (("-500", "unparsable rate (wfdb falls back to 250 Hz)"), ("nan", "unparsable rate"), ("abc", "unparsable rate"),
                      ("0", "rate 0"), ("inf", "infinite rate"), ("1", "1 Hz is not an ECG"), ("49", "below 50 Hz"), ("1e7", "10 MHz"),
                      ("300000", "300 kHz"), ("25000", "above 20 kHz"), ("500", ""), ("1000/2", ""), ("1000.5", ""), ("250", "")):
        edit_text(f"rate={rate}", record_field(2, rate), must_fail=why)
    edit_text("rate and count removed", record_field(2, None))
    for n in ("0", "1", "11", "13", "100", "-1", "x"):
        edit_text(f"n_sig={n}", record_field(1, n))
    for n, why in (("0", ""), ("1", "1 sample"), ("2", "2 samples"), ("249", "under 1 s"), ("999", "under 1 s"), ("1000", ""),
                   ("20000", ""), ("-5", ""), ("x", ""), ("1e4", "")):
        edit_text(f"samples={n}", record_field(3, n), must_fail=why)
    def signal_field(col, value, which=None):
        def fn(t):
            lines = t.splitlines()
            for k in range(1, 13):
                if which is None or k - 1 in which:
                    f = lines[k].split(); f[col] = value; lines[k] = " ".join(f)
            return "\n".join(lines) + "\n"
        return fn
    for g, why in (("0/mV", ""), ("-2000/mV", ""), ("nan/mV", "NaN gain"), ("inf/mV", "infinite gain"), ("1e-30/mV", ""),
                   ("2000/uV", ""), ("2000/furlong", ""), ("2000/", ""), ("2000(99999)/mV", ""), ("x/mV", ""), ("2000", "")):
        edit_text(f"gain={g} (all)", signal_field(2, g), must_fail=why)
        if g in ("0/mV", "nan/mV", "x/mV"): edit_text(f"gain={g} (lead i)", signal_field(2, g, {0}), must_fail=why)
    for fmt in ("8", "212", "80", "999", "0", "16x4", "24", "32", "61"):
        edit_text(f"fmt={fmt}", signal_field(1, fmt))
    edit_text("file=other.dat", signal_field(0, "other.dat"))
    edit_text("lead i renamed x", signal_field(8, "x", {0}))
    edit_text("checksum=abc", signal_field(6, "abc"))
    edit_text("adc_zero=abc", signal_field(4, "abc"))
    edit_text("byte offset 16+100000", signal_field(1, "16+100000"))
    edit_text("byte offset 16+2", signal_field(1, "16+2"))
    edit_text("no signal lines", lambda t: t.splitlines()[0] + "\n")
    edit_text("garbage line", lambda t: t.replace("\n", "\n\x00\xff garbage\n", 1))
    edit_text("binary prefix", lambda t: "\x00\xff\xfe" + t)
    edit_text("empty", lambda t: "")
    edit_text("comments only", lambda t: "# nothing here\n")
    edit_text("lead i twice", lambda t: "\n".join(t.splitlines()[:2] + t.splitlines()[1:]).replace(" 12 ", " 13 ", 1) + "\n")
    edit_text("CRLF", lambda t: t.replace("\n", "\r\n"))
    edit_text("dat empty", lambda t: t, dat_bytes=lambda: b"")
    edit_text("dat odd length", lambda t: t, dat_bytes=lambda: _bytes(dat)[:-1])
    edit_text("dat all 0x8000 (16-bit invalid samples)", lambda t: t, dat_bytes=lambda: b"\x00\x80" * (len(_bytes(dat)) // 2))
    edit_text("dat all zero", lambda t: t, dat_bytes=lambda: bytes(len(_bytes(dat))))
    edit_text("dat missing", lambda t: t.replace("s0010_re.dat", "gone.dat"))
    return V


# ---------------------------------------------------------------- NIfTI header edits (nibabel)
def _nifti_edit(src, label, changes, kind="volume", must_fail="", gz=None):
    import nibabel as nib
    def make(d):
        raw = _bytes(src)
        if str(src).endswith(".gz"): raw = gzip.decompress(raw)
        hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=False)
        for key, index, value in changes:
            if index is None: hdr.structarr[key] = value
            else: hdr.structarr[key][index] = value
        blob = hdr.binaryblock + raw[348:]
        zipped = str(src).endswith(".gz") if gz is None else gz
        name = Path(src).name.replace(".nii.gz", ".nii") + (".gz" if zipped else "")
        return _write(d, name, gzip.compress(blob, mtime=0) if zipped else blob)
    return Variant(f"nifti-header/{Path(src).name}/{label}", "nifti header", kind, make, must_fail=must_fail)

def _nifti_variants():
    anat, ex4d, func = _nibabel_file("anatomical.nii"), _nibabel_file("example4d.nii.gz"), _nibabel_file("functional.nii")
    V = []
    N = lambda src, label, changes, must_fail="", kind="volume": V.append(_nifti_edit(src, label, changes, kind, must_fail))
    for v in (0, 1, 2, 4, 8, -1, 9):
        N(anat, f"dim[0]={v}", [("dim", 0, v)])
    for i in (1, 2, 3):
        for v in (0, -1, 1, 32767):
            N(anat, f"dim[{i}]={v}", [("dim", i, v)], must_fail="0-pixel frames" if v == 0 and i < 3 else ("no frames" if v == 0 else ""))
    N(anat, "dim[1..3]=32767", [("dim", 1, 32767), ("dim", 2, 32767), ("dim", 3, 32767)])
    N(ex4d, "dim[4]=0", [("dim", 4, 0)])
    N(ex4d, "dim[1]=0", [("dim", 1, 0)], must_fail="0-pixel frames")
    N(func, "dim[3]=0", [("dim", 3, 0)], must_fail="no frames")
    for i in (1, 3):
        for v in (0.0, -1.0, float("nan"), float("inf"), 1e30):
            N(anat, f"pixdim[{i}]={v}", [("pixdim", i, v)])
    for code, bits in ((0, 16), (1, 1), (32, 64), (128, 24), (2304, 32), (1792, 128), (9999, 16), (16, 32), (64, 64),
                       (256, 8), (512, 16), (1024, 64), (2, 8)):
        N(anat, f"datatype={code} bitpix={bits}", [("datatype", None, code), ("bitpix", None, bits)])
    N(anat, "bitpix=0", [("bitpix", None, 0)])
    N(anat, "bitpix=7", [("bitpix", None, 7)])
    for v in (0.0, 1e9, -1.0, 347.0, 353.0, 68000.0):
        N(anat, f"vox_offset={v}", [("vox_offset", None, v)])
    for v, why in ((float("nan"), ""), (0.0, ""), (float("inf"), ""), (1e38, "non-finite after scaling"), (-1.0, "")):
        N(anat, f"scl_slope={v}", [("scl_slope", None, v)], must_fail=why)
    for v, why in ((float("nan"), ""), (float("inf"), "non-finite after scaling")):
        N(anat, f"scl_inter={v}", [("scl_inter", None, v)], must_fail=why)
    N(anat, "qform_code=1 quatern_b=nan", [("qform_code", None, 1), ("quatern_b", None, float("nan"))])
    N(anat, "sform_code=1 srow_x=nan", [("sform_code", None, 1), ("srow_x", None, [float("nan")] * 4)])
    N(anat, "sform_code=1 srow all zero", [("sform_code", None, 1), ("srow_x", None, [0] * 4), ("srow_y", None, [0] * 4), ("srow_z", None, [0] * 4)])
    N(anat, "qform_code=-1", [("qform_code", None, -1)])
    N(anat, "magic=xx1", [("magic", None, b"xx1\0")])
    N(anat, "sizeof_hdr=0", [("sizeof_hdr", None, 0)])
    N(anat, "sizeof_hdr=540", [("sizeof_hdr", None, 540)])
    N(anat, "xyzt_units=255", [("xyzt_units", None, 255)])
    N(anat, "dim_info=255 slice_code=99", [("dim_info", None, 255), ("slice_code", None, 99)])
    N(anat, "intent_code=1007 (vector)", [("intent_code", None, 1007)])
    V.append(_nifti_edit(anat, "gzipped dim[1]=0", [("dim", 1, 0)], must_fail="0-pixel frames", gz=True))
    V.append(_nifti_edit(anat, "gzipped dim[1..3]=32767", [("dim", 1, 32767), ("dim", 2, 32767), ("dim", 3, 32767)], gz=True))
    V.append(_nifti_edit(anat, "mask dim[1]=0", [("dim", 1, 0)], kind="mask", must_fail="0-pixel mask"))
    V.append(_nifti_edit(anat, "mask scl_slope=inf", [("scl_slope", None, float("inf"))], kind="mask"))  # NIfTI: no scaling
    V.append(_nifti_edit(anat, "mask scl_slope=1e38", [("scl_slope", None, 1e38)], kind="mask", must_fail="non-finite mask"))
    V.append(_nifti_edit(anat, "mask datatype=32", [("datatype", None, 32), ("bitpix", None, 64)], kind="mask"))
    return V


# ---------------------------------------------------------------- PNG chunk edits
def _png_chunks(data:bytes) -> list:
    out, pos = [], 8
    while pos + 8 <= len(data):
        n, = struct.unpack(">I", data[pos:pos + 4]); typ = data[pos + 4:pos + 8]
        out.append([typ, data[pos + 8:pos + 8 + n]]); pos += 12 + n
    return out

def _png_bytes(chunks, bad_crc=()) -> bytes:
    b = bytearray(b"\x89PNG\r\n\x1a\n")
    for typ, body in chunks:
        crc = zlib.crc32(typ + body) & 0xffffffff
        if typ in bad_crc: crc ^= 0xdeadbeef
        b += struct.pack(">I", len(body)) + typ + body + struct.pack(">I", crc)
    return bytes(b)

def _png_edit(src, label, fn, kind="image", must_fail=""):
    def make(d):
        chunks = [list(c) for c in _png_chunks(_bytes(src))]
        out = fn(chunks)
        return _write(d, Path(src).name, out if isinstance(out, bytes) else _png_bytes(chunks))
    return Variant(f"png-chunk/{Path(src).name}/{label}", "png chunks", kind, make, must_fail=must_fail)

def _png_variants():
    grey, rgb, mask = _skimage_file("microaneurysms.png"), _skimage_file("chessboard_RGB.png"), _demo_file("pathology/skimage/ihc_dab_mask.png")
    V = []
    def ihdr(**kw):
        def fn(chunks):
            w, h, bd, ct, cm, fm, il = struct.unpack(">IIBBBBB", chunks[0][1])
            vals = {**dict(width=w, height=h, bit_depth=bd, color_type=ct, compression=cm, filter=fm, interlace=il), **kw}
            chunks[0][1] = struct.pack(">IIBBBBB", *(vals[k] for k in ("width", "height", "bit_depth", "color_type", "compression", "filter", "interlace")))
        return fn
    for src, kind in ((grey, "image"), (rgb, "image"), (mask, "mask")):
        P = lambda label, fn, must_fail="": V.append(_png_edit(src, label, fn, kind, must_fail))
        for k, v in (("width", 0), ("width", 1), ("width", 0x7fffffff), ("height", 0), ("height", 1), ("width", 30000),
                     ("bit_depth", 0), ("bit_depth", 3), ("bit_depth", 16), ("bit_depth", 99), ("color_type", 1), ("color_type", 7),
                     ("color_type", 2), ("color_type", 6), ("color_type", 3), ("color_type", 0), ("compression", 1), ("filter", 1),
                     ("interlace", 1), ("interlace", 2)):
            P(f"IHDR {k}={v}", ihdr(**{k: v}))
        P("IHDR bad CRC", lambda c: _png_bytes(c, bad_crc=(b"IHDR",)))
        P("IDAT removed", lambda c: _png_bytes([x for x in c if x[0] != b"IDAT"]))
        P("IDAT half", lambda c: _png_bytes([[t, b[: len(b) // 2]] if t == b"IDAT" else [t, b] for t, b in c]))
        P("IDAT zlib flipped (CRC fixed)", lambda c: _png_bytes([[t, b[:len(b) // 2] + bytes([b[len(b) // 2] ^ 0x55]) + b[len(b) // 2 + 1:]]
                                                                 if t == b"IDAT" else [t, b] for t, b in c]))
        P("IDAT of zeros (too little data)", lambda c: _png_bytes([[t, zlib.compress(b"\0" * 10)] if t == b"IDAT" else [t, b] for t, b in c]))
        P("IEND removed", lambda c: _png_bytes([x for x in c if x[0] != b"IEND"]))
        P("critical unknown chunk", lambda c: _png_bytes(c[:1] + [[b"ABCD", b"xyz"]] + c[1:]))
        P("ancillary unknown chunk", lambda c: _png_bytes(c[:1] + [[b"abCd", b"xyz"]] + c[1:]))
        P("duplicate IHDR", lambda c: _png_bytes(c[:1] + c))
        P("PLTE of 1000 bytes", lambda c: _png_bytes(c[:1] + [[b"PLTE", b"\1" * 1000]] + c[1:]))
        P("huge zTXt", lambda c: _png_bytes(c[:1] + [[b"zTXt", b"k\0\0" + zlib.compress(b"a" * 20_000_000)]] + c[1:]))
        P("chunk length 0x7fffffff", lambda c: b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 0x7fffffff) + b"IHDR" + c[0][1])
    return V


# ---------------------------------------------------------------- ECG arrays (.npy, .pt)
def _ecg_array_variants():
    base = np.load(_demo_file("ecg/pydicom/waveform_ecg_8x2500.npy"))
    V = []
    def npy(label, make_array, must_fail="", name="ecg.npy", **kwargs):
        def make(d):
            p = Path(d) / name; np.save(p, make_array(), allow_pickle=True); return p
        V.append(Variant(f"ecg-array/{label}", "ecg arrays", "ecg", make, must_fail=must_fail, kwargs=kwargs))
    def pt(label, make_obj, must_fail="", **kwargs):
        def make(d):
            import torch
            p = Path(d) / "ecg.pt"; torch.save(make_obj(torch), p); return p
        V.append(Variant(f"ecg-array/{label}", "ecg arrays", "ecg", make, must_fail=must_fail, kwargs=kwargs))
    for dt in ("bool", "complex64", "complex128"):
        npy(f"npy dtype {dt}", lambda dt=dt: base.astype(dt), must_fail=f"{dt} is not a signal")
    for dt in ("int8", "int16", "uint64", "float16", "float64", ">f4"):
        npy(f"npy dtype {dt}", lambda dt=dt: base.astype(dt))
    npy("npy dtype object", lambda: base.astype(object))
    npy("npy dtype datetime64", lambda: base.astype("int64").astype("datetime64[s]"))
    npy("npy dtype str", lambda: base.astype(str))
    npy("npy structured", lambda: np.zeros((8, 2500), dtype=[("a", "f4"), ("b", "i4")]))
    for shape_label, arr, kw, why in (
            ("(2500, 8)", lambda: base.T.copy(), {}, ""), ("(12, 2500)", lambda: np.concatenate([base, base[:4]]), {}, ""),
            ("(8, 1) at 250 Hz", lambda: base[:, :1], dict(source_fs=250), "1 sample"),
            ("(8, 2) at 500 Hz", lambda: base[:, :2], dict(source_fs=500), "2 samples (resample_poly gives NaN)"),
            ("(8, 249) at 250 Hz", lambda: base[:, :249], dict(source_fs=250), "under 1 s"),
            ("(8, 250) at 250 Hz", lambda: base[:, :250], dict(source_fs=250), ""),
            ("(8, 100) at 1 Hz", lambda: base[:, :100], dict(source_fs=1), "1 Hz is not an ECG"),
            ("(8, 0)", lambda: base[:, :0], {}, ""), ("(0, 8)", lambda: np.zeros((0, 8), np.float32), {}, ""),
            ("(8, 0) at 250 Hz", lambda: base[:, :0], dict(source_fs=250), "no samples"),
            ("(8, 2500, 1)", lambda: base[..., None], {}, ""), ("(8,)", lambda: base[:, 0], {}, ""), ("()", lambda: np.float32(1), {}, ""),
            ("(8, 2499)", lambda: base[:, :2499], {}, ""), ("(8, 5000) at 500 Hz", lambda: np.repeat(base, 2, 1), dict(source_fs=500), ""),
            ("(8, 2500) at 257.3 Hz", lambda: base, dict(source_fs=257.3), ""),
            ("(8, 2500) at 333.333333 Hz", lambda: base, dict(source_fs=333.333333), ""),
            ("(8, 100000) at 10 kHz", lambda: np.repeat(base, 40, 1), dict(source_fs=10_000), ""),
            ("(8, 2500) at 300 kHz", lambda: base, dict(source_fs=300_000.0), "300 kHz: 8 ms of signal"),
            ("(8, 3000000) at 300 kHz", lambda: np.repeat(base, 1200, 1), dict(source_fs=300_000.0), ""),
            ("(8, 2500) at 10 MHz", lambda: base, dict(source_fs=1e7), "10 MHz"),
            ("(8, 2500) source_fs=nan", lambda: base, dict(source_fs=float("nan")), "NaN rate"),
            ("(8, 2500) source_fs=inf", lambda: base, dict(source_fs=float("inf")), "infinite rate"),
            ("(8, 2500) source_fs=-250", lambda: base, dict(source_fs=-250), "negative rate"),
            ("(8, 2500) source_fs=0", lambda: base, dict(source_fs=0), "rate 0"),
            ("(8, 2500) source_fs='250'", lambda: base, dict(source_fs="250"), ""),
            ("(8, 2500) fs=nan", lambda: base, dict(fs=float("nan")), "NaN output rate"),
            ("(8, 2500) seconds=0", lambda: base, dict(seconds=0), "no output"),
            ("(8, 2500) seconds=-1", lambda: base, dict(seconds=-1), "negative duration")):
        if "fs=nan" in shape_label or "seconds" in shape_label:
            continue  # the output options are checked by the notebook; the corpus keeps the (8, 2500) contract
        npy(shape_label, arr, must_fail=why, **kw)
    for label, arr, why in (("one NaN", lambda: np.where(np.arange(base.size).reshape(base.shape) == 777, np.nan, base), "NaN sample"),
                            ("one inf", lambda: np.where(np.arange(base.size).reshape(base.shape) == 5, np.inf, base), "inf sample"),
                            ("1e6 mV", lambda: base * 1e6, "implausible amplitude"), ("all zero (flat)", lambda: np.zeros_like(base), ""),
                            ("lead V1 constant", lambda: np.where(np.arange(8)[:, None] == 2, 1.0, base).astype(np.float32), ""),
                            ("1e-30 mV", lambda: base * 1e-30, ""), ("denormals", lambda: np.full_like(base, 1e-45), ""),
                            ("-0.0", lambda: np.full_like(base, -0.0), "")):
        npy(f"values {label}", arr, must_fail=why)
    npy("fortran order", lambda: np.asfortranarray(base))
    for label, obj, why in (("pt bool", lambda t: t.ones(8, 2500, dtype=t.bool), "bool is not a signal"),
                            ("pt complex64", lambda t: t.zeros(8, 2500, dtype=t.complex64) + 1j, "complex is not a signal"),
                            ("pt bfloat16", lambda t: t.from_numpy(base).bfloat16(), ""), ("pt float16", lambda t: t.from_numpy(base).half(), ""),
                            ("pt int64", lambda t: t.from_numpy(base).long(), ""), ("pt uint8", lambda t: t.from_numpy(base).to(t.uint8), ""),
                            ("pt float64", lambda t: t.from_numpy(base).double(), ""),
                            ("pt requires_grad", lambda t: t.from_numpy(base.copy()).requires_grad_(), ""),
                            ("pt (2500, 8)", lambda t: t.from_numpy(base.T.copy()), ""),
                            ("pt dict", lambda t: {"ecg": t.from_numpy(base)}, ""), ("pt list", lambda t: [t.from_numpy(base)], ""),
                            ("pt int", lambda t: 3, ""), ("pt sparse", lambda t: t.from_numpy(base).to_sparse(), ""),
                            ("pt NaN", lambda t: t.full((8, 2500), float("nan")), "NaN samples"),
                            ("pt (8, 1) at 500 Hz", lambda t: t.from_numpy(base[:, :1].copy()), "1 sample")):
        pt(label, obj, must_fail=why, **(dict(source_fs=500) if "at 500" in label else {}))
    return V


# ---------------------------------------------------------------- masks
def _mask_variants():
    V = []
    def npy(label, arr, must_fail=""):
        def make(d):
            p = Path(d) / "mask.npy"; np.save(p, arr(), allow_pickle=True); return p
        V.append(Variant(f"mask/{label}", "masks", "mask", make, must_fail=must_fail))
    m = np.zeros((40, 60), np.float32); m[5:20, 10:30] = 1
    npy("float 0/1", lambda: m)
    npy("NaN background", lambda: np.where(m > 0, 1.0, np.nan), must_fail="non-finite mask")
    npy("one inf", lambda: np.where(np.arange(m.size).reshape(m.shape) == 3, np.inf, m), must_fail="non-finite mask")
    npy("all NaN", lambda: np.full((40, 60), np.nan), must_fail="non-finite mask")
    npy("bool", lambda: m > 0); npy("uint8 255", lambda: (m * 255).astype(np.uint8)); npy("int labels", lambda: (m * 3).astype(np.int16))
    npy("complex", lambda: m.astype(np.complex64)); npy("object", lambda: m.astype(object)); npy("str", lambda: m.astype(str))
    npy("1-D", lambda: m.ravel()); npy("4-D", lambda: m[None, None]); npy("3-D", lambda: np.stack([m, m]))
    npy("(0, 0)", lambda: np.zeros((0, 0), np.uint8), must_fail="0-pixel mask"); npy("(3, 0, 5)", lambda: np.zeros((3, 0, 5), np.uint8), must_fail="0-pixel mask")
    npy("scalar", lambda: np.uint8(1))
    def nifti(label, data, must_fail=""):
        def make(d):
            import nibabel as nib
            p = Path(d) / "mask.nii.gz"; nib.save(nib.Nifti1Image(data(), np.eye(4)), p); return p
        V.append(Variant(f"mask/{label}", "masks", "mask", make, must_fail=must_fail))
    nifti("nifti 0/1", lambda: np.stack([m, m], -1).astype(np.uint8))
    nifti("nifti NaN", lambda: np.where(np.stack([m, m], -1) > 0, 1.0, np.nan).astype(np.float32), must_fail="non-finite mask")
    def dicom_mask(label, edit, must_fail=""):
        def make(d):
            ds = _dcm(_pydicom_file("MR_small.dcm"))
            with _LooseWriting(): edit(ds)
            return _save(ds, d, "mask.dcm")
        V.append(Variant(f"mask/{label}", "masks", "mask", make, must_fail=must_fail))
    dicom_mask("dicom MR_small as mask", lambda ds: None)
    dicom_mask("dicom Rows=1 Columns=1", _set(Rows=1, Columns=1), must_fail="Rows x Columns disagree with the pixel data")
    return V


# ---------------------------------------------------------------- folders (DICOM slices, image frames)
def _folder_variants():
    ct = _pydicom_file("CT_small.dcm")
    V = []
    def series(label, edit_slices, must_fail="", n=3, extra=None):
        def make(d):
            base = _dcm(ct)
            folder = Path(d) / "series"; folder.mkdir()
            files = []
            for k in range(n):
                ds = copy.deepcopy(base)
                px = ds.pixel_array.copy(); px[:8, :8] = 1000 + 50 * k
                ds.PixelData = px.tobytes()
                ds.ImagePositionPatient = [-158.1, -179.0, 5.0 * k]
                ds.InstanceNumber = k + 1
                files.append((folder / f"slice{k}.dcm", ds))
            with _LooseWriting(): edit_slices(files)
            for p, ds in files:
                if ds is not None: _save(ds, p.parent, p.name)
            if extra: extra(folder)
            return folder
        V.append(Variant(f"folder/dicom slices/{label}", "folders", "volume", make, must_fail=must_fail))
    def on(k, fn):
        def edit(files): fn(files[k][1])
        return edit
    def truncate(k, frac):
        def extra(folder):
            p = folder / f"slice{k}.dcm"; b = p.read_bytes()
            p.write_bytes(b[: int(len(b) * frac) if frac < 1 else frac])
        return extra
    series("good", lambda f: None)
    for frac in (0.5, 0.1, 1000, 200):
        V_label = f"slice1 truncated at {frac}"
        def make_edit(files): pass
        series(V_label, make_edit, must_fail="a truncated slice is skipped: 2 frames instead of 3", extra=truncate(1, frac))
    series("ImageOrientationPatient 3 values", on(1, _set(ImageOrientationPatient=[1, 0, 0])), must_fail="no slice normal")
    series("ImageOrientationPatient 3 values (all)", lambda f: [setattr(ds, "ImageOrientationPatient", [1, 0, 0]) for _, ds in f], must_fail="no slice normal")
    series("ImageOrientationPatient 7 values", on(0, _set(ImageOrientationPatient=[1, 0, 0, 0, 1, 0, 0])), must_fail="no slice normal")
    series("ImageOrientationPatient NaN", on(0, _set(ImageOrientationPatient=["nan", 0, 0, 0, 1, 0])), must_fail="NaN slice normal")
    series("ImageOrientationPatient all zero", on(0, _set(ImageOrientationPatient=[0, 0, 0, 0, 0, 0])), must_fail="degenerate slice normal")
    series("ImagePositionPatient NaN", on(1, _set(ImagePositionPatient=[0, 0, "nan"])), must_fail="NaN slice position")
    series("ImagePositionPatient 2 values", on(1, _set(ImagePositionPatient=[0, 0])), must_fail="slice position is not 3 numbers")
    series("ImagePositionPatient missing on one", on(1, _set(ImagePositionPatient=None)))
    series("ImagePositionPatient missing, InstanceNumber garbage",
           lambda f: [(delattr(ds, "ImagePositionPatient"), setattr(ds["InstanceNumber"], "_value", "abc")) for _, ds in f])
    series("duplicate positions", on(2, _set(ImagePositionPatient=[-158.1, -179.0, 0.0])))
    series("one slice MR (other size)", lambda f: f.__setitem__(1, (f[1][0], _dcm(_pydicom_file("MR_small.dcm")))))
    series("one slice Rows=64 Columns=256", on(1, _set(Rows=64, Columns=256)))
    series("one slice RescaleSlope=nan", on(1, _set(RescaleSlope="nan")), must_fail="non-finite values after the modality LUT")
    series("one slice MONOCHROME1", on(1, _set(PhotometricInterpretation="MONOCHROME1")))
    series("one slice colour", lambda f: f.__setitem__(1, (f[1][0], _dcm(_pydicom_file("SC_rgb_small_odd.dcm")))))
    series("multi-frame file inside", lambda f: f.__setitem__(1, (f[1][0], _dcm(_pydicom_file("emri_small.dcm")))))
    def dicomdir(folder):
        from pydicom.dataset import Dataset, FileMetaDataset
        ds = Dataset(); ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"; ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"; ds.SOPClassUID = "1.2.840.10008.1.3.10"
        ds.FileSetID = "FUZZ"; ds.DirectoryRecordSequence = []
        ds.save_as(folder / "DICOMDIR.dcm", enforce_file_format=True)
    series("with a DICOMDIR", lambda f: None, extra=dicomdir)
    series("with an empty .dcm", lambda f: None, extra=lambda folder: (folder / "zz.dcm").write_bytes(b""))
    series("with a text .dcm", lambda f: None, extra=lambda folder: (folder / "notes.dcm").write_text("not DICOM"))
    series("with a README", lambda f: None, extra=lambda folder: (folder / "README.txt").write_text("hello"))
    series("one slice", lambda f: None, n=1)
    def frames(label, write, must_fail=""):
        def make(d):
            from PIL import Image
            folder = Path(d) / "frames"; folder.mkdir()
            cam = np.asarray(Image.open(_skimage_file("camera.png")))
            write(folder, cam, Image)
            return folder
        V.append(Variant(f"folder/image frames/{label}", "folders", "volume", make, must_fail=must_fail))
    def n_frames(folder, cam, Image, sizes=((64, 64),) * 3, modes=("L",) * 3):
        for k, ((h, w), mode) in enumerate(zip(sizes, modes)):
            Image.fromarray(cam[k * 10:k * 10 + h, :w]).convert(mode).save(folder / f"f{k}.png")
    frames("good", n_frames)
    frames("mixed sizes", lambda f, c, I: n_frames(f, c, I, sizes=((64, 64), (64, 64), (80, 64))), must_fail="frames of different sizes")
    frames("grey and RGB", lambda f, c, I: n_frames(f, c, I, modes=("L", "RGB", "L")))
    frames("16-bit frame", lambda f, c, I: (n_frames(f, c, I), I.fromarray(c[:64, :64].astype(np.uint16) * 200).save(f / "f1.png")))
    frames("one truncated", lambda f, c, I: (n_frames(f, c, I), (f / "f1.png").write_bytes((f / "f1.png").read_bytes()[:100])))
    frames("one not an image", lambda f, c, I: (n_frames(f, c, I), (f / "f1.png").write_text("text")))
    frames("empty folder", lambda f, c, I: None)
    frames("only a subfolder", lambda f, c, I: (f / "sub").mkdir())
    return V


# ---------------------------------------------------------------- whole files: truncations and flips
def _file_sources(full:bool):
    "(path, kind, extra files written next to it, loader kwargs, name) of every real file the byte-level variants damage."
    S = []
    for name, kind in (("CT_small.dcm", "image"), ("MR_small.dcm", "image"), ("emri_small.dcm", "volume"), ("examples_ybr_color.dcm", "volume"),
                       ("SC_rgb_jpeg_dcmtk.dcm", "image"), ("MR_small_RLE.dcm", "image"), ("JPEG2000.dcm", "image"),
                       ("examples_palette.dcm", "image"), ("waveform_ecg.dcm", "ecg"), ("emri_small_jpeg_2k_lossless.dcm", "volume")):
        p = _pydicom_file(name)
        if p: S.append((p, kind, (), {}, None))
    rg1 = _pydicom_file("RG1_UNCR.dcm")  # pydicom-data, 7 MB
    if rg1 and full: S.append((rg1, "image", (), {}, None))
    for name in ("anatomical.nii", "example4d.nii.gz", "functional.nii", "standard.nii.gz"):
        S.append((_nibabel_file(name), "volume", (), {}, None))
    for name, kind in (("microaneurysms.png", "image"), ("chessboard_RGB.png", "image"), ("text.png", "image"), ("rocket.jpg", "image"),
                       ("multipage.tif", "volume"), ("no_time_for_that_tiny.gif", "volume")):
        S.append((_skimage_file(name), kind, (), {}, None))
    S.append((_demo_file("fundus/skimage/retina.jpg"), "image", (), {}, None))
    S.append((_demo_file("pathology/skimage/ihc_dab_mask.png"), "mask", (), {}, None))
    S.append((_demo_file("ecg/pydicom/waveform_ecg_8x2500.npy"), "ecg", (), {}, None))
    hea, dat = _demo_file("ecg/ptb/s0010_re.hea"), _demo_file("ecg/ptb/s0010_re.dat")
    S.append((dat, "ecg-wfdb", (hea,), {}, None))
    S.append((hea, "ecg-wfdb", (dat,), {}, None))
    return S

def _byte_variants(full:bool):
    V = []
    n_flips = 12 if full else 2
    fractions = [0.0, 0.002, 0.01, 0.05, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999][:10]
    for src, kind, extra, kwargs, name in _file_sources(full):
        fam_t, fam_f = "truncations", "byte flips"
        k = "ecg" if kind == "ecg-wfdb" else kind
        picks = fractions if full else [0.05, 0.5]
        t = _truncations(src, k, fam_t, picks, extra_files=extra, kwargs=kwargs, fast_n=1)
        f = _flips(src, k, fam_f, n_flips, extra_files=extra, kwargs=kwargs, fast_n=1)
        if kind == "ecg-wfdb":  # the loader is given the record name, not the damaged file
            for v in t + f:
                mk = v.make
                v.make = lambda d, mk=mk: (mk(d), Path(d) / "s0010_re")[1]
        V += t + f
    return V


# ---------------------------------------------------------------- JSONL lines
BASE = {"problem": "What is the diagnosis?", "answer": "a", "domain": "ehr"}
LINE3 = {"problem": "Second question?", "answer": "", "domain": "ehr"}  # a known problem (empty answer) after the mutated line

def _deep(n): return json.loads("[" * n + "]" * n)

JSON_VALUES = [("42", 42), ("-1", -1), ("0", 0), ("1.5", 1.5), ("1e308", 1e308), ("NaN", float("nan")), ("Infinity", float("inf")),
               ("true", True), ("false", False), ("null", None), ("''", ""), ("'   '", "   "), ("huge string", "x" * 200_000),
               ("[]", []), ("['a']", ["a"]), ("[1]", [1]), ("[null]", [None]), ("[true]", [True]), ("[[]]", [[]]), ("[['a']]", [["a"]]),
               ("{}", {}), ("{'a': 1}", {"a": 1}), ("nested garbage", [[[{"a": [1, {"b": None}]}]]]), ("60 levels deep", _deep(60)),
               ("NUL", "\u0000"), ("lone surrogate", "\ud800"), ("path with NUL", "a\u0000b.png"), ("5000-char path", "a" * 5000 + ".png"),
               ("'.'", "."), ("['']", [""]), ("['a', 3]", ["a", 3]), ("[1, 2, 3, 4]", [1, 2, 3, 4]), ("[0, 0, 0, 0]", [0, 0, 0, 0]),
               ("[[0, 0, 10, 10]]", [[0, 0, 10, 10]]), ("[1, 2, 3, NaN]", [1, 2, 3, float("nan")]), ("'CT'", "CT"), ("'cxr'", "cxr"),
               ("['x.png']", ["x.png"]), ("'x.png'", "x.png"), ("['a', 'b']", ["a", "b"]), ("2**70", 2 ** 70)]
KEYS = ("problem", "prompt", "answer", "images", "videos", "time-series", "time_series", "segmentation_path", "bbox", "choices",
        "domain", "dataset", "id", "site")

def _finite_number(v): return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(float(v))

def _expect(key, v) -> str:
    "'ok' if the mutated record is valid, 'problem' if it must be reported."
    text = lambda v: isinstance(v, str) and bool(v.strip())
    if key in ("problem", "prompt"): return "ok" if text(v) else "problem"
    if key == "answer":
        good = text(v) or _finite_number(v) or (isinstance(v, list) and v and all(isinstance(a, str) for a in v) and ", ".join(v).strip())
        return "ok" if good else "problem"
    if key == "segmentation_path": return "ok" if v is None or v == "" else "problem"
    if key in ("images", "videos", "time-series", "time_series"): return "ok" if v is None or v == "" or v == [] else "problem"
    if key == "bbox":
        zeros = lambda b: isinstance(b, list) and len(b) == 4 and all(_finite_number(x) and x == 0 for x in b)
        return "ok" if v is None or v == [] or zeros(v) or (isinstance(v, list) and len(v) == 1 and zeros(v[0])) else "problem"
    if key == "choices":  # strings or numbers, at least two, distinct, the answer "a" among them
        ok = isinstance(v, list) and len(v) >= 2 and "a" in v and all(text(c) or _finite_number(c) for c in v) and len({str(c) for c in v}) == len(v)
        return "ok" if v is None or ok else "problem"
    if key == "domain":
        from qoqmed.data import normalize_domain
        return "ok" if v is None or v == "" or (isinstance(v, str) and normalize_domain(v) is not None) else "problem"
    if key in ("dataset", "id"): return "ok" if v is None or isinstance(v, str) or _finite_number(v) else "problem"
    return "ok"

FIELDS = {"problem": ("problem",), "prompt": ("problem", "prompt"), "answer": ("answer",), "images": ("images",), "videos": ("videos",),
          "time-series": ("time-series",), "time_series": ("time-series", "time_series"), "segmentation_path": ("segmentation_path",),
          "bbox": ("bbox",), "choices": ("choices", "answer"), "domain": ("domain",), "dataset": ("dataset",), "id": ("id",), "site": ()}

def _jsonl_variant(label, line2:bytes, expect:str, fields=(), fast=True):
    def make(d):
        good, line3 = json.dumps(BASE).encode(), json.dumps(LINE3).encode()
        p = _write(d, "data.jsonl", good + b"\n" + line2 + b"\n" + line3 + b"\n")
        _write(d, "two.jsonl", good + b"\n" + line2 + b"\n")
        return p
    return Variant(f"jsonl/{label}", "jsonl lines", "jsonl", make, must_fail="must be reported" if expect == "problem" else "",
                   kwargs=dict(expect=expect), fast=fast, fields=fields)

def _jsonl_variants():
    V = []
    for ki, key in enumerate(KEYS):
        for vi, (vlabel, v) in enumerate(JSON_VALUES):
            rec = dict(BASE)
            if key == "prompt": rec.pop("problem")
            if key == "choices": rec["choices"] = None
            rec[key] = v
            if key == "choices" and v is None: rec.pop("choices")
            line = json.dumps(rec).encode()
            V.append(_jsonl_variant(f"{key}={vlabel}", line, _expect(key, v), FIELDS[key], fast=(vi + ki) % 4 == 0))
    whole = [("not UTF-8 (0xff)", b'{"problem": "q\xff", "answer": "a", "domain": "ehr"}', "problem"),
             ("UTF-16 BOM", b"\xff\xfe{\x00}\x00", "problem"), ("overlong UTF-8", b'{"problem": "\xc0\xaf", "answer": "a"}', "problem"),
             ("UTF-8 surrogate", b'{"problem": "\xed\xa0\x80", "answer": "a", "domain": "ehr"}', "problem"),
             ("Latin-1 text", '{"problem": "Herzinfarkt über", "answer": "a", "domain": "ehr"}'.encode("latin-1"), "problem"),
             ("truncated JSON", json.dumps(BASE).encode()[:-5], "problem"), ("top-level list", b"[1, 2]", "problem"),
             ("top-level number", b"42", "problem"), ("top-level string", b'"text"', "problem"), ("top-level null", b"null", "problem"),
             ("top-level NaN", b"NaN", "problem"), ("trailing garbage", json.dumps(BASE).encode() + b" x", "problem"),
             ("two objects", json.dumps(BASE).encode() * 2, "problem"), ("NUL bytes", b"\x00\x00", "problem"),
             ("100000 open braces", b"{" * 100_000, "problem"), ("5000-deep list", b"[" * 5000 + b"]" * 5000, "problem"),
             ("5000-digit number", b'{"problem": "q", "answer": 1' + b"0" * 5000 + b', "domain": "ehr"}', "problem"),
             ("duplicate key (last wins: 5)", b'{"problem": "q", "problem": 5, "answer": "a", "domain": "ehr"}', "problem"),
             ("BOM in the middle", b"\xef\xbb\xbf" + json.dumps(BASE).encode(), "problem"),
             ("2 MB line", json.dumps({**BASE, "note": "n" * 2_000_000}).encode(), "ok"),
             ("CR at the end", json.dumps(BASE).encode() + b"\r", "ok"), ("blank (tabs)", b" \t ", "ok"),
             ("CR-separated records", json.dumps(BASE).encode() + b"\r" + json.dumps(BASE).encode(), "problem"),
             ("Ctrl-Z", b"\x1a", "problem"), ("escaped NUL key", b'{"\\u0000": 1, "problem": "q", "answer": "a", "domain": "ehr"}', "ok")]
    for label, line, expect in whole:
        V.append(_jsonl_variant(label, line, expect, (), fast=True))
    return V


# ---------------------------------------------------------------- the corpus
FAST_STRIDE = {"dicom tags": 3, "dicom waveform": 3, "wfdb header": 3, "nifti header": 3, "png chunks": 4, "ecg arrays": 3,
               "folders": 2, "jsonl lines": 2}

@lru_cache(maxsize=None)
def corpus(full:bool=FULL) -> tuple:
    V = (_dicom_image_variants() + _dicom_ecg_variants() + _wfdb_variants() + _nifti_variants() + _png_variants()
         + _ecg_array_variants() + _mask_variants() + _folder_variants() + _byte_variants(full) + _jsonl_variants())
    ids = [v.id for v in V]
    dup = [i for i, n in Counter(ids).items() if n > 1]
    assert not dup, dup
    seen = Counter()
    for v in V:  # the fast subset: every variant that must fail, and every FAST_STRIDE-th of the others in its family
        v.fast = v.fast and (bool(v.must_fail) and v.family != "jsonl lines" or seen[v.family] % FAST_STRIDE.get(v.family, 1) == 0)
        seen[v.family] += 1
    return tuple(v for v in V if full or v.fast)


# ---------------------------------------------------------------- checks
def _image_problem(im):
    from PIL import Image
    if not isinstance(im, Image.Image): return f"not a PIL image but {type(im).__name__}"
    if im.mode != "RGB": return f"mode {im.mode}, not RGB"
    w, h = im.size
    if w < 1 or h < 1: return f"{w}x{h} pixels"
    a = np.asarray(im)
    if a.dtype != np.uint8 or a.shape != (h, w, 3): return f"array {a.dtype} {a.shape}"
    return None

def _result_problem(kind, out):
    if kind == "image": return _image_problem(out)
    if kind == "volume":
        if not isinstance(out, list) or not out: return "no frames"
        bad = next((p for p in map(_image_problem, out) if p), None)
        if bad: return f"frame: {bad}"
        if len({f.size for f in out}) > 1: return f"frames of different sizes {sorted({f.size for f in out})}"
        return None
    if kind == "ecg":
        if not isinstance(out, np.ndarray): return f"not an array but {type(out).__name__}"
        if out.shape != (8, 2500) or out.dtype != np.float32: return f"{out.dtype} {out.shape}, not float32 (8, 2500)"
        if not np.isfinite(out).all(): return f"{int((~np.isfinite(out)).sum())} non-finite samples"
        return None
    if kind == "mask":
        if not isinstance(out, np.ndarray): return f"not an array but {type(out).__name__}"
        if out.dtype != bool or out.ndim not in (2, 3) or 0 in out.shape: return f"{out.dtype} {out.shape}"
        return None
    raise ValueError(kind)

def _run_loader(mod, kind, path, kwargs):
    if kind == "image": return mod.load_image(path)
    if kind == "volume": return mod.load_volume(path)
    if kind == "ecg": return mod.load_ecg(path, **kwargs)
    if kind == "mask": return mod.load_mask(path)
    raise ValueError(kind)

def _severity(p): return getattr(p, "severity", "error")

def _run_jsonl(v, mod, folder, path):
    expect = v.kwargs["expect"]
    try: probs = mod.validate_jsonl(path)
    except mod.DataError as e: return UNNAMED if str(path) not in str(e) else RAW, f"validate_jsonl raised DataError: {str(e)[:200]}"
    except BaseException as e: return RAW, f"validate_jsonl: {type(e).__name__}: {str(e)[:200]}"
    if not any(p.line == 3 and p.field == "answer" for p in probs): return WRONG, "line 3 was not checked after the mutated line"
    if any(p.line == 1 for p in probs): return WRONG, f"good line 1 reported: {str(probs[0])[:200]}"
    if not all(str(path) in str(p) for p in probs): return UNNAMED, f"problem without the file: {str([str(p)[:100] for p in probs])[:300]}"
    line2 = [p for p in probs if p.line == 2 and _severity(p) == "error"]
    two = folder / "two.jsonl"
    try:
        items = list(mod.iter_jsonl(two))
        recs = mod.read_jsonl(two); read_err = None
    except mod.DataError as e: read_err = e
    except BaseException as e: return RAW, f"read_jsonl/iter_jsonl: {type(e).__name__}: {str(e)[:200]}"
    structural = read_err is not None
    if structural and f"{two}:2" not in str(read_err): return UNNAMED, f"read_jsonl error without file:line: {str(read_err)[:200]}"
    if structural and not line2: return WRONG, f"read_jsonl refused line 2 but validate_jsonl did not: {str(read_err)[:200]}"
    if not structural and len(recs) != (2 if items and items[-1].line == 2 else 1): return WRONG, f"read_jsonl returned {len(recs)} records"
    if expect == "problem" and not line2: return WRONG, "a bad line was accepted"
    if expect == "ok" and line2: return WRONG, f"a valid line was refused: {str(line2[0])[:200]}"
    if line2 and v.fields and not any(p.field and p.field.split("[")[0] in v.fields for p in line2):
        return WRONG, f"problem does not name the field ({'/'.join(v.fields)}): {str(line2[0])[:200]}"
    return (ERR, str(line2[0])[:200]) if line2 else (GOOD, "")

def run_variant(v:Variant, mod, folder:Path) -> tuple[str, str]:
    "(outcome, detail) of one variant against the module `mod` (qoqmed.data or another copy of it)."
    folder = Path(folder); folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try: path = v.make(folder)
        except Exception as e: raise RuntimeError(f"the fuzz builder of {v.id} failed: {type(e).__name__}: {e}") from e
        if v.kind == "jsonl": return _run_jsonl(v, mod, folder, path)
        kwargs = {k: x for k, x in v.kwargs.items()}
        try: out = _run_loader(mod, v.kind, path, kwargs)
        except mod.DataError as e:
            return (ERR, str(e)[:300]) if str(folder) in str(e) else (UNNAMED, str(e)[:300])
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt): raise
            return RAW, f"{type(e).__name__}: {str(e)[:300]}"
    bad = _result_problem(v.kind, out)
    if bad: return WRONG, bad
    if v.must_fail: return WRONG, f"loaded although {v.must_fail}"
    return GOOD, ""


# ---------------------------------------------------------------- table
def outcome_table(results:dict) -> str:
    "Markdown table: families x outcomes, with a total row."
    fams = list(dict.fromkeys(fam for fam, _ in results))
    rows = ["| family | variants | " + " | ".join(OUTCOMES) + " |", "|---|---:|" + "---:|" * len(OUTCOMES)]
    tot = Counter()
    for fam in fams:
        c = Counter(o for (f, _), (o, _) in results.items() if f == fam); tot += c
        rows.append(f"| {fam} | {sum(c.values())} | " + " | ".join(str(c[o]) for o in OUTCOMES) + " |")
    rows.append(f"| **all** | **{sum(tot.values())}** | " + " | ".join(f"**{tot[o]}**" for o in OUTCOMES) + " |")
    return "\n".join(rows)

def run_corpus(mod, full:bool=FULL, folder=None, progress=False) -> dict:
    "{(family, id): (outcome, detail)} for every variant of the corpus."
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(folder or tmp)
        for i, v in enumerate(corpus(full)):
            results[(v.family, v.id)] = run_variant(v, mod, base / f"v{i:04d}")
            if progress and i % 100 == 0: print(f"{i} variants...", file=sys.stderr)
    return results

def _load_module(path):
    spec = importlib.util.spec_from_file_location("qoqmed_data_under_test", path)
    mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- pytest
_RESULTS = {}

@pytest.fixture(scope="module", autouse=True)
def _print_table():
    yield
    if _RESULTS:
        print(f"\nReliability fuzz corpus ({'full' if FULL else 'fast subset'}, seed {SEED}): {len(_RESULTS)} variants")
        print(outcome_table(_RESULTS))

@pytest.mark.parametrize("variant", corpus(FULL), ids=lambda v: v.id.replace(" ", "_")[:120])
def test_fuzz_variant(variant, tmp_path):
    import qoqmed.data as mod
    outcome, detail = run_variant(variant, mod, tmp_path / "v")
    _RESULTS[(variant.family, variant.id)] = (outcome, detail)
    assert outcome in (GOOD, ERR), f"{variant.id}: {outcome}: {detail}"

def test_corpus_size():
    "The full corpus keeps at least 540 variants; the fast subset a few hundred."
    assert len(corpus(True)) >= 540
    assert 200 <= len(corpus(False)) <= 500 < len(corpus(True))


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="Print the outcome table of the reliability fuzz corpus.")
    ap.add_argument("--full", action="store_true", help="the full corpus (default: the fast subset)")
    ap.add_argument("--module", default=None, help="run against this copy of qoqmed/data.py (e.g. the original, for a before/after)")
    ap.add_argument("--show-bad", action="store_true", help="list every failing variant with its detail")
    a = ap.parse_args()
    if a.full: FULL = True
    mod = _load_module(a.module) if a.module else __import__("qoqmed.data", fromlist=["data"])
    t0 = time.time()
    res = run_corpus(mod, full=a.full or FULL, progress=True)
    print(f"Reliability fuzz corpus ({'full' if a.full else 'fast subset'}, seed {SEED}, module {mod.__file__}): "
          f"{len(res)} variants in {time.time() - t0:.0f} s")
    print(outcome_table(res))
    if a.show_bad:
        for (fam, vid), (o, d) in res.items():
            if o not in (GOOD, ERR): print(f"{o:32s} {vid}: {d}")
