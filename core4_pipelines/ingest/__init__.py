"""The import, step by step: claim (the proc sensor's scan and batch claim), ready (is a
file still being written?), readers and record_model (read), write (the insert stream),
files (one file's fate), assets (inbox, collection, checks) and job (import_job).
"""
