"""Access control: who is asking (authentication) and whether they may (authorization).

One ``AccessController`` is chosen from ``auth:`` in the configuration; the middleware
derives the access a request needs from its route and asks the controller, so handlers
never know which scheme is in force.
"""
