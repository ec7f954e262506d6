"""The JSON kwargs contract: the artifact (``TrainingSpec``), the curated Training Hub parameters and the backend
field catalogues. ``kubetune.validation`` turns a document into the artifact."""

from kubetune.contract.spec import SCHEMA_VERSION, TrainingSpec, read_document

__all__ = ["SCHEMA_VERSION", "TrainingSpec", "read_document"]
