"""Hydra sweeper `hydra/sweeper=langsub_compare` (experiment=compare): see langsub.report.compare."""
