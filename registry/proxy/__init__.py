"""The pull-through cache (``proxy``): upstream clients with their authentication, the
one download per uncached blob, and the mirror logic the handlers call for mirrored
repositories."""
