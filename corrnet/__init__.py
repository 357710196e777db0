"""corrnet: learned correspondence pruning and relative pose for two-view geometry."""

__version__ = "0.1.0"
