"""The benchmark suite: torch_ipfs against the loaders users would otherwise pick, on the
same data in the same run (issue 7).

Modules, in the order a run uses them:

- :mod:`bench.suite.data`: profiles, the synthetic CIFAR-like dataset, its one export;
- :mod:`bench.suite.server`: the ``torch-ipfs serve`` gateway in a subprocess, counting bytes sent;
- :mod:`bench.suite.contenders`: one small class per contender, each making a DataLoader;
- :mod:`bench.suite.measure`: timing, peak RSS and byte counts of one isolated run;
- :mod:`bench.suite.goals`: the issue-7 goals (ratios, blocks per map-style read, RSS over epochs);
- :mod:`bench.suite.report`: markdown table, PNG chart, ``results.json``;
- :mod:`bench.suite.runner`: ties them together for ``python -m bench``.
"""
