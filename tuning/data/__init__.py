"""Dataset steps: demo generation, preparation and the cached arrays every trial reads."""
