"""Run a student notebook's main line cell by cell, my answers in place of the stubs; time each cell."""
import json, sys, time, os, re
import matplotlib; matplotlib.use("Agg")
nbpath, answers_path = sys.argv[1], sys.argv[2]
answers = json.load(open(answers_path))  # {cell_index: source}
nb = json.load(open(nbpath))
ns = {}
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
for i, c in enumerate(nb["cells"]):
    src = "".join(c["source"])
    if c["cell_type"] == "markdown":
        if src.startswith("## Deep dive (optional)") or src.startswith("## References"): break
        continue
    src = answers.get(str(i), src)
    t = time.time()
    print(f"----- cell {i} -----", flush=True)
    r = shell.run_cell(src)
    print(f"[cell {i}: {time.time()-t:.1f}s{' ERROR' if not r.success else ''}]", flush=True)
