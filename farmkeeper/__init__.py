"""farmkeeper: the domain core (no Prefect import) of the video-surveillance farm control plane."""

__version__ = "0.1.0"
