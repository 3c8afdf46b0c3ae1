"""Blob-descriptor caches: what the registry knows about blobs, kept close at hand."""
