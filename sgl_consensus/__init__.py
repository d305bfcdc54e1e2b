"""sgl-consensus: sibling paths of one prompt draft for each other inside SGLang."""

__version__ = "0.1.0"
