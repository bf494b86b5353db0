"""The bottom layer: one run folder and what guards it.

Owns the run-folder format (`runfolder`: atomic writes, metadata, reading a run back without the
model), hidden staging folders (`staging`), output-path guards (`safety`), the one user-error type
(`errors`) and progress bars (`progress`). It imports nothing else of superexperts: every other wing
may import it.
"""
