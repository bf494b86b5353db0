"""One module per workflow, all of one shape: a validated request -> components -> one output folder.

    req = ProfileRequest(model=None, out="runs/demo")   # validated on construction: bad input raises
    result = run_profile(req, echo=print)               # loads the model, runs the components, writes

Each request checks everything that needs no model when it is built (errors name the CLI flag and
the fix); the `run_*` function loads the model, calls the library's components and writes its
files atomically. `cli/` only parses arguments into a request and prints the result; the
components below never mention flags.

| recipe                 | subcommand   | writes                                             |
|------------------------|--------------|----------------------------------------------------|
| profiling.py           | profile      | profile.json, super_experts.json, tables, report   |
| identifying.py         | identify     | super_experts.json, sensitivity.json               |
| comparing.py           | compare      | compare.json, compare_scatter.png/.svg             |
| pruning.py             | prune-eval   | prune_eval.json (+ the run's report)               |
| attention_sinks.py     | sinks        | sinks.json, sinks_router.csv, figures (+ report)   |
| exporting.py           | export       | a pruned checkpoint folder                         |
| quantizing.py          | quant-eval   | quant_eval.json (+ the run's report)               |
| auditing.py            | audit        | audit.json, audit.html                             |
"""
