"""imgsync: mirror, migrate and back up image libraries between image hosts and disk."""

__version__ = "0.1.0"
