"""The benchmark component."""
