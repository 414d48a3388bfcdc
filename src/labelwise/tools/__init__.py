"""Developer tools that check the package itself (``python -m labelwise.tools.layers``)."""
