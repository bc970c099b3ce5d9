"""Training data: case manifests, the fixed UFBA-425 split, patch sampling and augmentation."""
