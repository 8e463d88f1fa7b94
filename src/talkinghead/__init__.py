"""talkinghead: speech-driven photoreal talking-head video of a recorded presenter."""

__version__ = "0.1.0"
