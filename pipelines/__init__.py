"""Pipelines built from kubetune components."""
