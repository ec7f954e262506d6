"""KFP components: one folder each, plain-Python core beside a thin KFP wrapper."""
