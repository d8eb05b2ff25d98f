"""Observation sources: bleak (BlueZ), serial scanner co-processor, real-time simulator."""

from edge.sources.base import ObservationSource, Sink, SourceSpec, parse_source
from edge.sources.factory import open_sources

__all__ = ["ObservationSource", "Sink", "SourceSpec", "open_sources", "parse_source"]
