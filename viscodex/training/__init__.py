"""Supervised fine-tuning of a merged model: data (records, encoding, collator) and the trainer."""
