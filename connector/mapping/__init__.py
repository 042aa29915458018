"""Mapping files: load and validate (``load``), compile into per-row functions (``compile``)."""

from connector.mapping.compile import Built, CompiledMapping
from connector.mapping.load import load_mapping_file, load_mappings
from connector.mapping.spec import ChildSpec, Mapping, ObjectSpec, SourceSpec, ValueSpec

__all__ = [
    "Built",
    "ChildSpec",
    "CompiledMapping",
    "Mapping",
    "ObjectSpec",
    "SourceSpec",
    "ValueSpec",
    "load_mapping_file",
    "load_mappings",
]
