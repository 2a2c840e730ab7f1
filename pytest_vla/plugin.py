"""pytest hooks of pytest-vla (filled in by the plugin issue)."""
