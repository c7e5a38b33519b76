"""Peak memory of one sample, per kind of file, before and after issue 14's bounded media loaders.

"before" is `qoqmed/media.py` at git revision 6ee5111 (whole-volume decoding, float64 windowing), "after" the working tree's.
Each measurement runs in a fresh subprocess: the growth of the peak resident set during the call (on Linux the high-water
mark is reset after the imports through /proc/self/clear_refs, so the peak is VmHWM minus VmRSS before the call; elsewhere
ru_maxrss after minus after the imports), the wall time of the call, and the tracemalloc peak of a second call. Files are generated in a temporary folder.

    python bench/media_memory.py           # full sizes: 512x512x300 CT, 300-frame DICOM, a 13000x13000 PNG bomb (a few minutes)
    python bench/media_memory.py --quick   # small sizes, under ~30 s
"""
from __future__ import annotations
import argparse, gzip, importlib.util, json, os, re, struct, subprocess, sys, tempfile, time, zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "6ee5111"


def before_module(folder) -> Path:
    "Write media.py of revision BEFORE to `folder` (it imports only numpy and PIL at the top; pydicom, nibabel, wfdb lazily)."
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{BEFORE}:qoqmed/media.py"], capture_output=True, text=True, check=True).stdout
    p = Path(folder) / "qoqmed_media_before.py"
    p.write_text(src)
    return p


def import_file(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- files
def dicom_2d(path, size:int):
    "CT_small.dcm re-sized to size x size signed 16-bit pixels (a ramp), intercept -1024, no window."
    import pydicom
    from pydicom.data import get_testdata_file
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows = ds.Columns = size
    ds.PixelData = ((np.arange(size * size) % 3000) - 1000).astype(np.int16).tobytes()
    ds.save_as(path)


def dicom_multiframe(path, frames:int, size:int):
    "emri_small.dcm (enhanced MR, native uint16) with `frames` frames of size x size: 2 bytes a pixel."
    import pydicom
    from pydicom.data import get_testdata_file
    ds = pydicom.dcmread(get_testdata_file("emri_small.dcm"))
    ds.Rows = ds.Columns = size
    ds.NumberOfFrames = frames
    ramp = (np.arange(size * size, dtype=np.uint32) % 4000).astype(np.uint16).reshape(size, size)
    ds.PixelData = b"".join((ramp + k).tobytes() for k in range(frames))
    ds.save_as(path)


def nifti(path, shape, zeros=False):
    "An int16 NIfTI (.nii or .nii.gz) of `shape`, 1 x 1 x 2.5 mm, streamed to disk one slice at a time."
    import nibabel
    hdr = nibabel.Nifti1Header()
    hdr.set_data_shape(shape); hdr.set_data_dtype(np.int16); hdr.set_zooms((1.0, 1.0, 2.5))
    hdr.set_qform(np.diag([1.0, 1.0, 2.5, 1.0]), code=1); hdr.set_sform(np.diag([1.0, 1.0, 2.5, 1.0]), code=1)
    hdr["vox_offset"] = 352
    slab = ((np.arange(shape[0] * shape[1]) % 3000) - 1000).astype(np.int16)
    opener = (lambda p: gzip.open(p, "wb", compresslevel=1)) if str(path).endswith(".gz") else (lambda p: open(p, "wb"))
    with opener(path) as f:
        f.write(hdr.binaryblock + b"\0" * 4)
        for k in range(shape[2]): f.write((np.zeros_like(slab) if zeros else slab + k).tobytes())


def wfdb_ecg(folder, name="ecg"):
    "A 12-lead, 10 s, 500 Hz WFDB record in mV."
    import wfdb
    leads = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    t = np.arange(5000) / 500
    sig = np.stack([0.5 * np.sin(2 * np.pi * 1.2 * t + k) for k in range(12)], 1)
    wfdb.wrsamp(name, fs=500, units=["mV"] * 12, sig_name=leads, p_signal=sig, fmt=["16"] * 12, write_dir=str(folder))
    return Path(folder) / name


def png16_zeros(path, width:int, height:int):
    "A 16-bit grey PNG of zeros, compressed row by row (the image never exists in memory): a tiny file declaring many pixels."
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    z, row, body = zlib.compressobj(9), b"\0" * (1 + 2 * width), []
    for _ in range(height): body.append(z.compress(row))
    body.append(z.flush())
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)))
        f.write(chunk(b"IDAT", b"".join(body)) + chunk(b"IEND", b""))


