"""A synthetic radiogenomic cohort with known ground truth, written in the real cohort's formats.

Every patient has a hidden molecular subtype and six continuous tumour traits drawn from
subtype-dependent distributions (:mod:`.biology`). The traits shape one tumour in a chest CT
(:mod:`.anatomy`), written as a DICOM series, one file per slice, with its DICOM SEG
(:mod:`.dicom`); subtype and traits drive a few co-expression modules of a GSE103584-like
RNA-seq table, while stronger modules that have nothing to do with the image (sex, sequencing
batch, proliferation, immune and stromal content) dominate the raw expression. A clinical table
uses the real table's column names (:mod:`.tables`). ``ground_truth/truth.json`` records what is
hidden, for evaluation code only (:func:`load_truth`). :mod:`.folder` writes it all
(:func:`write_phantom`) and marks it complete.

Layout of ``ROOT`` (like an IDC download, see the loaders in :mod:`radiolib.data.nsclc`)::

    nsclc_radiogenomics/R01-001/<StudyUID>/CT_<SeriesUID>/<SOPInstanceUID>.dcm
    nsclc_radiogenomics/R01-001/<StudyUID>/SEG_<SeriesUID>/<SOPInstanceUID>.dcm
    GSE103584_R01_NSCLC_RNAseq.txt
    NSCLCR01Radiogenomic_DATA_LABELS_phantom.csv
    ground_truth/truth.json
    radiolib_phantom.json

``radiolib_phantom.json`` marks the folder as a phantom: written first with ``"complete":
false`` and rewritten with ``"complete": true`` after everything else, so a phantom killed
midway is recognisable (:func:`phantom_status`), and :func:`write_phantom` never writes into a
folder that is neither empty nor a phantom (a real download has the same layout).

The same seed gives byte-identical CT pixel data, expression text and UIDs.
"""

from .anatomy import render_patient, spacing_scale
from .biology import (
    N_COMPLETE,
    N_GENES,
    NUISANCE,
    TRAITS,
    PhantomTruth,
    patient_ids,
    simulate_biology,
)
from .dicom import COLLECTION, nodule_segment_description
from .folder import (
    PhantomSummary,
    check_phantom_complete,
    load_truth,
    phantom_status,
    write_phantom,
)
from .tables import CLINICAL_FILE, EXPRESSION_FILE, TRUTH_FILE

__all__ = [
    "CLINICAL_FILE",
    "COLLECTION",
    "EXPRESSION_FILE",
    "NUISANCE",
    "N_COMPLETE",
    "N_GENES",
    "TRAITS",
    "TRUTH_FILE",
    "PhantomSummary",
    "PhantomTruth",
    "check_phantom_complete",
    "load_truth",
    "nodule_segment_description",
    "patient_ids",
    "phantom_status",
    "render_patient",
    "simulate_biology",
    "spacing_scale",
    "write_phantom",
]
