"""photodrop: collect photos from phones through upload sessions and QR codes."""

__version__ = "0.1.0"
