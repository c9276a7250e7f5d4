"""medrag: a multimodal retrieval-augmented agent for medical images and text."""

__version__ = "0.1.0"
