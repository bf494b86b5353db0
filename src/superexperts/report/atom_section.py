"""The "Inside each Super Expert" section: which atoms (intermediate units) write each SE's outlier.

Read from the run's atom table (atom_stats.parquet); left out when the run has none or found no SE (a run
profiled with --no-atoms says so instead).
"""

from __future__ import annotations

from ..identify.atoms import COVER, se_super_atoms
from .atom_figures import fig_super_atoms
from .figures import expert_name
from .inputs import ReportInputs
from .page import Raw, Section, figure, number, paragraphs, table

TEXT = (
    "An expert writes sum_k a[t, k] w_k: atom k (its intermediate unit k: gate row k, up row k, down_proj "
    "column w_k) adds a[t, k] w_k. At the token t* and channel c* of a Super Expert's largest output, atom k "
    "contributes a[t*, k] w_k[c*]; its share is that contribution over their sum (negative when it pulls "
    "the other way). The super atoms are the fewest atoms whose shares reach {cover:.0%}. Atom-level "
    "compressors (CAMERA, HEAPr) prune or quantize single atoms: these are the ones they must keep."
)
CAPTION = ("Each Super Expert's output at its maximum split over its atoms, largest share first (the {shown} "
           "largest; the rest summed into one bar). Coloured: the super atoms, the fewest atoms that carry 90%.")


SKIPPED = ("This run was profiled with --no-atoms: it recorded no atom statistics, so its Super Experts' super "
           "atoms are unknown. Profile again without --no-atoms to see them.")


def inside_super_experts(inputs: ReportInputs) -> Section | None:
    found = se_super_atoms(inputs.verdict.super_experts, inputs.profile.atom_stats)
    if not found and inputs.profile.meta.get("atoms") is False and len(inputs.verdict.super_experts):
        return Section("inside-super-experts", "Inside each Super Expert", Raw(paragraphs(SKIPPED)), {})
    if not found:
        return None
    for s in found:
        s["name"] = expert_name(s["se"].layer, s["se"].kind, s["se"].expert)
    rows = [[s["name"], int(s["se"].channel), number(s["se"].max_output), len(s["super_atoms"]), len(s["shares"]),
             ", ".join(f"{p['atom']} ({p['share']:.1%})" for p in s["super_atoms"][:8])] for s in found]  # fmt: skip
    columns = ["Super Expert", "channel c*", "output at (t*, c*)", "atoms carrying 90%", "atoms", "super atoms (share)"]
    panels = [(s["name"], s["shares"], [p["atom"] for p in s["super_atoms"]]) for s in found]
    shown = 12 if len(found) <= 4 else 6  # many SEs (DeepSeek-R1 has 10): shorter panels
    fig_body, files = figure(fig_super_atoms(panels, shown=shown), "super_atoms", CAPTION.format(shown=shown),
                             "Bar chart of each Super Expert's output split over its atoms")  # fmt: skip
    body = Raw(paragraphs(TEXT.format(cover=COVER)) + table(columns, rows) + fig_body)
    return Section("inside-super-experts", "Inside each Super Expert", body, files)
