"""What every task gets: base pretraining, collection, fine-tuning from any init, comparison,
benchmark (with its report), demo and pack. The pipeline talks to a task and an architecture
through the core interfaces only and never imports a plugin."""
