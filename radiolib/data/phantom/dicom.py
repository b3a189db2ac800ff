"""The phantom's DICOM files: one CT series per patient and its tumour SEG (highdicom).

Each patient's series is written into a temporary folder of :data:`COLLECTION` and renamed
(:func:`write_patient`). Every UID derives from the seed, the patient and the phantom's version,
and the dates from the patient's index, so the same seed writes the same bytes.
:func:`nodule_segment_description` is the one segment description of radiolib's SEGs.
"""

from __future__ import annotations

import datetime
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from radiolib.io import make_temp_dir

from .anatomy import Geometry
from .streams import VERSION

if TYPE_CHECKING:
    from highdicom.seg import Segmentation, SegmentDescription
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO

COLLECTION = "nsclc_radiogenomics"
_UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root for generated UIDs
_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_STUDY_DATE = datetime.date(2010, 1, 4)


def study_date(index: int) -> datetime.date:
    """The date of the ``index``-th patient's CT: one patient a week from 4 January 2010."""
    return _STUDY_DATE + datetime.timedelta(days=7 * index)


def nodule_segment_description(
    label: str, algorithm: str, version: str, tracking_uid: str
) -> SegmentDescription:
    """Segment 1 of a BINARY SEG: a neoplasm labelled ``label`` (tracked as ``'<label> 1'``),
    segmented automatically by the AI algorithm ``algorithm`` of version ``version``."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm, version=version, family=codes.cid7162.ArtificialIntelligence
        ),
        tracking_uid=tracking_uid,
        tracking_id=f"{label} 1",
    )


def _uid(seed: int, *parts: object) -> str:
    from pydicom.uid import generate_uid

    return str(
        generate_uid(prefix=_UID_ROOT, entropy_srcs=[VERSION, str(seed)] + [str(p) for p in parts])
    )


def _ds(v: float) -> str:
    """Decimal string with up to 4 decimals (exact for the phantom's rounded geometry)."""
    return f"{v:.4f}".rstrip("0").rstrip(".")


def _ct_template(geo: Geometry, pid: str, sex: str, uids: dict[str, str], index: int) -> Dataset:
    """The attributes every CT slice of a patient shares (a pydicom Dataset)."""
    from pydicom.dataset import Dataset

    date = study_date(index).strftime("%Y%m%d")
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = _CT_STORAGE
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "093000"
    ds.AccessionNumber = f"PH{index + 1:05d}"
    ds.Modality = "CT"
    ds.Manufacturer = "radiolib phantom"
    ds.ManufacturerModelName = "synthetic"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "CHEST"
    ds.SeriesDescription = "Synthetic chest CT"
    ds.PatientName = pid
    ds.PatientID = pid
    ds.PatientBirthDate = ""
    ds.PatientSex = sex
    ds.SliceThickness = _ds(geo.dz)
    ds.KVP = "120"
    ds.PatientPosition = "FFS"
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["ct"]
    ds.StudyID = f"{index + 1}"
    ds.SeriesNumber = 2
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = geo.matrix
    ds.PixelSpacing = [_ds(geo.dx), _ds(geo.dx)]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1500"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    return ds


def _slice_elements(geo: Geometry, k: int, sop: str, stored: np.ndarray | None) -> Dataset:
    """The attributes that differ between slices: instance, position, pixels."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.SOPInstanceUID = sop
    # instance 1 is the most superior slice, as scanners number a head-first sweep
    ds.InstanceNumber = geo.nz - k
    z = round(geo.z0 + k * geo.dz, 4)
    ds.ImagePositionPatient = [_ds(geo.x0), _ds(geo.y0), _ds(z)]
    ds.SliceLocation = _ds(z)
    if stored is not None:
        ds.PixelData = stored.tobytes()
        ds["PixelData"].VR = "OW"  # 16 bits allocated
    return ds


def _file_meta(sop: str) -> FileMetaDataset:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _CT_STORAGE
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


class _SeriesEncoder:
    """Encodes CT slices with pydicom, the shared attributes once per series.

    pydicom writes a dataset element by element in tag order; the shared elements between the
    slice-specific ones are encoded once into byte chunks, and each file is then its preamble,
    file meta, the chunks and the slice's own elements. The bytes equal
    ``pydicom.dcmwrite(path, template + slice, enforce_file_format=True)``.
    """

    def __init__(self, template: Dataset, varying: Dataset):
        import bisect

        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_dataset

        self._bytes_io = DicomBytesIO
        self.bounds = sorted(int(t) for t in varying.keys())
        groups: list[Dataset] = [type(template)() for _ in range(len(self.bounds) + 1)]
        for elem in template:
            groups[bisect.bisect(self.bounds, int(elem.tag))].add(elem)
        self.chunks = []
        for g in groups:
            fp = self._buffer()
            write_dataset(fp, g)
            self.chunks.append(fp.getvalue())

    def _buffer(self) -> DicomBytesIO:
        fp = self._bytes_io()
        fp.is_implicit_VR, fp.is_little_endian = False, True
        return fp

    def encode(self, meta: FileMetaDataset, varying: Dataset) -> bytes:
        from pydicom.filewriter import write_data_element, write_file_meta_info

        fp = self._buffer()
        fp.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fp, meta, enforce_standard=True)
        fp.write(self.chunks[0])
        for tag, chunk in zip(self.bounds, self.chunks[1:], strict=True):
            write_data_element(fp, varying[tag])
            fp.write(chunk)
        return fp.getvalue()


def _seg_dataset(
    cts: list[Dataset], mask: np.ndarray, pid: str, uids: dict[str, str], seed: int
) -> Segmentation:
    """A BINARY DICOM SEG with one segment 'Tumor' referencing the CT slices."""
    import highdicom as hd

    desc = nodule_segment_description(
        "Tumor", "radiolib phantom", VERSION, _uid(seed, pid, "seg-tracking")
    )
    with warnings.catch_warnings():
        # TCIA names patients like 'R01-001' (one name component), which highdicom flags
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person")
        seg = hd.seg.Segmentation(
            source_images=cts,
            pixel_array=mask.astype(bool),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[desc],
            series_instance_uid=uids["seg"],
            series_number=300,
            sop_instance_uid=_uid(seed, pid, "seg-sop"),
            instance_number=1,
            manufacturer="radiolib",
            manufacturer_model_name="phantom",
            software_versions=VERSION,
            device_serial_number="0",
            series_description="Tumor SEG",
        )
    # highdicom stamps the wall clock and a random dimension organisation UID: pin both so the
    # same seed writes the same bytes
    seg.ContentDate = seg.SeriesDate = seg.InstanceCreationDate = cts[0].StudyDate
    seg.ContentTime = seg.SeriesTime = seg.InstanceCreationTime = "100000"
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = f"{cts[0].StudyDate}100000"
    dim_uid = _uid(seed, pid, "seg-dimension")
    for item in seg.DimensionOrganizationSequence:
        item.DimensionOrganizationUID = dim_uid
    for item in seg.DimensionIndexSequence:
        item.DimensionOrganizationUID = dim_uid
    return seg


def write_patient(
    root: Path,
    pid: str,
    sex: str,
    hu: np.ndarray,
    mask: np.ndarray | None,
    geo: Geometry,
    seed: int,
    index: int,
) -> tuple[dict[str, str], int]:
    """Write one patient's CT series (and SEG) into a temporary folder, then rename it."""
    uids = {name: _uid(seed, pid, name) for name in ("study", "ct", "seg", "frame")}
    coll = root / COLLECTION
    coll.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(coll, prefix=f".{pid}.")
    try:
        study = tmp / uids["study"]
        ct_dir = study / f"CT_{uids['ct']}"
        ct_dir.mkdir(parents=True)
        stored = np.clip(np.rint(hu + 1024.0), 0, 4095).astype(np.uint16)
        template = _ct_template(geo, pid, sex, uids, index)
        encoder = None
        cts = []  # pixel-less views of the slices for the SEG's references
        for k in range(geo.nz):
            sop = _uid(seed, pid, "ct", k)
            own = _slice_elements(geo, k, sop, stored[k])
            encoder = encoder or _SeriesEncoder(template, own)
            with open(ct_dir / f"{sop}.dcm", "wb") as fh:
                fh.write(encoder.encode(_file_meta(sop), own))
            ref = _slice_elements(geo, k, sop, None)
            ref.update(template)
            cts.append(ref)
        files = len(cts)
        if mask is not None:
            seg = _seg_dataset(cts, mask, pid, uids, seed)
            seg_dir = study / f"SEG_{uids['seg']}"
            seg_dir.mkdir()
            seg.save_as(seg_dir / f"{seg.SOPInstanceUID}.dcm", enforce_file_format=True)
            files += 1
        final = coll / pid
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return uids, files
