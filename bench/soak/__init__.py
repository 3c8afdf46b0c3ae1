"""The chaos soak: load through a balanced deployment while its processes are killed."""
