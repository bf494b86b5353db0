"""Act on the Super Experts: protect lists, quantization and its study, audits of compressed models.

`protect` and `names` (the module names each compression tool sees), `quant/` (round-to-nearest
fake quantization), `quant_eval` (what protection buys), `audit` and `damage` (did a compressed model
keep its SEs). It may import `evaluate`, `identify`, `capture`, `models` and `runs`.
"""
