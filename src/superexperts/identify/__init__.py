"""Statistics -> verdicts: which experts are Super Experts, and how sure we are.

Pure functions over expert tables: the criteria (`rules`, paper Eq. 6 and the others), threshold
sensitivity (`sensitivity`), the paper's published lists (`known`), one identification path for
`profile` and `identify` (`identification`), expert pruning criteria (`pruning_criteria`), super
atoms and CAMERA's atom scores (`atoms`) and the comparison of runs (`compare`). It may import `capture`, `models` and `runs`; never the studies.
"""
