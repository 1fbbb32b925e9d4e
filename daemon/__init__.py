"""codegend: turns a UI mockup into a full-stack code base through a durable chain of Claude calls."""

__version__ = "0.1.0"
