"""Observation sources: bleak (BlueZ), serial scanner co-processor, real-time simulator."""

from edge.sources.base import ObservationSource, Sink, SourceSpec, open_sources, parse_source

__all__ = ["ObservationSource", "Sink", "SourceSpec", "open_sources", "parse_source"]
