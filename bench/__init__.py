"""Benchmarks: ``python -m bench [name...]`` runs ``bench/bench_*.py`` modules, each against a peer in the same run."""
