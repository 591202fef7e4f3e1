"""Make small DICOM files in code (tests use `make_dicom`; nothing binary is committed).

    python scripts/make_dicom_fixture.py IN.png OUT.dcm [--bits 12] [--mono1]
        [--window CENTER WIDTH] [--slope S --intercept I] [--frames N]

turns any grayscale picture (e.g. a JSRT film) into a DICOM so the Classify page's
DICOM path can be tried by hand. Pixel values are stored so that, after the rescale,
window and MONOCHROME1 inversion, the DICOM displays like the input.
"""
from __future__ import annotations

import argparse
import io
import sys

import numpy as np

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def make_dicom(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    window: tuple | None = None,          # (center, width); each may be a list (multi-valued)
    slope: float | None = None,
    intercept: float | None = None,
    voi_function: str | None = None,
    preamble: bool = True,                # False: a raw dataset without 'DICM' / file meta
    with_pixels: bool = True,
) -> bytes:
    """DICOM bytes for `pixels`: uint8/uint16/int16 (H, W), (F, H, W) multi-frame, or
    uint8 (H, W, 3) RGB. Explicit VR little endian, uncompressed."""
    from pydicom import dcmwrite
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    a = np.ascontiguousarray(pixels)
    rgb = a.ndim == 3 and a.shape[-1] == 3 and photometric == "RGB"
    frames = 1 if (a.ndim == 2 or rgb) else a.shape[0]
    rows, cols = (a.shape[0], a.shape[1]) if (a.ndim == 2 or rgb) else (a.shape[1], a.shape[2])
    bits_alloc = a.dtype.itemsize * 8

    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.PatientName = "Phantom^Test"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 3 if rgb else 1
    if rgb:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_alloc
    ds.BitsStored = bits_stored or bits_alloc
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if a.dtype.kind == "i" else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_function:
        ds.VOILUTFunction = voi_function
    if slope is not None or intercept is not None:
        ds.RescaleSlope = 1.0 if slope is None else slope
        ds.RescaleIntercept = 0.0 if intercept is None else intercept
    if with_pixels:
        ds.PixelData = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()

    buf = io.BytesIO()
    if preamble:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        dcmwrite(buf, ds, enforce_file_format=True)
    else:
        dcmwrite(buf, ds, implicit_vr=False, little_endian=True)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--bits", type=int, default=12, help="bits stored (8..16)")
    p.add_argument("--mono1", action="store_true", help="store as MONOCHROME1 (inverted)")
    p.add_argument("--window", type=float, nargs=2, metavar=("CENTER", "WIDTH"))
    p.add_argument("--slope", type=float)
    p.add_argument("--intercept", type=float)
    p.add_argument("--frames", type=int, default=1)
    a = p.parse_args(argv)
    if not 8 <= a.bits <= 16:
        p.error("--bits must be 8..16")
    img = np.asarray(Image.open(a.src).convert("L"), dtype=np.float64) / 255.0
    if a.mono1:
        img = 1.0 - img
    top = 2 ** a.bits - 1
    stored = np.rint(img * top).astype(np.uint8 if a.bits == 8 else np.uint16)
    if a.frames > 1:
        stored = np.stack([stored] * a.frames)
    data = make_dicom(stored, photometric="MONOCHROME1" if a.mono1 else "MONOCHROME2",
                      bits_stored=a.bits, window=tuple(a.window) if a.window else None,
                      slope=a.slope, intercept=a.intercept)
    with open(a.dst, "wb") as f:
        f.write(data)
    print(f"wrote {a.dst}: {stored.shape} {stored.dtype}, {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
