"""Notebook 10's step count by three-fold cross-validation on the training messages only (rule declared before it ran).

Run from the repository root:  .venv/bin/python benchmarks/explore_10_routing.py [OUT.json]
(default OUT: lora_edu/data/routing_steps.json, which notebook 10 reads through routing_task.load_steps_choice).

Why. Notebook 07's routing deep dive trained its adapter for 20 steps, a number nobody chose for this task. Everything
else stays notebook 07's recipe (chat_task.RECIPE: the top 2 layers, all seven projections, r 8, alpha 16, batches of
8; the learning rate chat_task.load_sweep()["chosen"]["LoRA"], falling linearly to zero), so only the step count is
chosen here, and only among routing_task.STEP_CHOICES = 20 (07's deep dive), 40 and 60 (07's own recipe); more
would not fit notebook 10's 30 s budget on the 2-core machine comfortably, so none is tried.

The rule (declared here, in the commit that adds this script, before it ran; nothing else is tried):
- the 38 training messages (routing_task.load_routing()["train"], in the data file's order) are split three ways:
  fold f (f = 0, 1, 2) validates on the messages at positions i with i % 3 == f and trains on the other two thirds
  (routing_task.folds);
- each step count trains a fresh PEFT adapter (routing_task.add_router, seed 0: its A and the batch order) on each
  fold's training part, and routes that fold's validation messages (routing_task.route);
- a step count's score is how many of the 38 messages it routed right when each was a validation message;
  routing_task.choose_steps keeps the highest score, a tie going to the fewer steps.
The held-out messages are never touched here.

The cache is the notebook's (routing_task.cache_messages: the prompts' shared prefix computed once; a fold is
PrefixCache.select of its rows), so the folds train as the notebook's final adapter does, rounding included.
"""
import copy
import json
import sys
import time
from pathlib import Path

from lora_edu.core import smollm2
from lora_edu.course.seeding import seed_everything
from lora_edu.lessons import chat_task as ct
from lora_edu.lessons import routing_task as rt

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "lora_edu" / "data" / "routing_steps.json"


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    seed_everything(0)
    base, tok = smollm2.load()
    routing = rt.load_routing()
    k, lr = ct.RECIPE["top_layers"], ct.load_sweep()["chosen"]["LoRA"]
    choices = rt.label_tokens(tok, routing["labels"])
    data = rt.cache_messages(base, tok, routing["instruction"], routing["train"], k=k)
    truth = rt.truth(routing, "train")
    runs = []
    for steps in rt.STEP_CHOICES:
        for f, (fit, val) in enumerate(rt.folds(len(routing["train"]))):
            model = rt.add_router(copy.deepcopy(base), seed=0)
            start = time.process_time()
            ct.train(model, data.select(fit), steps=steps, lr=lr, batch_size=ct.RECIPE["batch_size"], seed=0)
            train_s = time.process_time() - start
            chosen = rt.route(model, data.select(val), choices)
            right = int((chosen == truth[val]).sum())
            run = dict(steps=steps, fold=f, n_fit=len(fit), n_val=len(val), right=right, train_s=round(train_s, 1))
            runs.append(run)
            print(json.dumps(run), flush=True)
            del model
    right = {steps: sum(r["right"] for r in runs if r["steps"] == steps) for steps in rt.STEP_CHOICES}
    n = len(routing["train"])
    accuracy = {steps: right[steps] / n for steps in rt.STEP_CHOICES}
    result = {"about": __doc__.strip().splitlines()[0], "rule": "most of the training messages routed right when each "
              "was a validation message (three folds, seed 0); a tie goes to the fewer steps",
              "step_choices": list(rt.STEP_CHOICES), "folds": rt.N_FOLDS, "n_train": n, "recipe": ct.RECIPE, "lr": lr,
              "runs": runs, "right": {str(s): right[s] for s in rt.STEP_CHOICES},
              "accuracy": {str(s): round(accuracy[s], 4) for s in rt.STEP_CHOICES}, "chosen": rt.choose_steps(accuracy)}
    for steps in rt.STEP_CHOICES:
        print(f"{steps} steps: {right[steps]} of {n} validation messages routed right ({accuracy[steps]:.0%})")
    print("chosen:", result["chosen"], "steps")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
