"""CacheNet training: S-InfoVAE selector, polar soft codes, uncertainty-driven partitions and a
generator of K specialised submodels, trained jointly and exported to ONNX (paper section 4)."""

__version__ = "0.1.0"
