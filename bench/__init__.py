"""portside's benchmark: portside and the reference registry side by side on one machine.

Run ``python -m bench --help``; docs/performance.md explains the method and the figures.
"""
