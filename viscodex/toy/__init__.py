"""The toy world (scenes, SVG), the tiny model trio and the end-to-end demo."""
