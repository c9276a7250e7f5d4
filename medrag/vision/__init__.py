"""Medical images: loading (DICOM windowing), modality guesses, classical segmentation, overlays."""

from medrag.vision.image import MedicalImage, load_image

__all__ = ["MedicalImage", "load_image"]
