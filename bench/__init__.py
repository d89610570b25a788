"""Benchmarks. Run each as a module from the repository root (``python -m bench.alert``),
so a file named like the package it measures cannot shadow that package; ``make bench``
runs them all."""
