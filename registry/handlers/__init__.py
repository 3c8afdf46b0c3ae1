"""HTTP handlers, one module per resource, named after the spec's operations."""
