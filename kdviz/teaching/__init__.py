"""The lesson's numbers."""
