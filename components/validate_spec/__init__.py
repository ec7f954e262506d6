"""The validate_spec component."""
