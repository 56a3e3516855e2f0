"""Tiny synthetic corpora and presets built by the tests themselves."""
import dataclasses

import numpy as np

from builder import presets
from builder.data import Corpus


def tiny_corpus(vocab: int = 40, n: int = 3000, seed: int = 0) -> Corpus:
    rng = np.random.RandomState(seed)
    # a little structure (a noisy cycle) so that training lowers the loss
    stream = (np.arange(n) * 7 + rng.randint(0, 3, n)) % vocab
    return Corpus(tuple(f"w{i}" for i in range(vocab)), stream[:2000].astype(np.int64),
                  stream[2000:2500].astype(np.int64), stream[2500:].astype(np.int64), {})


def tiny_preset(**changes) -> presets.Preset:
    base = dataclasses.replace(
        presets.get("smoke"), hidden=6, batch_size=4, bptt=8, epochs=1.0, checkpoints=3, train_tokens=None,
        valid_tokens=None, test_tokens=None, eval_batch_size=4, nonmono=1, lr=2.0,
    )
    return dataclasses.replace(base, **changes)
