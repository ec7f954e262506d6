"""Data handling shared by components: reading, validating and tokenizing chat samples."""
