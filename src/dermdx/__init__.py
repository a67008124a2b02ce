"""dermdx: deep-learning decision support for skin-lesion diagnosis."""
__version__ = "0.1.0"
