"""Print how far float noise and each mutation move the golden fingerprint of each variant.

In units of the golden tolerance (< 1 passes, > 1 fails): the numbers in docs/numerics.md.
    PYTHONPATH=$PWD python tests/golden_margins.py [xs s m l]
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_golden import MUTATIONS  # noqa: E402

from cnp.testing import golden_output, seeded_input, seeded_model, worst_ratio  # noqa: E402


def margins(variant: str) -> dict[str, float]:
    model = seeded_model(variant)
    image = seeded_input(model.spec)
    reference = golden_output(model, image)
    row = {"float64": worst_ratio(reference, golden_output(seeded_model(variant).double(),
                                                           image.double()))}
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)
    row["other_thread_count"] = worst_ratio(reference, golden_output(model, image))
    torch.set_num_threads(threads)
    for name, mutate in MUTATIONS.items():
        mutated = seeded_model(variant)
        mutate(mutated)
        row[name] = worst_ratio(reference, golden_output(mutated, image))
    return row


if __name__ == "__main__":
    for variant in sys.argv[1:] or ["xs", "s", "m", "l"]:
        cells = ", ".join(f"{name} {ratio:.3f}" if ratio < 1 else f"{name} {ratio:.0f}"
                          for name, ratio in margins(variant).items())
        print(f"{variant}: {cells}")
