"""The issue's scenarios, one module each; each returns the Metrics it measured."""
