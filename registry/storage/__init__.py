"""The registry's domain: blobs, uploads, manifests, tags and referrers over a driver."""