def make_files(folder, quick:bool) -> list[tuple]:
    "(label, loader, path, kwargs) for every sample kind."
    d = Path(folder)
    ct, frames, mf, ct_frames, zero_frames, bomb = ((256, 60, 256, 60, 300, 3000) if quick else (512, 300, 512, 300, 1000, 13000))
    dicom_2d(d / "ct.dcm", ct)
    dicom_multiframe(d / "cine.dcm", frames, mf)
    nifti(d / "ct.nii", (mf, mf, ct_frames)); nifti(d / "ct.nii.gz", (mf, mf, ct_frames))
    nifti(d / "zeros.nii.gz", (mf, mf, zero_frames), zeros=True)
    ecg = wfdb_ecg(d)
    png16_zeros(d / "bomb.png", bomb, bomb)
    return [(f"2-D DICOM {ct}x{ct} int16", "load_image", d / "ct.dcm", {}),
            (f"multi-frame DICOM {frames}x{mf}x{mf} uint16, load_volume(max_frames=8)", "load_volume", d / "cine.dcm", {"max_frames": 8}),
            (f"multi-frame DICOM {frames}x{mf}x{mf} uint16, load_image (middle frame)", "load_image", d / "cine.dcm", {}),
            (f"NIfTI CT {mf}x{mf}x{ct_frames} int16 .nii, max_frames=8", "load_volume", d / "ct.nii", {"max_frames": 8}),
            (f"NIfTI CT {mf}x{mf}x{ct_frames} int16 .nii.gz, max_frames=8", "load_volume", d / "ct.nii.gz", {"max_frames": 8}),
            (f"NIfTI zeros {mf}x{mf}x{zero_frames} int16 .nii.gz, max_frames=8", "load_volume", d / "zeros.nii.gz", {"max_frames": 8}),
            ("WFDB ECG 12 leads x 10 s at 500 Hz", "load_ecg", ecg, {}),
            (f"16-bit PNG of zeros {bomb}x{bomb}", "load_image", d / "bomb.png", {})]


# ---------------------------------------------------------------- measuring
def child(module_path, loader, path, kwargs):
    "In a fresh process: import, take the baseline peak RSS, load one sample, report the growth of the peak and the time."
    import resource
    import PIL.Image, pydicom, nibabel  # noqa: F401  (the lazy imports, so they count in the baseline, not in the sample)
    if loader == "load_ecg": import wfdb, scipy.signal  # noqa: F401
    mod = import_file(module_path, "media_under_test")
    status = lambda key: int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))  # kB
    try:  # Linux: reset the high-water mark to the current RSS, so memory freed after the imports does not hide growth
        Path("/proc/self/clear_refs").write_text("5"); base, peak_of = status("VmRSS"), lambda: status("VmHWM")
    except OSError:
        base, peak_of = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    try: out, outcome = getattr(mod, loader)(path, **kwargs), "ok"
    except mod.DataError as e: out, outcome = None, f"DataError: {str(e).split(': ', 1)[-1][:60]}"
    seconds = time.perf_counter() - t0
    peak = peak_of()
    del out
    import tracemalloc  # a second call under tracemalloc: the peak of Python and numpy allocations, exact at any size
    tracemalloc.start()
    try: getattr(mod, loader)(path, **kwargs)
    except mod.DataError: pass
    traced = tracemalloc.get_traced_memory()[1]
    print(json.dumps({"mb": (peak - base) / 1024, "traced_mb": traced / 2**20, "seconds": seconds, "outcome": outcome}))


def measure(module_path, loader, path, kwargs, env) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps([str(module_path), loader, str(path), kwargs])]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if out.returncode != 0: return {"mb": float("nan"), "traced_mb": float("nan"), "seconds": float("nan"), "outcome": f"crashed ({out.returncode}): {out.stderr[-200:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(quick:bool):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if quick: env["QOQMED_MAX_PIXELS"] = str(2**22)  # the small bomb (3000 x 3000) is over this budget
    with tempfile.TemporaryDirectory() as tmp:
        before, after = before_module(tmp), ROOT / "qoqmed" / "media.py"
        rows = []
        for label, loader, path, kwargs in make_files(tmp, quick):
            b, a = measure(before, loader, path, kwargs, env), measure(after, loader, path, kwargs, env)
            rows.append((label, Path(path).stat().st_size / 2**20 if Path(path).exists() else 0, b, a))
    print(f"peak RSS growth per sample (MB; the high-water mark during the call minus the RSS before it), before ({BEFORE}) vs after, "
          f"and the tracemalloc peak of a second call; {'--quick sizes' if quick else 'full sizes'}\n")
    print("| sample | file MB | before MB | after MB | before/after | traced before MB | traced after MB | before s | after s | after outcome |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for label, size, b, a in rows:
        ratio = ("-" if b["mb"] < 1 else f">= {b['mb']:.0f}x") if a["mb"] < 1 else f"{b['mb'] / a['mb']:.1f}x"  # RSS: ~1 MB resolution
        print(f"| {label} | {size:.2f} | {b['mb']:.0f} | {a['mb']:.0f} | {ratio} | {b['traced_mb']:.1f} | {a['traced_mb']:.1f} | {b['seconds']:.2f} | {a['seconds']:.2f} | {a['outcome']} |")
        if b["outcome"] != "ok": print(f"|   (before: {b['outcome']}) | | | | | | | | | |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (under ~30 s)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        module_path, loader, path, kwargs = json.loads(args.child)
        child(module_path, loader, path, kwargs)
    else: main(args.quick)
