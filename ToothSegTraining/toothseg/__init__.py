"""ToothSeg: tooth segmentation in dental CBCT and panoramic X-rays.

``toothseg.core`` is the pure-Python core (no Slicer, no training code) shared by the 3D Slicer
module, the ``toothseg`` command line and the training package ``toothseg.train``.
"""

__version__ = "0.1.0"
