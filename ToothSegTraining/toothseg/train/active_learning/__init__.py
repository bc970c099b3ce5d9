"""Active learning without a server: a case pool on disk, acquisition scores, fine-tuning and promotion.

:mod:`.pool` (the manifest and its safety rules) needs no torch: the Slicer GUI process imports it
for "Save as corrected case". :mod:`.acquisition` (which cases to correct first) and :mod:`.loop`
(predict the pool; fine-tune and judge a new model version) run in separate processes.
"""
