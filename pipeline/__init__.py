"""Training and fine-tuning runtime, and the `bertpipe` command line."""
