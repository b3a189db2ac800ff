"""The files of a synthetic nodule (:func:`radiolib.synthesize.synthesize`): the slice and its mask
as NIfTI (SimpleITK), as a single-slice DICOM CT image and a DICOM SEG of the mask referencing it
(highdicom), the genes used and a record of the run.
"""

from __future__ import annotations

import datetime
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from radiolib.errors import SynthesisError
from radiolib.io import write_json

if TYPE_CHECKING:
    from radiolib.synthesize import Background, SliceGeometry

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
HU_OFFSET = 1024  # stored CT value = HU + 1024 (RescaleIntercept -1024), as scanners write
FILES = {
    "ct_nifti": "synthetic_ct.nii.gz",
    "mask_nifti": "synthetic_mask.nii.gz",
    "background_nifti": "background_ct.nii.gz",
    "genes": "genes.csv",
    "record": "synthesis.json",
}


def _nifti(array: np.ndarray, g: SliceGeometry) -> sitk.Image:
    img = sitk.GetImageFromArray(np.asarray(array)[None])  # (1, S, S) -> x, y, z = S, S, 1
    img.SetOrigin(g.origin)
    img.SetSpacing((g.pixel_mm, g.pixel_mm, g.thickness_mm))
    img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return img


def _ds(v: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    text = f"{v:.6f}".rstrip("0").rstrip(".")
    return text if len(text) <= 16 else f"{v:.9g}"


def ct_dataset(
    hu: np.ndarray,
    g: SliceGeometry,
    background: Background,
    hu_window: tuple[float, float],
    description: str,
) -> Any:
    """A single-slice DICOM CT image (pydicom) of ``hu`` ``(S, S)`` int16 at geometry ``g``:
    in the source series' study and frame of reference when there is one, else in new ones."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    import radiolib

    now = datetime.datetime.now()
    h = background.header
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.PatientID = h.get("PatientID") or background.patient_id
    ds.PatientName = h.get("PatientName") or background.patient_id
    ds.PatientBirthDate = h.get("PatientBirthDate", "")
    ds.PatientSex = h.get("PatientSex", "")
    ds.StudyInstanceUID = h.get("StudyInstanceUID") or generate_uid()
    ds.StudyDate = h.get("StudyDate") or now.strftime("%Y%m%d")
    ds.StudyTime = h.get("StudyTime") or now.strftime("%H%M%S")
    ds.StudyID = h.get("StudyID", "")
    ds.AccessionNumber = h.get("AccessionNumber", "")
    ds.ReferringPhysicianName = h.get("ReferringPhysicianName", "")
    ds.FrameOfReferenceUID = h.get("FrameOfReferenceUID") or generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.Modality = "CT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 901
    ds.SeriesDescription = "Synthetic nodule"
    ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.Manufacturer = "radiolib"
    ds.ManufacturerModelName = "synthesize"
    ds.SoftwareVersions = radiolib.__version__
    ds.InstanceNumber = 1
    ds.AcquisitionNumber = ""
    ds.KVP = ""
    ds.BurnedInAnnotation = "NO"
    ds.DerivationDescription = description[:1024]
    ds.ImageComments = "Synthetic: a tumour painted by a GAN, not an acquired image"
    ds.ImagePositionPatient = [_ds(v) for v in g.origin]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = _ds(g.origin[2])
    ds.PixelSpacing = [_ds(g.pixel_mm), _ds(g.pixel_mm)]  # between rows, between columns
    ds.SliceThickness = _ds(g.thickness_mm)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = g.size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept = str(-HU_OFFSET)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    lo, hi = float(hu_window[0]), float(hu_window[1])
    ds.WindowCenter, ds.WindowWidth = _ds((lo + hi) / 2), _ds(hi - lo)
    stored = np.asarray(hu, np.int32) + HU_OFFSET
    if stored.min() < 0 or stored.max() > 65535:
        raise SynthesisError(f"HU outside [-{HU_OFFSET}, {65535 - HU_OFFSET}] cannot be stored")
    ds.PixelData = stored.astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def seg_dataset(ct: Any, mask: np.ndarray, model: str) -> Any:
    """A BINARY DICOM SEG (highdicom) of ``mask`` ``(S, S)`` on the CT image ``ct``, one segment
    'Synthetic nodule', its frame referencing ``ct`` (kept when empty, so it always decodes)."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    import radiolib
    from radiolib.data.phantom import nodule_segment_description

    segment = nodule_segment_description(
        "Synthetic nodule", f"radiolib {model} GAN", radiolib.__version__, generate_uid()
    )
    with warnings.catch_warnings():
        # cohort ids such as 'R01-001' are one name component, which highdicom flags
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person")
        return hd.seg.Segmentation(
            source_images=[ct],
            pixel_array=np.asarray(mask, bool)[None],
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[segment],
            series_instance_uid=generate_uid(),
            series_number=902,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer="radiolib",
            manufacturer_model_name="synthesize",
            software_versions=radiolib.__version__,
            device_serial_number="0",
            series_description="Synthetic nodule SEG",
            omit_empty_frames=False,
        )


def write_synthesis(
    folder: Path,
    hu: np.ndarray,
    mask: np.ndarray,
    background_hu: np.ndarray,
    background: Background,
    genes: np.ndarray,
    gene_names: list[str],
    hu_window: tuple[float, float],
    record: dict[str, Any],
) -> dict[str, str]:
    g = background.geometry
    for key, array in (("ct_nifti", hu), ("mask_nifti", mask), ("background_nifti", background_hu)):
        sitk.WriteImage(_nifti(array, g), str(folder / FILES[key]), useCompression=True)
    description = f"radiolib synthesize: {record['model']} GAN, genes of {record['genes']}"
    ct = ct_dataset(hu, g, background, hu_window, description)
    seg = seg_dataset(ct, mask, record["model"])
    ct_path = Path("dicom") / "CT" / f"{ct.SOPInstanceUID}.dcm"
    seg_path = Path("dicom") / "SEG" / f"{seg.SOPInstanceUID}.dcm"
    for path, ds in ((ct_path, ct), (seg_path, seg)):
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(folder / path, enforce_file_format=True)
    pd.DataFrame({"gene": gene_names, "value": genes}).to_csv(folder / FILES["genes"], index=False)
    files = {k: v for k, v in FILES.items() if k != "record"}
    files.update({"ct_dicom": str(ct_path), "seg_dicom": str(seg_path)})
    write_json(
        folder / FILES["record"],
        {
            **record,
            "geometry": asdict(g),
            "hu_window": list(hu_window),
            "mask_pixels": int(mask.sum()),
            "dicom": {
                "study_uid": str(ct.StudyInstanceUID),
                "frame_of_reference_uid": str(ct.FrameOfReferenceUID),
                "ct_series_uid": str(ct.SeriesInstanceUID),
                "ct_sop_uid": str(ct.SOPInstanceUID),
                "seg_series_uid": str(seg.SeriesInstanceUID),
                "seg_sop_uid": str(seg.SOPInstanceUID),
            },
            "files": files,
        },
    )
    return files
