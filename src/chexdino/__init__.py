"""chexdino: MIMIC-CXR to a CLIP-style chest X-ray model and a zero-shot AUROC scorecard."""

__version__ = "0.1.0"

LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)
"""The 14 CheXpert labels, in the column order of MIMIC-CXR's ``-chexpert.csv.gz``."""

COMPETITION_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)
"""The five CheXpert competition labels whose mean AUROC is the headline number."""
