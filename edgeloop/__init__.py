"""EdgeLoop's front door: the ``edgeloop`` command line (:mod:`edgeloop.cli`), the demo and its report, the
local stack (``edgeloop up``), and :mod:`edgeloop.devkit`, the scaffolding the demo, tests and benchmarks
share (a broker launcher, hub and node processes, Label Studio, a simulated fleet, scenarios, a simulated
annotator). It may import every other package; none of them imports it."""

__version__ = "0.1.0"
