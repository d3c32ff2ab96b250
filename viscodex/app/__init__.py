"""The comparison app (Gradio): variants, streaming, previews, uploads."""
