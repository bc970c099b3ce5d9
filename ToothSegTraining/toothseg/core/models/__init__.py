"""Model folders: the model card, weights (safetensors), the catalogue, downloads, checkpoints and the
importers of the authors' checkpoints. The networks they describe are :mod:`toothseg.core.networks`."""
