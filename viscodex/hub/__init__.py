"""The Hugging Face Hub side: model card, publishing a model, building a Space."""
