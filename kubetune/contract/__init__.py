"""The JSON kwargs contract: curated Training Hub parameters plus checked backend kwargs."""

from kubetune.contract.spec import SCHEMA_VERSION, TrainingSpec, json_schema, load_spec, read_document, validate_spec

__all__ = ["SCHEMA_VERSION", "TrainingSpec", "json_schema", "load_spec", "read_document", "validate_spec"]
