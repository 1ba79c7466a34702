"""Benchmarks of the Zor engine against comparison baselines (not part of the engine API).

Each script runs from the repository root as ``python -m benchmarks.NAME`` (``--help``
lists its options and their defaults), prints a table and writes JSON with ``--json PATH``:

- ``fashion_fewshot``    the headline: Zor vs every baseline at equal wall time,
                         10 → 60,000 training images, seed metric, PSNR, time
- ``classification``     Fashion-MNIST labels, 10 → 60,000, Zor vs MLP and CNN at equal wall time
- ``colorization``       grey → colour photo patches, Zor vs backprop vs grey
- ``denoising``          Gaussian and salt-and-pepper noise, Zor vs backprop vs the median filter
- ``depth``              the same classifier at 2 → 12 layers
- ``rule_variants``      every learning-rule variant × mechanism × optimizer
- ``engine_throughput``  forward+learn samples/s on CPU (and CUDA), as ratios to the MLP
- ``export_fidelity``    float32 / int8 / fp16 files against the torch engine
- ``sparse_inference``   event-driven inference: cost against spike rate, memory
- ``translation``        Spanish → Nahuatl / Otomí, Zor vs baselines, export, runtime speed
- ``translation_seeds``  translation quality over several document splits
- ``runtime_bench``      the torch-free runtime's speed and installed size
- ``arm_emulation``      the runtime on emulated ARM boards

``benchmarks.common`` is the harness they share (grid runner, summaries, timing, the
table printer, the JSON writer); ``benchmarks.methods`` the headline's methods by
name; ``benchmarks.baselines`` every comparison baseline.
"""

__all__: list[str] = []
