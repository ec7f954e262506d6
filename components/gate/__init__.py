"""The promotion gate component."""
