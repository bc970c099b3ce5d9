"""The active-learning case pool as data: the store (``pool.json``, records, revisions, lock) and the
ranking of cases to correct. Files and NumPy only, so that the Slicer GUI process can use it; training
and the model-running scores are :mod:`toothseg.train.active_learning`."""
