"""Storage drivers: a narrow, filesystem-like interface with one module per backend."""
