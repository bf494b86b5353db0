"""The report's prose, in one place: what a newcomer reads next to each table and figure.

Plain text (escaped when placed); `{...}` fields are filled by the section builders.
"""

SYNTHETIC_BANNER = (
    "SYNTHETIC DEMO MODEL: this run profiled the built-in tiny demo model with planted Super Experts, "
    "not a real language model. Use it to learn to read the page, not as a finding."
)

INTRO = (
    ("A Mixture-of-Experts (MoE) language model sends every token through a few of its many small "
    "feed-forward networks, the experts. A Super Expert (SE) is one of the very few experts whose output "
    "sometimes contains an extreme value, hundreds of times larger than what other experts produce, "
    "usually at the first token of a text. That value stays in the model's hidden state as a 'massive "
    "activation' that attention relies on (an 'attention sink'); switching off just these experts, 3 of "
    "6144 in Qwen3-30B-A3B, breaks the model, while switching off random experts does not "
    "(arXiv 2507.23279)."),
    ("How they are found: the model reads calibration text once, and for every expert e of layer l we "
    "record a[l,e], the largest absolute value its output projection (down_proj) produced on any token, "
    "before the routing weight is applied. Then {rule}.{judged}"),
    "Start with the answer below, then the tables; every figure has a caption saying how to read it.",
)

SE_TABLE = (
    "'channel' is the hidden dimension where the extreme value appeared; 'token text' and 'position' say "
    "on which calibration token (sample = window index, position 0 = first token)."
)

CANDIDATES = (
    "The {count} largest a[l,e] among the judged experts, as in the paper's Table 1. Highlighted rows are "
    "the Super Experts; a large drop after the last SE means a clear verdict."
)

MASSIVE_TABLE = (
    "The hidden state after each layer. Highlighted rows are layers that hold a Super Expert. 'median |h|' "
    "is the mean over calibration batches of each batch's median, which is close to, not exactly, the "
    "median of all tokens."
)

CAPTIONS = {
    "heatmap": "Each cell is one expert: its row is the layer, its column the expert index, and its "
    "colour the largest absolute output a[l,e] on a log scale (each colour step is a factor of ten). "
    "Super Experts are boxed and show as isolated bright cells. The narrow right column holds each "
    "layer's shared expert (if the model has them); hatched rows are dense (non-MoE) layers and "
    "light-grey cells are experts that got no token.",
    "experts": "Each coloured line follows one expert index through the layers: the Super Experts "
    "(stars) and the strongest other candidates. The grey dashed line is the typical (median) expert of "
    "each layer. A Super Expert is a spike at one layer only: the same index elsewhere is ordinary, so an "
    "SE is a (layer, expert) pair.",
    "massive": "The largest, 2nd and 3rd largest absolute values of the hidden state after each layer "
    "and its median, on a log scale. A circled point is a massive activation (> 100 and > 1000 x the "
    "median). Dotted lines mark layers holding a Super Expert: when the largest value jumps there, in the "
    "channel the SE writes to, the SEs are what creates the massive activation, step by step (the "
    "amplification chain).",
    "distribution": "How many experts reach each value of a[l,e] (both axes log scale). The coloured "
    "lines are the rule's thresholds: an expert is a Super Expert only if it lies to the right of both "
    "and sits in a judged layer. Black ticks mark the Super Experts; a wide gap between the bulk and the "
    "ticks means the verdict does not hinge on the exact thresholds.",
    "perplexity": "Perplexity per condition (lower is better); a log scale is used when the values span "
    "more than a factor of ten.",
    "sinks": "Left: attention to the first token per layer, one line per condition. Right: the sink "
    "decay rate D_sink per layer for each pruned condition; values near 1 mean the sink is gone there.",
    "causal": "One column per candidate, one row per layer. Each cell is how much of the activation in the "
    "channel the candidate writes disappears after that layer when the candidate alone is switched off "
    "(100% = all of it; grey = layers before the candidate, which it cannot affect). Boxed cells are its "
    "causal layers. A multiplicative chain stays near 100% in every later layer; in an additive chain a "
    "Super Expert's column fades to its share of the final massive activation while staying boxed.",
}

SENSITIVITY = (
    "The same rule re-run with other thresholds (the paper's Table 9): rows are the percentile, columns "
    "the fraction of the largest value; each cell gives the number of Super Experts and which ones "
    "(layer:expert). The same set everywhere means the verdict does not depend on the exact thresholds. "
    "A high percentile of few experts can select only a few whatever the data: of N values, at most "
    "N - 1 - floor((N - 1) p / 100) lie strictly above their linear P_p (P99.9 of 384 experts: 1). A row "
    "whose cap is below the paper cell's SE count is marked 'capped'; its cells differ because of that cap."
)

PRUNE_EVAL = (
    "The model evaluated with some experts switched off ('pruned': still chosen by the router, but "
    "contributing nothing, or replaced by a mean, per 'mode'). If the Super Experts matter, pruning them "
    "raises perplexity far more than pruning the same number of random experts."
)

SINKS = (
    "Most attention heads put much of their attention on the first token, the 'attention sink'; the "
    "massive activation made by the Super Experts is what creates it. 'sink rate' is the share of heads "
    "whose mean attention to the first token exceeds {epsilon}; D_sink (paper Eq. 7) is how much of that "
    "attention disappears when the experts are pruned (1 = all of it)."
)

CAUSAL = (
    "Each candidate was switched off alone and the hidden state measured after every layer, on the "
    "same few calibration windows. The verdict is taken in the channel the candidate writes and at its own "
    "layer, so a larger activation elsewhere (a late, independent outlier) cannot hide it."
)

CAUSAL_LEGACY = (
    "This prune_eval.json predates the per-layer check: its verdict compares the model-wide max |h| over "
    "the candidate's layer and all later ones, which a larger activation elsewhere (e.g. a late outlier) "
    "can mask. Re-run `superexperts prune-eval --causal` for per-layer evidence."
)
