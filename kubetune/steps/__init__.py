"""The steps of a fine-tuning run as plain functions: the KFP components in components/ are thin wrappers."""
