"""Benchmarks of the Zor engine against comparison baselines (not part of the engine API).

Scripts (each prints a table and writes JSON with ``--json PATH``):

- ``fashion_fewshot.py``   the headline: Zor vs every baseline at equal wall time,
                           10 → 60,000 training images, seed metric, PSNR, time
- ``rule_variants.py``     every learning-rule variant × mechanism × optimizer
- ``engine_throughput.py`` forward+learn samples/s on CPU (and CUDA), with speedups

``benchmarks.baselines`` holds the baselines; ``benchmarks.common`` the timing,
table, JSON and seeding helpers they share.
"""

__all__: list[str] = []
